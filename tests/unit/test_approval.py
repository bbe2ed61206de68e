from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import msgspec
import pytest

from domain import approval, credential
from domain.approval import (
    Approval,
    ApprovalApproved,
    ApprovalByRequester,
    ApprovalExpired,
    ApprovalIllegalTransition,
    ApprovalNotUsable,
)
from domain.credential import (
    REJECTION_CODES,
    Coverage,
    CoverageRejected,
    CredentialClaims,
    SigningKey,
    check_coverage,
    credential_payload,
    encode_credential,
)
from domain.environment import Posture
from domain.errors import Forbidden, InvalidInput
from tests.lifecycle import (
    ALICE,
    BOB,
    ENV,
    NOW,
    OPERATE,
    ORG,
    PROJECT,
    SPEC_HASH,
    VIEW_ONLY,
    Signer,
    an_env,
    through_codec,
    verify,
)

APPROVAL = uuid.UUID(int=0xAA)
DEPLOYMENT = uuid.UUID(int=0xDD)
SIGNER = Signer("kid-1")


def pending(posture: Posture = "prod", capabilities: tuple[str, ...] = ("http_post",)) -> Approval:
    events = approval.request_approval(
        an_env(posture),
        approval_id=APPROVAL,
        subject_kind="deployment",
        subject_id=DEPLOYMENT,
        spec_hash=SPEC_HASH,
        capabilities=capabilities,
        requested_by=ALICE,
        now=NOW,
    )
    state = approval.fold(through_codec(events))
    assert state is not None
    return state


def approved(ttl: int | None = None, **kwargs: object) -> Approval:
    state = pending(**kwargs)  # type: ignore[arg-type]
    events = approval.approve(
        state,
        approver_id=BOB,
        authorization=OPERATE,
        now=NOW + timedelta(minutes=5),
        kid=SIGNER.kid,
        sign=SIGNER.sign,
        expires_in_s=ttl,
    )
    after = approval.fold(through_codec([*_requested(state), *events]))
    assert after is not None
    return after


def _requested(state: Approval) -> tuple[approval.ApprovalEvent, ...]:
    return approval.request_approval(
        an_env(state.environment_posture),
        approval_id=state.id,
        subject_kind=state.subject_kind,
        subject_id=state.subject_id,
        spec_hash=state.spec_hash,
        capabilities=state.capabilities,
        requested_by=state.requested_by,
        now=state.requested_at,
    )


def coverage(**overrides: object) -> Coverage:
    fields: dict[str, object] = {
        "org_id": ORG,
        "project_id": PROJECT,
        "environment_id": ENV,
        "environment_posture": "prod",
        "spec_hash": SPEC_HASH,
        "capabilities": ("http_post",),
    }
    fields.update(overrides)
    return msgspec.convert(fields, Coverage)


def check(credential: str, **overrides: object) -> CredentialClaims:
    keys = overrides.pop("keys", {SIGNER.kid: SIGNER.key()})
    now = overrides.pop("now", NOW + timedelta(hours=1))
    return check_coverage(
        credential,
        keys=keys,  # type: ignore[arg-type]
        verify=verify,
        required=coverage(**overrides),
        now=now,  # type: ignore[arg-type]
    )


def rejected(credential: str, **overrides: object) -> str:
    with pytest.raises(CoverageRejected) as info:
        check(credential, **overrides)
    assert info.value.status == 403
    assert info.value.code in REJECTION_CODES
    return info.value.code


def signed(signer: Signer = SIGNER, **fields: object) -> str:
    base: dict[str, object] = {
        "v": 1,
        "kid": signer.kid,
        "org_id": str(ORG),
        "project_id": str(PROJECT),
        "environment_id": str(ENV),
        "environment_posture": "prod",
        "spec_hash": SPEC_HASH,
        "capabilities": ["http_post"],
        "issued_at": "2026-12-03T18:00:00Z",
        "expires_at": "2026-12-04T18:00:00Z",
        "issued_by": str(BOB),
        "approval_id": str(APPROVAL),
    }
    base.update(fields)
    payload = msgspec.json.encode(base, order="sorted")
    return encode_credential(payload, signer.sign(payload))


# --- posture policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("posture", "capabilities", "action", "required"),
    [
        ("dev", ("exec",), "deployment", False),
        ("dev", (), "replay_execute", False),
        ("staging", (), "deployment", False),
        ("staging", ("http_post",), "deployment", True),
        ("staging", ("exec",), "deployment", True),
        ("staging", (), "replay_execute", True),
        ("staging", ("exec",), "replay_dry_run", False),
        ("prod", (), "deployment", True),
        ("prod", (), "replay_execute", True),
        ("prod", (), "replay_dry_run", False),
    ],
)
def test_the_posture_policy(
    posture: Posture, capabilities: tuple[str, ...], action: approval.Action, required: bool
) -> None:
    assert approval.approval_required(posture, capabilities, action) is required


# --- lifecycle ------------------------------------------------------------------------


