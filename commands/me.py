"""``GET /api/v1/me``: who the presented credential authenticates as.

What a CLI or CI job checks first ("is this token still good, whose is it,
what may it do?"). It reads nothing beyond what authentication already loaded.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State

from domain.principal import Principal


class Me(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    id: uuid.UUID
    credential_id: uuid.UUID
    family: str
    org_id: uuid.UUID | None
    role: str | None
    scopes: list[str]


@get("/api/v1/me", summary="The principal the presented credential authenticates as")
async def me(request: Request[Principal, Any, State]) -> Me:
    p = request.user
    return Me(
        kind=p.kind,
        id=p.id,
        credential_id=p.credential_id,
        family=p.family,
        org_id=p.org_id,
        role=p.role,
        scopes=list(p.scopes),
    )


ROUTES = [me]
