from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest

from models.contact import MAX_EMAIL_LEN
from models.events import (
    FUTURE_TOLERANCE_MS,
    MAX_ID_LEN,
    MAX_VALUE_BYTES,
    REASONS,
    InvalidEvent,
    UserProfile,
    check_id,
    format_ts,
    parse_behavior,
    parse_profile,
    parse_ts,
    validate_behavior,
    validate_profile,
)

NOW = parse_ts("2026-11-22T09:00:00Z")


def good(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": "e-1",
        "user_id": "u-42",
        "type": "lesson_complete",
        "ts": "2026-11-22T08:15:00Z",
        "session_id": "s-9",
        "device": "mobile",
        "platform": "android",
        "props": {"lesson_id": "L12", "duration_s": 1800, "score": 87, "category": "behavioral"},
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not ...}


def reason_of(raw: bytes, parser: Any = parse_behavior) -> str:
    with pytest.raises(InvalidEvent) as info:
        parser(raw, NOW)
    return info.value.reason


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T08:15:00Z", 1_795_335_300_000),
        ("2026-11-22T08:15:00z", 1_795_335_300_000),
        ("2026-11-22t08:15:00Z", 1_795_335_300_000),
        ("2026-11-22 08:15:00Z", 1_795_335_300_000),
        ("2026-11-22T11:15:00+03:00", 1_795_335_300_000),
        ("2026-11-22T00:15:00-08:00", 1_795_335_300_000),
        ("2026-11-22T08:15:00.5Z", 1_795_335_300_500),
        ("2026-11-22T08:15:00.123456789Z", 1_795_335_300_123),
        ("2026-11-22T08:15:00.000Z", 1_795_335_300_000),
        ("1970-01-01T00:00:00Z", 0),
        ("2016-12-31T23:59:60Z", parse_ts("2016-12-31T23:59:59Z")),
    ],
)
def test_parse_ts_rfc3339(text: str, expected: int) -> None:
    assert parse_ts(text) == expected


def test_parse_ts_numbers_are_epoch_milliseconds() -> None:
    assert parse_ts(1_795_335_300_000) == 1_795_335_300_000
    assert parse_ts(1_795_335_300_000.9) == 1_795_335_300_000
    assert parse_ts(0) == 0


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        "2026-11-22",
        "2026-11-22T08:15:00",  # naive: no zone, not an instant
        "20261122T081500Z",
        "2026-02-30T00:00:00Z",
        "2026-11-22T25:00:00Z",
        "2026-11-22T08:15:00+24:00",
        "٢٠٢٦-11-22T08:15:00Z",
        "1795335300000",
        "yesterday",
        "",
        float("nan"),
        float("inf"),
        -1,
        10**20,
        "1969-12-31T23:59:59Z",
        [2026],
        {"ts": 1},
    ],
)
def test_parse_ts_rejects(value: object) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_ts(value)
    assert info.value.reason == "bad_ts"


def test_format_ts_round_trips_through_parse_ts() -> None:
    for ms in (0, 1_795_335_300_000, 1_795_335_300_123, 1_798_761_599_999):
        assert parse_ts(format_ts(ms)) == ms
    assert format_ts(1_795_335_300_000) == "2026-11-22T08:15:00Z"
    assert format_ts(1_795_335_300_007) == "2026-11-22T08:15:00.007Z"


# --- behavior events ----------------------------------------------------------------------------


def test_parse_behavior_contract_example() -> None:
    ev = parse_behavior(orjson.dumps(good()), NOW)
    assert ev.event_id == "e-1"
    assert ev.user_id == "u-42"
    assert ev.type == "lesson_complete"
    assert ev.ts_ms == parse_ts("2026-11-22T08:15:00Z")
    assert (ev.session_id, ev.device, ev.platform) == ("s-9", "mobile", "android")
    assert ev.props["duration_s"] == 1800


def test_optional_fields_default_and_numeric_ts() -> None:
    raw = orjson.dumps({"event_id": "e", "user_id": "u", "type": "x", "ts": NOW})
    ev = parse_behavior(raw, NOW)
    assert (ev.session_id, ev.device, ev.platform, ev.props) == (None, None, None, {})
    assert ev.ts_ms == NOW
    ev2 = parse_behavior(orjson.dumps(good(props=None, session_id=None)), NOW)
    assert ev2.props == {}
    assert ev2.session_id is None