def test_a_request_is_pending_for_24_hours_by_default() -> None:
    state = pending()
    assert state.status == "pending"
    assert (state.requested_by, state.environment_posture) == (ALICE, "prod")
    assert state.expires_at - state.requested_at == timedelta(hours=24)


def test_approving_issues_a_credential_that_covers_the_deployment() -> None:
    state = approved()
    assert (state.status, state.decided_by, state.kid) == ("approved", BOB, "kid-1")
    assert state.credential is not None
    claims = check(state.credential)
    assert claims.approval_id == str(APPROVAL)
    assert claims.issued_by == str(BOB)
    assert claims.expires_at == "2026-12-04T18:05:00Z"
    assert approval.require_usable(state, NOW + timedelta(hours=1)) == state.credential


def test_the_credential_payload_is_canonical_json_with_the_contract_fields() -> None:
    state = approved()
    assert state.credential is not None
    payload_b64, signature_b64 = state.credential.split(".")
    payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
    assert payload == (
        b'{"approval_id":"00000000-0000-0000-0000-0000000000aa",'
        b'"capabilities":["http_post"],'
        b'"environment_id":"00000000-0000-0000-0000-000000000003",'
        b'"environment_posture":"prod",'
        b'"expires_at":"2026-12-04T18:05:00Z",'
        b'"issued_at":"2026-12-03T18:05:00Z",'
        b'"issued_by":"00000000-0000-0000-0000-000000000b0b",'
        b'"kid":"kid-1",'
        b'"org_id":"00000000-0000-0000-0000-000000000001",'
        b'"project_id":"00000000-0000-0000-0000-000000000002",'
        b'"spec_hash":"sha256:' + b"ab" * 32 + b'",'
        b'"v":1}'
    )
    assert "=" not in state.credential
    signature = base64.urlsafe_b64decode(signature_b64 + "==")
    assert verify(SIGNER.public, payload, signature)
    claims = msgspec.json.decode(payload, type=CredentialClaims)
    assert credential_payload(claims) == payload


def test_the_requester_cannot_approve_or_deny() -> None:
    state = pending()
    with pytest.raises(ApprovalByRequester) as info:
        approval.approve(
            state, approver_id=ALICE, authorization=OPERATE, now=NOW, kid="k", sign=SIGNER.sign
        )
    assert (info.value.status, info.value.code) == (403, "approval_by_requester")
    with pytest.raises(ApprovalByRequester):
        approval.deny(state, approver_id=ALICE, authorization=OPERATE, now=NOW)


def test_approving_needs_operate_environment() -> None:
    with pytest.raises(Forbidden) as info:
        approval.approve(
            pending(),
            approver_id=BOB,
            authorization=VIEW_ONLY,
            now=NOW,
            kid="k",
            sign=SIGNER.sign,
        )
    assert info.value.code == "permission_denied"


@pytest.mark.parametrize("ttl", [0, 59, 7 * 24 * 3600 + 1])
def test_the_credential_ttl_is_bounded(ttl: int) -> None:
    with pytest.raises(InvalidInput) as info:
        approved(ttl=ttl)
    assert info.value.code == "approval_ttl_invalid"
    assert info.value.errors[0].path == "/expires_in_s"


def test_deny_is_terminal() -> None:
    state = pending()
    events = approval.deny(state, approver_id=BOB, authorization=OPERATE, now=NOW, reason="no")
    denied = approval.evolve(state, events[0])
    assert (denied.status, denied.reason) == ("denied", "no")
    with pytest.raises(ApprovalIllegalTransition) as info:
        approval.approve(
            denied, approver_id=BOB, authorization=OPERATE, now=NOW, kid="k", sign=SIGNER.sign
        )
    assert info.value.code == "approval_illegal_transition"


def test_a_pending_request_expires_after_its_ttl() -> None:
    state = pending()
    due = state.expires_at
    assert approval.expire(state, due - timedelta(seconds=1)) == ()
    assert approval.effective_status(state, due) == "expired"
    with pytest.raises(ApprovalIllegalTransition):
        approval.approve(
            state, approver_id=BOB, authorization=OPERATE, now=due, kid="k", sign=SIGNER.sign
        )
    events = approval.expire(state, due)
    assert events == (ApprovalExpired(at=due),)
    assert approval.evolve(state, events[0]).status == "expired"
    assert approval.expire(approved(), due) == ()


def test_an_issued_credential_is_no_longer_usable_once_expired_or_revoked() -> None:
    state = approved(ttl=3600)
    assert state.credential_expires_at is not None
    with pytest.raises(ApprovalNotUsable) as info:
        approval.require_usable(state, state.credential_expires_at)
    assert info.value.code == "approval_not_usable"
    events = approval.revoke(state, by=ALICE, authorization=OPERATE, now=NOW + timedelta(minutes=9))
    revoked = approval.evolve(state, events[0])
    assert revoked.status == "revoked"
    with pytest.raises(ApprovalNotUsable):
        approval.require_usable(revoked, NOW + timedelta(minutes=10))
    assert approval.revoke(revoked, by=ALICE, authorization=OPERATE, now=NOW) == ()


