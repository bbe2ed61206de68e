"""The API application: the one place that assembles routes, auth and errors.

Write routes come from commands/, query routes from projections/; they never
import each other, and meet only here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from commands import agent_deployments as agent_deployment_commands
from commands import agents as agent_commands
from commands import api_keys as api_key_commands
from commands import config_bundles as config_bundle_commands
from commands import deployments as deployment_commands
from commands import drafts as draft_commands
from commands import enrollment as enrollment_commands
from commands import heartbeats as heartbeat_commands
from commands import jobs as job_commands
from commands import me as me_route
from commands import oidc_login as oidc_commands
from commands import sessions as session_commands
from commands import signing_keys as signing_key_commands
from commands import tenancy as tenancy_commands
from commands import tokens as token_commands
from commands.auth import PUBLIC_PATHS, make_auth_middleware, standard_authenticators, utc_now
from commands.credential_cache import CredentialCache
from commands.denials import DenialFlusher, DenialRecorder
from commands.execution import CommandDeps
from commands.object_store import ObjectStore
from commands.oidc_client import OidcClient
from commands.pgstore import PgEventStore
from commands.problems import EXCEPTION_HANDLERS
from commands.ratelimit import PgRateLimiter, RateLimitMiddleware, RateLimits
from commands.secret_keys import SecretCipher
from domain.codec import default_codec
from ops.health import healthz, readyz
from ops.telemetry import CountingStore, metrics
from projections import config_bundle_routes as config_bundle_queries
from projections import deployment_routes as deployment_queries
from projections import draft_routes as draft_queries
from projections import job_routes as job_queries
from projections import routes as tenancy_queries
from projections.feed import PgFeed

MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(
    pool: asyncpg.Pool,
    feed: PgFeed,
    *,
    clock: Callable[[], datetime] = utc_now,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    projection_wait_s: float = 5.0,
    debug: bool = False,
    rate_limits: RateLimits | None = None,
    store: PgEventStore | None = None,
    oidc: OidcClient | None = None,
    secret_cipher: SecretCipher | None = None,
    object_store: ObjectStore | None = None,
    credential_cache: CredentialCache | None = None,
) -> Litestar:
    """The API on ``pool`` (queries, credentials, limits) and ``store`` (appends).

    Services pass a store on its own LeanPool (commands.pgstore.open_store);
    without one, the store shares ``pool``.
    """
    event_store = store or PgEventStore(pool)
    deps = CommandDeps(
        store=CountingStore(event_store),
        codec=default_codec(),
        clock=clock,
        new_id=new_id,
    )
    # Every request authenticates and takes a rate-limit permit: one statement
    # each, on the store's lean pool when there is one (asyncpg's pool adds
    # ~45 µs per acquire/release).
    hot = store.pool if store is not None else pool
    limits = rate_limits or RateLimits()
    # With a credential cache, repeated credentials skip that statement while
    # their rate-limit lease lasts (commands/credential_cache.py).
    auth = make_auth_middleware(standard_authenticators(hot, clock, credential_cache), limits)
    rate_limiter = RateLimitMiddleware(PgRateLimiter(hot, limits))
    prometheus = PrometheusConfig(
        app_name="byteor-cloud",
        prefix="byteor",
        group_path=True,
        exclude=[f"^{p}" for p in PUBLIC_PATHS],
    )
    denials = DenialRecorder(hot, clock)
    # Closed minutes of counted denials become access.denied events (runs only
    # under a server's lifespan, e.g. uvicorn; tests call commands.denials.flush).
    flusher = DenialFlusher(pool, event_store, deps.codec, clock)
    return Litestar(
        on_startup=[
            flusher.start,
            *([credential_cache.start] if credential_cache is not None else []),
        ],
        on_shutdown=[
            flusher.stop,
            *([credential_cache.stop] if credential_cache is not None else []),
        ],
        after_exception=[denials.on_exception],
        route_handlers=[
            *me_route.ROUTES,
            *tenancy_commands.ROUTES,
            *token_commands.ROUTES,
            *api_key_commands.ROUTES,
            *session_commands.ROUTES,
            *oidc_commands.ROUTES,
            *job_commands.ROUTES,
            *draft_commands.ROUTES,
            *config_bundle_commands.ROUTES,
            *enrollment_commands.ROUTES,
            *agent_commands.ROUTES,
            *heartbeat_commands.ROUTES,
            *agent_deployment_commands.ROUTES,
            *signing_key_commands.ROUTES,
            *deployment_commands.ROUTES,
            *tenancy_queries.ROUTES,
            *job_queries.ROUTES,
            *draft_queries.ROUTES,
            *config_bundle_queries.ROUTES,
            *deployment_queries.ROUTES,
            healthz,
            readyz,
            metrics,
        ],
        # First entry outermost: the rate limiter runs inside auth (it needs the principal).
        middleware=[prometheus.middleware, auth, rate_limiter],
        exception_handlers=EXCEPTION_HANDLERS,
        state=State(
            {
                "command_deps": deps,
                "pool": pool,
                "feed": feed,
                "projection_wait_s": projection_wait_s,
                # The OpenID provider's client when an issuer is configured
                # (commands/oidc_login.py); None keeps password login.
                "oidc": oidc,
                # Encrypts inline secrets of config bundles (commands/secret_keys.py);
                # None: no master key configured, inline secrets are refused (503).
                "secret_cipher": secret_cipher,
                # Deploy bundles for the agents' download route (commands/agent_deployments.py);
                # started on first use, None answers 503 bundles_unavailable.
                "object_store": object_store,
                "object_store_lock": asyncio.Lock(),
            }
        ),
        openapi_config=OpenAPIConfig(
            title="ByteOr Cloud API",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="bys_ session, byp_ personal access token, "
                        "byo_ organization API key, bye_ enrollment token "
                        "or bya_ agent runtime key",
                    )
                }
            ),
            security=[{"bearer": []}],
        ),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # ops/logs.py configures the process's logging
        debug=debug,
    )
