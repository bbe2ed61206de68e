"""Bootstrap: the first user, their organization and a personal access token.

``byteor-cloud admin create-user --email E --org NAME`` calls ``create_user``.
Everything happens in one transaction: the e-mail claim, the token row, and
the user, organization and membership events, so a failure leaves nothing.
Run again with the same e-mail, it reuses the user and adds the organization
and a fresh token. With ``password`` (``--password-stdin``), it also sets the
user's local password (an scrypt hash; ``user.password_set``, never the hash).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from commands.credentials import (
    check_password,
    hash_password,
    mint_token,
    store_password,
    store_token,
)
from commands.pgstore import PgEventStore
from domain import organization as org_mod
from domain import user as user_mod
from domain.codec import EventCodec, convert_command, default_codec
from domain.envelope import SYSTEM, Metadata, StreamAppend


class Bootstrapped(msgspec.Struct, frozen=True, kw_only=True):
    user_id: uuid.UUID
    org_id: uuid.UUID
    token_id: uuid.UUID
    token: str  # plaintext, shown once
    created_user: bool


async def create_user(
    pool: asyncpg.Pool,
    *,
    email: str,
    org_name: str,
    now: datetime,
    token_name: str = "bootstrap",
    codec: EventCodec | None = None,
    password: str | None = None,
) -> Bootstrapped:
    codec = codec or default_codec()
    user_cmd = convert_command(user_mod.CreateUser, {"email": email})
    org_cmd = convert_command(org_mod.CreateOrganization, {"name": org_name})
    password_hash = None
    if password is not None:
        check_password(password)
        password_hash = hash_password(password)
    normalized = user_mod.normalize_email(user_cmd.email)
    store = PgEventStore(pool)
    issued = mint_token()
    org_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchval(
            "SELECT user_id FROM user_emails WHERE email = $1", normalized
        )
        user_id: uuid.UUID = existing or uuid.uuid4()
        if existing is None:
            await conn.execute(
                "INSERT INTO user_emails (email, user_id) VALUES ($1, $2)", normalized, user_id
            )
            user_events = list(user_mod.create_user(user_cmd, user_id=user_id))
            user_version = 0
        else:
            records = await store.read_stream(user_mod.stream_id(user_id))
            user_events = []
            user_version = records[-1].stream_version if records else 0
        history = user_events if existing is None else [codec.decode_recorded(r) for r in records]
        user = user_mod.fold(history)
        user_events += user_mod.issue_token(
            user, token_id=issued.id, name=token_name, prefix=issued.prefix
        )
        if password_hash is not None:
            user_events += user_mod.set_password(user)
            await store_password(conn, user_id, password_hash, now)
        org_events = org_mod.create_organization(org_cmd, org_id=org_id, created_by=user_id)
        appends = [
            StreamAppend(
                stream_id=user_mod.stream_id(user_id),
                stream_type=user_mod.STREAM_TYPE,
                expected_version=user_version,
                events=tuple(codec.encode(e) for e in user_events),
            ),
            StreamAppend(
                stream_id=org_mod.stream_id(org_id),
                stream_type=org_mod.STREAM_TYPE,
                expected_version=0,
                events=tuple(codec.encode(e) for e in org_events),
            ),
        ]
        await store_token(conn, issued, user_id=user_id, name=token_name, expires_at=None)
        await store.append(
            appends,
            Metadata(actor=SYSTEM, tenant_id=org_id, correlation_id=uuid.uuid4(), recorded_at=now),
            conn=conn,
        )
    return Bootstrapped(
        user_id=user_id,
        org_id=org_id,
        token_id=issued.id,
        token=issued.token,
        created_user=existing is None,
    )
