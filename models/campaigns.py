"""Admin campaigns: scheduled interventions for a targeted set of users, evaluated per user.

Kinds
  * one_time: a single UTC instant (`schedule.at`), the same moment for everyone.
  * recurring: "daily", "weekly" (on `weekday`, 0 = Monday) or "monthly" (on `day_of_month`; a
    month shorter than it uses its last day, so "31" means "the last day" in April and February),
    at `local_time` (HH:MM) in EACH USER's time zone: 09:00 is 09:00 in Nairobi and in New York.
  * drip: a sequence of steps `offsets_days` after the user's signup (0 = the signup day), each at
    `local_time` on the user's LOCAL date signup-date + offset. A day-0 step whose local time had
    already passed when the user signed up fires at the signup instant instead (otherwise anyone
    signing up after 09:00 would silently miss the welcome step). No signup, no drip.

Stream time
  Nothing here reads a clock. A campaign is evaluated on the worker that owns the user, and an
  occurrence fires when the event-time watermark passes its `at_ms`: the caller asks for the
  occurrences in (last look, watermark]. Because they are a pure function of the campaign, the
  user's zone and signup, and the two bounds, a replay of the history fires exactly the same
  occurrences as the live run, and splitting a span anywhere gives the same occurrences as
  the whole span (the properties the tests check). `due` adds the campaign's own gating: only an
  active campaign fires, and only occurrences after its latest activation (`activated_ms`, the
  admin's clock when it was activated or resumed), so what a draft or paused campaign skipped is
  not caught up later, in a replay or live.

Idempotency
  Each occurrence has a `key`, stable across replays: "once" (one_time), the user's local date
  "2026-11-22" (recurring) or "d3" (the drip step's offset). The delivery key is
  f"campaign:{campaign_id}:{key}"; keying recurring occurrences by local date also means a user
  who changes time zone gets at most one per local date. Campaign ids are restricted to
  [A-Za-z0-9._-] so that key splits unambiguously and is safe in URLs and Redis keys.

DST
  Local times are converted with the user's IANA zone day by day. A local time that does not
  exist (the spring-forward gap: 02:30 on 2026-03-08 in New York) fires at the first valid
  instant after it, the end of the gap (03:00 EDT); an ambiguous one (fall-back: 01:30 on
  2026-11-01 happens twice) fires once, at its first occurrence (fold=0, the daylight one).
  Iteration is over local days (weekly jumps a week, monthly a month), never minutes, and
  `occurrences` returns at most MAX_OCCURRENCES (400, time-ordered): a caller that needs more asks
  again from the last one's `at_ms`.

Targeting (`targets`, evaluated when an occurrence fires, with event time `now_ms`)
  * all: everyone.
  * at_risk: a risk score exists and is >= `threshold` (0-100, like models.risk).
  * inactive: no activity at all, or none for at least `inactive_days` days of event time
    (exactly 7 days counts as 7 days inactive).
  * filter: one profile field compared with `value`. Strings compare trimmed and case-folded
    ("nairobi" matches "Nairobi "). A missing field or a value of the wrong type never matches
    and never raises: profiles are only loosely typed, and one odd profile must not stop a
    campaign. Which ops apply to which fields is checked when the campaign is created.

Status
  Stored statuses are draft, active and paused (created as draft unless the body says
  otherwise). "completed" is derived, never stored (`effective_status`): an active campaign that
  can never fire again (its one_time instant or its end has passed). Activating a campaign that
  could never fire is refused, so an admin learns at once that the instant is already past.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from itertools import islice, pairwise
from typing import Any, NoReturn

from models.events import MAX_ID_LEN, MAX_TS_MS, InvalidEvent, format_ts, parse_ts
from models.interventions import INTERVENTION_TYPES
from models.streaks import local_day
from models.time_units import DAY_MS
from models.tz import local_instant_ms, zone

CAMPAIGN_KINDS = ("one_time", "recurring", "drip")
STATUSES = ("draft", "active", "paused")
RECURRENCES = ("daily", "weekly", "monthly")
TARGET_KINDS = ("all", "at_risk", "inactive", "filter")
FILTER_OPS = ("eq", "ne", "in", "contains", "gte", "lte")

# Profile fields a filter may read, by how they compare; each field's ops follow from its type.
_TEXT_FIELDS = ("location", "education", "timezone", "currency")
_NUMBER_FIELDS = ("experience_years", "salary_expectation")
_LIST_FIELDS = ("interests", "skills")
FILTER_FIELDS = (
    "location",
    "education",
    "experience_years",
    "interests",
    "skills",
    "timezone",
    "currency",
    "salary_expectation",
)
_OPS_BY_FIELD: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_TEXT_FIELDS, ("eq", "ne", "in")),
    **dict.fromkeys(_NUMBER_FIELDS, ("eq", "ne", "in", "gte", "lte")),
    **dict.fromkeys(_LIST_FIELDS, ("contains",)),
}

MAX_OCCURRENCES = 400
MAX_NAME_LEN = 200
MAX_DRIP_OFFSET_DAYS = 365
MAX_INACTIVE_DAYS = 365
MAX_FILTER_VALUES = 100
MAX_FILTER_TEXT_LEN = 512
MAX_RISK_SCORE = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_ORDINAL = date.max.toordinal()
_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*", re.ASCII)
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)", re.ASCII)


class InvalidCampaign(ValueError):
    """A campaign body (or status change) we refuse; `field` is the dotted path of the culprit
    ("schedule.local_time"), so the API can point at it, and the message names it too."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the two-argument constructor working through pickle, like InvalidEvent.
        return (type(self), (self.field, self.message))


