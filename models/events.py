"""Input records and their validation.

Every message a worker or the ingest API accepts passes through here, so a malformed value is
rejected once, with a short `reason` code that both the dead-letter path and the per-item HTTP
errors can report, instead of failing somewhere deep inside the engine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from models.boards import InvalidGroup, checked_group
from models.contact import InvalidContact, normalize_email, normalize_phone
from models.tz import is_valid_timezone

#: Ids are bounded in UTF-8 bytes, not characters: 128 characters of 4-byte UTF-8 would be 512
#: bytes, and a byte budget is what keeps every record and state that holds ids bounded.
MAX_ID_LEN = 128
MAX_VALUE_BYTES = 64 * 1024
FUTURE_TOLERANCE_MS = 5 * 60 * 1000

# The largest instant datetime can represent (9999-12-31T23:59:59.999Z); anything later could not
# be turned into a calendar day downstream.
MAX_TS_MS = 253_402_300_799_999

REASONS = frozenset(
    {
        "not_json",
        "not_object",
        "missing_field",
        "bad_type",
        "id_too_long",
        "bad_ts",
        "ts_in_future",
        "too_large",
        "bad_timezone",
        "bad_email",
        "bad_phone",
        "too_late",
        "bad_status",
        "bad_id",
    }
)


class InvalidEvent(ValueError):
    """A record we refuse; `reason` is a fixed vocabulary so it can be a Prometheus label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the two-argument constructor working through pickle (multiprocessing, Faust).
        return (type(self), (self.reason, self.message))


# ---------------------------------------------------------------------------------------------
# Timestamps

