"""Parsing an admin's JSON body into a `Campaign` (`parse_campaign`): every field checked, keys
that do not apply refused, the first bad field named in `InvalidCampaign`.

Campaign ids are restricted to [A-Za-z0-9._-] so that an occurrence's delivery key splits
unambiguously (`models.campaigns.occurrences`, Idempotency). Which filter ops apply to which
profile fields is checked here, when the campaign is created (`models.campaigns.targeting`).
Whether the templates a campaign names exist is the caller's to check with `check_templates`
(the admins' templates live in Redis): parsing itself has no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from models.campaigns.errors import choice, fail, show
from models.campaigns.records import (
    CAMPAIGN_KINDS,
    FILTER_FIELDS,
    FILTER_OPS,
    NUMBER_FIELDS,
    OPS_BY_FIELD,
    RECURRENCES,
    STATUSES,
    TARGET_KINDS,
    WEEKDAY_NAMES,
    Campaign,
    DripStep,
    Schedule,
    Target,
    as_number,
)
from models.campaigns.status import check_can_fire
from models.events import MAX_ID_LEN, MAX_TS_MS, InvalidEvent, parse_ts
from models.interventions import INTERVENTION_TYPES

MAX_NAME_LEN = 200
MAX_DRIP_OFFSET_DAYS = 365
MAX_DRIP_DELAY_HOURS = 24 * MAX_DRIP_OFFSET_DAYS
MAX_DRIP_STEPS = 20
MAX_INACTIVE_DAYS = 365
MAX_FILTER_VALUES = 100
MAX_FILTER_TEXT_LEN = 512
MAX_RISK_SCORE = 100
_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*", re.ASCII)
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)", re.ASCII)

_TOP_FIELDS = frozenset(
    {"id", "name", "schedule", "target", "intervention", "template", "status", "start", "end"}
)
_SCHEDULE_FIELDS = {
    "one_time": frozenset({"kind", "at"}),
    "recurring": frozenset({"kind", "every", "local_time", "weekday", "days", "day_of_month"}),
    "drip": frozenset({"kind", "offsets_days", "steps", "local_time"}),
}
_STEP_FIELDS = frozenset({"offset_days", "delay_hours", "template", "intervention"})
_TARGET_FIELDS = {
    "all": frozenset({"kind"}),
    "at_risk": frozenset({"kind", "threshold"}),
    "inactive": frozenset({"kind", "inactive_days"}),
    "filter": frozenset({"kind", "field", "op", "value"}),
}


def present_keys(obj: Mapping[Any, Any]) -> dict[str, Any]:
    """The keys that carry a value: an explicit null is the same as leaving the key out."""
    return {str(key): value for key, value in obj.items() if value is not None}


def _object(value: object, path: str) -> dict[str, Any]:
    if value is None:
        fail(path, "is required")
    if not isinstance(value, dict):
        fail(path, f"must be an object, got {type(value).__name__}")
    return present_keys(value)


def _reject_unknown(obj: Mapping[str, Any], allowed: frozenset[str], path: str, what: str) -> None:
    # Refusing unknown keys catches typos ("local_tme") that would otherwise silently use a default.
    unknown = sorted(set(obj) - allowed)
    if unknown:
        prefix = f"{path}." if path else ""
        fail(
            f"{prefix}{unknown[0]}",
            f"does not apply to {what}; allowed: {', '.join(sorted(allowed))}",
        )


def _int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, f"must be an integer in {low}..{high}, got {show(value)}")
    if not low <= value <= high:
        fail(path, f"must be in {low}..{high}, got {value}")
    return value


def _text(value: object, path: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(path, "must be a non-empty string")
    if len(value) > max_len:
        fail(path, f"is longer than {max_len} characters")
    return value


def _instant(value: object, path: str) -> int:
    try:
        return parse_ts(value)
    except InvalidEvent as exc:
        fail(path, f"must be an RFC 3339 time or epoch milliseconds: {exc.message}")


def _local_time(value: object, path: str) -> str:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        fail(path, f"must be HH:MM between 00:00 and 23:59, got {show(value)}")
    return value


def check_campaign_id(campaign_id: object) -> str:
    """`campaign_id` if it is one (1..128 of [A-Za-z0-9._-], starting with a letter or digit),
    else InvalidCampaign naming "id"."""
    if not isinstance(campaign_id, str) or not campaign_id or len(campaign_id) > MAX_ID_LEN:
        fail("id", f"must be a non-empty string of at most {MAX_ID_LEN} characters")
    if not _CAMPAIGN_ID.fullmatch(campaign_id):
        fail(
            "id", "may only contain letters, digits, '.', '_' and '-', and must start with a letter or digit"
        )
    return campaign_id


def parse_name(value: object) -> str:
    return _text(value, "name", MAX_NAME_LEN)


def parse_campaign(obj: object, campaign_id: str, now_ms: int) -> Campaign:
    """Validate an admin's JSON body into a Campaign created at `now_ms` (the API's clock).

    Body: {"name", "schedule": {...}, "target": {...}, "intervention", "template"?, "status"?,
    "start"?, "end"?}; times are RFC 3339 or epoch ms. Keys that do not apply (a weekday on a
    daily schedule, a threshold on an "all" target) are refused rather than ignored. An "id" in
    the body must equal `campaign_id`. Raises InvalidCampaign naming the first bad field.
    """
    check_campaign_id(campaign_id)
    body = _object(obj, "campaign")
    _reject_unknown(body, _TOP_FIELDS, "", "a campaign")
    if "id" in body and body["id"] != campaign_id:
        fail("id", f"in the body ({show(body['id'])}) does not match the campaign id {campaign_id!r}")
    name = parse_name(body.get("name"))
    schedule = _parse_schedule(body.get("schedule"))
    target = parse_target(body.get("target"))
    intervention = choice(body.get("intervention"), INTERVENTION_TYPES, "intervention")
    template = None if "template" not in body else _text(body["template"], "template", MAX_ID_LEN)
    status = "draft" if "status" not in body else choice(body["status"], STATUSES, "status")
    start_ms = None if "start" not in body else _instant(body["start"], "start")
    end_ms = None if "end" not in body else _instant(body["end"], "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        fail("end", "must be after start")
    at_ms = schedule.at_ms
    if at_ms is not None and not (start_ms or 0) <= at_ms <= (MAX_TS_MS if end_ms is None else end_ms):
        fail("schedule.at", "is outside the campaign's start..end window, so it would never fire")
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
        check_can_fire(campaign, now_ms)
    return campaign


def _parse_schedule(value: object) -> Schedule:
    obj = _object(value, "schedule")
    kind = choice(obj.get("kind"), CAMPAIGN_KINDS, "schedule.kind")
    _reject_unknown(obj, _SCHEDULE_FIELDS[kind], "schedule", f"a {kind!r} schedule")
    if kind == "one_time":
        if "at" not in obj:
            fail("schedule.at", "is required for a one_time schedule")
        return Schedule(kind, at_ms=_instant(obj["at"], "schedule.at"))
    local_time = _local_time(obj.get("local_time", "09:00"), "schedule.local_time")
    if kind == "drip":
        if "steps" in obj and "offsets_days" in obj:
            fail("schedule.steps", "and schedule.offsets_days are two forms of the same thing; give one")
        if "steps" in obj:
            return Schedule(kind, local_time=local_time, steps=_steps(obj["steps"]))
        if "offsets_days" not in obj:
            fail("schedule.steps", "is required for a drip schedule (or the older offsets_days)")
        return Schedule(kind, local_time=local_time, offsets_days=_offsets(obj["offsets_days"]))
    every = choice(obj.get("every"), RECURRENCES, "schedule.every")
    weekday = day_of_month = None
    weekdays: tuple[int, ...] = ()
    if every == "weekly" and "weekday" in obj and "days" in obj:
        fail("schedule.days", "and schedule.weekday are two forms of the same thing; give one")
    if every == "weekly" and "weekday" not in obj and "days" not in obj:
        fail("schedule.days", 'is required for a weekly schedule, e.g. ["mon", "wed", "fri"]')
    for name, wanted in (("weekday", "weekly"), ("days", "weekly"), ("day_of_month", "monthly")):
        if every != wanted and name in obj:
            fail(f"schedule.{name}", f"applies only to a {wanted} schedule, not a {every} one")
    if every == "monthly" and "day_of_month" not in obj:
        fail("schedule.day_of_month", "is required for a monthly schedule")
    if every == "weekly" and "weekday" in obj:
        weekday = _int(obj["weekday"], "schedule.weekday", 0, 6)
    if every == "weekly" and "days" in obj:
        weekdays = _weekdays(obj["days"])
    if every == "monthly":
        day_of_month = _int(obj["day_of_month"], "schedule.day_of_month", 1, 31)
    return Schedule(
        kind,
        every=every,
        local_time=local_time,
        weekday=weekday,
        day_of_month=day_of_month,
        weekdays=weekdays,
    )


def _weekdays(value: object) -> tuple[int, ...]:
    """A weekly schedule's "days": names ("mon".."sun", any case) or numbers (0 = Monday)."""
    path = "schedule.days"
    if not isinstance(value, list) or not 1 <= len(value) <= len(WEEKDAY_NAMES):
        fail(path, f'must be a list of 1..7 days of the week, e.g. ["mon", "wed", "fri"], got {show(value)}')
    days: list[int] = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item.strip().lower() in WEEKDAY_NAMES:
            day = WEEKDAY_NAMES.index(item.strip().lower())
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            day = item
        else:
            fail(
                f"{path}[{i}]",
                f"must be one of {', '.join(WEEKDAY_NAMES)} (or 0..6, 0 = Monday), got {show(item)}",
            )
        if day in days:
            fail(f"{path}[{i}]", f"repeats {WEEKDAY_NAMES[day]!r}")
        days.append(day)
    return tuple(sorted(days))


