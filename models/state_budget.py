"""Byte budgets for what a per-user state keeps: the encoded size of text, and how to cut it.

A per-user state is written to its table's changelog as compact JSON (``streams.tables``) on
every change, and the worker refuses to send a record over ``streams.app.MAX_RECORD_BYTES``
(256 KiB): it dead-letters it instead, which for a changelog means the state is lost. So every
state type is kept under ``STATE_BUDGET_BYTES``, half that limit, whatever a hostile producer
sends; its parts get smaller budgets of their own where they are kept.

Sizes here are exact sizes of orjson's encoding (UTF-8, ``"`` and ``\\`` escaped to two bytes,
control characters to two or six), not character counts: a string of 128 control characters is
768 bytes of JSON, and the budget is about bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

#: The most any one per-user state may take encoded: half the record limit the worker enforces
#: (``streams.app.MAX_RECORD_BYTES``), so that no input can make a state unsendable.
STATE_BUDGET_BYTES = 128 * 1024

# Control characters orjson writes as a two-byte escape; the other ones take six (\u00XX).
_SHORT_ESCAPES = frozenset("\b\t\n\f\r")


def _char_size(ch: str) -> int:
    code = ord(ch)
    if code < 0x20:
        return 2 if ch in _SHORT_ESCAPES else 6
    if ch in '"\\':
        return 2
    if code < 0x80:
        return 1
    if code < 0x800:
        return 2
    if 0xD800 <= code < 0xE000:  # a lone surrogate (never reaches state: orjson refuses it)
        return 6
    return 3 if code < 0x10000 else 4


def json_size(text: str) -> int:
    """Bytes of ``text`` encoded as a JSON string, quotes included."""
    try:
        return len(orjson.dumps(text))
    except orjson.JSONEncodeError:  # a lone surrogate, which orjson refuses to encode
        return 2 + sum(_char_size(ch) for ch in text)


def clip_text(text: str, max_bytes: int) -> str:
    """``text`` cut (at a character boundary) so that its JSON encoding is at most ``max_bytes``."""
    if json_size(text) <= max_bytes:
        return text
    room = max_bytes - 2
    kept = 0
    for index, ch in enumerate(text):
        kept += _char_size(ch)
        if kept > room:
            return text[:index]
    return text


def clip_optional(text: str | None, max_bytes: int) -> str | None:
    return None if text is None else clip_text(text, max_bytes)


def fit_texts(items: Iterable[str], max_bytes: int) -> tuple[str, ...]:
    """The items, in order, that fit in a JSON list of at most ``max_bytes``; an item that would
    overflow it is left out (a later, shorter one may still fit). Items are kept whole, never cut:
    a cut skill or interest would be another word, and would match what it should not."""
    kept: list[str] = []
    used = 2  # the brackets
    for item in items:
        cost = json_size(item) + (1 if kept else 0)  # the comma before it
        if used + cost <= max_bytes:
            kept.append(item)
            used += cost
    return tuple(kept)
