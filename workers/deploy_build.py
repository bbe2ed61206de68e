"""The ``deploy_bundle_build`` job: ``approved → building → deploying`` (DOMAIN.md §5).

Payload ``{"deployment_id": ...}``, queued in the append that made the
deployment ``approved`` (commands/deployments.py). Steps, each decided on the
deployment's stream as it is now:

1. ``start_build`` with a fresh per-bundle secrets key, sealed under the
   organization's data key, in the same event: the key is recorded before
   anything is uploaded, so a redelivered job opens the same key and produces
   the same bytes and content address (decision 0011);
2. the approval, when the deployment is governed, must still be usable
   (``require_usable``), and its credential goes into the bundle;
3. secrets are materialized (Vault refs, then inline ones), the tarball is built
   and signed with the organization's newest active key, and stored under its
   content address (put is idempotent);
4. ``complete_build`` with the digest: agents may fetch it.

Failures: a ``Permanent`` one (Vault not configured, a secret missing, no
signing key, an unusable approval, …) appends ``fail_build`` with the reason
before the job is recorded ``failed``, so the deployment never stays
``building``; a ``Retryable`` one (Vault or object storage unreachable) leaves
it ``building`` for the next attempt, except on the last attempt, which fails
it too. Duplicate deliveries: ``start_build``/``complete_build``/``fail_build``
are no-ops when already done, and every append is at the stream version read
(a concurrent append makes the handler read and decide again).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec

from commands.object_store import ObjectStore, ObjectStoreUnavailable
from commands.pgstore import PgEventStore
from commands.secret_keys import SecretCipher, SecretKeyError
from commands.signing_keys import NoActiveSigningKey, active_signer, key_set_bytes
from commands.store import ConcurrencyError, EventStore
from domain import approval as approval_mod
from domain import config_bundle as bundle_mod
from domain import deployment as deployment_mod
from domain import environment as env_mod
from domain import version as version_mod
from domain.codec import Event, EventCodec, default_codec
from domain.envelope import Actor, Metadata, RecordedEvent, StreamAppend
from domain.errors import DomainError
from workers.bundle_secrets import materialize as materialize_secrets
from workers.bundle_secrets import open_bundle_key, seal_bundle_key
from workers.bundle_tar import BundleInputs, SignWith, build_bundle, new_secrets_key
from workers.consumer import Handler, JobContext
from workers.errors import Permanent, Retryable
from workers.vault_refs import VaultResolver

log = logging.getLogger("byteor.jobs.deploy_bundle_build")

JOB_TYPE: Final = "deploy_bundle_build"
WORKER = Actor(kind="system", id="byteor-worker")
TRIES: Final = 5


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    deployment_id: uuid.UUID


class BuildRefused(Permanent):
    """The build cannot succeed as things are (no master key, no signing key, …)."""


class ObjectStoreDown(Retryable):
    pass


class _Stream(msgspec.Struct, frozen=True, kw_only=True):
    state: deployment_mod.Deployment | None
    records: list[RecordedEvent]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DeployBuild:
    """The handler: the event store, the worker's pool (signing keys), the organization
    data keys, object storage and Vault (None when not configured: fail closed)."""

    def __init__(
        self,
        store: EventStore,
        pool: asyncpg.Pool,
        *,
        cipher: SecretCipher | None,
        objects: ObjectStore | None,
        vault: VaultResolver | None,
        codec: EventCodec | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.pool = pool
        self.cipher = cipher
        self.objects = objects
        self.vault = vault
        self.codec = codec or default_codec()
        self.clock = clock
        self._started = asyncio.Lock()
        self._store_ready = False

    async def __call__(self, ctx: JobContext) -> dict[str, Any] | None:
        try:
            payload = msgspec.convert(ctx.payload, Payload)
        except msgspec.ValidationError as exc:
            raise Permanent(f"not a deploy_bundle_build payload: {exc}") from None
        try:
            return await self._build(ctx, payload.deployment_id)
        except Permanent as exc:
            await self._fail(ctx, payload.deployment_id, f"{type(exc).__name__}: {exc}")
            raise
        except Exception as exc:
            if ctx.attempt >= ctx.max_attempts:
                detail = f"gave up after {ctx.attempt} attempts: {type(exc).__name__}: {exc}"
                await self._fail(ctx, payload.deployment_id, detail)
            raise

    # --- steps --------------------------------------------------------------------------

    async def _build(self, ctx: JobContext, deployment_id: uuid.UUID) -> dict[str, Any]:
        stream = await self._read(deployment_id)
        state = stream.state
        if state is None:
            return {"outcome": "deployment_gone"}
        if state.build_job_id not in (None, ctx.job_id):
            return {"outcome": "built_by_another_job", "status": state.status}
        if state.status not in ("approved", "building"):
            return {"outcome": "nothing_to_build", "status": state.status}
        cipher = self._cipher()
        if state.status == "approved":
            stream = await self._start(ctx, stream, cipher)
            state = stream.state
            assert state is not None
            if state.status != "building" or state.build_job_id != ctx.job_id:
                return {"outcome": "nothing_to_build", "status": state.status}
        if state.secrets_key is None:
            raise BuildRefused("the build started without a recorded secrets key")
        try:
            secrets_key = await open_bundle_key(
                cipher, org_id=state.org_id, deployment_id=state.id, sealed=state.secrets_key
            )
        except SecretKeyError as exc:
            raise BuildRefused(f"the bundle's secrets key cannot be opened: {exc}") from None
        inputs, adapters = await self._inputs(state)
        secrets = await materialize_secrets(
            adapters, org_id=state.org_id, cipher=cipher, vault=self.vault
        )
        try:
            async with self.pool.acquire() as conn:
                kid, sign = await active_signer(conn, cipher, state.org_id)
        except NoActiveSigningKey as exc:
            raise BuildRefused(str(exc)) from None
        try:
            built = build_bundle(
                inputs, secrets, signer=SignWith(kid, sign), secrets_key=secrets_key
            )
        except ValueError as exc:
            raise BuildRefused(f"the bundle's inputs disagree: {exc}") from None
        objects = await self._objects()
        try:
            stored = await objects.put_bundle(state.org_id, built.data)
        except ObjectStoreUnavailable as exc:
            raise ObjectStoreDown(f"object storage unavailable: {exc}") from None
        await self._decide(
            ctx,
            deployment_id,
            lambda s: deployment_mod.complete_build(
                s, bundle_digest=built.digest, bundle_key=stored.key, kid=kid, now=self.clock()
            ),
        )
        log.info(
            "deploy bundle built",
            extra={"deployment_id": str(state.id), "digest": built.digest, "size": built.size},
        )
        return {"outcome": "built", "digest": built.digest, "size": built.size, "kid": kid}

    async def _start(self, ctx: JobContext, stream: _Stream, cipher: SecretCipher) -> _Stream:
        for _ in range(TRIES):
            state = stream.state
            assert state is not None
            if state.status != "approved":
                return stream
            sealed = await seal_bundle_key(
                cipher, org_id=state.org_id, deployment_id=state.id, key=new_secrets_key()
            )
            events = deployment_mod.start_build(state, ctx.job_id, self.clock(), secrets_key=sealed)
            if await self._append(stream, events):
                return await self._read(state.id)
            stream = await self._read(state.id)
        raise RuntimeError("the deployment kept changing while the build started")

    async def _inputs(self, state: deployment_mod.Deployment) -> tuple[BundleInputs, Sequence[Any]]:
        bundle = await self._fold(bundle_mod.stream_id(state.bundle_id), bundle_mod.fold)
        version = await self._fold(version_mod.stream_id(state.version_id), version_mod.fold)
        env = await self._fold(env_mod.stream_id(state.environment_id), env_mod.fold)
        if bundle is None or version is None or env is None:
            raise BuildRefused("the config bundle, version or environment is gone")
        credential: str | None = None
        if state.approval_id is not None:
            approval = await self._fold(
                approval_mod.stream_id(state.approval_id), approval_mod.fold
            )
            if approval is None:
                raise BuildRefused("the deployment's approval is gone")
            try:
                credential = approval_mod.require_usable(approval, self.clock())
            except DomainError as exc:
                raise BuildRefused(f"approval not usable: {exc}") from None
        inputs = BundleInputs(
            org_id=state.org_id,
            project_id=state.project_id,
            environment_id=state.environment_id,
            environment_posture=env.posture,
            deployment_id=state.id,
            config_bundle_id=bundle.id,
            version_id=version.id,
            spec_kv=version.spec.encode("utf-8"),
            spec_hash=state.spec_hash,
            capabilities=state.capabilities,
            tuning=bundle.content.tuning,
            adapters=bundle.content.adapters,
            parameters=dict(bundle.content.parameters),
            approval_credential=credential,
            signing_keys_json=await key_set_bytes(self.pool, state.org_id),
        )
        return inputs, bundle.content.adapters

    async def _fail(self, ctx: JobContext, deployment_id: uuid.UUID, detail: str) -> None:
        """``building → failed`` (``approved`` first goes through ``building``)."""

        def decide(state: deployment_mod.Deployment) -> tuple[deployment_mod.DeploymentEvent, ...]:
            now = self.clock()
            if state.status == "approved":
                started = deployment_mod.start_build(state, ctx.job_id, now)
                after = state
                for event in started:
                    after = deployment_mod.evolve(after, event)
                return (*started, *deployment_mod.fail_build(after, detail, now))
            if state.status == "building" and state.build_job_id == ctx.job_id:
                return deployment_mod.fail_build(state, detail, now)
            return ()

        try:
            await self._decide(ctx, deployment_id, decide)
        except Exception:
            # The job's own failure is still recorded by the consume loop.
            log.exception("could not record the failed build", extra={"job_id": str(ctx.job_id)})

    # --- store helpers ------------------------------------------------------------------

    def _cipher(self) -> SecretCipher:
        if self.cipher is None:
            raise BuildRefused("no master key is configured (BYTEOR_CLOUD_MASTER_KEYS)")
        return self.cipher

    async def aclose(self) -> None:
        """Close the object storage client if a build opened it (the worker stops)."""
        async with self._started:
            if self._store_ready and self.objects is not None:
                self._store_ready = False
                await self.objects.close()

    async def _objects(self) -> ObjectStore:
        if self.objects is None:
            raise BuildRefused("no object storage is configured (BYTEOR_CLOUD_S3_*)")
        async with self._started:
            if not self._store_ready:
                try:
                    await self.objects.start()
                except ObjectStoreUnavailable as exc:
                    raise ObjectStoreDown(f"object storage unavailable: {exc}") from None
                self._store_ready = True
        return self.objects

    async def _read(self, deployment_id: uuid.UUID) -> _Stream:
        records = await self.store.read_stream(deployment_mod.stream_id(deployment_id))
        state = deployment_mod.fold(self.codec.decode_recorded(r) for r in records)
        return _Stream(state=state, records=list(records))

    async def _fold(self, stream_id: str, fold: Callable[[Any], Any]) -> Any:
        records = await self.store.read_stream(stream_id)
        return fold(self.codec.decode_recorded(r) for r in records)

    async def _append(self, stream: _Stream, events: Sequence[Event]) -> bool:
        """Append at the version read; False when the stream moved (decide again)."""
        if not events:
            return True
        assert stream.state is not None
        last = stream.records[-1]
        meta = Metadata(
            actor=WORKER,
            tenant_id=stream.state.org_id,
            correlation_id=stream.records[0].correlation_id,
            causation_id=last.event_id,
        )
        append = StreamAppend(
            stream_id=deployment_mod.stream_id(stream.state.id),
            stream_type=deployment_mod.STREAM_TYPE,
            expected_version=last.stream_version,
            events=tuple(self.codec.encode(e) for e in events),
        )
        try:
            await self.store.append([append], meta)
        except ConcurrencyError:
            return False
        return True

    async def _decide(
        self,
        ctx: JobContext,
        deployment_id: uuid.UUID,
        decide: Callable[[deployment_mod.Deployment], Sequence[Event]],
    ) -> None:
        for _ in range(TRIES):
            stream = await self._read(deployment_id)
            if stream.state is None:
                return
            if await self._append(stream, decide(stream.state)):
                return
        raise RuntimeError(f"deployment {deployment_id} kept changing (job {ctx.job_id})")


def deploy_build_handler(
    pool: asyncpg.Pool,
    *,
    cipher: SecretCipher | None,
    objects: ObjectStore | None,
    vault: VaultResolver | None,
) -> Handler:
    """The handler on the worker's pool (ops/processes.py RUNTIME_HANDLERS)."""
    return DeployBuild(PgEventStore(pool), pool, cipher=cipher, objects=objects, vault=vault)
