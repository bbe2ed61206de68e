"""Authentication: turn ``Authorization: Bearer <token>`` into a Principal.

The seam for the full identity model: each credential family is one
``Authenticator`` keyed by its token prefix. Today only personal access tokens
(``byp_``) exist; sessions, org API keys, enrollment tokens and agent keys plug
in here with their own prefix, so families are never interchangeable.

Every route is authenticated except the operational ones listed in PUBLIC_PATHS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from commands.credentials import PAT_PREFIX, find_token, looks_like, touch_token
from domain.principal import Principal

PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/schema")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal | None: ...


class PersonalAccessTokens:
    def __init__(self, pool: asyncpg.Pool, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.clock = clock

    async def authenticate(self, token: str) -> Principal | None:
        if not looks_like(token, PAT_PREFIX):
            return None
        record = await find_token(self.pool, token)
        if record is None or record.revoked_at is not None:
            return None
        now = self.clock()
        if record.expires_at is not None and record.expires_at <= now:
            return None
        await touch_token(self.pool, record, now)
        return Principal(
            kind="user",
            id=record.user_id,
            credential_id=record.id,
            family="personal_access_token",
        )


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def make_auth_middleware(authenticators: Mapping[str, Authenticator]) -> type:
    """An authentication middleware class bound to ``authenticators`` by prefix."""

    class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
        def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
            super().__init__(app, exclude=[f"^{p}" for p in PUBLIC_PATHS], **kwargs)

        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            token = bearer_token(connection.headers.get("authorization"))
            if token is None:
                raise NotAuthorizedException("a bearer token is required")
            for prefix, authenticator in authenticators.items():
                if token.startswith(prefix):
                    principal = await authenticator.authenticate(token)
                    if principal is not None:
                        return AuthenticationResult(user=principal, auth=None)
                    break
            # One answer for unknown, malformed, expired and revoked tokens.
            raise NotAuthorizedException("the bearer token is not valid")

    return BearerAuthMiddleware
