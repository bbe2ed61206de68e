"""OIDC login: human sessions through an OpenID provider (DOMAIN.md §2;
docs/decisions/0007-oidc-login.md).

    GET /auth/login      302 to the provider (authorization code flow, PKCE S256,
                         state and nonce)
    GET /auth/callback   ?code=&state=  → 200 {id, token: bys_…, prefix, expires_at}
                         ?error=&state= → 401 oidc_provider_error

Only when ``BYTEOR_CLOUD_OIDC_ISSUER`` is set; otherwise both answer 404
``oidc_not_configured`` and local passwords (commands/sessions.py) are the way
in. The session is the same ``bys_`` credential a password login issues
(same TTL, hashing and ``user.session_started`` event, with ``method: oidc``),
returned as JSON: the API takes bearer tokens, not cookies.

Who signs in (decision 0007): the ID token's issuer and subject name a
provider account. An account seen before signs in as the user it was linked
to. A new account needs an e-mail address the provider has verified; it is
linked (``user.oidc_linked``) to the user who already has that address (one
made by ``admin create-user`` or invited), or else to a new user
(``user.created``). No membership is ever granted here: a new user's session
sees no organizations until an admin adds them.

Every failure is problem+json: 400 for a callback that does not belong to a
login in progress (``oidc_state_invalid``, ``oidc_state_expired``,
``oidc_callback_invalid``, ``oidc_issuer_mismatch``), 401 when the provider
or its tokens say no (``oidc_provider_error``, ``oidc_code_refused``,
``oidc_invalid_id_token``), 403 without a verified e-mail address, 409 when the
address's user is already linked to another account of the provider, 503 when
the provider cannot be reached.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import asyncpg
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from commands.auth import Reason, record_attempt
from commands.execution import correlation_id, deps_of, load, stream_append
from commands.identity import pool_of
from commands.oidc_client import Identity, LoginFailed, OidcClient
from commands.oidc_pending import (
    PendingLogin,
    StateExpired,
    StateInvalid,
    save_pending,
    take_pending,
)
from commands.pgstore import PgEventStore
from commands.sessions import open_session
from commands.store import ConcurrencyError
from domain import user as user_mod
from domain.codec import convert_command
from domain.envelope import Actor, Metadata
from domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound

# An authorization code longer than this is not one a provider issued.
MAX_CODE_LENGTH: Final = 4096

AnyRequest = Request[Any, Any, State]


class CallbackInvalid(DomainError):
    status = 400
    code = "oidc_callback_invalid"


class ProviderError(LoginFailed):
    code = "oidc_provider_error"


def oidc_of(request: AnyRequest) -> OidcClient:
    client: OidcClient | None = request.app.state.get("oidc")
    if client is None:
        raise NotFound(
            "no OpenID provider is configured; log in with POST /auth/login",
            code="oidc_not_configured",
        )
    return client


@get(
    "/auth/login",
    status_code=302,
    summary="Start an OIDC login: redirects to the OpenID provider",
    exclude_from_auth=True,
    opt={"rate_limit": "auth"},
    security=[{}],  # no bearer token: this is how one is obtained
)
async def start_login(request: AnyRequest) -> Response[bytes]:
    client = oidc_of(request)
    now = deps_of(request).clock()
    auth = await client.authorization_request(now)
    pending = PendingLogin(nonce=auth.nonce, code_verifier=auth.code_verifier)
    await save_pending(pool_of(request), auth.state, pending, now)
    return Response(
        content=b"",
        status_code=302,
        headers={"Location": auth.url, "Cache-Control": "no-store"},
    )


@get(
    "/auth/callback",
    status_code=200,
    summary="Finish an OIDC login; returns a bys_ session token (12 h)",
    exclude_from_auth=True,
    opt={"rate_limit": "auth"},
    security=[{}],
)
async def finish_login(
    request: AnyRequest,
    login_state: Annotated[
        str | None, QueryParameter(name="state", description="as sent to the provider")
    ] = None,
    code: Annotated[str | None, QueryParameter(description="the authorization code")] = None,
    error: Annotated[str | None, QueryParameter(description="the provider's refusal")] = None,
    iss: Annotated[str | None, QueryParameter(description="the issuer (RFC 9207)")] = None,
) -> Response[bytes]:
    client = oidc_of(request)
    now = deps_of(request).clock()
    try:
        # First, always: the state is spent whatever happens next.
        pending = await take_pending(pool_of(request), login_state, now)
        if error is not None:
            raise ProviderError(f"the OpenID provider ended the login: {_error_code(error)}")
        if iss is not None and iss != client.settings.issuer:
            raise CallbackInvalid(
                "the callback comes from another issuer", code="oidc_issuer_mismatch"
            )
        if not code or len(code) > MAX_CODE_LENGTH:
            raise CallbackInvalid("the callback carries no authorization code")
        tokens = await client.exchange(code, pending.code_verifier, now)
        identity = await client.validate(tokens, nonce=pending.nonce, now=now)
        user_id = await resolve_user(request, identity)
    except DomainError as exc:
        record_attempt("oidc", _reason(exc))
        raise
    response = await open_session(request, user_id, method="oidc")
    record_attempt("oidc", "ok")
    return response


def _error_code(error: str) -> str:
    # The browser brought this from the provider; echo it only if it looks
    # like an RFC 6749 error code.
    if error.isascii() and error.replace("_", "").isalnum() and len(error) <= 64:
        return error
    return "unspecified error"


def _reason(exc: DomainError) -> Reason:
    if isinstance(exc, StateExpired):
        return "expired"
    if isinstance(exc, (StateInvalid, CallbackInvalid)):
        return "malformed"
    if isinstance(exc, LoginFailed):
        return "bad_credentials"
    return "invalid"


# --- who signs in --------------------------------------------------------------------


class IdentityConflict(Conflict):
    code = "oidc_identity_conflict"


async def resolve_user(request: AnyRequest, identity: Identity) -> uuid.UUID:
    """The user ``identity`` signs in as, linking (or creating) them on first sight.

    Two first sign-ins of one account can race; the loser's insert hits a unique
    key (or its append a version conflict) and its second try finds the link.
    """
    for attempt in (1, 2):
        try:
            return await _resolve_once(request, identity)
        except (asyncpg.UniqueViolationError, ConcurrencyError):
            if attempt == 2:
                # Answered 409 concurrent_modification: the user may simply retry.
                raise ConcurrencyError(None, None) from None
    raise AssertionError("unreachable")


async def _resolve_once(request: AnyRequest, identity: Identity) -> uuid.UUID:
    pool = pool_of(request)
    linked: uuid.UUID | None = await pool.fetchval(
        "SELECT user_id FROM user_oidc_identities WHERE issuer = $1 AND subject = $2",
        identity.issuer,
        identity.subject,
    )
    if linked is not None:
        return linked
    if identity.email is None or not identity.email_verified:
        raise Forbidden(
            "the OpenID provider did not vouch for an e-mail address; a first sign-in needs one",
            code="oidc_email_unverified",
        )
    try:
        cmd = convert_command(user_mod.CreateUser, {"email": identity.email})
    except InvalidInput:
        raise Forbidden(
            "the e-mail address the OpenID provider gave is not one this service accepts",
            code="oidc_email_unusable",
        ) from None
    email = user_mod.normalize_email(cmd.email)
    deps = deps_of(request)
    now = deps.clock()
    async with pool.acquire() as conn, conn.transaction():
        existing: uuid.UUID | None = await conn.fetchval(
            "SELECT user_id FROM user_emails WHERE email = $1", email
        )
        if existing is None:
            user_id = deps.new_id()
            await conn.execute(
                "INSERT INTO user_emails (email, user_id) VALUES ($1, $2)", email, user_id
            )
            events = list(user_mod.create_user(cmd, user_id=user_id))
            state, version = user_mod.fold(events), 0
        else:
            user_id = existing
            loaded = await load(deps, user_mod.stream_id(user_id), user_mod.fold)
            events, state, version = [], loaded.state, loaded.version
            linked_subject = await conn.fetchval(
                "SELECT subject FROM user_oidc_identities WHERE user_id = $1 AND issuer = $2",
                user_id,
                identity.issuer,
            )
            if linked_subject == identity.subject:
                # A concurrent first sign-in of this same account linked it
                # after our lookup above: it is the same user.
                return user_id
            if linked_subject is not None:
                raise IdentityConflict(
                    "the user with this e-mail address signs in with another account "
                    "of this OpenID provider"
                )
        await conn.execute(
            """
            INSERT INTO user_oidc_identities (issuer, subject, user_id, linked_at)
            VALUES ($1, $2, $3, $4)
            """,
            identity.issuer,
            identity.subject,
            user_id,
            now,
        )
        events += user_mod.link_oidc(state, issuer=identity.issuer, subject=identity.subject)
        await PgEventStore(pool).append(
            stream_append(deps, user_mod.stream_id(user_id), user_mod.STREAM_TYPE, version, events),
            Metadata(
                actor=Actor(kind="user", id=str(user_id)),
                tenant_id=None,
                correlation_id=correlation_id(request),
                recorded_at=now,
            ),
            conn=conn,
        )
    return user_id


ROUTES = [start_login, finish_login]