def _steps(value: object) -> tuple[DripStep, ...]:
    """A drip's "steps": each {"offset_days" | "delay_hours", "template"?, "intervention"?}."""
    path = "schedule.steps"
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_DRIP_STEPS:
        fail(path, f"must be a list of 1..{MAX_DRIP_STEPS} steps")
    steps: list[DripStep] = []
    for i, item in enumerate(value):
        here = f"{path}[{i}]"
        obj = _object(item, here)
        _reject_unknown(obj, _STEP_FIELDS, here, "a drip step")
        if ("offset_days" in obj) == ("delay_hours" in obj):
            fail(f"{here}.offset_days", "or delay_hours (exactly one) says when the step fires after signup")
        offset = delay = None
        if "offset_days" in obj:
            offset = _int(obj["offset_days"], f"{here}.offset_days", 0, MAX_DRIP_OFFSET_DAYS)
        else:
            delay = _int(obj["delay_hours"], f"{here}.delay_hours", 0, MAX_DRIP_DELAY_HOURS)
        template = None if "template" not in obj else _text(obj["template"], f"{here}.template", MAX_ID_LEN)
        intervention = (
            None
            if "intervention" not in obj
            else choice(obj["intervention"], INTERVENTION_TYPES, f"{here}.intervention")
        )
        step = DripStep(offset_days=offset, delay_hours=delay, template=template, intervention=intervention)
        if any(earlier.key == step.key for earlier in steps):
            which = f"offset_days {offset}" if offset is not None else f"delay_hours {delay}"
            fail(f"{here}.{'offset_days' if offset is not None else 'delay_hours'}", f"repeats {which}")
        steps.append(step)
    return tuple(steps)


