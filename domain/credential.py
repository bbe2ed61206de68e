"""The approval credential (DOMAIN.md §5): its exact signed bytes, the key set, the coverage check.

An approval credential is ``<b64url(payload)>.<b64url(sig)>``
(unpadded base64url), an Ed25519 signature over the canonical payload bytes
of ``credential_payload``: the JSON object of ``CredentialClaims`` with keys
sorted, no whitespace, UTF-8; times RFC 3339 UTC to the second with ``Z``;
ids lower-case hyphenated UUIDs; ``capabilities`` sorted and unique. Signing
and verifying happen outside ``domain/`` (``sign``/``verify`` callables), so
this module fixes the bytes and the rules, not the cryptography library.
Issued by ``domain.approval.approve``.

The coverage check (``check_coverage``) is shared by the deploy path, agents
verifying offline and execute-mode replay. It rejects, in this order, with
``CoverageRejected`` (403) carrying one of ``REJECTION_CODES``:

=================================  =================================================
approval_unsupported_version       ``v`` is not 1 (checked first: ``v`` decides how
                                   the rest is read)
approval_unknown_key               ``kid`` is not in the key set, or the key's
                                   ``not_before``/``not_after`` window does not hold
                                   ``issued_at`` (a retired key still verifies what
                                   it signed while it was valid)
approval_bad_signature             the signature does not verify, or the credential
                                   is not well-formed (not two base64url parts, not
                                   canonical JSON of the claims)
approval_spec_hash_mismatch        ``spec_hash`` is not the spec being run
approval_wrong_environment         ``org_id``/``project_id``/``environment_id`` or
                                   ``environment_posture`` differ
approval_expired                   ``now`` is at or past ``expires_at``
approval_missing_capabilities      the credential lacks a required capability
=================================  =================================================
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Final, Literal, NoReturn

import msgspec

from domain.environment import Posture
from domain.errors import Forbidden, InvalidInput

CREDENTIAL_VERSION: Final = 1

KeyStatus = Literal["active", "retired"]

REJECTION_CODES: Final = (
    "approval_unknown_key",
    "approval_bad_signature",
    "approval_unsupported_version",
    "approval_spec_hash_mismatch",
    "approval_wrong_environment",
    "approval_expired",
    "approval_missing_capabilities",
)


class CoverageRejected(Forbidden):
    """The credential does not cover what is about to run; ``code`` says which rule."""

    code = "approval_not_covering"


class CredentialClaims(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The signed payload; a wire format, not an event (unknown fields are refused)."""

    v: int
    kid: str
    org_id: str
    project_id: str
    environment_id: str
    environment_posture: Posture
    spec_hash: str
    capabilities: list[str]
    issued_at: str
    expires_at: str
    issued_by: str
    approval_id: str


def credential_payload(claims: CredentialClaims) -> bytes:
    """The exact bytes that are signed (canonical JSON, module docstring)."""
    return msgspec.json.encode(msgspec.to_builtins(claims), order="sorted")


def encode_credential(payload: bytes, signature: bytes) -> str:
    return f"{_b64(payload)}.{_b64(signature)}"


