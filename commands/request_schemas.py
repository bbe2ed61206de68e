"""Request body schemas in the OpenAPI document for routes that decode bodies themselves.

Write routes read the raw body (idempotency hashes it, ``decode_command``
reports errors with field paths), so Litestar does not know their body type.
``json_body(Struct)`` gives an ``operation_class`` that adds the struct's JSON
schema, with every ``$ref`` inlined (the document's ``components`` are not
reachable from one operation), e.g. the whole plan model for draft routes,
from which a UI can build an editor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import Operation


def inline_schema(struct: Any) -> dict[str, Any]:
    """msgspec's JSON schema of ``struct`` with its ``$defs`` substituted in place."""
    schema: dict[str, Any] = msgspec.json.schema(struct)
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref.removeprefix("#/$defs/")]), **resolve(rest)}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def json_body(struct: Any, *, required: bool = True) -> type[Operation]:
    """An ``Operation`` class whose request body is ``struct`` as JSON."""
    body = {
        "required": required,
        "content": {"application/json": {"schema": inline_schema(struct)}},
    }

    @dataclass
    class WithJsonBody(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            schema["requestBody"] = body
            return schema

    return WithJsonBody