def check_templates(c: Campaign, template_types: Mapping[str, str]) -> None:
    """Every template `c` names exists and is for the type it would send: the campaign's template
    for its intervention, a drip step's for the step's (or else the campaign's). `template_types`
    maps each existing template id to its intervention type (the built-in ones and the admins'
    that are not deleted). Raises InvalidCampaign naming the field ("template",
    "schedule.steps[1].template")."""
    named = [("template", c.template, c.intervention)]
    named += [
        (f"schedule.steps[{i}].template", step.template, step.intervention or c.intervention)
        for i, step in enumerate(c.schedule.steps)
    ]
    for path, template_id, wanted in named:
        if template_id is None:
            continue
        if template_id not in template_types:
            fail(path, f"names no template: {show(template_id)} is neither built in nor an admin's")
        if template_types[template_id] != wanted:
            fail(path, f"{show(template_id)} is a {template_types[template_id]} template, not a {wanted} one")


def _offsets(value: object) -> tuple[int, ...]:
    path = "schedule.offsets_days"
    if not isinstance(value, list) or not value:
        fail(path, "must be a non-empty list of days after signup")
    offsets = tuple(_int(item, f"{path}[{i}]", 0, MAX_DRIP_OFFSET_DAYS) for i, item in enumerate(value))
    if any(later <= earlier for earlier, later in pairwise(offsets)):
        fail(path, f"must be strictly increasing, got {list(offsets)[:20]}")
    return offsets


def parse_target(value: object) -> Target:
    if value is None:
        fail("target", 'is required (use {"kind": "all"} to reach everyone)')
    obj = _object(value, "target")
    kind = choice(obj.get("kind"), TARGET_KINDS, "target.kind")
    _reject_unknown(obj, _TARGET_FIELDS[kind], "target", f"a {kind!r} target")
    if kind == "at_risk":
        threshold = as_number(obj.get("threshold", 60.0))
        if threshold is None or not 0 <= threshold <= MAX_RISK_SCORE:
            fail(
                "target.threshold",
                f"must be a risk score in 0..{MAX_RISK_SCORE}, got {show(obj['threshold'])}",
            )
        return Target(kind, threshold=float(threshold))
    if kind == "inactive":
        days = _int(obj.get("inactive_days", 7), "target.inactive_days", 1, MAX_INACTIVE_DAYS)
        return Target(kind, inactive_days=days)
    if kind == "filter":
        return _parse_filter(obj)
    return Target(kind)


def _parse_filter(obj: dict[str, Any]) -> Target:
    name = choice(obj.get("field"), FILTER_FIELDS, "target.field")
    op = choice(obj.get("op", "eq"), FILTER_OPS, "target.op")
    ops = OPS_BY_FIELD[name]
    if op not in ops:
        fail("target.op", f"{op!r} does not apply to {name}; use one of {', '.join(ops)}")
    if "value" not in obj:
        fail("target.value", "is required for a filter target")
    raw = obj["value"]
    if op != "in":
        return Target("filter", field=name, op=op, value=_filter_value(raw, name, "target.value"))
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FILTER_VALUES:
        fail("target.value", f"must be a list of 1..{MAX_FILTER_VALUES} values for op 'in'")
    values = tuple(_filter_value(item, name, f"target.value[{i}]") for i, item in enumerate(raw))
    return Target("filter", field=name, op=op, value=values)


def _filter_value(value: object, name: str, path: str) -> str | float:
    if name in NUMBER_FIELDS:
        number = as_number(value)
        if number is None:
            fail(path, f"must be a number to compare with {name}, got {show(value)}")
        return number
    return _text(value, path, MAX_FILTER_TEXT_LEN)
