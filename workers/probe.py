"""The ``probe`` job type: a built-in diagnostic with an observable effect.

Operators enqueue probes to see the job engine work end to end
(``byteor-cloud jobs probe``); the fault tests and ``ops/bench/jobs`` use them
as their workload. Options in the payload (``ProbeOptions``):

    sleep_ms        hold the attempt this long first (a worker can be killed mid-job)
    fail            "transient" (Retryable) or "permanent" (Permanent)
    fail_attempts   with "transient": fail attempts 1..n only, then succeed
    record          false: touch no table (the benchmark's no-op handler)

With ``record`` (the default) a run writes two tables (migration 0013):

- ``probe_runs``: one row per handler run, written before anything else, with
  the run's outcome when it ends. A run left without an outcome is one whose
  worker died (or whose database went away) mid-attempt.
- ``probe_effects``: the effect, one row per job, under a primary key on the
  job id. The insert is a plain INSERT: a second effect for a job is a unique
  violation the handler sees. The handler is idempotent the way a real one
  must be (decision 0004: a worker can die after its effect and before the
  outcome is recorded): it does not write the effect again, returns success,
  and marks its run ``effect_existed``, naming the run that wrote the effect.
  A test can therefore check that every ``effect_existed`` run follows a run
  that wrote the effect and then died; anything else is a duplicate run.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from workers.consumer import JobContext
from workers.errors import Permanent, Retryable

JOB_TYPE = "probe"
MAX_SLEEP_MS = 600_000


class ProbeOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    sleep_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_SLEEP_MS)] = 0
    fail: Literal["transient", "permanent"] | None = None
    fail_attempts: Annotated[int, msgspec.Meta(ge=1)] | None = None
    record: bool = True

    def fails(self, attempt: int) -> Literal["transient", "permanent"] | None:
        if self.fail == "transient" and self.fail_attempts is not None:
            return "transient" if attempt <= self.fail_attempts else None
        return self.fail


class ProbeTransient(Retryable):
    """The transient failure a probe was asked for."""


class ProbePermanent(Permanent):
    """The permanent failure a probe was asked for."""


def options_of(payload: dict[str, Any]) -> ProbeOptions:
    try:
        return msgspec.convert(payload, ProbeOptions)
    except msgspec.ValidationError as exc:
        raise Permanent(f"probe options: {exc}") from None


class Probe:
    """The handler; it needs the worker's database pool (application role)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        options = options_of(ctx.payload)
        if not options.record:
            await _hold(options)
            return _fail_or(options, ctx.attempt, {"effect": "none"})
        run_id: int = await self.pool.fetchval(
            "INSERT INTO probe_runs (job_id, generation, attempt, worker)"
            " VALUES ($1, $2, $3, $4) RETURNING run_id",
            ctx.job_id,
            ctx.generation,
            ctx.attempt,
            self.worker,
        )
        await _hold(options)
        failure = options.fails(ctx.attempt)
        if failure is not None:
            await self._finish(run_id, failure)
            _raise(failure, ctx.attempt)
        return await self._effect(ctx, run_id)

    async def _effect(self, ctx: JobContext, run_id: int) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                async with conn.transaction():  # a savepoint: the violation is expected
                    await conn.execute(
                        "INSERT INTO probe_effects (job_id, generation, attempt, run_id)"
                        " VALUES ($1, $2, $3, $4)",
                        ctx.job_id,
                        ctx.generation,
                        ctx.attempt,
                        run_id,
                    )
            except asyncpg.UniqueViolationError:
                earlier = await conn.fetchrow(
                    "SELECT run_id, generation, attempt FROM probe_effects WHERE job_id = $1",
                    ctx.job_id,
                )
                await _finish_on(conn, run_id, "effect_existed")
                assert earlier is not None
                return {
                    "effect": "existed",
                    "run_id": run_id,
                    "effect_run_id": earlier["run_id"],
                }
            await _finish_on(conn, run_id, "effect")
        return {"effect": "recorded", "run_id": run_id}

    async def _finish(self, run_id: int, outcome: str) -> None:
        async with self.pool.acquire() as conn:
            await _finish_on(conn, run_id, outcome)


async def _finish_on(conn: Any, run_id: int, outcome: str) -> None:
    await conn.execute(
        "UPDATE probe_runs SET outcome = $2, finished_at = now() WHERE run_id = $1",
        run_id,
        outcome,
    )


async def _hold(options: ProbeOptions) -> None:
    if options.sleep_ms:
        await asyncio.sleep(options.sleep_ms / 1000)


def _fail_or(options: ProbeOptions, attempt: int, result: dict[str, Any]) -> dict[str, Any]:
    failure = options.fails(attempt)
    if failure is not None:
        _raise(failure, attempt)
    return result


def _raise(failure: Literal["transient", "permanent"], attempt: int) -> None:
    if failure == "transient":
        raise ProbeTransient(f"probe asked to fail transiently (attempt {attempt})")
    raise ProbePermanent(f"probe asked to fail permanently (attempt {attempt})")


def probe_payload(**options: Any) -> dict[str, Any]:
    """A validated payload for ``enqueue(job_type="probe", payload=...)``."""
    built: dict[str, Any] = msgspec.to_builtins(msgspec.convert(options, ProbeOptions))
    return built
