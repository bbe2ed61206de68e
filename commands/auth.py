"""Authentication: turn ``Authorization: Bearer <token>`` into a Principal.

Each credential family is one ``Authenticator`` keyed by its token prefix
(DOMAIN.md §2): ``bys_`` human sessions, ``byp_`` personal access tokens,
``byo_`` organization API keys, ``bye_`` enrollment tokens and ``bya_`` agent
runtime keys. A token is only ever judged by the family its
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
from typing import Any, Literal, NamedTuple, Protocol

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from prometheus_client import Counter

from commands.agent_credentials import (
    AGENT_KEY_PREFIX,
    ENROLLMENT_PREFIX,
    AgentKeyRecord,
    find_enrollment_token,
    lookup_agent_key,
    touch_agent_key,
)
from commands.credential_cache import CredentialCache
from commands.credentials import (
    API_KEY_PREFIX,
    PAT_PREFIX,
    SESSION_PREFIX,
    ApiKeyRecord,
    SessionRecord,
    TokenRecord,
    hash_token,
    looks_like,
    lookup_api_key,
    lookup_session,
    lookup_token,
    touch_api_key,
    touch_session,
    touch_token,
)
from commands.families import require_family
from commands.ratelimit import WINDOW_SCOPE_KEY, Permit, RateLimits, WindowStatus, route_class_of
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
    "used",
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


class Authenticated(NamedTuple):
    """Who the token is, and the rate-limit window its permit was taken from (when
    the family took one in the lookup's statement; else the rate limiter takes it)."""

    principal: Principal
    window: WindowStatus | None = None


class Authenticator(Protocol):
    """One credential family. Returns who the token is, or None / raises
    CredentialRejected for a token it does not accept. Given a ``permit``, a family
    may take it in the statement that looks the credential up (one round trip)."""

    async def authenticate(
        self, token: str, permit: Permit | None = None
    ) -> Authenticated | None: ...


def _at(permit: Permit | None, now: datetime) -> Permit | None:
    """``permit`` judged at the authenticator's clock (the one expiry is checked by)."""
    return None if permit is None else msgspec.structs.replace(permit, now=now)


def _check_live(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> None:
    if revoked_at is not None:
        raise CredentialRejected("revoked")
    if expires_at is not None and expires_at <= now:
        raise CredentialRejected("expired")


class _CachedFamily:
    """A family whose live credentials a ``CredentialCache`` may hold.

    With an active cache, a repeated credential costs no lookup, and a permit
    comes from the key's rate-limit lease while one lasts (``LeaseBook``); when
    either is missing, one statement reads the credential and takes the permit
    (a lease's worth when the key is busy), as without a cache.
    """

    family: str
    prefix: str

    def __init__(
        self, pool: AnyPool, clock: Clock = utc_now, cache: CredentialCache | None = None
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.cache = cache

    async def _lookup(self, token: str, permit: Permit | None) -> tuple[Any, WindowStatus | None]:
        raise NotImplementedError

    def _window_key(self, record: Any) -> str:
        """The rate-limit key's principal part, as the lookup's SQL builds it."""
        raise NotImplementedError

    def _check(self, record: Any, now: datetime) -> None:
        _check_live(record.expires_at, record.revoked_at, now)

    async def _touch(self, record: Any, now: datetime) -> bool:
        raise NotImplementedError

    def _principal(self, record: Any) -> Principal:
        raise NotImplementedError

    async def authenticate(self, token: str, permit: Permit | None = None) -> Authenticated | None:
        if not looks_like(token, self.prefix):
            raise CredentialRejected("malformed")
        now = self.clock()
        cache = self.cache if self.cache is not None and self.cache.active else None
        if cache is None:
            record, window = await self._lookup(token, _at(permit, now))
            if record is None:
                raise CredentialRejected("not_found")
            self._check(record, now)
            await self._touch(record, now)
            return Authenticated(self._principal(record), window)

        digest = hash_token(token)
        generation = cache.generation
        record = cache.get(self.family, digest)
        if record is not None:
            self._check(record, now)
            window = None
            if permit is not None:
                key = permit.route_class + ":" + self._window_key(record)
                window = cache.leases.take(key)
                if window is None:
                    permit = msgspec.structs.replace(
                        permit, units=cache.leases.units(key, permit.limit)
                    )
            if permit is None or window is not None:
                return await self._accepted(cache, digest, generation, record, window, now)

        record, window = await self._lookup(token, _at(permit, now))
        if record is None:
            raise CredentialRejected("not_found")
        self._check(record, now)
        if permit is not None and window is not None:
            key = permit.route_class + ":" + self._window_key(record)
            window = cache.leases.grant(key, window, permit.units)
        return await self._accepted(cache, digest, generation, record, window, now)

    async def _accepted(
        self,
        cache: CredentialCache,
        digest: bytes,
        generation: int,
        record: Any,
        window: WindowStatus | None,
        now: datetime,
    ) -> Authenticated:
        if await self._touch(record, now):
            record = msgspec.structs.replace(record, last_used_at=now)
        cache.put(self.family, digest, record, generation)
        return Authenticated(self._principal(record), window)


class PersonalAccessTokens(_CachedFamily):
    family = "personal_access_token"
    prefix = PAT_PREFIX

    async def _lookup(
        self, token: str, permit: Permit | None
    ) -> tuple[TokenRecord | None, WindowStatus | None]:
        return await lookup_token(self.pool, token, permit)

    def _window_key(self, record: TokenRecord) -> str:
        return f"user:{record.user_id}"

    async def _touch(self, record: TokenRecord, now: datetime) -> bool:
        return await touch_token(self.pool, record, now)

    def _principal(self, record: TokenRecord) -> Principal:
        return Principal(
            kind="user",
            id=record.user_id,
            credential_id=record.id,
            family="personal_access_token",
            scopes=record.scopes,
        )


class OrgApiKeys(_CachedFamily):
    family = "org_api_key"
    prefix = API_KEY_PREFIX

    async def _lookup(
        self, token: str, permit: Permit | None
    ) -> tuple[ApiKeyRecord | None, WindowStatus | None]:
        return await lookup_api_key(self.pool, token, permit)

    def _window_key(self, record: ApiKeyRecord) -> str:
        return f"api_key:{record.id}"

    async def _touch(self, record: ApiKeyRecord, now: datetime) -> bool:
        return await touch_api_key(self.pool, record, now)

    def _principal(self, record: ApiKeyRecord) -> Principal:
        return Principal(
            kind="api_key",
            id=record.id,
            credential_id=record.id,
            family="org_api_key",
            org_id=record.org_id,
            role=record.role,
        )


class Sessions(_CachedFamily):
    family = "session"
    prefix = SESSION_PREFIX

    async def _lookup(
        self, token: str, permit: Permit | None
    ) -> tuple[SessionRecord | None, WindowStatus | None]:
        return await lookup_session(self.pool, token, permit)

    def _window_key(self, record: SessionRecord) -> str:
        return f"user:{record.user_id}"

    async def _touch(self, record: SessionRecord, now: datetime) -> bool:
        return await touch_session(self.pool, record, now)

    def _principal(self, record: SessionRecord) -> Principal:
        return Principal(kind="user", id=record.user_id, credential_id=record.id, family="session")


class EnrollmentTokens:
    """``bye_``: valid until used, revoked or expired. The enrollment route
    consumes the token atomically (commands/enrollment.py); this check only
    spares a used token the work of decoding a request. Its last use is its
    enrollment, recorded there: a touch here would queue behind the enrolling
    transaction's row lock while holding a connection."""

    family = "enrollment_token"

    def __init__(self, pool: AnyPool, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.clock = clock

    async def authenticate(self, token: str, permit: Permit | None = None) -> Authenticated | None:
        # Enrollment windows are per environment, not per credential: the rate
        # limiter takes that permit itself.
        if not looks_like(token, ENROLLMENT_PREFIX):
            raise CredentialRejected("malformed")
        record = await find_enrollment_token(self.pool, token)
        if record is None:
            raise CredentialRejected("not_found")
        now = self.clock()
        _check_live(record.expires_at, record.revoked_at, now)
        if record.used_at is not None:
            raise CredentialRejected("used")
        principal = Principal(
            kind="enrollment",
            id=record.id,
            credential_id=record.id,
            family="enrollment_token",
            org_id=record.org_id,
            project_id=record.project_id,
            environment_id=record.environment_id,
        )
        return Authenticated(principal)


class AgentKeys(_CachedFamily):
    """``bya_``: one agent's runtime key, dead once rotated away or with its agent."""

    family = "agent_key"
    prefix = AGENT_KEY_PREFIX

    async def _lookup(
        self, token: str, permit: Permit | None
    ) -> tuple[AgentKeyRecord | None, WindowStatus | None]:
        return await lookup_agent_key(self.pool, token, permit)

    def _window_key(self, record: AgentKeyRecord) -> str:
        return f"agent:{record.agent_id}"

    def _check(self, record: AgentKeyRecord, now: datetime) -> None:
        _check_live(None, record.revoked_at, now)

    async def _touch(self, record: AgentKeyRecord, now: datetime) -> bool:
        return await touch_agent_key(self.pool, record, now)

    def _principal(self, record: AgentKeyRecord) -> Principal:
        return Principal(
            kind="agent",
            id=record.agent_id,
            credential_id=record.id,
            family="agent_key",
            org_id=record.org_id,
            project_id=record.project_id,
            environment_id=record.environment_id,
        )


def standard_authenticators(
    pool: AnyPool, clock: Clock = utc_now, cache: CredentialCache | None = None
) -> dict[str, Authenticator]:
    """Every credential family, keyed by prefix (all but enrollment tokens share ``cache``)."""
    return {
        SESSION_PREFIX: Sessions(pool, clock, cache),
        PAT_PREFIX: PersonalAccessTokens(pool, clock, cache),
        API_KEY_PREFIX: OrgApiKeys(pool, clock, cache),
        ENROLLMENT_PREFIX: EnrollmentTokens(pool, clock),
        AGENT_KEY_PREFIX: AgentKeys(pool, clock, cache),
    }


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate_token(
    authenticators: Mapping[str, Authenticator], token: str | None, permit: Permit | None = None
) -> Authenticated | None:
    """Who ``token`` is, judged only by the family its prefix names."""
    if token is None:
        record_attempt("none", "missing")
        return None
    for prefix, authenticator in authenticators.items():
        if token.startswith(prefix):
            family = str(getattr(authenticator, "family", prefix.rstrip("_")))
            try:
                authenticated = await authenticator.authenticate(token, permit)
            except CredentialRejected as rejected:
                record_attempt(family, rejected.reason)
                return None
            record_attempt(family, "ok" if authenticated is not None else "invalid")
            return authenticated
    record_attempt("unknown", "unknown_prefix")
    return None


def make_auth_middleware(
    authenticators: Mapping[str, Authenticator], limits: RateLimits | None = None
) -> type:
    """An authentication middleware class bound to ``authenticators`` by prefix.

    With ``limits``, the request's rate-limit permit (its route's class) is asked
    for in the credential lookup itself, saving the limiter a round trip.
    """

    class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
        def __init__(self, app: ASGIApp, **kwargs: Any) -> None:
            super().__init__(app, exclude=[f"^{p}" for p in PUBLIC_PATHS], **kwargs)

        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            token = bearer_token(connection.headers.get("authorization"))
            authenticated = await authenticate_token(
                authenticators, token, _permit_for(connection, limits)
            )
            if authenticated is None:
                if token is None:
                    raise NotAuthorizedException("a bearer token is required")
                # One answer for unknown, malformed, expired and revoked tokens.
                raise NotAuthorizedException("the bearer token is not valid")
            handler = connection.scope.get("route_handler")
            if handler is not None:
                # Agent keys and enrollment tokens only reach the routes made for them.
                require_family(authenticated.principal, handler)
            if authenticated.window is not None:
                connection.scope[WINDOW_SCOPE_KEY] = authenticated.window  # type: ignore[literal-required]
            return AuthenticationResult(user=authenticated.principal, auth=None)

    return BearerAuthMiddleware


def _permit_for(
    connection: ASGIConnection[Any, Any, Any, Any], limits: RateLimits | None
) -> Permit | None:
    if limits is None:
        return None
    handler = connection.scope.get("route_handler")
    if handler is None:
        return None
    route_class = route_class_of(handler, connection.scope["path"])
    if route_class is None or route_class == "enrollment":
        return None
    return Permit(
        route_class=route_class,
        limit=limits.limit(route_class),
        window_ms=limits.window_ms,
        bucket_ms=limits.bucket_ms,
        now=utc_now(),  # replaced by each authenticator's own clock (``_at``)
    )
