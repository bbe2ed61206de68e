"""Approval: a second operator's consent to a deployment or an execute-mode replay.

State machine (stream ``approval-<id>``)::

    (none) ──request_approval──► pending ──approve──► approved ──revoke──► revoked
                                    │
                                    ├──deny──► denied              (terminal)
                                    ├──expire (now ≥ expires_at)──► expired (terminal)
                                    └──revoke──► revoked           (terminal)

    approve and deny are for OperateEnvironment holders other than the requester
    (403 ``approval_by_requester``); a pending approval past ``expires_at`` can
    no longer be approved or denied (it is ``expired`` in ``effective_status``
    even before the sweeper records ``approval.expired``). Revoking a revoked
    approval and expiring a decided one change nothing.

Posture policy (DOMAIN.md §5, ``approval_required``): ``dev`` never; ``staging``
for deployments with side-effecting capabilities and for execute replays;
``prod`` for every deployment and execute replay. Dry runs never need one.

Approving issues the **approval credential** (``domain.credential``): the
approval's ``CredentialClaims`` signed by ``sign`` (Ed25519, outside
``domain/``), kept on the ``approval.approved`` event. The coverage check that
every user of a credential runs lives in ``domain.credential`` too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.access import Decision, Permission, require_decision
from domain.codec import CODEC, Event
from domain.credential import (
    CREDENTIAL_VERSION,
    CredentialClaims,
    credential_payload,
    encode_credential,
    rfc3339,
)
from domain.environment import Environment, Posture
from domain.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidHistory,
    InvalidInput,
    NotFound,
)

STREAM_TYPE: Final = "approval"
DEFAULT_TTL_S: Final = 24 * 3600
MIN_TTL_S: Final = 60
MAX_TTL_S: Final = 7 * 24 * 3600
SIDE_EFFECTING: Final = frozenset({"http_post", "exec"})

Status = Literal["pending", "approved", "denied", "expired", "revoked"]
SubjectKind = Literal["deployment", "replay"]
Action = Literal["deployment", "replay_execute", "replay_dry_run"]


def stream_id(approval_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{approval_id}"


def approval_required(posture: Posture, capabilities: Iterable[str], action: Action) -> bool:
    """The posture policy of the module docstring."""
    if action == "replay_dry_run" or posture == "dev":
        return False
    if posture == "prod" or action == "replay_execute":
        return True
    return bool(SIDE_EFFECTING.intersection(capabilities))


# --- state and events ------------------------------------------------------------------


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    environment_posture: Posture
    subject_kind: SubjectKind
    subject_id: uuid.UUID
    spec_hash: str
    capabilities: tuple[str, ...]
    requested_by: uuid.UUID
    requested_at: datetime
    expires_at: datetime  # of the request; the credential has its own
    status: Status
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    reason: str | None
    kid: str | None
    credential: str | None
    credential_expires_at: datetime | None
    version: int


class ApprovalRequested(Event, tag="approval.requested", frozen=True, kw_only=True):
    approval_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    environment_posture: Posture
    subject_kind: SubjectKind
    subject_id: uuid.UUID
    spec_hash: str
    capabilities: tuple[str, ...] = ()
    requested_by: uuid.UUID
    requested_at: datetime
    expires_at: datetime


class ApprovalApproved(Event, tag="approval.approved", frozen=True, kw_only=True):
    """``credential`` is a signed statement, not a secret: agents receive it in the bundle."""

    approved_by: uuid.UUID
    at: datetime
    kid: str
    credential: str
    credential_expires_at: datetime


class ApprovalDenied(Event, tag="approval.denied", frozen=True, kw_only=True):
    denied_by: uuid.UUID
    at: datetime
    reason: str | None = None


class ApprovalExpired(Event, tag="approval.expired", frozen=True, kw_only=True):
    at: datetime


class ApprovalRevoked(Event, tag="approval.revoked", frozen=True, kw_only=True):
    revoked_by: uuid.UUID
    at: datetime
    reason: str | None = None


ApprovalEvent = (
    ApprovalRequested | ApprovalApproved | ApprovalDenied | ApprovalExpired | ApprovalRevoked
)
EVENTS: Final = (
    ApprovalRequested,
    ApprovalApproved,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRevoked,
)
CODEC.register(*EVENTS)


class ApproveApproval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = None
    expires_in_s: int | None = None


class DenyApproval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = None


# --- errors ------------------------------------------------------------------------------


class ApprovalIllegalTransition(Conflict):
    code = "approval_illegal_transition"

    def __init__(self, approval: Approval, action: str, status: Status) -> None:
        super().__init__(
            f"cannot {action} a {status} approval",
            context={"approval_id": str(approval.id), "status": status, "action": action},
        )
        self.status_ = status
        self.action = action


class ApprovalByRequester(Forbidden):
    """Separation of duties (DOMAIN.md §3): nobody decides on what they requested."""

    code = "approval_by_requester"


class ApprovalNotUsable(Conflict):
    code = "approval_not_usable"


# --- evolve ------------------------------------------------------------------------------


def evolve(state: Approval | None, event: ApprovalEvent) -> Approval:
    if isinstance(event, ApprovalRequested):
        if state is not None:
            raise InvalidHistory("approval requested twice", context={"approval_id": str(state.id)})
        return Approval(
            id=event.approval_id,
            org_id=event.org_id,
            project_id=event.project_id,
            environment_id=event.environment_id,
            environment_posture=event.environment_posture,
            subject_kind=event.subject_kind,
            subject_id=event.subject_id,
            spec_hash=event.spec_hash,
            capabilities=event.capabilities,
            requested_by=event.requested_by,
            requested_at=event.requested_at,
            expires_at=event.expires_at,
            status="pending",
            decided_by=None,
            decided_at=None,
            reason=None,
            kid=None,
            credential=None,
            credential_expires_at=None,
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before approval.requested")
    version = state.version + 1
    match event:
        case ApprovalApproved():
            return replace(
                state,
                status="approved",
                decided_by=event.approved_by,
                decided_at=event.at,
                kid=event.kid,
                credential=event.credential,
                credential_expires_at=event.credential_expires_at,
                version=version,
            )
        case ApprovalDenied(denied_by=by, at=at, reason=reason):
            return replace(
                state, status="denied", decided_by=by, decided_at=at, reason=reason, version=version
            )
        case ApprovalExpired():
            return replace(state, status="expired", version=version)
        case ApprovalRevoked(reason=reason):
            return replace(state, status="revoked", reason=reason, version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Approval | None:
    state: Approval | None = None
    for event in events:
        if not isinstance(event, ApprovalEvent):
            raise InvalidHistory(f"{type(event).__name__} is not an approval event")
        state = evolve(state, event)
    return state


# --- decisions ---------------------------------------------------------------------------


def effective_status(approval: Approval, now: datetime) -> Status:
    """The status with time applied: a pending request or an issued credential past
    its expiry is ``expired`` whether or not the sweeper has recorded it."""
    if approval.status == "pending" and now >= approval.expires_at:
        return "expired"
    if (
        approval.status == "approved"
        and approval.credential_expires_at is not None
        and now >= approval.credential_expires_at
    ):
        return "expired"
    return approval.status


def require_approval(approval: Approval | None, environment_id: uuid.UUID) -> Approval:
    if approval is None or approval.environment_id != environment_id:
        raise NotFound("approval not found", code="approval_not_found")
    return approval


def request_approval(
    environment: Environment,
    *,
    approval_id: uuid.UUID,
    subject_kind: SubjectKind,
    subject_id: uuid.UUID,
    spec_hash: str,
    capabilities: Iterable[str],
    requested_by: uuid.UUID,
    now: datetime,
    ttl_s: int = DEFAULT_TTL_S,
) -> tuple[ApprovalEvent, ...]:
    at = _second(now)
    return (
        ApprovalRequested(
            approval_id=approval_id,
            org_id=environment.org_id,
            project_id=environment.project_id,
            environment_id=environment.id,
            environment_posture=environment.posture,
            subject_kind=subject_kind,
            subject_id=subject_id,
            spec_hash=spec_hash,
            capabilities=tuple(sorted(set(capabilities))),
            requested_by=requested_by,
            requested_at=at,
            expires_at=at + timedelta(seconds=ttl_s),
        ),
    )


def approve(
    approval: Approval,
    *,
    approver_id: uuid.UUID,
    authorization: Decision,
    now: datetime,
    kid: str,
    sign: Callable[[bytes], bytes],
    expires_in_s: int | None = None,
) -> tuple[ApprovalEvent, ...]:
    """Issue the credential: ``sign`` gets ``credential_payload``'s bytes (Ed25519, by ``kid``)."""
    _require_decider(approval, approver_id, authorization, now, "approve")
    ttl = DEFAULT_TTL_S if expires_in_s is None else expires_in_s
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise InvalidInput(
            "expires_in_s is out of range",
            code="approval_ttl_invalid",
            errors=(FieldError("/expires_in_s", f"between {MIN_TTL_S} and {MAX_TTL_S} seconds"),),
        )
    issued_at = _second(now)
    claims = CredentialClaims(
        v=CREDENTIAL_VERSION,
        kid=kid,
        org_id=str(approval.org_id),
        project_id=str(approval.project_id),
        environment_id=str(approval.environment_id),
        environment_posture=approval.environment_posture,
        spec_hash=approval.spec_hash,
        capabilities=sorted(set(approval.capabilities)),
        issued_at=rfc3339(issued_at),
        expires_at=rfc3339(issued_at + timedelta(seconds=ttl)),
        issued_by=str(approver_id),
        approval_id=str(approval.id),
    )
    payload = credential_payload(claims)
    return (
        ApprovalApproved(
            approved_by=approver_id,
            at=issued_at,
            kid=kid,
            credential=encode_credential(payload, sign(payload)),
            credential_expires_at=issued_at + timedelta(seconds=ttl),
        ),
    )


