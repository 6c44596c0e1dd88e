"""Opaque page cursors for lists kept as Redis sorted sets (``GET /v1/at-risk``).

A cursor names the last row of a page by its position in the set's order: its score and its
member. The next page starts after it (keyset paging), so rows added or re-scored between two
requests do not shift the pages by an offset. A cursor is base64url JSON, readable but not
meaningful to clients; a malformed or forged one is a 400, never a Redis error.
"""

from __future__ import annotations

import base64
import binascii
import math

import orjson

from api.errors import ApiError
from models.events import InvalidEvent, check_id

#: Longer than any cursor this module writes (an id of at most 128 bytes and a float).
MAX_CURSOR_CHARS = 512


def encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([score, member])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(score, member) of a cursor from ``encode_cursor``; ApiError 400 ``invalid_cursor`` else."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = orjson.loads(raw)
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError("score")
        if not isinstance(member, str):
            raise ValueError("member")
        return float(score), check_id(member, "cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, InvalidEvent) as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not one this list returned") from exc