def test_unknown_type_is_valid() -> None:
    assert parse_behavior(orjson.dumps(good(type="page_scrolled")), NOW).type == "page_scrolled"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"a string"', "not_object"),
        (b"null", "not_object"),
        (orjson.dumps(good(event_id=...)), "missing_field"),
        (orjson.dumps(good(user_id=None)), "missing_field"),
        (orjson.dumps(good(type="")), "missing_field"),
        (orjson.dumps(good(ts=...)), "missing_field"),
        (orjson.dumps(good(event_id=7)), "bad_type"),
        (orjson.dumps(good(user_id=["u"])), "bad_type"),
        (orjson.dumps(good(props=[1])), "bad_type"),
        (orjson.dumps(good(props="x")), "bad_type"),
        (orjson.dumps(good(device=3)), "bad_type"),
        (orjson.dumps(good(session_id={})), "bad_type"),
        (orjson.dumps(good(event_id="e" * (MAX_ID_LEN + 1))), "id_too_long"),
        (orjson.dumps(good(user_id="u" * (MAX_ID_LEN + 1))), "id_too_long"),
        (orjson.dumps(good(session_id="s" * (MAX_ID_LEN + 1))), "id_too_long"),
        (orjson.dumps(good(ts="not a time")), "bad_ts"),
        (orjson.dumps(good(ts=True)), "bad_ts"),
        (orjson.dumps(good(ts=NOW + FUTURE_TOLERANCE_MS + 1)), "ts_in_future"),
        (b" " * (MAX_VALUE_BYTES + 1), "too_large"),
    ],
)
def test_parse_behavior_reasons(raw: bytes, reason: str) -> None:
    assert reason_of(raw) == reason


