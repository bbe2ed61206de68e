"""Audit records that are not any aggregate's state: authorization denials.

A denied request (403, or the 404 another tenant's resource answers) changes
nothing, yet compliance wants to see who probed what. Recording one event per
denial would let a flood of denied requests flood the event store, so denials
are counted per principal, route and minute and each (principal, route,
minute) becomes one ``access.denied`` event carrying the count once that
minute is over (commands/denials.py does the counting and the flushing).

Stream: ``access-denials-<sha256(principal key, route, minute)[:32]>``, one
per aggregate key, so the same key is never written twice by accident; a key
whose late denials arrive after its minute was flushed gets a second event on
the same stream, with that remainder's count.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Final

from domain.codec import CODEC, Event

STREAM_TYPE: Final = "access_denials"


class AccessDenied(Event, tag="access.denied", frozen=True, kw_only=True):
    """``count`` denials of ``route`` to one principal within ``minute`` (UTC).

    ``status`` is what the caller saw (403, or 404 for another tenant's
    resources); ``code``, ``permission`` and ``reason`` say why.
    """

    principal_kind: str
    principal_id: uuid.UUID
    credential_family: str
    credential_id: uuid.UUID
    route: str
    minute: datetime
    count: int
    first_at: datetime
    last_at: datetime
    status: int
    code: str
    permission: str | None = None
    reason: str | None = None
    org_id: uuid.UUID | None = None


def stream_id(principal_key: str, route: str, minute: datetime) -> str:
    """The stream of one (principal, route, minute) aggregate."""
    digest = hashlib.sha256(f"{principal_key}\n{route}\n{minute.isoformat()}".encode()).hexdigest()
    return f"access-denials-{digest[:32]}"


CODEC.register(AccessDenied)
