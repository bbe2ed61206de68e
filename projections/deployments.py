"""The deployments and approvals read model (``deployment_view``, ``approval_view``).

Consumes deployment.* and approval.* events, whoever appends them (the API, the
build job, agents' reports). Each event re-folds its stream with the domain's
own ``fold`` up to that event and stores the state whole as JSON, so the read
model can never disagree with the aggregate's rules; streams are short (a few
dozen events at most). The upsert is guarded by the stream version, so
applying an event twice, or an older one after a newer, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from domain import approval as approval_mod
from domain import config_bundle as bundle_mod
from domain import deployment as deployment_mod
from domain.codec import EventCodec, default_codec
from domain.envelope import EVENT_COLUMNS, RecordedEvent
from schema.pg import Connection

NAME: Final = "deployments"

_STREAM = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE stream_id = $1 AND stream_version <= $2
ORDER BY stream_version
"""

_UPSERT_APPROVAL = """
INSERT INTO approval_view (id, org_id, project_id, environment_id, status, state,
    stream_version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, state = EXCLUDED.state,
    stream_version = EXCLUDED.stream_version, updated_at = EXCLUDED.updated_at
WHERE approval_view.stream_version < EXCLUDED.stream_version
"""

_UPSERT_DEPLOYMENT = """
INSERT INTO deployment_view (id, org_id, project_id, environment_id, status, state,
    stream_version, created_at, updated_at, approval_id, requested_tuning)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, state = EXCLUDED.state,
    stream_version = EXCLUDED.stream_version, updated_at = EXCLUDED.updated_at
WHERE deployment_view.stream_version < EXCLUDED.stream_version
"""


def deployment_of(row: Any) -> deployment_mod.Deployment:
    return msgspec.json.decode(row["state"], type=deployment_mod.Deployment)


def approval_of(row: Any) -> approval_mod.Approval:
    return msgspec.json.decode(row["state"], type=approval_mod.Approval)


class DeploymentProjection:
    name: str = NAME
    tables: Sequence[str] = ("deployment_view", "approval_view")

    def __init__(self, codec: EventCodec | None = None) -> None:
        self.codec = codec or default_codec()

    def handles(self, event_type: str) -> bool:
        return event_type.split(".", 1)[0] in (
            deployment_mod.STREAM_TYPE,
            approval_mod.STREAM_TYPE,
        )

    async def apply(self, conn: Connection, event: RecordedEvent) -> None:
        events = await self._stream(conn, event.stream_id, event.stream_version)
        if event.stream_type == approval_mod.STREAM_TYPE:
            approval = approval_mod.fold(events)
            if approval is not None:
                await conn.execute(
                    _UPSERT_APPROVAL,
                    *_columns(approval),
                    event.stream_version,
                    event.recorded_at,
                )
            return
        if event.stream_type != deployment_mod.STREAM_TYPE:
            return
        deployment = deployment_mod.fold(events)
        if deployment is None:
            return
        tuning = None
        if event.stream_version == 1:
            # Bundles are immutable once used, so the tuning read now is the one deployed.
            bundle = bundle_mod.fold(
                await self._stream(conn, bundle_mod.stream_id(deployment.bundle_id), 2**31 - 1)
            )
            tuning = None if bundle is None else msgspec.json.encode(bundle.content.tuning)
        await conn.execute(
            _UPSERT_DEPLOYMENT,
            *_columns(deployment),
            event.stream_version,
            event.recorded_at,
            deployment.approval_id,
            tuning,
        )

    async def _stream(self, conn: Connection, stream_id: str, upto: int) -> list[Any]:
        rows = await conn.fetch(_STREAM, stream_id, upto)
        return [self.codec.decode_recorded(RecordedEvent(*r)) for r in rows]


def _columns(state: deployment_mod.Deployment | approval_mod.Approval) -> tuple[Any, ...]:
    return (
        state.id,
        state.org_id,
        state.project_id,
        state.environment_id,
        state.status,
        msgspec.json.encode(state),
    )
