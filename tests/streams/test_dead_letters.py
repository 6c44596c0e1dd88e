"""Dead letters are bounded whatever they refuse: an excerpt, the original's size and hash."""

from __future__ import annotations

import base64
import hashlib

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.records import EXCERPT_BYTES, DeadLetter, Record

#: A dead letter's encoded size never exceeds this, whatever the refused record held.
DEAD_LETTER_BUDGET = 16 * 1024


def letter(value: bytes | None, key: bytes | None = b"u-1", message: str = "bad") -> dict[str, object]:
    return DeadLetter(Record("behavior-events", 3, 42, key, value, 0), "not_json", message).as_dict()


def test_a_small_text_record_is_kept_whole_for_replay() -> None:
    d = letter(b'{"type": 1}')
    assert d["raw"] == '{"type": 1}'
    assert "raw_truncated" not in d
    assert d["raw_bytes"] == 11
    assert d["raw_sha256"] == hashlib.sha256(b'{"type": 1}').hexdigest()
    assert (d["topic"], d["partition"], d["offset"], d["reason"]) == ("behavior-events", 3, 42, "not_json")


def test_a_200_kb_record_of_control_bytes_becomes_a_small_dead_letter() -> None:
    raw = b"\x01" * 200_000
    d = letter(raw)
    encoded = orjson.dumps(d)
    assert len(encoded) < DEAD_LETTER_BUDGET  # was 1.2 MB: larger than the broker accepts
    assert d["raw_truncated"] is True
    assert d["raw_bytes"] == 200_000
    assert d["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert d["raw"] == "\x01" * EXCERPT_BYTES


def test_binary_values_keep_an_excerpt_of_their_bytes() -> None:
    raw = b"\xff\xfe" * 5000
    d = letter(raw)
    assert d["raw"] is None
    assert base64.b64decode(str(d["raw_b64"])) == raw[:EXCERPT_BYTES]


@given(
    st.one_of(st.none(), st.binary(max_size=300_000)),
    st.one_of(st.none(), st.binary(max_size=5000)),
    st.text(max_size=5000),
)
def test_any_dead_letter_stays_within_budget(value: bytes | None, key: bytes | None, message: str) -> None:
    assert len(orjson.dumps(letter(value, key, message))) < DEAD_LETTER_BUDGET


def test_a_character_split_by_the_cut_is_dropped_not_the_text() -> None:
    raw = b"a" * (EXCERPT_BYTES - 1) + "é".encode() * 10
    d = letter(raw)
    assert d["raw"] == "a" * (EXCERPT_BYTES - 1)