def test_id_limit_is_inclusive_and_counts_utf8_bytes() -> None:
    ev = parse_behavior(orjson.dumps(good(event_id="é" * (MAX_ID_LEN // 2))), NOW)
    assert len(ev.event_id.encode()) == MAX_ID_LEN
    with pytest.raises(InvalidEvent) as exc:
        parse_behavior(orjson.dumps(good(event_id="é" * (MAX_ID_LEN // 2) + "x")), NOW)
    assert exc.value.reason == "id_too_long"


@pytest.mark.parametrize("bad", ["\x00", "a\nb", "\x1b[31m", "\u200b", "\u2028", "tab\there", "\x7f"])
def test_ids_with_control_or_invisible_characters_are_refused(bad: str) -> None:
    for field in ("event_id", "user_id", "type", "session_id"):
        with pytest.raises(InvalidEvent) as exc:
            parse_behavior(orjson.dumps(good(**{field: bad})), NOW)
        assert exc.value.reason == "bad_id", field


def test_lone_surrogate_id_is_refused() -> None:
    with pytest.raises(InvalidEvent) as exc:
        check_id("\ud800", "user_id")
    assert exc.value.reason == "bad_id"


def test_future_tolerance_boundary() -> None:
    assert (
        parse_behavior(orjson.dumps(good(ts=NOW + FUTURE_TOLERANCE_MS)), NOW).ts_ms
        == NOW + FUTURE_TOLERANCE_MS
    )


def test_size_limit_boundary() -> None:
    base = orjson.dumps(good(props={"pad": ""}))
    pad = "x" * (MAX_VALUE_BYTES - len(base))
    exact = orjson.dumps(good(props={"pad": pad}))
    assert len(exact) == MAX_VALUE_BYTES
    assert parse_behavior(exact, NOW).props["pad"] == pad
    assert reason_of(orjson.dumps(good(props={"pad": pad + "x"}))) == "too_large"


def test_validate_behavior_same_checks_on_decoded_items() -> None:
    assert validate_behavior(good(), NOW).event_id == "e-1"
    for item, reason in [
        ([1], "not_object"),
        ("e-1", "not_object"),
        (good(user_id=...), "missing_field"),
        (good(ts=NOW + FUTURE_TOLERANCE_MS + 1), "ts_in_future"),
        (good(props={"pad": "x" * MAX_VALUE_BYTES}), "too_large"),
        (good(props={"when": object()}), "bad_type"),
    ]:
        with pytest.raises(InvalidEvent) as info:
            validate_behavior(item, NOW)
        assert info.value.reason == reason, item


def test_invalid_event_carries_reason_and_message() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_behavior(orjson.dumps(good(event_id=...)), NOW)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.reason == "missing_field"
    assert "event_id" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, str(copy)) == (err.reason, str(err))


# --- profiles ---------------------------------------------------------------------------------


PROFILE = {
    "user_id": "u-42",
    "display_name": "Amina",
    "timezone": "Africa/Nairobi",
    "location": "Nairobi",
    "skills": ["sql", "excel"],
    "experience_years": 0,
    "education": "bachelor",
    "interests": ["data"],
    "salary_expectation": 70000,
    "currency": "KES",
    "notification_prefs": {"channels": ["IN_APP", "PUSH"], "quiet_hours": ["21:00", "07:00"]},
}


def test_parse_profile_contract_example() -> None:
    p = parse_profile(orjson.dumps(PROFILE), NOW)
    assert p == UserProfile(
        user_id="u-42",
        display_name="Amina",
        timezone="Africa/Nairobi",
        location="Nairobi",
        skills=("sql", "excel"),
        experience_years=0,
        education="bachelor",
        interests=("data",),
        salary_expectation=70000,
        currency="KES",
        notification_prefs={"channels": ["IN_APP", "PUSH"], "quiet_hours": ["21:00", "07:00"]},
    )


def test_profile_defaults() -> None:
    p = parse_profile(b'{"user_id": "u-1"}', NOW)
    assert p.timezone == "UTC"
    assert (p.skills, p.interests, p.notification_prefs) == ((), (), {})
    assert parse_profile(b'{"user_id": "u-1", "timezone": null}', NOW).timezone == "UTC"


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "bad_timezone"),
        ({"timezone": "America"}, "bad_timezone"),
        ({"timezone": "../../etc/passwd"}, "bad_timezone"),
        ({"timezone": "/etc/localtime"}, "bad_timezone"),
        ({"timezone": "utc"}, "bad_timezone"),
        ({"timezone": 3}, "bad_type"),
        ({"user_id": None}, "missing_field"),
        ({"user_id": "u" * (MAX_ID_LEN + 1)}, "id_too_long"),
        ({"skills": "sql"}, "bad_type"),
        ({"skills": ["sql", 1]}, "bad_type"),
        ({"experience_years": "two"}, "bad_type"),
        ({"experience_years": True}, "bad_type"),
        ({"notification_prefs": []}, "bad_type"),
        ({"display_name": 5}, "bad_type"),
    ],
)
def test_parse_profile_reasons(patch: dict[str, Any], reason: str) -> None:
    assert reason_of(orjson.dumps({**PROFILE, **patch}), parse_profile) == reason


def test_parse_profile_not_json_and_size() -> None:
    assert reason_of(b"{", parse_profile) == "not_json"
    assert reason_of(b"[]", parse_profile) == "not_object"
    assert reason_of(b" " * (MAX_VALUE_BYTES + 1), parse_profile) == "too_large"


@pytest.mark.parametrize(
    "tz", ["Pacific/Kiritimati", "America/Los_Angeles", "Etc/GMT-14", "UTC", "Asia/Kolkata"]
)
def test_real_timezones_accepted(tz: str) -> None:
    assert parse_profile(orjson.dumps({"user_id": "u", "timezone": tz}), NOW).timezone == tz


# --- profile contact and updated_at -----------------------------------------------------------


def test_profile_contact_is_normalised() -> None:
    p = parse_profile(
        orjson.dumps({**PROFILE, "email": " Amina.O@Example.CO.KE ", "phone": "00254 712-345 678"}), NOW
    )
    assert (p.email, p.phone) == ("Amina.O@example.co.ke", "+254712345678")
    assert p.updated_at_ms is None
    # Absent, null or blank contact is no contact.
    for blank in ({}, {"email": None, "phone": None}, {"email": "", "phone": "  "}):
        q = parse_profile(orjson.dumps({**PROFILE, **blank}), NOW)
        assert (q.email, q.phone) == (None, None)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"email": "a@b.com\r\nBcc: x@y.z"}, "bad_email"),
        ({"email": "a@b.com,x@y.z"}, "bad_email"),
        ({"email": "Amina <a@b.com>"}, "bad_email"),
        ({"email": "amina"}, "bad_email"),
        ({"email": 5}, "bad_type"),
        ({"phone": "0712345678"}, "bad_phone"),
        ({"phone": "+0254712345678"}, "bad_phone"),
        ({"phone": "+254712345678\nBcc: x"}, "bad_phone"),
        ({"phone": "+\u0662\u0665\u0664\u0667\u0661\u0662\u0663\u0664\u0665"}, "bad_phone"),
        ({"phone": 254712345678}, "bad_type"),
        ({"updated_at": "yesterday"}, "bad_ts"),
        ({"updated_at": True}, "bad_ts"),
        ({"updated_at": NOW + FUTURE_TOLERANCE_MS + 1}, "ts_in_future"),
        ({"updated_at": format_ts(NOW + FUTURE_TOLERANCE_MS + 1000)}, "ts_in_future"),
    ],
)
def test_profile_contact_and_updated_at_reasons(patch: dict[str, Any], reason: str) -> None:
    assert reason in REASONS
    assert reason_of(orjson.dumps({**PROFILE, **patch}), parse_profile) == reason
    # The API's checks are the worker's: the same refusal for the decoded object.
    with pytest.raises(InvalidEvent) as info:
        validate_profile({**PROFILE, **patch}, NOW)
    assert info.value.reason == reason


def test_an_overlong_contact_is_a_bad_one_not_an_overlong_id() -> None:
    address = "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com"
    assert len(address) > MAX_EMAIL_LEN
    assert reason_of(orjson.dumps({**PROFILE, "email": address}), parse_profile) == "bad_email"
    assert reason_of(orjson.dumps({**PROFILE, "phone": "+1" + "2" * 300}), parse_profile) == "bad_phone"


def test_profile_updated_at_within_the_future_tolerance() -> None:
    edge = parse_profile(orjson.dumps({**PROFILE, "updated_at": NOW + FUTURE_TOLERANCE_MS}), NOW)
    assert edge.updated_at_ms == NOW + FUTURE_TOLERANCE_MS
    stamped = parse_profile(orjson.dumps({**PROFILE, "updated_at": "2026-11-22T08:15:00.250Z"}), NOW)
    assert stamped.updated_at_ms == parse_ts("2026-11-22T08:15:00.250Z")
    for none in (None, ""):
        assert parse_profile(orjson.dumps({**PROFILE, "updated_at": none}), NOW).updated_at_ms is None