def _fail(path: str, message: str) -> NoReturn:
    raise InvalidCampaign(path, f"{path} {message}")


# ---------------------------------------------------------------------------------------------
# The records


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a campaign fires; see the module docstring. Only the fields of `kind` are set."""

    kind: str
    at_ms: int | None = None
    every: str | None = None
    local_time: str = "09:00"
    weekday: int | None = None
    day_of_month: int | None = None
    offsets_days: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at_ms": self.at_ms,
            "every": self.every,
            "local_time": self.local_time,
            "weekday": self.weekday,
            "day_of_month": self.day_of_month,
            "offsets_days": list(self.offsets_days),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        return cls(
            kind=data["kind"],
            at_ms=data.get("at_ms"),
            every=data.get("every"),
            local_time=data.get("local_time", "09:00"),
            weekday=data.get("weekday"),
            day_of_month=data.get("day_of_month"),
            offsets_days=tuple(data.get("offsets_days") or ()),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Who a campaign reaches; see the module docstring. An "in" filter's value is a tuple."""

    kind: str
    threshold: float = 60.0
    inactive_days: int = 7
    field: str | None = None
    op: str = "eq"
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "threshold": self.threshold,
            "inactive_days": self.inactive_days,
            "field": self.field,
            "op": self.op,
            "value": list(self.value) if isinstance(self.value, tuple) else self.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        value = data.get("value")
        return cls(
            kind=data["kind"],
            threshold=data.get("threshold", 60.0),
            inactive_days=data.get("inactive_days", 7),
            field=data.get("field"),
            op=data.get("op", "eq"),
            value=tuple(value) if isinstance(value, list) else value,
        )


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What targeting knows about a user; `profile` maps FILTER_FIELDS names to raw values."""

    user_id: str
    timezone: str
    signup_ms: int | None
    last_active_ms: int | None
    risk_score: float | None
    profile: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Campaign:
    """An admin's campaign. `start_ms`..`end_ms` (both inclusive) bound when it may fire;
    `activated_ms` is when it was last activated or resumed (None while it never was)."""

    id: str
    name: str
    schedule: Schedule
    target: Target
    intervention: str
    template: str | None = None
    status: str = "draft"
    created_ms: int = 0
    updated_ms: int = 0
    start_ms: int | None = None
    end_ms: int | None = None
    activated_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Storage form (epoch ms, every field); `public_campaign` is the API's form."""
        return {
            "id": self.id,
            "name": self.name,
            "schedule": self.schedule.to_dict(),
            "target": self.target.to_dict(),
            "intervention": self.intervention,
            "template": self.template,
            "status": self.status,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "activated_ms": self.activated_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Campaign:
        return cls(
            id=data["id"],
            name=data["name"],
            schedule=Schedule.from_dict(data["schedule"]),
            target=Target.from_dict(data["target"]),
            intervention=data["intervention"],
            template=data.get("template"),
            status=data.get("status", "draft"),
            created_ms=data.get("created_ms", 0),
            updated_ms=data.get("updated_ms", 0),
            start_ms=data.get("start_ms"),
            end_ms=data.get("end_ms"),
            activated_ms=data.get("activated_ms"),
        )


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One firing of a campaign for one user; `key` is stable across replays (module docstring)."""

    campaign_id: str
    key: str
    at_ms: int

    @property
    def idempotency_key(self) -> str:
        return f"campaign:{self.campaign_id}:{self.key}"


# ---------------------------------------------------------------------------------------------
# Parsing an admin's body

_TOP_FIELDS = frozenset(
    {"id", "name", "schedule", "target", "intervention", "template", "status", "start", "end"}
)
_SCHEDULE_FIELDS = {
    "one_time": frozenset({"kind", "at"}),
    "recurring": frozenset({"kind", "every", "local_time", "weekday", "day_of_month"}),
    "drip": frozenset({"kind", "offsets_days", "local_time"}),
}
_TARGET_FIELDS = {
    "all": frozenset({"kind"}),
    "at_risk": frozenset({"kind", "threshold"}),
    "inactive": frozenset({"kind", "inactive_days"}),
    "filter": frozenset({"kind", "field", "op", "value"}),
}


def _present(obj: Mapping[Any, Any]) -> dict[str, Any]:
    """The keys that carry a value: an explicit null is the same as leaving the key out."""
    return {str(key): value for key, value in obj.items() if value is not None}


def _object(value: object, path: str) -> dict[str, Any]:
    if value is None:
        _fail(path, "is required")
    if not isinstance(value, dict):
        _fail(path, f"must be an object, got {type(value).__name__}")
    return _present(value)


def _reject_unknown(obj: Mapping[str, Any], allowed: frozenset[str], path: str, what: str) -> None:
    # Refusing unknown keys catches typos ("local_tme") that would otherwise silently use a default.
    unknown = sorted(set(obj) - allowed)
    if unknown:
        prefix = f"{path}." if path else ""
        _fail(
            f"{prefix}{unknown[0]}",
            f"does not apply to {what}; allowed: {', '.join(sorted(allowed))}",
        )


def _choice(value: object, options: tuple[str, ...], path: str) -> str:
    if value is None:
        _fail(path, f"is required; one of {', '.join(options)}")
    if not isinstance(value, str) or value not in options:
        _fail(path, f"must be one of {', '.join(options)}, got {_show(value)}")
    return value


def _show(value: object) -> str:
    return repr(value)[:64]


def _int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"must be an integer in {low}..{high}, got {_show(value)}")
    if not low <= value <= high:
        _fail(path, f"must be in {low}..{high}, got {value}")
    return value


def _number(value: object) -> float | None:
    """A finite JSON number (never a bool, which is an int in Python), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _text(value: object, path: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(path, "must be a non-empty string")
    if len(value) > max_len:
        _fail(path, f"is longer than {max_len} characters")
    return value


def _instant(value: object, path: str) -> int:
    try:
        return parse_ts(value)
    except InvalidEvent as exc:
        _fail(path, f"must be an RFC 3339 time or epoch milliseconds: {exc.message}")


def _local_time(value: object, path: str) -> str:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        _fail(path, f"must be HH:MM between 00:00 and 23:59, got {_show(value)}")
    return value


def parse_campaign(obj: object, campaign_id: str, now_ms: int) -> Campaign:
    """Validate an admin's JSON body into a Campaign created at `now_ms` (the API's clock).

    Body: {"name", "schedule": {...}, "target": {...}, "intervention", "template"?, "status"?,
    "start"?, "end"?}; times are RFC 3339 or epoch ms. Keys that do not apply (a weekday on a
    daily schedule, a threshold on an "all" target) are refused rather than ignored. An "id" in
    the body must equal `campaign_id`. Raises InvalidCampaign naming the first bad field.
    """
    if not isinstance(campaign_id, str) or not campaign_id or len(campaign_id) > MAX_ID_LEN:
        _fail("id", f"must be a non-empty string of at most {MAX_ID_LEN} characters")
    if not _CAMPAIGN_ID.fullmatch(campaign_id):
        _fail(
            "id", "may only contain letters, digits, '.', '_' and '-', and must start with a letter or digit"
        )
    body = _object(obj, "campaign")
    _reject_unknown(body, _TOP_FIELDS, "", "a campaign")
    if "id" in body and body["id"] != campaign_id:
        _fail("id", f"in the body ({_show(body['id'])}) does not match the campaign id {campaign_id!r}")
    name = _text(body.get("name"), "name", MAX_NAME_LEN)
    schedule = _parse_schedule(body.get("schedule"))
    target = _parse_target(body.get("target"))
    intervention = _choice(body.get("intervention"), INTERVENTION_TYPES, "intervention")
    template = None if "template" not in body else _text(body["template"], "template", MAX_ID_LEN)
    status = "draft" if "status" not in body else _choice(body["status"], STATUSES, "status")
    start_ms = None if "start" not in body else _instant(body["start"], "start")
    end_ms = None if "end" not in body else _instant(body["end"], "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        _fail("end", "must be after start")
    at_ms = schedule.at_ms
    if at_ms is not None and not (start_ms or 0) <= at_ms <= (MAX_TS_MS if end_ms is None else end_ms):
        _fail("schedule.at", "is outside the campaign's start..end window, so it would never fire")
    campaign = Campaign(
        id=campaign_id,
        name=name,
        schedule=schedule,
        target=target,
        intervention=intervention,
        template=template,
        status=status,
        created_ms=now_ms,
        updated_ms=now_ms,
        start_ms=start_ms,
        end_ms=end_ms,
        activated_ms=now_ms if status == "active" else None,
    )
    if status == "active":
        _check_can_fire(campaign, now_ms)
    return campaign


def _parse_schedule(value: object) -> Schedule:
    obj = _object(value, "schedule")
    kind = _choice(obj.get("kind"), CAMPAIGN_KINDS, "schedule.kind")
    _reject_unknown(obj, _SCHEDULE_FIELDS[kind], "schedule", f"a {kind!r} schedule")
    if kind == "one_time":
        if "at" not in obj:
            _fail("schedule.at", "is required for a one_time schedule")
        return Schedule(kind, at_ms=_instant(obj["at"], "schedule.at"))
    local_time = _local_time(obj.get("local_time", "09:00"), "schedule.local_time")
    if kind == "drip":
        return Schedule(kind, local_time=local_time, offsets_days=_offsets(obj.get("offsets_days")))
    every = _choice(obj.get("every"), RECURRENCES, "schedule.every")
    weekday = day_of_month = None
    for name, wanted in (("weekday", "weekly"), ("day_of_month", "monthly")):
        if every == wanted and name not in obj:
            _fail(f"schedule.{name}", f"is required for a {wanted} schedule")
        if every != wanted and name in obj:
            _fail(f"schedule.{name}", f"applies only to a {wanted} schedule, not a {every} one")
    if every == "weekly":
        weekday = _int(obj["weekday"], "schedule.weekday", 0, 6)
    if every == "monthly":
        day_of_month = _int(obj["day_of_month"], "schedule.day_of_month", 1, 31)
    return Schedule(kind, every=every, local_time=local_time, weekday=weekday, day_of_month=day_of_month)


def _offsets(value: object) -> tuple[int, ...]:
    path = "schedule.offsets_days"
    if not isinstance(value, list) or not value:
        _fail(path, "must be a non-empty list of days after signup")
    offsets = tuple(_int(item, f"{path}[{i}]", 0, MAX_DRIP_OFFSET_DAYS) for i, item in enumerate(value))
    if any(later <= earlier for earlier, later in pairwise(offsets)):
        _fail(path, f"must be strictly increasing, got {list(offsets)[:20]}")
    return offsets


def _parse_target(value: object) -> Target:
    if value is None:
        _fail("target", 'is required (use {"kind": "all"} to reach everyone)')
    obj = _object(value, "target")
    kind = _choice(obj.get("kind"), TARGET_KINDS, "target.kind")
    _reject_unknown(obj, _TARGET_FIELDS[kind], "target", f"a {kind!r} target")
    if kind == "at_risk":
        threshold = _number(obj.get("threshold", 60.0))
        if threshold is None or not 0 <= threshold <= MAX_RISK_SCORE:
            _fail(
                "target.threshold",
                f"must be a risk score in 0..{MAX_RISK_SCORE}, got {_show(obj['threshold'])}",
            )
        return Target(kind, threshold=float(threshold))
    if kind == "inactive":
        days = _int(obj.get("inactive_days", 7), "target.inactive_days", 1, MAX_INACTIVE_DAYS)
        return Target(kind, inactive_days=days)
    if kind == "filter":
        return _parse_filter(obj)
    return Target(kind)


def _parse_filter(obj: dict[str, Any]) -> Target:
    name = _choice(obj.get("field"), FILTER_FIELDS, "target.field")
    op = _choice(obj.get("op", "eq"), FILTER_OPS, "target.op")
    ops = _OPS_BY_FIELD[name]
    if op not in ops:
        _fail("target.op", f"{op!r} does not apply to {name}; use one of {', '.join(ops)}")
    if "value" not in obj:
        _fail("target.value", "is required for a filter target")
    raw = obj["value"]
    if op != "in":
        return Target("filter", field=name, op=op, value=_filter_value(raw, name, "target.value"))
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FILTER_VALUES:
        _fail("target.value", f"must be a list of 1..{MAX_FILTER_VALUES} values for op 'in'")
    values = tuple(_filter_value(item, name, f"target.value[{i}]") for i, item in enumerate(raw))
    return Target("filter", field=name, op=op, value=values)


def _filter_value(value: object, name: str, path: str) -> str | float:
    if name in _NUMBER_FIELDS:
        number = _number(value)
        if number is None:
            _fail(path, f"must be a number to compare with {name}, got {_show(value)}")
        return number
    return _text(value, path, MAX_FILTER_TEXT_LEN)


# ---------------------------------------------------------------------------------------------
# Status


def _last_possible_ms(c: Campaign) -> int:
    """No occurrence of `c` can come after this instant."""
    last = MAX_TS_MS if c.end_ms is None else c.end_ms
    if c.schedule.kind == "one_time" and c.schedule.at_ms is not None:
        last = min(last, c.schedule.at_ms)
    return last


def _check_can_fire(c: Campaign, now_ms: int) -> None:
    # Activation gates on occurrences after activated_ms, so such a campaign would never fire.
    if c.schedule.kind == "one_time" and c.schedule.at_ms is not None and c.schedule.at_ms <= now_ms:
        _fail("schedule.at", "has already passed: an active one_time campaign would never fire")
    if c.end_ms is not None and c.end_ms <= now_ms:
        _fail("end", "has already passed: an active campaign would never fire")


def with_status(c: Campaign, status: str, now_ms: int) -> Campaign:
    """The campaign after an admin's status change at `now_ms` (the API's clock).

    draft -> active, active <-> paused; asking for the current status is a no-op that returns `c`
    unchanged (a retried request changes nothing). Going back to draft, pausing a draft, an
    unknown status and "completed" (derived, see `effective_status`) are refused. Activating
    stamps `activated_ms`, so what fell due while the campaign was draft or paused never fires.
    """
    if status == "completed":
        _fail("status", "'completed' is derived from the schedule and cannot be set")
    _choice(status, STATUSES, "status")
    if status == c.status:
        return c
    if status == "draft":
        _fail("status", f"cannot go back to draft from {c.status}")
    if status == "paused" and c.status != "active":
        _fail("status", f"only an active campaign can be paused; this one is {c.status}")
    if status == "active":
        _check_can_fire(c, now_ms)
        return dataclasses.replace(c, status=status, updated_ms=now_ms, activated_ms=now_ms)
    return dataclasses.replace(c, status=status, updated_ms=now_ms)


def effective_status(c: Campaign, now_ms: int) -> str:
    """The stored status, or "completed" for an active campaign that can never fire after `now_ms`
    (its one_time instant or its end has passed). Draft and paused campaigns keep their status."""
    if c.status == "active" and _last_possible_ms(c) <= now_ms:
        return "completed"
    return c.status


def public_campaign(c: Campaign, now_ms: int) -> dict[str, Any]:
    """A campaign as the API shows it: RFC 3339 times, the derived status, only relevant fields."""

    def when(ms: int | None) -> str | None:
        return None if ms is None else format_ts(ms)

    s, t = c.schedule, c.target
    schedule: dict[str, Any] = {"kind": s.kind}
    if s.kind == "one_time":
        schedule["at"] = when(s.at_ms)
    elif s.kind == "recurring":
        schedule.update(every=s.every, local_time=s.local_time)
        if s.every == "weekly":
            schedule["weekday"] = s.weekday
        if s.every == "monthly":
            schedule["day_of_month"] = s.day_of_month
    else:
        schedule.update(offsets_days=list(s.offsets_days), local_time=s.local_time)
    target: dict[str, Any] = {"kind": t.kind}
    if t.kind == "at_risk":
        target["threshold"] = t.threshold
    elif t.kind == "inactive":
        target["inactive_days"] = t.inactive_days
    elif t.kind == "filter":
        target.update(field=t.field, op=t.op, value=list(t.value) if isinstance(t.value, tuple) else t.value)
    return {
        "id": c.id,
        "name": c.name,
        "status": effective_status(c, now_ms),
        "schedule": schedule,
        "target": target,
        "intervention": c.intervention,
        "template": c.template,
        "start": when(c.start_ms),
        "end": when(c.end_ms),
        "created_at": when(c.created_ms),
        "updated_at": when(c.updated_ms),
        "activated_at": when(c.activated_ms),
    }


# ---------------------------------------------------------------------------------------------
# Targeting


def targets(target: Target, facts: UserFacts, now_ms: int) -> bool:
    """Whether the user is in the campaign's audience at event time `now_ms`; never raises."""
    if target.kind == "all":
        return True
    if target.kind == "at_risk":
        score = _number(facts.risk_score)
        return score is not None and score >= target.threshold
    if target.kind == "inactive":
        last = facts.last_active_ms
        return last is None or now_ms - last >= target.inactive_days * DAY_MS
    if target.kind == "filter" and target.field is not None:
        return _matches(target, facts.profile.get(target.field))
    return False


def _norm(value: object) -> str | None:
    return value.strip().casefold() if isinstance(value, str) else None


def _matches(target: Target, actual: object) -> bool:
    op, wanted = target.op, target.value
    if op == "contains":
        if not isinstance(actual, list | tuple):
            return False
        needle = _norm(wanted)
        return needle is not None and any(_norm(item) == needle for item in actual)
    if target.field in _NUMBER_FIELDS:
        number = _number(actual)
        candidates = wanted if isinstance(wanted, tuple) else (wanted,)
        if number is None or any(_number(c) is None for c in candidates):
            return False
        if op == "gte":
            return bool(number >= wanted)
        if op == "lte":
            return bool(number <= wanted)
        equal = any(number == c for c in candidates)
    else:
        text = _norm(actual)
        candidates = wanted if isinstance(wanted, tuple) else (wanted,)
        if text is None:
            return False
        equal = any(text == _norm(c) for c in candidates)
    return not equal if op == "ne" else equal


# ---------------------------------------------------------------------------------------------
# Occurrences


def _epoch_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _minutes(local_time: str) -> int:
    hours, minutes = local_time.split(":")
    return int(hours) * 60 + int(minutes)


def _local_instant(ordinal: int, minute: int, tz: tzinfo) -> int | None:
    """Epoch ms of wall time `minute` on local day `ordinal` (DST rules in the module docstring);
    None beyond year 9999."""
    try:
        return local_instant_ms(date.fromordinal(ordinal), time(minute // 60, minute % 60), tz)
    except (OverflowError, ValueError):
        return None


def _utc_ordinal(ms: int) -> int:
    return _EPOCH_ORDINAL + ms // DAY_MS


def _recurring_days(s: Schedule, first: int, last: int) -> Iterator[int]:
    """Ordinals in first..last on which a recurring schedule fires, in order."""
    if s.every == "daily":
        yield from range(first, last + 1)
    elif s.every == "weekly":
        assert s.weekday is not None
        # date.fromordinal(1) is a Monday, so an ordinal's weekday is (ordinal - 1) % 7.
        yield from range(first + (s.weekday - (first - 1)) % 7, last + 1, 7)
    elif s.every == "monthly":
        assert s.day_of_month is not None
        day = date.fromordinal(first)
        year, month = day.year, day.month
        while year <= date.max.year:
            length = calendar.monthrange(year, month)[1]
            ordinal = date(year, month, min(s.day_of_month, length)).toordinal()
            if ordinal > last:
                return
            if ordinal >= first:
                yield ordinal
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _iter_occurrences(
    c: Campaign, tz: str, signup_ms: int | None, low: int, high: int
) -> Iterator[Occurrence]:
    """Occurrences with low < at_ms <= high, in time order (bounds already include the window)."""
    s = c.schedule
    if low >= high:
        return
    if s.kind == "one_time":
        if s.at_ms is not None and low < s.at_ms <= high:
            yield Occurrence(c.id, "once", s.at_ms)
        return
    zone_info, minute = zone(tz), _minutes(s.local_time)
    if s.kind == "drip":
        if signup_ms is None:
            return
        signup_day = local_day(signup_ms, tz)
        for offset in s.offsets_days:
            if signup_day + offset > _MAX_ORDINAL:
                return
            instant = _local_instant(signup_day + offset, minute, zone_info)
            if instant is None or max(instant, signup_ms) > high:
                return  # later steps are later still
            at_ms = max(instant, signup_ms)  # day 0 after its local time: at signup
            if at_ms > low:
                yield Occurrence(c.id, f"d{offset}", at_ms)
        return
    # Local dates are within a day of UTC dates (offsets are under 24 h), hence the margins.
    first, last = max(1, _utc_ordinal(low) - 1), min(_MAX_ORDINAL, _utc_ordinal(high) + 1)
    for ordinal in _recurring_days(s, first, last):
        moment = _local_instant(ordinal, minute, zone_info)
        if moment is None or moment > high:
            return  # instants increase with the local date
        if moment > low:
            yield Occurrence(c.id, date.fromordinal(ordinal).isoformat(), moment)


def _bounds(c: Campaign, start_ms: int, end_ms: int) -> tuple[int, int]:
    """(low, high] narrowed to the campaign's inclusive window and to representable instants."""
    low = max(start_ms, -1 if c.start_ms is None else c.start_ms - 1)
    high = min(end_ms, MAX_TS_MS if c.end_ms is None else c.end_ms)
    return low, high


def occurrences(
    c: Campaign, tz: str, signup_ms: int | None, start_ms: int, end_ms: int, limit: int = MAX_OCCURRENCES
) -> list[Occurrence]:
    """The user's occurrences with start_ms < at_ms <= end_ms inside the campaign's window, in time
    order, at most `limit` (capped at MAX_OCCURRENCES): the earliest ones, so a caller that gets a
    full list continues from the last `at_ms`. Ignores the status (see `due`); `tz` must be an
    IANA name (ValueError otherwise; only one_time ignores it)."""
    low, high = _bounds(c, start_ms, end_ms)
    return list(islice(_iter_occurrences(c, tz, signup_ms, low, high), max(0, min(limit, MAX_OCCURRENCES))))


def next_occurrence(c: Campaign, tz: str, signup_ms: int | None, after_ms: int) -> int | None:
    """The first occurrence's at_ms > after_ms, or None (one_time passed, drip exhausted or
    without a signup, end passed); when to look at this user again. Ignores the status."""
    low, high = _bounds(c, after_ms, MAX_TS_MS)
    first = next(_iter_occurrences(c, tz, signup_ms, low, high), None)
    return None if first is None else first.at_ms


def due(c: Campaign, tz: str, signup_ms: int | None, since_ms: int | None, until_ms: int) -> list[Occurrence]:
    """What to fire for a user when the watermark reaches `until_ms`, having looked up to
    `since_ms` before (None: never looked). Only an active campaign fires, and only occurrences
    after its latest activation (module docstring); the caller then checks `targets` and sends
    each with its idempotency key."""
    if c.status != "active" or c.activated_ms is None:
        return []
    low = c.activated_ms if since_ms is None else max(since_ms, c.activated_ms)
    return occurrences(c, tz, signup_ms, low, until_ms)


def next_due(c: Campaign, tz: str, signup_ms: int | None, after_ms: int) -> int | None:
    """`next_occurrence` with `due`'s gating: None unless active, never at or before activation."""
    if c.status != "active" or c.activated_ms is None:
        return None
    return next_occurrence(c, tz, signup_ms, max(after_ms, c.activated_ms))


# ---------------------------------------------------------------------------------------------
# Execution log

OUTCOMES = frozenset({"evaluated", "targeted", "not_targeted", "sent", "deferred", "failed"})
SUPPRESSED_PREFIX = "suppressed:"
MAX_SUPPRESSION_REASONS = 32
_REASON = re.compile(r"[a-z0-9_]{1,48}", re.ASCII)


@dataclass
class CampaignRun:
    """Aggregated outcomes of one campaign across its users: counts per outcome and the event-time
    span they cover. Counts only, never user ids, so it stays small however large the audience.

    Outcomes are OUTCOMES or "suppressed:<reason>" (reason [a-z0-9_]{1,48}); past
    MAX_SUPPRESSION_REASONS distinct reasons, new ones count as "suppressed:other", so a buggy
    caller cannot grow the record without bound. `first_ms`/`last_ms` are the min/max of the
    recorded instants, so order does not matter and runs from several workers `merge`.
    """

    campaign_id: str
    counts: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None

    def record(self, outcome: str, at_ms: int, n: int = 1) -> None:
        """Count `n` of `outcome` at event time `at_ms`; ValueError for an unknown outcome."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        key = self._key(outcome)
        self.counts[key] = self.counts.get(key, 0) + n
        self.first_ms = at_ms if self.first_ms is None else min(self.first_ms, at_ms)
        self.last_ms = at_ms if self.last_ms is None else max(self.last_ms, at_ms)

    def _key(self, outcome: str) -> str:
        if outcome in OUTCOMES:
            return outcome
        valid = isinstance(outcome, str) and outcome.startswith(SUPPRESSED_PREFIX)
        if not valid or not _REASON.fullmatch(outcome.removeprefix(SUPPRESSED_PREFIX)):
            raise ValueError(
                f"unknown outcome {_show(outcome)}; use one of {', '.join(sorted(OUTCOMES))} "
                "or suppressed:<reason>"
            )
        if outcome in self.counts:
            return outcome
        reasons = sum(key.startswith(SUPPRESSED_PREFIX) for key in self.counts)
        return outcome if reasons < MAX_SUPPRESSION_REASONS - 1 else f"{SUPPRESSED_PREFIX}other"

    def merge(self, other: CampaignRun) -> None:
        """Add another worker's counts for the same campaign."""
        if other.campaign_id != self.campaign_id:
            raise ValueError(f"cannot merge the run of {other.campaign_id!r} into {self.campaign_id!r}")
        for outcome, n in other.counts.items():
            key = self._key(outcome)
            self.counts[key] = self.counts.get(key, 0) + n
        spans = [ms for ms in (self.first_ms, other.first_ms) if ms is not None]
        self.first_ms = min(spans) if spans else None
        ends = [ms for ms in (self.last_ms, other.last_ms) if ms is not None]
        self.last_ms = max(ends) if ends else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "counts": dict(self.counts),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CampaignRun:
        return cls(data["campaign_id"], dict(data["counts"]), data.get("first_ms"), data.get("last_ms"))
