"""Keyset pagination: ``?limit=`` (1..200) and an opaque ``?cursor=``.

The cursor encodes the sort key of the last item returned (created_at, id),
so pages stay stable while rows are added, and a tampered cursor is a 422.
Pure, so that the write side's credential lists and the read side's query
routes (which may not import each other) page the same way.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from domain.errors import FieldError, InvalidInput

T = TypeVar("T")
MAX_LIMIT = 200
DEFAULT_LIMIT = 50


class Page(msgspec.Struct, Generic[T], kw_only=True):
    items: list[T]
    next_cursor: str | None


class _Key(msgspec.Struct, array_like=True):
    created_at: datetime
    id: uuid.UUID


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(
            f"limit must be between 1 and {MAX_LIMIT}",
            code="invalid_limit",
            errors=(FieldError("query.limit", f"between 1 and {MAX_LIMIT}"),),
        )
    return limit


def encode_cursor(created_at: datetime, id_: uuid.UUID) -> str:
    raw = msgspec.json.encode(_Key(created_at, id_))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = msgspec.json.decode(raw, type=_Key)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidInput(
            "cursor is not valid",
            code="invalid_cursor",
            errors=(FieldError("query.cursor", "use next_cursor from a previous page"),),
        ) from None
    return key.created_at, key.id


def after(cursor: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    """The (created_at, id) to continue after, or (None, None) for the first page."""
    key = decode_cursor(cursor)
    return (None, None) if key is None else key


def page_of(rows: Sequence[Any], limit: int, build: Callable[[Any], T]) -> Page[T]:
    """``rows`` fetched with ``LIMIT limit + 1``, ordered by (created_at, id)."""
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return Page(
        items=[build(r) for r in rows[:limit]],
        next_cursor=encode_cursor(last["created_at"], last["id"]) if last is not None else None,
    )
