"""Personal access tokens: minting, hashing and lookup.

A token is ``byp_`` + 43 URL-safe characters (256 random bits). Only its
SHA-256 is stored; the plaintext is shown once, to whoever created it. The
visible prefix lets leak scanners find tokens (README, "Leaked tokens").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

import asyncpg
import msgspec

from schema.pg import Connection

PAT_PREFIX = "byp_"
_TOKEN_CHARS = 43  # secrets.token_urlsafe(32)
LAST_USED_GRANULARITY = timedelta(minutes=1)


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    token: str  # plaintext: returned once, never stored or logged
    prefix: str
    token_hash: bytes


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    token_hash: bytes


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def mint_token(prefix: str = PAT_PREFIX) -> IssuedToken:
    token = prefix + secrets.token_urlsafe(32)
    return IssuedToken(
        id=uuid.uuid4(),
        token=token,
        prefix=token[: len(prefix) + 6],
        token_hash=hash_token(token),
    )


def looks_like(token: str, prefix: str) -> bool:
    body = token[len(prefix) :]
    return (
        token.startswith(prefix)
        and len(body) == _TOKEN_CHARS
        and all(c.isalnum() or c in "-_" for c in body)
    )


async def store_token(
    conn: Connection,
    issued: IssuedToken,
    *,
    user_id: uuid.UUID,
    name: str,
    expires_at: datetime | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO personal_access_tokens (id, user_id, name, prefix, token_hash, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        issued.id,
        user_id,
        name,
        issued.prefix,
        issued.token_hash,
        expires_at,
    )


async def find_token(pool: asyncpg.Pool, token: str) -> TokenRecord | None:
    digest = hash_token(token)
    row = await pool.fetchrow(
        """
        SELECT id, user_id, expires_at, revoked_at, last_used_at, token_hash
        FROM personal_access_tokens WHERE token_hash = $1
        """,
        digest,
    )
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        token_hash=bytes(row["token_hash"]),
    )


async def touch_token(pool: asyncpg.Pool, record: TokenRecord, now: datetime) -> None:
    """Record last use, at most once a minute per token (no write per request)."""
    if record.last_used_at is not None and now - record.last_used_at < LAST_USED_GRANULARITY:
        return
    await pool.execute(
        "UPDATE personal_access_tokens SET last_used_at = $2 WHERE id = $1", record.id, now
    )
