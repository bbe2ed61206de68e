"""Findings: rule violations located by a JSON pointer into a request body.

Config bundle validation (``domain.tuning``, ``domain.adapters``,
``domain.config_bundle``) reports every broken rule, not only the first, as a
``Finding`` with a stable ``code`` and a JSON pointer ``path``
(``/adapters/2/secretRefs/token``). ``BundleInvalid`` carries them all; the
HTTP layer renders each as ``{path, message}`` with the code in front of the
message, as spec diagnostics are rendered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from domain.errors import FieldError, InvalidInput

MAX_REPORTED: Final = 100
"""At most this many findings are kept per error (the rest are counted)."""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    path: str
    message: str


def token(part: str | int) -> str:
    """One JSON pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def child(path: str, *parts: str | int) -> str:
    return path + "".join("/" + token(p) for p in parts)


class Findings:
    """A collector the rule functions append to, in the order the rules run."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(self, code: str, path: str, message: str) -> None:
        self.items.append(Finding(code=code, path=path, message=message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)


class BundleInvalid(InvalidInput):
    """A config bundle breaks one or more rules; nothing is stored (422)."""

    code = "bundle_invalid"

    def __init__(self, findings: Iterable[Finding]) -> None:
        found = tuple(findings)
        kept = found[:MAX_REPORTED]
        super().__init__(
            f"the config bundle breaks {len(found)} rule(s)",
            errors=tuple(FieldError(f.path, f"{f.code}: {f.message}") for f in kept),
            context={"codes": sorted({f.code for f in found}), "count": len(found)},
        )
        self.findings = kept
