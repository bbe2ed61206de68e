"""Session-wide real services: PostgreSQL, NATS (JetStream), S3 (SeaweedFS), Vault (OpenBao).

Each fixture starts its service on first use only (unit tests start none), in a
pytest temporary directory on free loopback ports, and stops it when the session
ends, whether tests passed or not. The objects are the service classes from
``ops.services``: fault tests may ``kill()``, ``start()`` or ``restart()`` them
(same port, same data directory).

Databases: ``pg_template`` migrates one template database per session;
``database`` copies it for each test (tens of milliseconds) and drops it after;
``pool`` is an application-role pool on that database.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import hypothesis  # noqa: F401  imported early, see below
import pytest

from ops.services.nats import Nats
from ops.services.postgres import Postgres
from ops.services.s3 import SeaweedS3
from ops.services.vault import Vault
from ops.stack import free_port_pair, free_ports, s3_ports
from schema.pg import create_pool
from tests.pgdb import drop_database, ensure_template, fresh_database

# hypothesis is imported above, at collection, on purpose: when a run collects
# no hypothesis test, its pytest plugin imports it during the terminal summary,
# deep in pytest's stack, and CPython 3.11.7's parser then fails with
# "AST constructor recursion depth mismatch" while rewriting its asserts.

# Durability of PostgreSQL itself is not under test; these make the suite fast.
FAST_POSTGRES = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A started PostgreSQL cluster; create a database per test with ``pg.create_database``."""
    server = Postgres(tmp_path_factory.mktemp("pg"), free_ports(1)[0], settings=FAST_POSTGRES)
    try:
        server.start()
        yield server
    finally:
        server.stop(fast=True)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A NATS server with JetStream: ``.url``, and ``.kill()/.start()/.restart()``."""
    port, monitor_port = free_ports(2)
    server = Nats(tmp_path_factory.mktemp("nats"), port, monitor_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS's S3 gateway: ``.endpoint``, ``.access_key``, ``.secret_key``, ``.region``.

    ``s3.client_kwargs()`` is ready for ``aioboto3.Session().client("s3", **...)``.
    Only this key pair is accepted.
    """
    server = SeaweedS3(
        tmp_path_factory.mktemp("s3"),
        s3_ports(),
        access_key="TEST" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
    )
    try:
        server.start()
        yield server
    finally:
        server.kill()  # throw-away data; a graceful SeaweedFS stop takes seconds


@pytest.fixture(scope="session")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    """An OpenBao dev server: ``.addr``, ``.token`` (root policy), ``.client()`` (hvac).

    KV v2 is mounted at ``secret/``. Storage is in memory: a restart loses secrets.
    """
    server = Vault(tmp_path_factory.mktemp("vault"), free_port_pair(), secrets.token_urlsafe(32))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg: Postgres) -> str:
    return ensure_template(pg)


@pytest.fixture
def database(pg: Postgres, pg_template: str) -> Iterator[str]:
    dsn = fresh_database(pg)
    yield dsn
    drop_database(pg, dsn)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, min_size=1, max_size=12)
    yield pool
    await pool.close()
