"""Enrollment tokens (``bye_``) and agent runtime keys (``bya_``): their tables.

Same rules as commands/credentials.py: 256 random bits behind a visible
prefix, only the SHA-256 stored, the plaintext shown once. Schema in
schema/migrations/0011_enrollment.sql.

``consume_enrollment_token`` is the single-use gate: one guarded UPDATE, run in
the transaction that appends ``agent.enrolled``. Under READ COMMITTED a second
enrollment racing for the same token waits on the first one's row lock, then
re-checks ``used_at IS NULL`` against the committed row and matches nothing.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from commands.credential_cache import forget_credentials
from commands.credentials import IssuedToken, _touch, hash_token
from commands.ratelimit import Permit, WindowStatus, fetch_credential, with_permit
from schema.pg import AnyPool, Connection

ENROLLMENT_PREFIX: Final = "bye_"
AGENT_KEY_PREFIX: Final = "bya_"


class EnrollmentTokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    expires_at: datetime
    revoked_at: datetime | None
    used_at: datetime | None
    last_used_at: datetime | None


class AgentKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    agent_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    revoked_at: datetime | None  # the key's, or the agent's when the agent is revoked
    last_used_at: datetime | None


# --- enrollment tokens ---------------------------------------------------------------------


async def store_enrollment_token(
    conn: Connection,
    issued: IssuedToken,
    *,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    environment_id: uuid.UUID,
    name: str | None,
    labels: dict[str, str],
    created_by: str,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO enrollment_tokens
            (id, org_id, project_id, environment_id, name, labels, prefix, token_hash,
             created_by, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        """,
        issued.id,
        org_id,
        project_id,
        environment_id,
        name,
        msgspec.json.encode(labels),
        issued.prefix,
        issued.token_hash,
        created_by,
        created_at,
        expires_at,
    )


async def find_enrollment_token(pool: AnyPool, token: str) -> EnrollmentTokenRecord | None:
    digest = hash_token(token)
    row = await pool.fetchrow(
        """
        SELECT id, org_id, project_id, environment_id, expires_at, revoked_at, used_at,
               last_used_at, token_hash
        FROM enrollment_tokens WHERE token_hash = $1
        """,
        digest,
    )
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return EnrollmentTokenRecord(
        id=row["id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        environment_id=row["environment_id"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        used_at=row["used_at"],
        last_used_at=row["last_used_at"],
    )


async def consume_enrollment_token(
    conn: Connection,
    token_id: uuid.UUID,
    *,
    environment_id: uuid.UUID,
    agent_id: uuid.UUID,
    now: datetime,
) -> dict[str, str] | None:
    """Mark the token used by ``agent_id`` if it is still usable here; its labels,
    or None when it is used, revoked, expired or for another environment."""
    labels: bytes | None = await conn.fetchval(
        """
        UPDATE enrollment_tokens SET used_at = $3, agent_id = $4, last_used_at = $3
        WHERE id = $1 AND environment_id = $2
          AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $3
        RETURNING labels
        """,
        token_id,
        environment_id,
        now,
        agent_id,
    )
    return None if labels is None else msgspec.json.decode(labels, type=dict[str, str])


# --- agents and their runtime keys ------------------------------------------------------


async def store_agent(
    conn: Connection,
    *,
    agent_id: uuid.UUID,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    environment_id: uuid.UUID,
    name: str,
    hostname: str | None,
    labels: dict[str, str],
    runtime_version: str | None,
    capabilities: tuple[str, ...],
    enrollment_token_id: uuid.UUID,
    created_at: datetime,
) -> bool:
    """Insert the agent; False when a live agent of the environment has its name
    (the partial unique index decides, so two racing enrollments cannot share one)."""
    try:
        await conn.execute(
            """
            INSERT INTO agents
                (id, org_id, project_id, environment_id, name, hostname, labels,
                 runtime_version, capabilities, enrollment_token_id, revision, created_at,
                 updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)
            """,
            agent_id,
            org_id,
            project_id,
            environment_id,
            name,
            hostname,
            msgspec.json.encode(labels),
            runtime_version,
            list(capabilities),
            enrollment_token_id,
            created_at,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def live_agent_named(conn: Connection, environment_id: uuid.UUID, name: str) -> bool:
    found: bool | None = await conn.fetchval(
        "SELECT true FROM agents WHERE environment_id = $1 AND name = $2 AND revoked_at IS NULL",
        environment_id,
        name,
    )
    return bool(found)


async def store_agent_key(
    conn: Connection, issued: IssuedToken, *, agent_id: uuid.UUID, created_at: datetime
) -> None:
    await conn.execute(
        """
        INSERT INTO agent_keys (id, agent_id, prefix, key_hash, created_at)
        VALUES ($1, $2, $3, $4, $5)
        """,
        issued.id,
        agent_id,
        issued.prefix,
        issued.token_hash,
        created_at,
    )


async def revoke_agent_keys(conn: Connection, agent_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE agent_keys SET revoked_at = $2 WHERE agent_id = $1 AND revoked_at IS NULL",
        agent_id,
        now,
    )
    forget_credentials()


async def lock_agent(conn: Connection, agent_id: uuid.UUID, environment_id: uuid.UUID) -> bool:
    """Lock the agent's row for a key change; False when there is no such agent here.

    Every change of an agent's keys takes this lock first, so a rotation and a
    revocation of one agent never interleave (the stream version would catch it
    too, but only after both had written key rows)."""
    found: bool | None = await conn.fetchval(
        "SELECT true FROM agents WHERE id = $1 AND environment_id = $2 FOR UPDATE",
        agent_id,
        environment_id,
    )
    return bool(found)


async def mark_agent(
    conn: Connection,
    agent_id: uuid.UUID,
    *,
    revision: int,
    now: datetime,
    revoked: bool = False,
) -> None:
    await conn.execute(
        """
        UPDATE agents SET revision = $2, updated_at = $3,
               revoked_at = CASE WHEN $4 THEN $3 ELSE revoked_at END
        WHERE id = $1
        """,
        agent_id,
        revision,
        now,
        revoked,
    )
    if revoked:
        forget_credentials()


_AGENT_KEY_SQL = """
SELECT k.id, k.agent_id, k.key_hash, k.last_used_at,
       coalesce(k.revoked_at, a.revoked_at) AS revoked_at,
       NULL::timestamptz AS expires_at,
       a.org_id, a.project_id, a.environment_id
FROM agent_keys k JOIN agents a ON a.id = k.agent_id
WHERE k.key_hash = $1
"""
_AGENT_KEY_PERMIT_SQL = with_permit(_AGENT_KEY_SQL, "'agent:' || c.agent_id::text")


async def find_agent_key(pool: AnyPool, key: str) -> AgentKeyRecord | None:
    return (await lookup_agent_key(pool, key))[0]


async def lookup_agent_key(
    pool: AnyPool, key: str, permit: Permit | None = None
) -> tuple[AgentKeyRecord | None, WindowStatus | None]:
    """The key's record and, with ``permit``, its agent's rate-limit window (one round trip)."""
    digest = hash_token(key)
    row, window = await fetch_credential(
        pool, _AGENT_KEY_SQL, _AGENT_KEY_PERMIT_SQL, digest, permit
    )
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None, None
    record = AgentKeyRecord(
        id=row["id"],
        agent_id=row["agent_id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        environment_id=row["environment_id"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
    return record, window


async def touch_agent_key(pool: AnyPool, record: AgentKeyRecord, now: datetime) -> bool:
    return await _touch(pool, "agent_keys", record.id, record.last_used_at, now)
