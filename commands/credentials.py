"""Credentials: minting, hashing, storage and lookup, one table per family.

A bearer secret is a visible family prefix + 43 URL-safe characters (256
random bits): ``byp_`` personal access tokens, ``byo_`` organization API keys,
``bys_`` human sessions. Only its SHA-256 is stored (a fast hash suffices for
256-bit secrets and lets the lookup use an index); the plaintext is shown once,
to whoever created it. The visible prefix lets leak scanners find tokens
(README, "Leaked tokens").

Local passwords are different: people choose them, so they are stored as a
salted, memory-hard scrypt hash (``hash_password``/``verify_password``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Final

import msgspec

from commands.ratelimit import Permit, WindowStatus, fetch_credential, with_permit
from domain.errors import FieldError, InvalidInput
from schema.pg import AnyPool, Connection

PAT_PREFIX: Final = "byp_"
API_KEY_PREFIX: Final = "byo_"
SESSION_PREFIX: Final = "bys_"
_TOKEN_CHARS = 43  # secrets.token_urlsafe(32)
_TOKEN_BODY = re.compile(rf"[A-Za-z0-9_-]{{{_TOKEN_CHARS}}}")
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
    scopes: tuple[str, ...] = ()


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    role: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


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
    return token.startswith(prefix) and _TOKEN_BODY.fullmatch(token, len(prefix)) is not None


def check_expiry(expires_at: datetime | None, now: datetime) -> None:
    """A requested expiry must carry a time zone and lie in the future."""
    if expires_at is None:
        return
    if expires_at.tzinfo is None:
        raise InvalidInput(
            "expires_at needs a time zone (RFC 3339)",
            code="invalid_expiry",
            errors=(FieldError("/expires_at", "an RFC 3339 time with a zone"),),
        )
    if expires_at <= now:
        raise InvalidInput(
            "expires_at must be in the future",
            code="invalid_expiry",
            errors=(FieldError("/expires_at", "must be in the future"),),
        )


# --- personal access tokens -----------------------------------------------------------


async def store_token(
    conn: Connection,
    issued: IssuedToken,
    *,
    user_id: uuid.UUID,
    name: str,
    expires_at: datetime | None,
    scopes: tuple[str, ...] = (),
    created_at: datetime | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO personal_access_tokens
            (id, user_id, name, prefix, token_hash, expires_at, scopes, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()))
        """,
        issued.id,
        user_id,
        name,
        issued.prefix,
        issued.token_hash,
        expires_at,
        list(scopes),
        created_at,
    )


_TOKEN_SQL = """
SELECT id, user_id, expires_at, revoked_at, last_used_at, token_hash, scopes
FROM personal_access_tokens WHERE token_hash = $1
"""
_TOKEN_PERMIT_SQL = with_permit(_TOKEN_SQL, "'user:' || c.user_id::text")


async def find_token(pool: AnyPool, token: str) -> TokenRecord | None:
    return (await lookup_token(pool, token))[0]


async def lookup_token(
    pool: AnyPool, token: str, permit: Permit | None = None
) -> tuple[TokenRecord | None, WindowStatus | None]:
    """The token's record and, with ``permit``, its user's rate-limit window (one round trip)."""
    digest = hash_token(token)
    row, window = await fetch_credential(pool, _TOKEN_SQL, _TOKEN_PERMIT_SQL, digest, permit)
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None, None
    record = TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        token_hash=bytes(row["token_hash"]),
        scopes=tuple(row["scopes"] or ()),
    )
    return record, window


async def touch_token(pool: AnyPool, record: TokenRecord, now: datetime) -> bool:
    """Record last use, at most once a minute per token (no write per request);
    True when it wrote."""
    return await _touch(pool, "personal_access_tokens", record.id, record.last_used_at, now)


async def _touch(
    pool: AnyPool, table: str, id_: uuid.UUID, last_used_at: datetime | None, now: datetime
) -> bool:
    if last_used_at is not None and now - last_used_at < LAST_USED_GRANULARITY:
        return False
    # ``table`` is one of this module's constants, never input.
    await pool.execute(f"UPDATE {table} SET last_used_at = $2 WHERE id = $1", id_, now)
    return True


# --- organization API keys ---------------------------------------------------------------


