"""The campaign records and their vocabulary: what a campaign, its schedule and its target are,
what targeting knows about a user, and one firing of a campaign. `to_dict`/`from_dict` are the
storage form (epoch ms, every field); `models.campaigns.status.public_campaign` is the API's.

The kinds, statuses and profile-field tables here are shared by parsing (what a body may say)
and targeting (how a filter compares), so they live with the records they describe, as does
`as_number`, what both count as a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CAMPAIGN_KINDS = ("one_time", "recurring", "drip")
STATUSES = ("draft", "active", "paused")
RECURRENCES = ("daily", "weekly", "monthly")
#: A weekly schedule's days by name; the index is the weekday (0 = Monday, like `date.weekday`).
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: A manual send's occurrence key is "s-<send id>": never "once", a date or a drip step's key.
SEND_KEY_PREFIX = "s-"
TARGET_KINDS = ("all", "at_risk", "inactive", "filter")
FILTER_OPS = ("eq", "ne", "in", "contains", "gte", "lte")

# Profile fields a filter may read, by how they compare; each field's ops follow from its type.
_TEXT_FIELDS = ("location", "education", "timezone", "currency")
NUMBER_FIELDS = ("experience_years", "salary_expectation")
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
OPS_BY_FIELD: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_TEXT_FIELDS, ("eq", "ne", "in")),
    **dict.fromkeys(NUMBER_FIELDS, ("eq", "ne", "in", "gte", "lte")),
    **dict.fromkeys(_LIST_FIELDS, ("contains",)),
}


def as_number(value: object) -> float | None:
    """A finite JSON number (never a bool, which is an int in Python), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class DripStep:
    """One step of a drip: `offset_days` after the signup's local date at the schedule's
    `local_time`, or exactly `delay_hours` after the signup instant (one of the two is set); with
    its own template and intervention type (None: the campaign's)."""

    offset_days: int | None = None
    delay_hours: int | None = None
    template: str | None = None
    intervention: str | None = None

    @property
    def key(self) -> str:
        """The step's occurrence key: "d3" (3 days after signup) or "h2" (2 hours after)."""
        return f"d{self.offset_days}" if self.offset_days is not None else f"h{self.delay_hours}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset_days": self.offset_days,
            "delay_hours": self.delay_hours,
            "template": self.template,
            "intervention": self.intervention,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DripStep:
        return cls(
            offset_days=data.get("offset_days"),
            delay_hours=data.get("delay_hours"),
            template=data.get("template"),
            intervention=data.get("intervention"),
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a campaign fires; see `models.campaigns.occurrences`. Only the fields of `kind` are set.

    A weekly schedule has `weekday` (the original one-day form) or `weekdays` (several days); a
    drip has `offsets_days` (the original form: every step the campaign's template) or `steps`
    (each with its own delay, template and type). Each keeps the form the admin wrote.
    """

    kind: str
    at_ms: int | None = None
    every: str | None = None
    local_time: str = "09:00"
    weekday: int | None = None
    day_of_month: int | None = None
    offsets_days: tuple[int, ...] = ()
    weekdays: tuple[int, ...] = ()
    steps: tuple[DripStep, ...] = ()

    @property
    def days_of_week(self) -> tuple[int, ...]:
        """A weekly schedule's weekdays (0 = Monday), ascending, whichever form it was written in."""
        return self.weekdays or (() if self.weekday is None else (self.weekday,))

    @property
    def drip_steps(self) -> tuple[DripStep, ...]:
        """A drip's steps, whichever form it was written in."""
        return self.steps or tuple(DripStep(offset_days=offset) for offset in self.offsets_days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at_ms": self.at_ms,
            "every": self.every,
            "local_time": self.local_time,
            "weekday": self.weekday,
            "day_of_month": self.day_of_month,
            "offsets_days": list(self.offsets_days),
            "weekdays": list(self.weekdays),
            "steps": [step.to_dict() for step in self.steps],
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
            weekdays=tuple(data.get("weekdays") or ()),
            steps=tuple(DripStep.from_dict(step) for step in data.get("steps") or ()),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Who a campaign reaches; see `models.campaigns.targeting`. An "in" filter's value is a tuple."""

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
class ManualSend:
    """An admin's "send now" of a campaign (`models.campaigns.sends`): one occurrence at `at_ms`
    (the API's clock) keyed "s-<id>", for one user (`user_id`), for the users a `target` selects,
    or (both None) for the campaign's own audience."""

    id: str
    at_ms: int
    user_id: str | None = None
    target: Target | None = None

    @property
    def key(self) -> str:
        return f"{SEND_KEY_PREFIX}{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at_ms": self.at_ms,
            "user_id": self.user_id,
            "target": None if self.target is None else self.target.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManualSend:
        target = data.get("target")
        return cls(
            id=data["id"],
            at_ms=data["at_ms"],
            user_id=data.get("user_id"),
            target=None if target is None else Target.from_dict(target),
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
    #: The admins' recent "send now"s (`models.campaigns.sends`), oldest first.
    sends: tuple[ManualSend, ...] = ()

    def template_ids(self) -> set[str]:
        """Every template the campaign names: its own and its drip steps'."""
        named = {step.template for step in self.schedule.steps} | {self.template}
        return {t for t in named if t is not None}

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
            "sends": [send.to_dict() for send in self.sends],
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
            sends=tuple(ManualSend.from_dict(send) for send in data.get("sends") or ()),
        )


def stored_template_ids(doc: Mapping[str, Any]) -> set[str]:
    """`Campaign.template_ids` of a stored definition, read leniently (a deleted marker, or a
    document missing fields, names what it holds and never raises)."""
    schedule = doc.get("schedule")
    steps = schedule.get("steps") if isinstance(schedule, Mapping) else None
    named = [doc.get("template")]
    named += [step.get("template") for step in steps or () if isinstance(step, Mapping)]
    return {t for t in named if isinstance(t, str)}


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One firing of a campaign for one user; `key` is stable across replays
    (`models.campaigns.occurrences`). A drip step's occurrence carries the step's `intervention`
    and `template` (None: the campaign's)."""

    campaign_id: str
    key: str
    at_ms: int
    intervention: str | None = None
    template: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"campaign:{self.campaign_id}:{self.key}"
