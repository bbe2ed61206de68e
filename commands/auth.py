"""Authentication: turn ``Authorization: Bearer <token>`` into a Principal.

Each credential family is one ``Authenticator`` keyed by its token prefix
(DOMAIN.md §2): ``bys_`` human sessions, ``byp_`` personal access tokens,
``byo_`` organization API keys. A token is only ever judged by the family its
prefix names, so families are never interchangeable, and a token with no known
prefix is refused without a lookup. Every refusal answers the same 401
(unknown, malformed, expired and revoked tokens are indistinguishable to the
caller); the reason is counted in ``byteor_auth_attempts_total``.

Every route is authenticated except the operational ones listed in
PUBLIC_PATHS and handlers marked ``exclude_from_auth=True`` (``/auth/login``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from prometheus_client import Counter

from commands.credentials import (
    API_KEY_PREFIX,
    PAT_PREFIX,
    SESSION_PREFIX,
    find_api_key,
    find_session,
    find_token,
    looks_like,
    touch_api_key,
    touch_session,
    touch_token,
)
from domain.principal import Principal
from schema.pg import AnyPool

PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/schema")

Clock = Callable[[], datetime]

Reason = Literal[
    "ok",
    "missing",
    "unknown_prefix",
    "malformed",
    "not_found",
    "revoked",
    "expired",
    "bad_credentials",
    "invalid",
]

AUTH_ATTEMPTS = Counter(
    "byteor_auth_attempts_total",
    "Authentication attempts by credential family, outcome and reason",
    ["family", "outcome", "reason"],
)


def record_attempt(family: str, reason: Reason) -> None:
    AUTH_ATTEMPTS.labels(family, "success" if reason == "ok" else "failure", reason).inc()


def utc_now() -> datetime:
    return datetime.now(UTC)


class CredentialRejected(Exception):
    """An authenticator's refusal with its reason (for metrics; the caller sees one 401)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


class Authenticator(Protocol):
    """One credential family. Returns the principal, or None / raises
    CredentialRejected for a token it does not accept."""

    async def authenticate(self, token: str) -> Principal | None: ...


def _check_live(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> None:
    if revoked_at is not None:
        raise CredentialRejected("revoked")
    if expires_at is not None and expires_at <= now:
        raise CredentialRejected("expired")


class PersonalAccessTokens:
    family = "personal_access_token"

    def __init__(self, pool: AnyPool, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.clock = clock

    async def authenticate(self, token: str) -> Principal | None:
        if not looks_like(token, PAT_PREFIX):
            raise CredentialRejected("malformed")
        record = await find_token(self.pool, token)
        if record is None:
            raise CredentialRejected("not_found")
        now = self.clock()
        _check_live(record.expires_at, record.revoked_at, now)
        await touch_token(self.pool, record, now)
        return Principal(
            kind="user",
            id=record.user_id,
            credential_id=record.id,
            family="personal_access_token",
            scopes=record.scopes,
        )


class OrgApiKeys:
    family = "org_api_key"

    def __init__(self, pool: AnyPool, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.clock = clock

    async def authenticate(self, token: str) -> Principal | None:
        if not looks_like(token, API_KEY_PREFIX):
            raise CredentialRejected("malformed")
        record = await find_api_key(self.pool, token)
        if record is None:
            raise CredentialRejected("not_found")
        now = self.clock()
        _check_live(record.expires_at, record.revoked_at, now)
        await touch_api_key(self.pool, record, now)
        return Principal(
            kind="api_key",
            id=record.id,
            credential_id=record.id,
            family="org_api_key",
            org_id=record.org_id,
            role=record.role,
        )


class Sessions:
    family = "session"

    def __init__(self, pool: AnyPool, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.clock = clock

    async def authenticate(self, token: str) -> Principal | None:
        if not looks_like(token, SESSION_PREFIX):
            raise CredentialRejected("malformed")
        record = await find_session(self.pool, token)
        if record is None:
            raise CredentialRejected("not_found")
        now = self.clock()
        _check_live(record.expires_at, record.revoked_at, now)
        await touch_session(self.pool, record, now)
        return Principal(kind="user", id=record.user_id, credential_id=record.id, family="session")


def standard_authenticators(pool: AnyPool, clock: Clock = utc_now) -> dict[str, Authenticator]:
    """The user and org credential families, keyed by prefix."""
    return {
        SESSION_PREFIX: Sessions(pool, clock),
        PAT_PREFIX: PersonalAccessTokens(pool, clock),
        API_KEY_PREFIX: OrgApiKeys(pool, clock),
    }


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate_token(
    authenticators: Mapping[str, Authenticator], token: str | None
) -> Principal | None:
    """The principal for ``token``, judged only by the family its prefix names."""
    if token is None:
        record_attempt("none", "missing")
        return None
    for prefix, authenticator in authenticators.items():
        if token.startswith(prefix):
            family = str(getattr(authenticator, "family", prefix.rstrip("_")))
            try:
                principal = await authenticator.authenticate(token)
            except CredentialRejected as rejected:
                record_attempt(family, rejected.reason)
                return None
            record_attempt(family, "ok" if principal is not None else "invalid")
            return principal
    record_attempt("unknown", "unknown_prefix")
    return None


def make_auth_middleware(authenticators: Mapping[str, Authenticator]) -> type:
    """An authentication middleware class bound to ``authenticators`` by prefix."""

    class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
        def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
            super().__init__(app, exclude=[f"^{p}" for p in PUBLIC_PATHS], **kwargs)

        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            token = bearer_token(connection.headers.get("authorization"))
            principal = await authenticate_token(authenticators, token)
            if principal is None:
                if token is None:
                    raise NotAuthorizedException("a bearer token is required")
                # One answer for unknown, malformed, expired and revoked tokens.
                raise NotAuthorizedException("the bearer token is not valid")
            return AuthenticationResult(user=principal, auth=None)

    return BearerAuthMiddleware