def rfc3339(at: datetime) -> str:
    """UTC, to the second, ``Z``: the one time format of the credential."""
    if at.tzinfo is None:
        raise ValueError("credential times are timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """The inverse of ``rfc3339``; anything else is a ValueError."""
    at = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if rfc3339(at) != text:
        raise ValueError(f"not canonical: {text!r}")
    return at


class SigningKey(msgspec.Struct, frozen=True, kw_only=True):
    """A public key as the key set (``signing_keys.json``) lists it."""

    kid: str
    public_key: bytes  # raw 32-byte Ed25519 public key (``x``, base64url, in the key set)
    status: KeyStatus = "active"
    not_before: datetime | None = None
    not_after: datetime | None = None


class KeySetEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the key set JSON (DOMAIN.md §5) served to agents."""

    kid: str
    alg: Literal["EdDSA"] = "EdDSA"
    crv: Literal["Ed25519"] = "Ed25519"
    x: str
    status: KeyStatus
    not_before: str | None = None
    not_after: str | None = None


class KeySet(msgspec.Struct, frozen=True, kw_only=True):
    keys: list[KeySetEntry]


def key_set_json(keys: Iterable[SigningKey]) -> bytes:
    """``{"keys": [...]}`` sorted by kid, times as in the credential."""
    entries = [
        KeySetEntry(
            kid=k.kid,
            x=_b64(k.public_key),
            status=k.status,
            not_before=None if k.not_before is None else rfc3339(k.not_before),
            not_after=None if k.not_after is None else rfc3339(k.not_after),
        )
        for k in sorted(keys, key=lambda k: k.kid)
    ]
    return msgspec.json.encode(KeySet(keys=entries))


def keys_from_key_set(data: bytes) -> dict[str, SigningKey]:
    """The keys of a key set document, by kid (what an agent verifies with offline)."""
    try:
        key_set = msgspec.json.decode(data, type=KeySet)
        return {
            e.kid: SigningKey(
                kid=e.kid,
                public_key=_strict_unb64(e.x),
                status=e.status,
                not_before=None if e.not_before is None else parse_rfc3339(e.not_before),
                not_after=None if e.not_after is None else parse_rfc3339(e.not_after),
            )
            for e in key_set.keys
        }
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidInput(f"not a key set: {exc}", code="key_set_invalid") from None


Verify = Callable[[bytes, bytes, bytes], bool]
"""``verify(public_key, payload, signature)``: Ed25519, outside ``domain/``."""


class Coverage(msgspec.Struct, frozen=True, kw_only=True):
    """What is about to run, which the credential must cover."""

    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    environment_posture: Posture
    spec_hash: str
    capabilities: tuple[str, ...] = ()


def check_coverage(
    credential: str,
    *,
    keys: Mapping[str, SigningKey],
    verify: Verify,
    required: Coverage,
    now: datetime,
) -> CredentialClaims:
    """The claims of a credential that covers ``required`` at ``now``; else CoverageRejected."""
    payload, signature, data = _split(credential)
    if data.get("v") != CREDENTIAL_VERSION or isinstance(data.get("v"), bool):
        _reject("approval_unsupported_version", "unsupported credential version", v=data.get("v"))
    claims, issued_at, expires_at = _claims(payload, data)
    key = keys.get(claims.kid)
    if key is None or not _key_valid_at(key, issued_at):
        _reject("approval_unknown_key", "the credential's key is unknown", kid=claims.kid)
    if not verify(key.public_key, payload, signature):
        _reject("approval_bad_signature", "the signature does not verify", kid=claims.kid)
    if claims.spec_hash != required.spec_hash:
        _reject(
            "approval_spec_hash_mismatch",
            "the credential approves another spec",
            approved=claims.spec_hash,
            running=required.spec_hash,
        )
    if (
        claims.org_id != str(required.org_id)
        or claims.project_id != str(required.project_id)
        or claims.environment_id != str(required.environment_id)
        or claims.environment_posture != required.environment_posture
    ):
        _reject(
            "approval_wrong_environment",
            "the credential is for another environment or posture",
            environment_id=claims.environment_id,
            posture=claims.environment_posture,
        )
    if now >= expires_at:
        _reject("approval_expired", "the credential has expired", expires_at=claims.expires_at)
    missing = sorted(set(required.capabilities) - set(claims.capabilities))
    if missing:
        _reject(
            "approval_missing_capabilities",
            "the credential does not cover every capability",
            missing=missing,
        )
    return claims


def _split(credential: str) -> tuple[bytes, bytes, dict[str, object]]:
    parts = credential.split(".")
    if len(parts) != 2:
        _reject("approval_bad_signature", "a credential is <payload>.<signature>")
    payload, signature = _unb64(parts[0]), _unb64(parts[1])
    try:
        data = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        _reject("approval_bad_signature", "the payload is not JSON")
    if not isinstance(data, dict):
        _reject("approval_bad_signature", "the payload is not a JSON object")
    return payload, signature, data


def _claims(payload: bytes, data: dict[str, object]) -> tuple[CredentialClaims, datetime, datetime]:
    try:
        claims = msgspec.convert(data, CredentialClaims)
        issued_at = parse_rfc3339(claims.issued_at)
        expires_at = parse_rfc3339(claims.expires_at)
    except (msgspec.ValidationError, ValueError):
        _reject("approval_bad_signature", "the payload is not a credential")
    # Only the canonical bytes are accepted, so one approval has one credential text.
    if credential_payload(claims) != payload or claims.capabilities != sorted(
        set(claims.capabilities)
    ):
        _reject("approval_bad_signature", "the payload is not canonical")
    return claims, issued_at, expires_at


def _key_valid_at(key: SigningKey, at: datetime) -> bool:
    if key.not_before is not None and at < key.not_before:
        return False
    return key.not_after is None or at <= key.not_after


def _reject(code: str, detail: str, **context: object) -> NoReturn:
    raise CoverageRejected(detail, code=code, context=context)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _strict_unb64(text: str) -> bytes:
    """Unpadded base64url with one encoding per byte string (no padding, no stray bits)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if _b64(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def _unb64(text: str) -> bytes:
    try:
        return _strict_unb64(text)
    except ValueError:
        _reject("approval_bad_signature", "not canonical base64url")
