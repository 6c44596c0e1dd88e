"""Request bodies read by hand (routes whose body is checked by a model of ``models/``, not by
a pydantic class): bounded, JSON, an object, each refusal with the resource's own error code."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from api.errors import ApiError


async def read_json_object(request: Request, max_bytes: int, what: str) -> dict[str, Any]:
    """The body as a JSON object. 413 over ``max_bytes``; 400 ``not_json``; 422
    ``invalid_<what>`` for JSON that is not an object."""
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ApiError(413, "payload_too_large", f"a {what} is at most {max_bytes} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "not_json", "the body is not JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(422, f"invalid_{what}", "the body must be a JSON object")
    return body


async def read_bounded(request: Request, max_bytes: int, what: str) -> bytes:
    """The raw body, counted as it streams: 413 as soon as it passes ``max_bytes``, so a route
    with a small limit never holds more (the app-wide limit is far larger)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "payload_too_large", f"a {what} is at most {max_bytes} bytes")
    return bytes(body)
