"""Databases for tests: one migrated template per session, a fresh copy per test.

Copying a template (CREATE DATABASE ... TEMPLATE) takes tens of milliseconds,
far less than migrating each time, and keeps tests from seeing each other.
"""

from __future__ import annotations

import itertools
import os

from ops.services.postgres import Postgres

TEMPLATE = "byteor_template"
_counter = itertools.count(1)


def ensure_template(pg: Postgres) -> str:
    import asyncio
    import threading

    from schema.migrate import migrate_dsn

    pg.create_database(TEMPLATE)
    # Its own thread and loop: fixtures may call this from inside a running loop.
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(migrate_dsn(pg.dsn(TEMPLATE)))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return TEMPLATE


def fresh_database(pg: Postgres, prefix: str = "t") -> str:
    """Create a migrated database; returns its DSN (connects as the superuser)."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    pg.psql(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    return pg.dsn(name)


def drop_database(pg: Postgres, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