async def store_api_key(
    conn: Connection,
    issued: IssuedToken,
    *,
    org_id: uuid.UUID,
    name: str,
    role: str,
    created_by: str,
    expires_at: datetime | None,
    created_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO org_api_keys
            (id, org_id, name, role, prefix, key_hash, created_by, expires_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        issued.id,
        org_id,
        name,
        role,
        issued.prefix,
        issued.token_hash,
        created_by,
        expires_at,
        created_at,
    )


_API_KEY_SQL = """
SELECT id, org_id, role, expires_at, revoked_at, last_used_at, key_hash
FROM org_api_keys WHERE key_hash = $1
"""
_API_KEY_PERMIT_SQL = with_permit(_API_KEY_SQL, "'api_key:' || c.id::text")


async def find_api_key(pool: AnyPool, key: str) -> ApiKeyRecord | None:
    return (await lookup_api_key(pool, key))[0]


async def lookup_api_key(
    pool: AnyPool, key: str, permit: Permit | None = None
) -> tuple[ApiKeyRecord | None, WindowStatus | None]:
    """The key's record and, with ``permit``, its rate-limit window (one round trip)."""
    digest = hash_token(key)
    row, window = await fetch_credential(pool, _API_KEY_SQL, _API_KEY_PERMIT_SQL, digest, permit)
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None, None
    record = ApiKeyRecord(
        id=row["id"],
        org_id=row["org_id"],
        role=row["role"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
    return record, window


async def touch_api_key(pool: AnyPool, record: ApiKeyRecord, now: datetime) -> bool:
    return await _touch(pool, "org_api_keys", record.id, record.last_used_at, now)


# --- human sessions ----------------------------------------------------------------------


async def store_session(
    conn: Connection | AnyPool,
    issued: IssuedToken,
    *,
    user_id: uuid.UUID,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO user_sessions (id, user_id, prefix, token_hash, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        issued.id,
        user_id,
        issued.prefix,
        issued.token_hash,
        created_at,
        expires_at,
    )


_SESSION_SQL = """
SELECT id, user_id, expires_at, revoked_at, last_used_at, token_hash
FROM user_sessions WHERE token_hash = $1
"""
_SESSION_PERMIT_SQL = with_permit(_SESSION_SQL, "'user:' || c.user_id::text")


async def find_session(pool: AnyPool, token: str) -> SessionRecord | None:
    return (await lookup_session(pool, token))[0]


async def lookup_session(
    pool: AnyPool, token: str, permit: Permit | None = None
) -> tuple[SessionRecord | None, WindowStatus | None]:
    """The session's record and, with ``permit``, its user's rate-limit window."""
    digest = hash_token(token)
    row, window = await fetch_credential(pool, _SESSION_SQL, _SESSION_PERMIT_SQL, digest, permit)
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None, None
    record = SessionRecord(
        id=row["id"],
        user_id=row["user_id"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
    return record, window


async def touch_session(pool: AnyPool, record: SessionRecord, now: datetime) -> bool:
    return await _touch(pool, "user_sessions", record.id, record.last_used_at, now)


# --- local passwords (scrypt) ---------------------------------------------------------------

# scrypt cost: N=2**15, r=8, p=1 uses 32 MiB and takes tens of milliseconds,
# the interactive-login setting recommended by the scrypt paper and OWASP's
# minimum (N=2**17 is their preference; login here is local development only).
SCRYPT_N: Final = 2**15
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=2 * 128 * r * n * p + 1024 * 1024,
        dklen=_HASH_BYTES,
    )


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(
            f"a password has {MIN_PASSWORD}..{MAX_PASSWORD} characters",
            code="invalid_password",
            errors=(FieldError("password", f"{MIN_PASSWORD}..{MAX_PASSWORD} characters"),),
        )


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` with a fresh random salt (base64, unpadded)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time comparison against a ``hash_password`` string; False if malformed."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash of nothing anyone knows: verified against when the e-mail is unknown, so
# a failed login costs the same whether or not the user exists.
_DUMMY_HASH: str | None = None


def dummy_password_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


async def store_password(conn: Connection, user_id: uuid.UUID, encoded: str, now: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO user_passwords (user_id, password_hash, updated_at) VALUES ($1, $2, $3)
        ON CONFLICT (user_id) DO UPDATE SET password_hash = $2, updated_at = $3
        """,
        user_id,
        encoded,
        now,
    )


async def find_password(pool: AnyPool, email: str) -> tuple[uuid.UUID, str] | None:
    """(user id, password hash) for a normalized e-mail address with a local password."""
    row = await pool.fetchrow(
        """
        SELECT e.user_id, p.password_hash FROM user_emails e
        JOIN user_passwords p ON p.user_id = e.user_id WHERE e.email = $1
        """,
        email,
    )
    return None if row is None else (row["user_id"], row["password_hash"])