def test_a_pending_request_can_be_revoked_but_a_denied_one_cannot() -> None:
    state = pending()
    events = approval.revoke(state, by=ALICE, authorization=OPERATE, now=NOW)
    assert approval.evolve(state, events[0]).status == "revoked"
    denied = approval.evolve(
        state, approval.deny(state, approver_id=BOB, authorization=OPERATE, now=NOW)[0]
    )
    with pytest.raises(ApprovalIllegalTransition):
        approval.revoke(denied, by=ALICE, authorization=OPERATE, now=NOW)


def test_events_round_trip_through_the_codec() -> None:
    state = pending()
    events = approval.approve(
        state, approver_id=BOB, authorization=OPERATE, now=NOW, kid="kid-1", sign=SIGNER.sign
    )
    assert through_codec(events) == list(events)
    assert isinstance(events[0], ApprovalApproved)
    assert approved().version == 2


# --- the coverage check: one test per rejection code -----------------------------------------


def test_coverage_accepts_a_well_formed_credential() -> None:
    assert check(signed()).kid == "kid-1"


def test_coverage_rejects_an_unknown_key() -> None:
    assert rejected(signed(), keys={}) == "approval_unknown_key"
    stranger = Signer("kid-9")
    assert rejected(signed(stranger)) == "approval_unknown_key"
    too_late = SIGNER.key(not_before=NOW + timedelta(days=1))
    assert rejected(signed(), keys={SIGNER.kid: too_late}) == "approval_unknown_key"


def test_coverage_rejects_a_bad_signature() -> None:
    forger = Signer("kid-1")  # same kid, another private key
    assert rejected(signed(forger)) == "approval_bad_signature"
    payload, signature = signed().split(".")
    other_payload, _ = signed(spec_hash="sha256:" + "cd" * 32).split(".")
    assert rejected(f"{other_payload}.{signature}") == "approval_bad_signature"
    for malformed in ("", "abc", "a.b.c", f"{payload}.{signature}=", f"{payload}!.{signature}"):
        assert rejected(malformed) == "approval_bad_signature"


def test_coverage_rejects_an_unsupported_version() -> None:
    assert rejected(signed(v=2)) == "approval_unsupported_version"
    assert rejected(signed(v=True)) == "approval_unsupported_version"


def test_coverage_rejects_a_spec_hash_mismatch() -> None:
    assert rejected(signed(), spec_hash="sha256:" + "cd" * 32) == "approval_spec_hash_mismatch"


@pytest.mark.parametrize(
    "overrides",
    [
        {"environment_id": uuid.UUID(int=4)},
        {"environment_posture": "staging"},
        {"project_id": uuid.UUID(int=99)},
        {"org_id": uuid.UUID(int=99)},
    ],
)
def test_coverage_rejects_the_wrong_environment_or_posture(overrides: dict[str, object]) -> None:
    assert rejected(signed(), **overrides) == "approval_wrong_environment"


def test_coverage_rejects_an_expired_credential() -> None:
    expires = NOW + timedelta(days=1)
    assert check(signed(), now=expires - timedelta(seconds=1))
    assert rejected(signed(), now=expires) == "approval_expired"


def test_coverage_rejects_missing_capabilities() -> None:
    assert rejected(signed(), capabilities=("http_post", "exec")) == "approval_missing_capabilities"
    assert check(signed(capabilities=["exec", "http_post"]), capabilities=("exec",))


def test_the_seven_rejection_codes_are_distinct() -> None:
    assert len(set(REJECTION_CODES)) == 7


def test_a_retired_key_still_verifies_what_it_signed_while_valid() -> None:
    retired = SIGNER.key(status="retired", not_after=NOW + timedelta(hours=1))
    assert check(signed(), keys={SIGNER.kid: retired})


def test_the_key_set_document_round_trips() -> None:
    keys = [SIGNER.key(not_before=NOW), Signer("kid-2").key(status="retired")]
    document = credential.key_set_json(keys)
    decoded = msgspec.json.decode(document)
    assert decoded["keys"][0] == {
        "kid": "kid-1",
        "alg": "EdDSA",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(SIGNER.public).rstrip(b"=").decode(),
        "status": "active",
        "not_before": "2026-12-03T18:00:00Z",
        "not_after": None,
    }
    parsed = credential.keys_from_key_set(document)
    assert parsed == {k.kid: k for k in keys}
    assert check(signed(), keys=parsed)
    with pytest.raises(InvalidInput) as info:
        credential.keys_from_key_set(b'{"keys": [{"kid": "k", "x": "!!", "status": "active"}]}')
    assert info.value.code == "key_set_invalid"


def test_signing_keys_compare_by_value() -> None:
    assert SigningKey(kid="a", public_key=b"x") == SigningKey(kid="a", public_key=b"x")
