"""Run one command: idempotency, load → decide → append, retry, respond.

Every write route goes through ``execute``. It owns the parts every command
shares so that route handlers only decide:

- ``Idempotency-Key``: the same key from the same principal returns the first
  response (status, body, position) and appends nothing; the same key with a
  different request is refused (422 ``idempotency_key_reused``). The claim is
  written in the same statement as the events, so a crash can never leave a
  claim without its events or events without their claim.
- Optimistic concurrency: a version conflict re-runs the decision once on
  fresh state, then answers 409.
- ``X-ByteOr-Position``: the position of the command's last event, for
  read-your-writes queries (``?min_position=``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
from litestar import Request, Response

from commands.store import (
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    IdempotencyClaim,
    StoredResponse,
)
from domain.codec import EventCodec, decode_command
from domain.envelope import Metadata, RecordedEvent, StreamAppend
from domain.errors import FieldError, InvalidInput, PreconditionFailed
from domain.principal import Principal

S = TypeVar("S")
C = TypeVar("C", bound=msgspec.Struct)

POSITION_HEADER = "X-ByteOr-Position"
MAX_IDEMPOTENCY_KEY = 255


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a decision produced: events to append and the response to give."""

    appends: Sequence[StreamAppend]
    tenant_id: uuid.UUID | None
    status_code: int
    body: Any  # a msgspec-encodable representation, or None for 204
    etag: str | None = None
    # Position to report when nothing was appended (a no-op update).
    position: int | None = None


class CommandDeps(msgspec.Struct, frozen=True, kw_only=True):
    store: EventStore
    codec: EventCodec
    clock: Callable[[], datetime]
    new_id: Callable[[], uuid.UUID] = uuid.uuid4


class Loaded(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """An aggregate read from its stream, with what responses need besides state."""

    stream_id: str
    state: S | None
    version: int
    created_at: datetime | None
    updated_at: datetime | None
    last_position: int


async def load(
    deps: CommandDeps,
    stream_id: str,
    fold: Callable[[list[Any]], S | None],
) -> Loaded[S]:
    records: list[RecordedEvent] = await deps.store.read_stream(stream_id)
    events = [deps.codec.decode_recorded(r) for r in records]
    return Loaded(
        stream_id=stream_id,
        state=fold(events),
        version=records[-1].stream_version if records else 0,
        created_at=records[0].recorded_at if records else None,
        updated_at=records[-1].recorded_at if records else None,
        last_position=records[-1].position if records else 0,
    )


def deps_of(request: Request[Any, Any, Any]) -> CommandDeps:
    deps: CommandDeps = request.app.state.command_deps
    return deps


def stream_append(
    deps: CommandDeps, stream_id: str, stream_type: str, version: int, events: Sequence[Any]
) -> list[StreamAppend]:
    """``events`` (domain events) encoded as one append at ``version``; none → nothing."""
    if not events:
        return []
    return [
        StreamAppend(
            stream_id=stream_id,
            stream_type=stream_type,
            expected_version=version,
            events=tuple(deps.codec.encode(e) for e in events),
        )
    ]


async def body_command(request: Request[Any, Any, Any], cls: type[C]) -> C | None:
    """The request body decoded as command ``cls`` (422 with paths when it is not one),
    or None for an empty body: for commands whose every field is optional."""
    raw = await request.body()
    return decode_command(cls, raw) if raw.strip() else None


def etag_of(version: int) -> str:
    return f'"{version}"'


def check_if_match(request: Request[Any, Any, Any], version: int) -> None:
    """Honour ``If-Match`` (a revision ETag or ``*``); absent means unconditional."""
    header = request.headers.get("if-match")
    if header is None:
        return
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    if "*" in tags and version > 0:
        return
    if etag_of(version) not in tags:
        raise PreconditionFailed(
            "the resource has changed since you read it",
            code="revision_mismatch",
            errors=(FieldError("header.If-Match", f"current revision is {etag_of(version)}"),),
            context={"current": version},
        )


def request_hash(request: Request[Any, Any, Any], body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.url.path.encode())
    digest.update(b"\0" + body)
    return digest.hexdigest()


def idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(
            "Idempotency-Key must be 1..255 printable characters",
            code="invalid_idempotency_key",
            errors=(FieldError("header.Idempotency-Key", "1..255 printable characters"),),
        )
    return key


def correlation_id(request: Request[Any, Any, Any]) -> uuid.UUID:
    given = request.headers.get("x-correlation-id")
    if given:
        try:
            return uuid.UUID(given)
        except ValueError:
            pass
    return uuid.uuid4()


def _replay(stored: StoredResponse, expected_hash: str) -> Response[bytes]:
    if stored.request_hash != expected_hash:
        raise InvalidInput(
            "this Idempotency-Key was already used for a different request",
            code="idempotency_key_reused",
            errors=(FieldError("header.Idempotency-Key", "already used for another request"),),
        )
    headers = {"Idempotent-Replayed": "true"}
    if stored.last_position is not None:
        headers[POSITION_HEADER] = str(stored.last_position)
    return Response(
        content=stored.body,
        status_code=stored.status_code,
        media_type="application/json",
        headers=headers,
    )


# Attempts of a command whose append found its stream moved: each re-reads and
# decides again, so a command that no longer applies fails on its own rules
# (If-Match, state checks); commuting ones (agents' reports on one deployment)
# go through instead of answering 409 under contention.
DECIDE_TRIES = 5


async def execute(
    request: Request[Principal, Any, Any],
    deps: CommandDeps,
    decide: Callable[[datetime], Awaitable[Outcome]],
) -> Response[Any]:
    """Run ``decide(now)`` and append its outcome; ``now`` is also the events' time."""
    principal = request.user
    body = await request.body()
    key = idempotency_key(request)
    fingerprint = request_hash(request, body)
    if key is not None:
        stored = await deps.store.find_response(principal.key, key)
        if stored is not None:
            return _replay(stored, fingerprint)
    correlation = correlation_id(request)
    for attempt in range(1, DECIDE_TRIES + 1):
        now = deps.clock()
        outcome = await decide(now)
        content = b"" if outcome.body is None else msgspec.json.encode(outcome.body)
        claim = (
            IdempotencyClaim(
                principal=principal.key,
                key=key,
                request_hash=fingerprint,
                status_code=outcome.status_code,
                body=content,
            )
            if key is not None
            else None
        )
        meta = Metadata(
            actor=principal.actor,
            tenant_id=outcome.tenant_id,
            correlation_id=correlation,
            command_id=key,
            recorded_at=now,
        )
        try:
            result = await deps.store.append(outcome.appends, meta, idempotency=claim)
        except ConcurrencyError:
            if attempt == DECIDE_TRIES:
                raise
            # Decide again on the state as it is now; a short random pause keeps
            # writers that collided from colliding again in step.
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))
            continue
        except DuplicateCommand:
            # A concurrent request with the same key won the race: answer as it did.
            assert key is not None
            stored = await deps.store.find_response(principal.key, key)
            if stored is None:
                raise
            return _replay(stored, fingerprint)
        headers = {"X-Correlation-ID": str(correlation)}
        position = result.last_position or outcome.position
        if position:
            headers[POSITION_HEADER] = str(position)
        if outcome.etag is not None:
            headers["ETag"] = outcome.etag
        return Response(
            content=content,
            status_code=outcome.status_code,
            media_type="application/json",
            headers=headers,
        )
    raise AssertionError("unreachable")
