"""Logins between ``GET /auth/login`` and ``GET /auth/callback``, in PostgreSQL.

The provider sends the browser back to whichever API process the load
balancer picks, so what the callback needs (the nonce and the PKCE verifier)
cannot live in the process that started the login. Each pending login is one
row of ``oidc_pending_logins`` (schema/migrations/0012_oidc.sql):

* found by the SHA-256 of its state value, never the value itself;
* its nonce and verifier sealed with AES-GCM under a key derived from the state
  (HMAC-SHA-256), with the state's hash as associated data, so someone who can
  read the table still cannot finish a login whose code they intercepted;
* single use: the callback deletes the row as it reads it, before anything
  else, so a replayed callback finds nothing, however the first one ended;
* valid for ``PENDING_TTL``; expired rows are swept by later logins.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import DomainError
from schema.pg import AnyPool

PENDING_TTL: Final = timedelta(minutes=10)
# The state values this API issues (secrets.token_urlsafe(32)); anything else is
# refused without a lookup.
STATE_LENGTH: Final = 43
_SEAL_LABEL: Final = b"byteor-cloud oidc pending login v1"
_IV_BYTES: Final = 12
_SWEEP_BATCH: Final = 100


class StateInvalid(DomainError):
    """Unknown, already used, tampered with, or missing."""

    status = 400
    code = "oidc_state_invalid"


class StateExpired(DomainError):
    status = 400
    code = "oidc_state_expired"


class PendingLogin(msgspec.Struct, frozen=True, kw_only=True):
    nonce: str
    code_verifier: str


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def _key(state: str) -> bytes:
    return hmac.new(state.encode(), _SEAL_LABEL, hashlib.sha256).digest()


def seal(state: str, pending: PendingLogin) -> bytes:
    iv = secrets.token_bytes(_IV_BYTES)
    box = AESGCM(_key(state)).encrypt(iv, msgspec.json.encode(pending), state_hash(state))
    return iv + box


def unseal(state: str, sealed: bytes) -> PendingLogin:
    try:
        plain = AESGCM(_key(state)).decrypt(
            sealed[:_IV_BYTES], sealed[_IV_BYTES:], state_hash(state)
        )
        return msgspec.json.decode(plain, type=PendingLogin)
    except (InvalidTag, msgspec.DecodeError):
        raise StateInvalid("the login state does not match any login in progress") from None


def plausible_state(state: str | None) -> bool:
    return (
        state is not None
        and len(state) == STATE_LENGTH
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in state)
    )


async def save_pending(pool: AnyPool, state: str, pending: PendingLogin, now: datetime) -> None:
    # Sweep a bounded batch of expired logins first: abandoned logins must not
    # pile up, and a login is rare enough to carry this cost.
    await pool.execute(
        """
        DELETE FROM oidc_pending_logins WHERE state_hash IN (
            SELECT state_hash FROM oidc_pending_logins WHERE expires_at < $1 LIMIT $2
        )
        """,
        now,
        _SWEEP_BATCH,
    )
    await pool.execute(
        """
        INSERT INTO oidc_pending_logins (state_hash, sealed, created_at, expires_at)
        VALUES ($1, $2, $3, $4)
        """,
        state_hash(state),
        seal(state, pending),
        now,
        now + PENDING_TTL,
    )


async def take_pending(pool: AnyPool, state: str | None, now: datetime) -> PendingLogin:
    """The login ``state`` names, removed so that it cannot be used again."""
    if state is None or not plausible_state(state):
        raise StateInvalid("the callback carries no valid login state")
    row = await pool.fetchrow(
        "DELETE FROM oidc_pending_logins WHERE state_hash = $1 RETURNING sealed, expires_at",
        state_hash(state),
    )
    if row is None:
        raise StateInvalid("the login state does not match any login in progress")
    if row["expires_at"] <= now:
        raise StateExpired("the login took too long; start again at GET /auth/login")
    return unseal(state, bytes(row["sealed"]))
