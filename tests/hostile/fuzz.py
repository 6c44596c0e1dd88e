"""Hypothesis strategies for records that are bad by construction, per input topic.

Each strategy draws a ``Bad`` record: a value (bytes), a key, and what is wrong with it. Every one
is bad by the contract (CONTRACT.md §4: not JSON, missing or mistyped required fields, ids over
128 bytes or holding control characters, ts more than 5 minutes ahead, oversized values, a key
that is not the id), judged here without the engine's own validator, so a validator that lets
something through is caught rather than used as the oracle.

A few records need an honest record before them: an event dated 1970 is only refused (``too_late``)
for a user whose newest event is recent, so it comes with that recent event as its ``anchor``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from infra.topics import APPLICATION_STATUS, BEHAVIOR_EVENTS, JOB_POSTINGS, USER_PROFILES
from models.time_units import DAY_MS

FIVE_MINUTES_MS = 5 * 60 * 1000
#: Largest value a case carries (an id or the whole value): far over the engine's 64 KiB.
HUGE = 200_000
_HOLE = "\u0000hole\u0000"


@dataclass(frozen=True)
class Bad:
    topic: str
    key: bytes | None
    value: bytes
    defect: str
    #: (key, value) of an honest record to send first, on the same key.
    anchor: tuple[bytes, bytes] | None = None


@dataclass(frozen=True)
class Shape:
    """A topic's valid record, its id fields, time field and the field that is the key."""

    topic: str
    key_field: str
    ids: tuple[str, ...]
    ts_field: str | None
    build: Callable[[str, int], dict[str, Any]]


def _behavior(uid: str, now: int) -> dict[str, Any]:
    return {"event_id": f"e-{uid}", "user_id": f"u-{uid}", "type": "lesson_complete", "ts": now - 60_000}


def _posting(uid: str, now: int) -> dict[str, Any]:
    return {"job_id": f"j-{uid}", "title": "Data analyst", "posted_at": now - 60_000, "skills": ["sql"]}


def _status(uid: str, now: int) -> dict[str, Any]:
    return {
        "event_id": f"a-{uid}",
        "application_id": f"app-{uid}",
        "user_id": f"u-{uid}",
        "job_id": f"j-{uid}",
        "status": "submitted",
        "ts": now - 60_000,
    }


def _profile(uid: str, now: int) -> dict[str, Any]:
    del now
    return {"user_id": f"u-{uid}", "display_name": "Amina", "timezone": "Africa/Nairobi"}


SHAPES = {
    BEHAVIOR_EVENTS: Shape(BEHAVIOR_EVENTS, "user_id", ("event_id", "user_id", "type"), "ts", _behavior),
    JOB_POSTINGS: Shape(JOB_POSTINGS, "job_id", ("job_id",), "posted_at", _posting),
    APPLICATION_STATUS: Shape(
        APPLICATION_STATUS,
        "user_id",
        ("event_id", "application_id", "user_id", "job_id", "status"),
        "ts",
        _status,
    ),
    USER_PROFILES: Shape(USER_PROFILES, "user_id", ("user_id",), None, _profile),
}


def _with_raw(record: dict[str, Any], field: str, raw_json: bytes) -> bytes:
    """``record`` as JSON with ``field``'s value replaced by ``raw_json`` verbatim (for values
    orjson will not write: 5,000 levels of nesting, lone surrogates)."""
    text = orjson.dumps({**record, field: _HOLE})
    return text.replace(orjson.dumps(_HOLE), raw_json)


uids = st.uuids().map(lambda u: u.hex[:12])
#: A valid id other than the record's own (a key that does not match).
other_ids = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=40).map(lambda s: f"k-{s}")
#: Characters ``str.isprintable`` refuses: controls, format characters, line/paragraph separators.
unprintable = st.characters(categories=["Cc", "Cf", "Zl", "Zp"])
#: JSON values of the wrong kind for a string id (None is "missing", also bad).
not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
)
#: JSON values that are not a time (RFC 3339 strings and numbers are; nothing else is).
not_times = st.one_of(
    st.booleans(),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
    st.text(max_size=40).map(lambda s: f"x{s}"),  # no RFC 3339 time starts with "x"
    st.sampled_from(["2026-11-22", "20261122T081500Z", "2026-11-22T08:15:00", "1969-12-31T23:59:59Z"]),
    st.integers(-(2**63), -1),
)


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict)
    except orjson.JSONDecodeError:
        return False


def _keyed(shape: Shape, record: dict[str, Any], key_mode: str) -> bytes | None:
    """The key a producer would give ``record``: its id (as the contract says), or none."""
    if key_mode == "none":
        return None
    value = record.get(shape.key_field)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return None


