"""Approval credentials, by generation: what is issued verifies, and no edit of it does.

An edited credential must be refused with one of the seven coverage codes,
never accepted and never with another exception (the check runs offline on
agents, where an unexpected exception would be a crash, not a refusal).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import approval
from domain.credential import REJECTION_CODES, Coverage, CoverageRejected, check_coverage
from tests.lifecycle import ALICE, BOB, ENV, NOW, OPERATE, ORG, PROJECT, Signer, an_env, verify

SIGNER = Signer("kid-p")
KEYS = {SIGNER.kid: SIGNER.key()}
capabilities = st.lists(st.sampled_from(["http_post", "exec"]), unique=True).map(tuple)
spec_hashes = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
_b64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


def issue(spec_hash: str, caps: tuple[str, ...], ttl: int) -> str:
    pending = approval.fold(
        approval.request_approval(
            an_env("prod"),
            approval_id=uuid.UUID(int=0xAB),
            subject_kind="replay",
            subject_id=uuid.UUID(int=0xCD),
            spec_hash=spec_hash,
            capabilities=caps,
            requested_by=ALICE,
            now=NOW,
        )
    )
    assert pending is not None
    events = approval.approve(
        pending,
        approver_id=BOB,
        authorization=OPERATE,
        now=NOW,
        kid=SIGNER.kid,
        sign=SIGNER.sign,
        expires_in_s=ttl,
    )
    decided = approval.evolve(pending, events[0])
    assert decided.credential is not None
    return decided.credential


def required(spec_hash: str, caps: tuple[str, ...]) -> Coverage:
    return Coverage(
        org_id=ORG,
        project_id=PROJECT,
        environment_id=ENV,
        environment_posture="prod",
        spec_hash=spec_hash,
        capabilities=caps,
    )


@settings(max_examples=100, deadline=None)
@given(spec_hashes, capabilities, st.integers(min_value=60, max_value=7 * 24 * 3600), st.data())
def test_an_issued_credential_covers_its_spec_until_it_expires(
    spec_hash: str, caps: tuple[str, ...], ttl: int, data: st.DataObject
) -> None:
    credential = issue(spec_hash, caps, ttl)
    needed = tuple(data.draw(st.sets(st.sampled_from(caps)) if caps else st.just(set())))
    before = NOW + timedelta(seconds=data.draw(st.integers(min_value=0, max_value=ttl - 1)))
    claims = check_coverage(
        credential, keys=KEYS, verify=verify, required=required(spec_hash, needed), now=before
    )
    assert claims.spec_hash == spec_hash
    with pytest.raises(CoverageRejected) as info:
        check_coverage(
            credential,
            keys=KEYS,
            verify=verify,
            required=required(spec_hash, needed),
            now=NOW + timedelta(seconds=ttl),
        )
    assert info.value.code == "approval_expired"


@settings(max_examples=300, deadline=None)
@given(spec_hashes, capabilities, st.data())
def test_every_edit_of_a_credential_is_refused_with_a_coverage_code(
    spec_hash: str, caps: tuple[str, ...], data: st.DataObject
) -> None:
    credential = issue(spec_hash, caps, 3600)
    position = data.draw(st.integers(min_value=0, max_value=len(credential) - 1))
    replacement = data.draw(
        st.sampled_from(_b64_alphabet).filter(lambda c: c != credential[position])
    )
    edited = credential[:position] + replacement + credential[position + 1 :]
    with pytest.raises(CoverageRejected) as info:
        check_coverage(
            edited, keys=KEYS, verify=verify, required=required(spec_hash, caps), now=NOW
        )
    assert info.value.code in REJECTION_CODES
