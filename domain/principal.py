"""Who is calling: the authenticated principal every route sees.

The credential families of DOMAIN.md §2 each authenticate to a principal of a
kind; the kind decides which routes it may reach at all (an agent key never
manages an organization). Authorization then looks at memberships.
"""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from domain.envelope import Actor

PrincipalKind = Literal["user", "api_key", "agent"]
CredentialFamily = Literal["session", "personal_access_token", "org_api_key", "agent_key"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    kind: PrincipalKind
    id: uuid.UUID
    credential_id: uuid.UUID
    family: CredentialFamily
    # Set for org API keys and agents: the one organization they belong to.
    org_id: uuid.UUID | None = None
    # Org API keys: the org role the key was issued with.
    role: str | None = None
    # Personal access tokens: the permissions (``Permission`` values) the token
    # is narrowed to; empty means all the user's memberships allow.
    scopes: tuple[str, ...] = ()

    @property
    def actor(self) -> Actor:
        kind: Literal["user", "api_key", "agent"] = self.kind
        return Actor(kind=kind, id=str(self.id))

    @property
    def key(self) -> str:
        """Scope of idempotency keys and rate limits: one per principal."""
        return f"{self.kind}:{self.id}"