# RFC 3339 proper: datetime.fromisoformat would also accept date-only and "basic" ISO forms,
# and naive times, none of which name an instant unambiguously.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d would otherwise match any Unicode digit ("٢٠٢٦").
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def parse_ts(value: object) -> int:
    """Epoch milliseconds from an RFC 3339 string or a number of epoch milliseconds.

    Instants before 1970 or beyond year 9999 are refused: neither is a plausible event time,
    and the latter cannot be turned into a date later on.
    """
    if isinstance(value, bool):  # bool is an int subclass; `true` is not a time.
        raise InvalidEvent("bad_ts", "ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent("bad_ts", "ts must be a finite number")
        ms = math.floor(value)
    elif isinstance(value, str):
        ms = _parse_rfc3339(value)
    else:
        raise InvalidEvent("bad_ts", "ts must be an RFC 3339 string or epoch milliseconds")
    if not 0 <= ms <= MAX_TS_MS:
        raise InvalidEvent("bad_ts", "ts is outside 1970-01-01..9999-12-31")
    return ms


def _parse_rfc3339(text: str) -> int:
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise InvalidEvent("bad_ts", f"ts is not RFC 3339 (e.g. 2026-11-22T08:15:00Z): {text[:64]!r}")
    if m.group(6) != "60":
        # Fast path (C): the regex has vouched for the shape; fromisoformat does the arithmetic.
        try:
            delta = datetime.fromisoformat(text) - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        except ValueError:
            pass  # e.g. lowercase 't'/'z' or an out-of-range field: the general path decides
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction, zulu, sign, off_h, off_m = m.group(7), m.group(8), m.group(9), m.group(10), m.group(11)
    # A leap second (:60) names the last instant of its minute; Python has no such second.
    second = min(second, 59)
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    try:
        if zulu:
            tz = UTC
        else:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        moment = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as exc:
        raise InvalidEvent("bad_ts", f"ts is not a valid date/time: {text[:64]!r}") from exc
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + millis


def format_ts(ms: int) -> str:
    """RFC 3339 in UTC; milliseconds only when present, so round numbers read like the contract."""
    # isoformat (C) on a naive UTC datetime is twice as fast as strftime; this runs for every
    # timestamp of every serving view.
    moment = _NAIVE_EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds") + "Z"


# ---------------------------------------------------------------------------------------------
# Field helpers


def _decode_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidEvent("too_large", f"value is {len(raw)} bytes; the limit is {MAX_VALUE_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"value must be a JSON object, got {type(obj).__name__}")
    return obj


def check_id(value: str, name: str) -> str:
    """``value`` if it is a usable id: 1..MAX_ID_LEN UTF-8 bytes, every character printable.

    Control characters, separators other than the ASCII space and unpaired surrogates are
    refused: they make ids that look alike, JSON-escape to six bytes each (an id of 128 control
    characters is 768 bytes of JSON), and end up in Redis keys, logs and channel names.
    """
    if not value:
        raise InvalidEvent("missing_field", f"{name} is required")
    if len(value) > MAX_ID_LEN:  # cheap first: a character is at least one byte
        raise InvalidEvent("id_too_long", f"{name} is longer than {MAX_ID_LEN} bytes")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") is not UTF-8
        raise InvalidEvent("bad_id", f"{name} is not valid UTF-8") from exc
    if size > MAX_ID_LEN:
        raise InvalidEvent("id_too_long", f"{name} is {size} bytes of UTF-8; the limit is {MAX_ID_LEN}")
    if not value.isprintable():
        raise InvalidEvent("bad_id", f"{name} holds control or non-printable characters")
    return value


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a string ``check_id`` accepts (for callers that only filter)."""
    if not isinstance(value, str):
        return False
    try:
        check_id(value, "id")
    except InvalidEvent:
        return False
    return True


def _required_id(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None or value == "":
        raise InvalidEvent("missing_field", f"{name} is required")
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string")
    return check_id(value, name)


#: Free text (titles, names, notes) is bounded too: every field ends up in some state or view.
MAX_TEXT_LEN = 512
#: Entries of a list of strings (skills, interests), and each entry's length.
MAX_LIST_ITEMS = 100
MAX_LIST_ITEM_LEN = 128


def _optional_str(obj: dict[str, Any], name: str, max_len: int = MAX_TEXT_LEN) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string or null")
    if len(value) > max_len:
        raise InvalidEvent("id_too_long", f"{name} is longer than {max_len} characters")
    return value


def _optional_id(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string or null")
    return check_id(value, name)


def _optional_number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent("bad_type", f"{name} must be a number or null")
    return value


def _optional_object(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent("bad_type", f"{name} must be an object")
    return value


def _required_ts(obj: dict[str, Any], now_ms: int, name: str = "ts") -> int:
    if obj.get(name) is None or obj.get(name) == "":
        raise InvalidEvent("missing_field", f"{name} is required")
    ts_ms = parse_ts(obj[name])
    if ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        minutes = FUTURE_TOLERANCE_MS // 60_000
        raise InvalidEvent("ts_in_future", f"{name} is more than {minutes} minutes ahead")
    return ts_ms


def _str_list(obj: dict[str, Any], name: str) -> tuple[str, ...]:
    value = obj.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidEvent("bad_type", f"{name} must be a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise InvalidEvent("bad_type", f"{name} has more than {MAX_LIST_ITEMS} entries")
    if any(len(item) > MAX_LIST_ITEM_LEN for item in value):
        raise InvalidEvent("id_too_long", f"an entry of {name} is longer than {MAX_LIST_ITEM_LEN} characters")
    return tuple(value)


# ---------------------------------------------------------------------------------------------
# behavior-events


@dataclass(frozen=True, slots=True)
class BehaviorEvent:
    event_id: str
    user_id: str
    type: str
    ts_ms: int
    session_id: str | None
    device: str | None
    platform: str | None
    props: dict[str, Any]


def parse_behavior(raw: bytes, now_ms: int) -> BehaviorEvent:
    """Decode and validate one `behavior-events` value; `now_ms` bounds how far ahead ts may be."""
    return _behavior_from_object(_decode_object(raw), now_ms)


def validate_behavior(obj: object, now_ms: int) -> BehaviorEvent:
    """The same checks for an item the HTTP API has already decoded (one of a batch).

    The size limit is checked on the item's own JSON encoding, so an item the API accepts is
    never dead-lettered as too large by the worker that reads it back.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"event must be a JSON object, got {type(obj).__name__}")
    try:
        size = len(orjson.dumps(obj))
    except TypeError as exc:  # orjson.JSONEncodeError; only non-JSON Python values get here.
        raise InvalidEvent("bad_type", f"event is not JSON-serialisable: {exc}") from exc
    if size > MAX_VALUE_BYTES:
        raise InvalidEvent("too_large", f"event is {size} bytes; the limit is {MAX_VALUE_BYTES}")
    return _behavior_from_object(obj, now_ms)


def _behavior_from_object(obj: dict[str, Any], now_ms: int) -> BehaviorEvent:
    event_id = _required_id(obj, "event_id")
    user_id = _required_id(obj, "user_id")
    # `type` is bounded like an id: it becomes a counter name kept in per-user state.
    event_type = _required_id(obj, "type")
    ts_ms = _required_ts(obj, now_ms)
    return BehaviorEvent(
        event_id=event_id,
        user_id=user_id,
        type=event_type,
        ts_ms=ts_ms,
        session_id=_optional_id(obj, "session_id"),
        device=_optional_str(obj, "device", MAX_ID_LEN),
        platform=_optional_str(obj, "platform", MAX_ID_LEN),
        props=_optional_object(obj, "props"),
    )


# ---------------------------------------------------------------------------------------------
# user-profiles


@dataclass(frozen=True, slots=True)
class UserProfile:
    user_id: str
    display_name: str | None = None
    timezone: str = "UTC"
    location: str | None = None
    skills: tuple[str, ...] = ()
    experience_years: float | None = None
    education: str | None = None
    interests: tuple[str, ...] = ()
    salary_expectation: float | None = None
    currency: str | None = None
    notification_prefs: dict[str, Any] = field(default_factory=dict)
    #: Where the delivery services reach the user (models/contact.py): checked and normalised.
    email: str | None = None
    phone: str | None = None
    #: When the profile was written (the API stamps its PUTs, so it can wait for the worker to
    #: show its version); None from a producer that does not say.
    updated_at_ms: int | None = None
    #: The user's school and cohort (their group leaderboards; models/boards.py), trimmed.
    school: str | None = None
    cohort: str | None = None
    #: False hides the user from every public leaderboard (they still see their own standing).
    leaderboard_visible: bool = True


def parse_profile(raw: bytes, now_ms: int) -> UserProfile:
    """Decode and validate one `user-profiles` value; `now_ms` bounds how far ahead
    ``updated_at`` may be."""
    return validate_profile(_decode_object(raw), now_ms)


def validate_profile(obj: dict[str, Any], now_ms: int) -> UserProfile:
    """The same checks for a profile the HTTP API has already decoded (a PUT's body)."""
    user_id = _required_id(obj, "user_id")
    tz_name = obj.get("timezone")
    if tz_name is None or tz_name == "":
        tz_name = "UTC"
    elif not isinstance(tz_name, str):
        raise InvalidEvent("bad_type", "timezone must be a string")
    elif not is_valid_timezone(tz_name):
        raise InvalidEvent("bad_timezone", f"unknown IANA time zone: {tz_name[:64]!r}")
    return UserProfile(
        user_id=user_id,
        display_name=_optional_str(obj, "display_name"),
        timezone=tz_name,
        location=_optional_str(obj, "location"),
        skills=_str_list(obj, "skills"),
        experience_years=_optional_number(obj, "experience_years"),
        education=_optional_str(obj, "education"),
        interests=_str_list(obj, "interests"),
        salary_expectation=_optional_number(obj, "salary_expectation"),
        currency=_optional_str(obj, "currency", 16),
        notification_prefs=_optional_object(obj, "notification_prefs"),
        email=_contact(obj, "email", normalize_email),
        phone=_contact(obj, "phone", normalize_phone),
        updated_at_ms=None
        if obj.get("updated_at") in (None, "")
        else _required_ts(obj, now_ms, "updated_at"),
        school=_optional_group(obj, "school"),
        cohort=_optional_group(obj, "cohort"),
        leaderboard_visible=_optional_bool(obj, "leaderboard_visible", True),
    )


def _optional_group(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string or null")
    try:
        return checked_group(value, name)
    except InvalidGroup as exc:
        raise InvalidEvent(exc.reason, exc.message) from exc


def _optional_bool(obj: dict[str, Any], name: str, default: bool) -> bool:
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidEvent("bad_type", f"{name} must be true, false or null")
    return value


def _contact(obj: dict[str, Any], name: str, normalize: Callable[[str], str]) -> str | None:
    value = obj.get(name)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string or null")
    try:
        # normalize bounds the length itself, so an overlong address is a bad one, not an id.
        return normalize(value)
    except InvalidContact as exc:
        raise InvalidEvent(exc.reason, exc.message) from exc


# ---------------------------------------------------------------------------------------------
# job-postings

MAX_SKILLS = MAX_LIST_ITEMS


@dataclass(frozen=True, slots=True)
class JobPosting:
    """A validated posting. Skills are lower-cased, stripped and de-duplicated (order kept), so
    "SQL" and "sql " are one skill everywhere downstream."""

    job_id: str
    title: str
    posted_at_ms: int
    company: str | None = None
    location: str | None = None
    industry: str | None = None
    skills: tuple[str, ...] = ()
    experience_years: float | None = None
    education: str | None = None
    salary_min: float | None = None
    salary_max: float | None = None
    currency: str | None = None
    deadline_ms: int | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "title": self.title,
            "posted_at_ms": self.posted_at_ms,
            "company": self.company,
            "location": self.location,
            "industry": self.industry,
            "skills": list(self.skills),
            "experience_years": self.experience_years,
            "education": self.education,
            "salary_min": self.salary_min,
            "salary_max": self.salary_max,
            "currency": self.currency,
            "deadline_ms": self.deadline_ms,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobPosting:
        return cls(**{**data, "skills": tuple(data.get("skills") or ())})


def normalize_skills(skills: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.strip().lower() for s in skills if s.strip()))


def parse_posting(raw: bytes, now_ms: int) -> JobPosting:
    """Decode and validate one `job-postings` value. Required: `job_id`, `title`, `posted_at`."""
    obj = _decode_object(raw)
    job_id = _required_id(obj, "job_id")
    title = _optional_str(obj, "title", MAX_TEXT_LEN)
    if not title:
        raise InvalidEvent("missing_field", "title is required")
    posted_at = _required_ts(obj, now_ms, "posted_at")
    deadline = obj.get("deadline")
    skills = _str_list(obj, "skills")
    if len(skills) > MAX_SKILLS:
        raise InvalidEvent("bad_type", f"skills has more than {MAX_SKILLS} entries")
    salary_min = _optional_number(obj, "salary_min")
    salary_max = _optional_number(obj, "salary_max")
    if salary_min is not None and salary_max is not None and salary_min > salary_max:
        raise InvalidEvent("bad_type", "salary_min is above salary_max")
    return JobPosting(
        job_id=job_id,
        title=title,
        posted_at_ms=posted_at,
        company=_optional_str(obj, "company", MAX_TEXT_LEN),
        location=_optional_str(obj, "location", MAX_TEXT_LEN),
        industry=_optional_str(obj, "industry", MAX_TEXT_LEN),
        skills=normalize_skills(skills),
        experience_years=_optional_number(obj, "experience_years"),
        education=_optional_str(obj, "education", MAX_TEXT_LEN),
        salary_min=salary_min,
        salary_max=salary_max,
        currency=_optional_str(obj, "currency", 16),
        deadline_ms=None if deadline is None else parse_ts(deadline),
        source=_optional_str(obj, "source", MAX_TEXT_LEN),
    )


# ---------------------------------------------------------------------------------------------
# application-status

APPLICATION_STATUSES = (
    "submitted",
    "viewed",
    "screening",
    "interview_scheduled",
    "interviewed",
    "offer",
    "hired",
    "rejected",
    "withdrawn",
)


@dataclass(frozen=True, slots=True)
class ApplicationStatusEvent:
    event_id: str
    application_id: str
    user_id: str
    job_id: str
    status: str
    ts_ms: int
    note: str | None = None


def parse_application_status(raw: bytes, now_ms: int) -> ApplicationStatusEvent:
    """Decode and validate one `application-status` value.

    Only a malformed record is refused; an illegal transition is a fact about the history,
    judged by ``models.applications`` against the other events of the application.
    """
    obj = _decode_object(raw)
    event = ApplicationStatusEvent(
        event_id=_required_id(obj, "event_id"),
        application_id=_required_id(obj, "application_id"),
        user_id=_required_id(obj, "user_id"),
        job_id=_required_id(obj, "job_id"),
        status=_required_id(obj, "status"),
        ts_ms=_required_ts(obj, now_ms),
        note=_optional_str(obj, "note", MAX_TEXT_LEN),
    )
    if event.status not in APPLICATION_STATUSES:
        raise InvalidEvent("bad_status", f"status must be one of {', '.join(APPLICATION_STATUSES)}")
    return event
