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

# ``enrollment``: a ``bye_`` enrollment token, good for enrolling one agent and nothing else.
PrincipalKind = Literal["user", "api_key", "agent", "enrollment"]
CredentialFamily = Literal[
    "session", "personal_access_token", "org_api_key", "enrollment_token", "agent_key"
]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    kind: PrincipalKind
    id: uuid.UUID
    credential_id: uuid.UUID
    family: CredentialFamily
    # Set for org API keys, enrollment tokens and agents: the one organization
    # they belong to.
    org_id: uuid.UUID | None = None
    # Enrollment tokens and agents: the one project and environment they act in.
    project_id: uuid.UUID | None = None
    environment_id: uuid.UUID | None = None
    # Org API keys: the org role the key was issued with.
    role: str | None = None
    # Personal access tokens: the permissions (``Permission`` values) the token
    # is narrowed to; empty means all the user's memberships allow.
    scopes: tuple[str, ...] = ()

    @property
    def actor(self) -> Actor:
        if self.kind == "enrollment":
            # An enrollment acts as the token that authorized it.
            return Actor(kind="token", id=str(self.id))
        kind: Literal["user", "api_key", "agent"] = self.kind
        return Actor(kind=kind, id=str(self.id))

    @property
    def key(self) -> str:
        """Scope of idempotency keys and rate limits: one per principal."""
        return f"{self.kind}:{self.id}"
