"""Which credential families a route accepts: one guard for the whole application.

DOMAIN.md §2: the families are never interchangeable. A route names the
principal kinds it takes in ``opt={"credentials": ...}``; a route that names
none is a route for people and their automation (sessions, personal access
tokens, organization API keys). So an agent key or an enrollment token is
refused everywhere except the few routes built for it, and a route added
later is closed to them unless it says otherwise.

A credential of the wrong family answers 403 ``wrong_credential_family``
before anything is looked up: it authenticated, it is just not for this
route, and nothing about the resource is revealed. Unauthenticated routes
(``exclude_from_auth``) carry no principal and are not judged here.
"""

from __future__ import annotations

from typing import Final

from litestar.handlers.base import BaseRouteHandler

from domain.errors import Forbidden
from domain.principal import Principal, PrincipalKind

CREDENTIALS: Final = "credentials"

HUMAN: Final[frozenset[PrincipalKind]] = frozenset({"user", "api_key"})
ENROLLMENT_ONLY: Final[frozenset[PrincipalKind]] = frozenset({"enrollment"})
AGENT_OR_HUMAN: Final[frozenset[PrincipalKind]] = frozenset({"agent", "user", "api_key"})
AGENT_ONLY: Final[frozenset[PrincipalKind]] = frozenset({"agent"})

_FOR: Final = {
    HUMAN: "sessions, personal access tokens and organization API keys",
    ENROLLMENT_ONLY: "an enrollment token (bye_)",
    AGENT_OR_HUMAN: "an agent key (bya_), a session, a personal access token or an API key",
    AGENT_ONLY: "an agent key (bya_)",
}


def accepts(handler: BaseRouteHandler) -> frozenset[PrincipalKind]:
    kinds: frozenset[PrincipalKind] = handler.opt.get(CREDENTIALS, HUMAN)
    return kinds


def require_family(principal: Principal, handler: BaseRouteHandler) -> None:
    """403 ``wrong_credential_family`` unless ``handler`` takes ``principal``'s kind.

    The auth middleware calls it right after authenticating (commands/auth.py):
    as a Litestar guard it cost a copy of the route handler on every request.
    """
    kinds = accepts(handler)
    if principal.kind not in kinds:
        raise Forbidden(
            f"this route takes {_FOR.get(kinds, 'another credential family')}, "
            f"not a {principal.family.replace('_', ' ')}",
            code="wrong_credential_family",
            context={"family": principal.family},
        )
