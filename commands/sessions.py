"""Local password login and human sessions (DOMAIN.md §2; development without an IdP).

    POST /auth/login    {email, password} → 200 {id, token: bys_…, expires_at}
    POST /auth/logout   revokes the session presented (204)

Password login is the embedded default: once an OpenID provider is configured
(commands/oidc_login.py), POST /auth/login answers 403 ``password_login_disabled``
and sessions come from GET /auth/login → provider → GET /auth/callback, through
the same ``open_session``.

A password is set with ``byteor-cloud admin create-user --password-stdin``
(scrypt, commands/credentials.py). A session is a ``bys_`` bearer secret
stored like a personal access token (its SHA-256, in ``user_sessions``) that
expires after ``SESSION_TTL``; it authenticates through its own family
(commands.auth.Sessions), never as a PAT or an API key.

A failed login answers one 401 (``invalid_credentials``) whether the e-mail is
unknown, has no password or the password is wrong, and costs the same scrypt
work in each case, so nobody learns which addresses have accounts. The route
is rate limited per client address in the tight ``auth`` class.

Login and logout are events on the user's stream (``user.session_started`` /
``user.session_ended``: session id, visible prefix, expiry), appended in the
transaction that writes the session row.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from commands.auth import record_attempt
from commands.credential_cache import forget_credentials
from commands.credentials import (
    MAX_PASSWORD,
    SESSION_PREFIX,
    dummy_password_hash,
    find_password,
    mint_token,
    store_session,
    verify_password,
)
from commands.execution import deps_of, load, stream_append
from commands.identity import AnyRequest, Written, commit, pool_of
from domain import user as user_mod
from domain.codec import decode_command
from domain.envelope import Actor
from domain.errors import DomainError, Forbidden
from schema.pg import Connection

SESSION_TTL = timedelta(hours=12)


class InvalidCredentials(DomainError):
    status = 401
    code = "invalid_credentials"


class Login(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]


class SessionCreated(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    token: str  # shown once
    prefix: str
    expires_at: datetime


@post(
    "/auth/login",
    status_code=200,
    summary="Log in with a local password; returns a bys_ session token (12 h)",
    exclude_from_auth=True,
    opt={"rate_limit": "auth"},
    security=[{}],  # no bearer token: this is how one is obtained
)
async def login(request: Request[Any, Any, State]) -> Response[bytes]:
    if request.app.state.get("oidc") is not None:
        # With a provider configured, it alone decides who signs in (its MFA,
        # its offboarding); a local password would go around it.
        raise Forbidden(
            "this deployment signs in through its OpenID provider: GET /auth/login",
            code="password_login_disabled",
        )
    cmd = decode_command(Login, await request.body())
    pool = pool_of(request)
    found = await find_password(pool, user_mod.normalize_email(cmd.email))
    encoded = found[1] if found is not None else dummy_password_hash()
    matches = await asyncio.to_thread(verify_password, cmd.password, encoded)
    if found is None or not matches:
        record_attempt("password", "bad_credentials")
        raise InvalidCredentials("the e-mail address or the password is not right")
    response = await open_session(request, found[0], method="password")
    record_attempt("password", "ok")
    return response


async def open_session(
    request: Request[Any, Any, State], user_id: uuid.UUID, *, method: user_mod.LoginMethod
) -> Response[bytes]:
    """A new ``bys_`` session for ``user_id`` (200 SessionCreated), however the user
    proved who they are: its row and ``user.session_started`` in one transaction."""
    deps = deps_of(request)
    issued = mint_token(SESSION_PREFIX)

    async def build(conn: Connection, now: datetime) -> Written:
        expires_at = now + SESSION_TTL
        loaded = await load(deps, user_mod.stream_id(user_id), user_mod.fold)
        events = user_mod.start_session(
            loaded.state,
            session_id=issued.id,
            prefix=issued.prefix,
            expires_at=expires_at,
            method=method,
        )
        await store_session(conn, issued, user_id=user_id, created_at=now, expires_at=expires_at)
        body = SessionCreated(
            id=issued.id, token=issued.token, prefix=issued.prefix, expires_at=expires_at
        )
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, user_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=None,
            status_code=200,
            body=body,
        )

    return await commit(
        request,
        build,
        actor=Actor(kind="user", id=str(user_id)),
        headers={"Cache-Control": "no-store"},
    )


@post("/auth/logout", status_code=204, summary="Revoke the session presented")
async def logout(request: AnyRequest) -> Response[None]:
    principal = request.user
    if principal.family != "session":
        raise Forbidden("only a session logs out; revoke tokens instead", code="session_required")
    deps = deps_of(request)

    async def build(conn: Connection, now: datetime) -> Written:
        ended = await conn.fetchval(
            """
            UPDATE user_sessions SET revoked_at = $2
            WHERE id = $1 AND revoked_at IS NULL RETURNING id
            """,
            principal.credential_id,
            now,
        )
        forget_credentials()
        events: tuple[user_mod.UserEvent, ...] = ()
        loaded = await load(deps, user_mod.stream_id(principal.id), user_mod.fold)
        if ended is not None:
            events = user_mod.end_session(loaded.state, session_id=principal.credential_id)
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, user_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=None,
            status_code=204,
            body=None,
        )

    return await commit(request, build)


ROUTES = [login, logout]
