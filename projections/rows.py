"""Reading read tables for the query routes: one keyset page (``?limit=``,
``?cursor=``, see domain/paging.py), one row or its 404, and the ETag header."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

import asyncpg
from litestar.params import QueryParameter

from domain.errors import NotFound
from domain.paging import Page, after, check_limit, page_of

T = TypeVar("T")
Limit = Annotated[int | None, QueryParameter(description="Page size, 1..200 (default 50)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


@dataclass(frozen=True)
class Keyset:
    """A checked ``?limit=`` and ``?cursor=``: the page size and the
    (created_at, id) to continue after (None for the first page)."""

    size: int
    after_at: datetime | None
    after_id: uuid.UUID | None


def keyset(limit: int | None, cursor: str | None) -> Keyset:
    """422 for a limit out of range or a cursor this API did not issue."""
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    return Keyset(size, after_at, after_id)


async def fetch_page(
    pool: asyncpg.Pool,
    page: Keyset,
    where: str,
    *args: Any,
    build: Callable[[Any], T],
    key: str = "created_at, id",
) -> Page[T]:
    """One page of the rows ``where`` selects, in ``key`` (created_at, id) order.

    ``where`` is a SELECT ending in its WHERE conditions, numbered ``$1..$n`` for
    ``args``; the keyset condition, ORDER BY and LIMIT follow it. Rows must
    carry ``created_at`` and ``id`` for the next cursor.
    """
    n = len(args)
    query = f"""{where}
        AND (${n + 1}::timestamptz IS NULL OR ({key}) > (${n + 1}, ${n + 2}))
        ORDER BY {key} LIMIT ${n + 3}
    """
    rows = await pool.fetch(query, *args, page.after_at, page.after_id, page.size + 1)
    return page_of(rows, page.size, build)


async def fetch_one(pool: asyncpg.Pool, what: str, code: str, query: str, *args: Any) -> Any:
    """The row ``query`` selects, or a 404 ``code`` saying ``what`` was not found."""
    row = await pool.fetchrow(query, *args)
    if row is None:
        raise NotFound(f"{what} not found", code=code)
    return row


def etag(tag: object) -> dict[str, str]:
    return {"ETag": f'"{tag}"'}
