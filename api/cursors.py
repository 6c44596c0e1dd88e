"""Opaque page cursors for lists kept as Redis sorted sets (``GET /v1/at-risk``).

A cursor names the last row of a page by its position in the set's order: its score and its
member. The next page starts after it (keyset paging), so rows added or re-scored between two
requests do not shift the pages by an offset. A cursor is base64url JSON, readable but not
meaningful to clients; a malformed or forged one is a 400, never a Redis error.

A cursor may carry a *scope*: a tag of the filters of the list that returned it
(``models.risk_workflow.filter_scope``). It then continues only that list: a cursor of another
filter is a 400 as well, never silently read as a position in a list it did not come from. A
cursor without a scope (written before scopes) continues an unfiltered list only.
"""

from __future__ import annotations

import base64
import binascii
import math

import orjson

from api.errors import ApiError
from models.events import InvalidEvent, check_id

#: Longer than any cursor this module writes (an id of at most 128 bytes, a float and a scope).
MAX_CURSOR_CHARS = 512
#: A scope is a short tag (12 hex digits from ``filter_scope``); longer is not one of ours.
MAX_SCOPE_CHARS = 32


def encode_cursor(score: float, member: str, scope: str | None = None) -> str:
    fields: list[object] = [score, member] if scope is None else [score, member, scope]
    return base64.urlsafe_b64encode(orjson.dumps(fields)).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str | None = None, unscoped_ok: bool = True) -> tuple[float, str]:
    """(score, member) of a cursor from ``encode_cursor``; ApiError 400 ``invalid_cursor`` else,
    and for a cursor of another scope than ``scope`` (an unscoped cursor passes only when
    ``unscoped_ok``: the list it continues is the unfiltered one)."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        fields = orjson.loads(raw)
        if not isinstance(fields, list) or len(fields) not in (2, 3):
            raise ValueError("shape")
        if len(fields) == 3:
            tag = fields.pop()
            if not isinstance(tag, str) or len(tag) > MAX_SCOPE_CHARS or (scope is not None and tag != scope):
                raise ValueError("scope")
        elif not unscoped_ok:
            raise ValueError("scope")
        score, member = fields
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError("score")
        if not isinstance(member, str):
            raise ValueError("member")
        return float(score), check_id(member, "cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, InvalidEvent) as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not one this list returned") from exc