def deny(
    approval: Approval,
    *,
    approver_id: uuid.UUID,
    authorization: Decision,
    now: datetime,
    reason: str | None = None,
) -> tuple[ApprovalEvent, ...]:
    _require_decider(approval, approver_id, authorization, now, "deny")
    return (ApprovalDenied(denied_by=approver_id, at=_second(now), reason=reason),)


def expire(approval: Approval, now: datetime) -> tuple[ApprovalEvent, ...]:
    """For the sweeper: record the expiry of a pending request that is due; else nothing."""
    if approval.status == "pending" and now >= approval.expires_at:
        return (ApprovalExpired(at=_second(now)),)
    return ()


def revoke(
    approval: Approval,
    *,
    by: uuid.UUID,
    authorization: Decision,
    now: datetime,
    reason: str | None = None,
) -> tuple[ApprovalEvent, ...]:
    """Withdraw a request or an issued credential (the requester may, too).

    Agents verify offline and cannot learn of a revocation: the cloud refuses to
    build or replay under a revoked approval, and short TTLs bound the rest.
    """
    _require_operator(authorization)
    if approval.status == "revoked":
        return ()
    status = effective_status(approval, now)
    if status not in ("pending", "approved"):
        raise ApprovalIllegalTransition(approval, "revoke", status)
    return (ApprovalRevoked(revoked_by=by, at=_second(now), reason=reason),)


def require_usable(approval: Approval, now: datetime) -> str:
    """The credential of an approved, unexpired, unrevoked approval (the cloud's own check)."""
    status = effective_status(approval, now)
    if status != "approved" or approval.credential is None:
        raise ApprovalNotUsable(
            f"the approval is {status}",
            context={"approval_id": str(approval.id), "status": status},
        )
    return approval.credential


def _require_operator(authorization: Decision) -> None:
    if authorization.permission is not Permission.OPERATE_ENVIRONMENT:
        raise ValueError("approval decisions need an OperateEnvironment authorization")
    require_decision(authorization, "approval")


def _require_decider(
    approval: Approval, approver_id: uuid.UUID, authorization: Decision, now: datetime, action: str
) -> None:
    _require_operator(authorization)
    status = effective_status(approval, now)
    if status != "pending":
        raise ApprovalIllegalTransition(approval, action, status)
    if approver_id == approval.requested_by:
        raise ApprovalByRequester(
            f"you requested this; another operator must {action} it",
            context={"approval_id": str(approval.id)},
        )


def _second(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("domain times are timezone-aware")
    return at.astimezone(UTC).replace(microsecond=0)
