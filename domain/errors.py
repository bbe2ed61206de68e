"""Domain errors: raised by decisions and rules, mapped to HTTP in one place.

    DomainError                  a rule said no; carries a stable ``code``
    ├── InvalidInput             the request is malformed for the rule (422)
    ├── NotFound                 no such resource in the caller's tenant (404)
    ├── Conflict                 the resource's state forbids the command (409)
    │   └── AlreadyExists        a create collided with an existing resource
    ├── PreconditionFailed       If-Match did not match the current revision (412)
    └── Forbidden                authenticated but not allowed (403)

    InvalidHistory               a stream's events cannot be folded (a bug or a
                                 corrupted store, never a client error: 500)

Errors carry ids and states as attributes, not preformatted strings; the HTTP
layer renders them as RFC 9457 problem documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class FieldError:
    """One problem with one field: a JSON-pointer-like path and a reason."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}

    def __repr__(self) -> str:
        return f"FieldError({self.path!r}, {self.message!r})"


class DomainError(Exception):
    """Base of every rule violation. ``code`` is stable; clients match on it."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "domain_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: tuple[FieldError, ...] = (),
        context: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.errors = errors
        self.context = dict(context or {})


class InvalidInput(DomainError):
    status = 422
    code = "invalid_input"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class PreconditionFailed(DomainError):
    status = 412
    code = "precondition_failed"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class InvalidHistory(Exception):
    """A stream holds events its aggregate cannot fold (wrong order or type).

    Not a DomainError: no request can cause it, so it must not render as 4xx.
    """

    def __init__(self, detail: str, *, context: Mapping[str, object] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = dict(context or {})
