"""Every error the API returns, in one place: RFC 9457 problem+json.

Shape: ``{"type", "title", "status", "detail", "code", "errors": [{path, message}]}``.
``code`` is stable and what clients match on; ``errors`` locates each problem
in the request (a JSON pointer into the body, or ``query.<name>``/``header.<name>``).

Mapping, once:
    DomainError (and subclasses)        its own status and code
    StoreError.ConcurrencyError          409 concurrent_modification
    StoreUnavailable / DatabaseUnavailable  503 service_unavailable
    Litestar HTTPException               its status (404 route, 405, 413 body, 401 ...)
    anything else                        500 internal_error, logged, never echoed
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException

from commands.store import ConcurrencyError, StoreUnavailable
from domain.errors import DomainError, FieldError
from schema.pg import DatabaseUnavailable

log = logging.getLogger("byteor.api")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://docs.byteor.dev/problems/"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, str]] = msgspec.field(default_factory=list)
    instance: str | None = None


def problem_response(
    status: int,
    code: str,
    detail: str,
    errors: tuple[FieldError, ...] | list[FieldError] = (),
    *,
    request: Request[Any, Any, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    body = Problem(
        type=TYPE_BASE + code,
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        errors=[e.as_dict() for e in errors],
        instance=request.url.path if request is not None else None,
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers or {},
    )


def on_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    return problem_response(exc.status, exc.code, exc.detail, exc.errors, request=request)


def on_concurrency(request: Request[Any, Any, Any], exc: ConcurrencyError) -> Response[bytes]:
    return problem_response(
        409,
        "concurrent_modification",
        "the resource was changed by another request; read it again and retry",
        request=request,
    )


def on_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return problem_response(
        503,
        "service_unavailable",
        "a backing service is unavailable; retry later",
        request=request,
        headers={"Retry-After": "1"},
    )


def on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            source = str(getattr(item.get("source"), "value", item.get("source") or ""))
            key = item.get("key", "")
            path = f"{source}.{key}" if source and source != "body" else f"/{key}"
            errors.append(FieldError(path, str(item.get("message", ""))))
    return problem_response(
        422, "invalid_input", "the request is not valid", errors or (), request=request
    )


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="byteor-cloud"')
    detail = exc.detail if status < 500 else _TITLES.get(status, "error")
    if status == 413:
        detail = "the request body is larger than allowed"
    return problem_response(status, code, detail, request=request, headers=headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Log with the traceback, never echo: the message may hold internals.
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem_response(
        500, "internal_error", "an unexpected error occurred; it has been logged", request=request
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: on_domain_error,
    ConcurrencyError: on_concurrency,
    StoreUnavailable: on_unavailable,
    DatabaseUnavailable: on_unavailable,
    OSError: on_unavailable,
    asyncpg.InterfaceError: on_unavailable,
    asyncpg.QueryCanceledError: on_unavailable,
    asyncpg.CannotConnectNowError: on_unavailable,
    asyncpg.TooManyConnectionsError: on_unavailable,
    ValidationException: on_validation,
    HTTPException: on_http,
    Exception: on_unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "MediaType", "problem_response"]
