"""One error shape for every failure: ``{"error": {"code", "message", ...}}`` (CONTRACT.md §7).

FastAPI and Starlette answer unknown routes, wrong methods and invalid parameters with their own
``{"detail": ...}`` bodies; the handlers here translate those so a client only ever parses one
shape, and map each status to a stable machine-readable ``code``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import OrjsonResponse

log = logging.getLogger(__name__)

#: Stable codes for statuses raised by the framework rather than by our own code.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by routes and dependencies; rendered by :func:`install_error_handlers`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


def error_body(code: str, message: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **(extra or {})}}


def error_response(
    status: int,
    code: str,
    message: str,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> OrjsonResponse:
    return OrjsonResponse(error_body(code, message, extra), status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.extra, exc.headers)


async def _http_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=exc.headers)


def _location(loc: Any) -> str:
    return ".".join(str(part) for part in loc) if isinstance(loc, list | tuple) else str(loc)


async def _validation_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": _location(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in exc.errors()]
    message = "; ".join(f"{d['loc']}: {d['message']}" for d in details) or "invalid request"
    return error_response(422, "validation_error", message, {"details": details})


async def _unexpected(request: Request, exc: Exception) -> OrjsonResponse:
    # Logged with the traceback here because the client only ever sees the generic message.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