def bad_records(topic: str, now: int) -> st.SearchStrategy[Bad]:
    """Records of ``topic`` that are each bad in one way (``Bad.defect`` says which)."""
    shape = SHAPES[topic]
    key_modes = st.sampled_from(["id", "none"])

    @st.composite
    def random_bytes(draw: st.DrawFn) -> Bad:
        value = draw(st.binary(max_size=2048).filter(lambda b: not _is_json_object(b)))
        key = draw(st.one_of(st.none(), st.binary(max_size=64)))
        return Bad(topic, key, value, "random_bytes")

    @st.composite
    def not_an_object(draw: st.DrawFn) -> Bad:
        value = draw(st.one_of(not_strings, st.text(max_size=50)).filter(lambda v: not isinstance(v, dict)))
        return Bad(topic, None, orjson.dumps(value), "not_an_object")

    @st.composite
    def wrong_type(draw: st.DrawFn) -> Bad:
        record = shape.build(draw(uids), now)
        fields = [*shape.ids, *([shape.ts_field] if shape.ts_field else [])]
        field = draw(st.sampled_from(fields))
        record[field] = draw(not_times if field == shape.ts_field else not_strings)
        return Bad(topic, _keyed(shape, record, draw(key_modes)), orjson.dumps(record), f"wrong_type:{field}")

    @st.composite
    def missing_field(draw: st.DrawFn) -> Bad:
        record = shape.build(draw(uids), now)
        fields = [*shape.ids, *([shape.ts_field] if shape.ts_field else [])]
        field = draw(st.sampled_from(fields))
        key = _keyed(shape, record, draw(key_modes))
        del record[field]
        return Bad(topic, key, orjson.dumps(record), f"missing:{field}")

    @st.composite
    def deep_nesting(draw: st.DrawFn) -> Bad:
        depth = draw(st.integers(1_025, 5_000))
        nested = b"[" * depth + b"]" * depth
        if draw(st.booleans()):
            return Bad(topic, None, nested, "deep_nesting:value")
        record = shape.build(draw(uids), now)
        field = draw(st.sampled_from(shape.ids))
        key = _keyed(shape, record, draw(key_modes))
        return Bad(topic, key, _with_raw(record, field, nested), f"deep_nesting:{field}")

    @st.composite
    def huge_string(draw: st.DrawFn) -> Bad:
        record = shape.build(draw(uids), now)
        field = draw(st.sampled_from(shape.ids))
        # Hypothesis favours small numbers: ask for the large ones explicitly too.
        size = draw(st.one_of(st.integers(129, 4_096), st.integers(60_000, HUGE), st.just(HUGE)))
        fill = draw(st.characters(categories=["L", "N", "P"], max_codepoint=0xFFFF))
        record[field] = (fill * size)[: max(129, size // len(fill.encode()))]
        return Bad(topic, _keyed(shape, record, draw(key_modes)), orjson.dumps(record), f"huge:{field}")

    @st.composite
    def control_chars(draw: st.DrawFn) -> Bad:
        record = shape.build(draw(uids), now)
        field = draw(st.sampled_from(shape.ids))
        head = draw(st.text(st.characters(categories=["L", "N"]), max_size=20))
        bad = draw(st.text(unprintable, min_size=1, max_size=40))
        record[field] = f"{head}{bad}{head}"
        key = _keyed(shape, record, draw(key_modes))
        if draw(st.booleans()) or field == shape.key_field:
            return Bad(topic, key, orjson.dumps(record), f"control_chars:{field}")
        # An unpaired surrogate can only be written as a JSON escape.
        return Bad(topic, key, _with_raw(record, field, b'"x\\ud800y"'), f"lone_surrogate:{field}")

    @st.composite
    def long_id(draw: st.DrawFn) -> Bad:
        record = shape.build(draw(uids), now)
        field = draw(st.sampled_from(shape.ids))
        letters = st.characters(categories=["L", "N"], exclude_characters="\x00")
        record[field] = draw(
            st.text(letters, min_size=33, max_size=200).filter(lambda s: len(s.encode()) > 128)
        )
        return Bad(topic, _keyed(shape, record, draw(key_modes)), orjson.dumps(record), f"long_id:{field}")

    @st.composite
    def far_future(draw: st.DrawFn) -> Bad:
        assert shape.ts_field is not None
        record = shape.build(draw(uids), now)
        ahead = draw(
            st.one_of(
                st.integers(now + 2 * FIVE_MINUTES_MS, 253_402_300_799_999),  # up to year 9999
                st.integers(253_402_300_800_000, 2**62),  # past what a date can hold
                st.sampled_from(
                    ["9999-12-31T23:59:59Z", "3000-01-01T00:00:00+14:00", "10000-01-01T00:00:00Z"]
                ),
            )
        )
        record[shape.ts_field] = ahead
        return Bad(topic, _keyed(shape, record, draw(key_modes)), orjson.dumps(record), "far_future")

    @st.composite
    def far_past(draw: st.DrawFn) -> Bad:
        # Refused as too_late: the same user's newest event (the anchor) is recent, and 1970 is
        # far behind the dedup window before it. Keyed by the user so both land on its partition.
        uid = draw(uids)
        anchor = _behavior(f"{uid}-anchor", now)
        anchor["user_id"] = f"u-{uid}"
        record = _behavior(uid, now)
        record["ts"] = draw(
            st.one_of(
                st.integers(0, 365 * DAY_MS),
                st.sampled_from(["1970-01-01T00:00:00Z", "1970-06-30T12:00:00+03:00"]),
            )
        )
        key = record["user_id"].encode()
        return Bad(topic, key, orjson.dumps(record), "far_past", anchor=(key, orjson.dumps(anchor)))

    @st.composite
    def key_mismatch(draw: st.DrawFn) -> Bad:
        record = shape.build(draw(uids), now)
        key = draw(st.one_of(other_ids.map(str.encode), st.just(b"")))
        return Bad(topic, key, orjson.dumps(record), "empty_key" if key == b"" else "key_mismatch")

    cases = [
        random_bytes(),
        not_an_object(),
        wrong_type(),
        missing_field(),
        deep_nesting(),
        huge_string(),
        control_chars(),
        long_id(),
        key_mismatch(),
    ]
    if shape.ts_field is not None:
        cases.append(far_future())
    if topic == BEHAVIOR_EVENTS:
        cases.append(far_past())
    return st.one_of(cases)


def generate(strategy: st.SearchStrategy[Bad], n: int, seed_value: int) -> list[Bad]:
    """``n`` draws of ``strategy``, all up front (nothing is shrunk: no draw fails here)."""
    drawn: list[Bad] = []

    @seed(seed_value)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(bad: Bad) -> None:
        drawn.append(bad)

    collect()
    return drawn


def fresh_seed() -> int:
    return uuid.uuid4().int & 0xFFFF_FFFF
