from __future__ import annotations

import copy
import itertools
import math
import pickle
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.campaigns.errors import InvalidCampaign
from models.campaigns.execution import MAX_SUPPRESSION_REASONS, CampaignRun
from models.campaigns.occurrences import MAX_OCCURRENCES, due, next_due, next_occurrence, occurrences
from models.campaigns.parsing import parse_campaign
from models.campaigns.records import (
    CAMPAIGN_KINDS,
    FILTER_FIELDS,
    Campaign,
    Occurrence,
    Schedule,
    Target,
    UserFacts,
)
from models.campaigns.status import effective_status, public_campaign, with_status
from models.campaigns.targeting import targets
from models.events import MAX_TS_MS, format_ts
from models.interventions import INTERVENTION_TYPES
from models.streaks import local_day
from tests.models.factories import ms

DAY = 86_400_000
HOUR = 3_600_000
NOW = ms("2026-01-01T00:00:00Z")
NAIROBI = "Africa/Nairobi"  # UTC+3 all year
NEW_YORK = "America/New_York"  # DST 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00


def local(text: str, tz: str) -> int:
    """Epoch ms of a wall-clock time in `tz` (fold=0 for an ambiguous one)."""
    moment = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))
    return int(moment.timestamp()) * 1000


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Morning nudge",
        "schedule": {"kind": "recurring", "every": "daily", "local_time": "09:00"},
        "target": {"kind": "all"},
        "intervention": "gentle_reminder",
    }
    base.update(overrides)
    return base


def make(schedule: dict[str, Any], **overrides: Any) -> Campaign:
    return parse_campaign(body(schedule=schedule, **overrides), "c-1", NOW)


def daily(local_time: str = "09:00", **overrides: Any) -> Campaign:
    return make({"kind": "recurring", "every": "daily", "local_time": local_time}, **overrides)


def spans(c: Campaign, tz: str, start: str, end: str, signup_ms: int | None = None) -> list[tuple[str, str]]:
    return [(o.key, format_ts(o.at_ms)) for o in occurrences(c, tz, signup_ms, ms(start), ms(end))]


def facts(**overrides: Any) -> UserFacts:
    base: dict[str, Any] = {
        "user_id": "u-1",
        "timezone": NAIROBI,
        "signup_ms": NOW - 100 * DAY,
        "last_active_ms": NOW - DAY,
        "risk_score": 20.0,
        "profile": {},
    }
    base.update(overrides)
    return UserFacts(**base)


# --- parse_campaign: accepted bodies ---------------------------------------------------------


def test_minimal_body_is_a_draft_with_defaults() -> None:
    c = parse_campaign(body(schedule={"kind": "recurring", "every": "daily"}), "c-1", NOW)
    assert c == Campaign(
        id="c-1",
        name="Morning nudge",
        schedule=Schedule("recurring", every="daily", local_time="09:00"),
        target=Target("all"),
        intervention="gentle_reminder",
        status="draft",
        created_ms=NOW,
        updated_ms=NOW,
    )
    assert c.activated_ms is None


def test_full_body_with_window_template_and_active_status() -> None:
    c = parse_campaign(
        body(
            schedule={"kind": "one_time", "at": "2026-02-01T10:00:00+03:00"},
            target={"kind": "at_risk", "threshold": 70},
            intervention="discount_offer",
            template="tpl-42",
            status="active",
            start="2026-01-15T00:00:00Z",
            end=ms("2026-03-01T00:00:00Z"),
            id="c-1",
        ),
        "c-1",
        NOW,
    )
    assert c.schedule == Schedule("one_time", at_ms=ms("2026-02-01T07:00:00Z"))
    assert c.target == Target("at_risk", threshold=70.0)
    assert isinstance(c.target.threshold, float)
    assert (c.template, c.status, c.activated_ms) == ("tpl-42", "active", NOW)
    assert (c.start_ms, c.end_ms) == (ms("2026-01-15T00:00:00Z"), ms("2026-03-01T00:00:00Z"))


def test_one_time_accepts_epoch_ms_and_null_keys_mean_absent() -> None:
    at = NOW + 5 * DAY
    c = make({"kind": "one_time", "at": at, "local_time": None}, template=None, start=None)
    assert c.schedule == Schedule("one_time", at_ms=at)
    assert (c.template, c.start_ms) == (None, None)


def test_weekly_monthly_and_drip_bodies() -> None:
    weekly = make({"kind": "recurring", "every": "weekly", "weekday": 0, "local_time": "18:30"})
    assert weekly.schedule == Schedule("recurring", every="weekly", local_time="18:30", weekday=0)
    monthly = make({"kind": "recurring", "every": "monthly", "day_of_month": 31})
    assert monthly.schedule == Schedule("recurring", every="monthly", day_of_month=31)
    drip = make({"kind": "drip", "offsets_days": [0, 1, 3, 7, 365], "local_time": "00:00"})
    assert drip.schedule == Schedule("drip", local_time="00:00", offsets_days=(0, 1, 3, 7, 365))


def test_filter_targets() -> None:
    in_filter = make(
        {"kind": "recurring", "every": "daily"},
        target={"kind": "filter", "field": "location", "op": "in", "value": ["Nairobi", "Mombasa"]},
    )
    assert in_filter.target == Target("filter", field="location", op="in", value=("Nairobi", "Mombasa"))
    default_op = make(
        {"kind": "recurring", "every": "daily"},
        target={"kind": "filter", "field": "currency", "value": "KES"},
    )
    assert default_op.target == Target("filter", field="currency", op="eq", value="KES")
    inactive = make({"kind": "recurring", "every": "daily"}, target={"kind": "inactive", "inactive_days": 30})
    assert inactive.target == Target("inactive", inactive_days=30)


# --- parse_campaign: refused bodies ----------------------------------------------------------

DAILY = {"kind": "recurring", "every": "daily"}
WEEKLY = {"kind": "recurring", "every": "weekly", "weekday": 2}
MONTHLY = {"kind": "recurring", "every": "monthly", "day_of_month": 15}
DRIP = {"kind": "drip", "offsets_days": [0, 3]}
FUTURE = NOW + 10 * DAY


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not an object", ["x"], "campaign"),
    ("typo at top level", {**body(), "nmae": "x"}, "nmae"),
    ("no name", _without(body(), "name"), "name"),
    ("blank name", body(name="  "), "name"),
    ("long name", body(name="x" * 201), "name"),
    ("name not a string", body(name=5), "name"),
    ("no schedule", _without(body(), "schedule"), "schedule"),
    ("schedule not an object", body(schedule="daily"), "schedule"),
    ("no schedule kind", body(schedule={"every": "daily"}), "schedule.kind"),
    ("unknown schedule kind", body(schedule={"kind": "hourly"}), "schedule.kind"),
    ("one_time without at", body(schedule={"kind": "one_time"}), "schedule.at"),
    ("one_time bad at", body(schedule={"kind": "one_time", "at": "tomorrow"}), "schedule.at"),
    ("one_time boolean at", body(schedule={"kind": "one_time", "at": True}), "schedule.at"),
    ("one_time naive at", body(schedule={"kind": "one_time", "at": "2026-02-01T10:00:00"}), "schedule.at"),
    (
        "one_time with local_time",
        body(schedule={"kind": "one_time", "at": FUTURE, "local_time": "09:00"}),
        "schedule.local_time",
    ),
    ("no every", body(schedule={"kind": "recurring"}), "schedule.every"),
    ("unknown every", body(schedule={"kind": "recurring", "every": "yearly"}), "schedule.every"),
    ("hour 25", body(schedule={**DAILY, "local_time": "25:00"}), "schedule.local_time"),
    ("hour 24", body(schedule={**DAILY, "local_time": "24:00"}), "schedule.local_time"),
    ("one-digit hour", body(schedule={**DAILY, "local_time": "9:00"}), "schedule.local_time"),
    ("minute 60", body(schedule={**DAILY, "local_time": "09:60"}), "schedule.local_time"),
    ("with seconds", body(schedule={**DAILY, "local_time": "09:00:00"}), "schedule.local_time"),
    ("numeric time", body(schedule={**DAILY, "local_time": 900}), "schedule.local_time"),
    ("weekly without weekday", body(schedule=_without(WEEKLY, "weekday")), "schedule.weekday"),
    ("weekday 7", body(schedule={**WEEKLY, "weekday": 7}), "schedule.weekday"),
    ("weekday -1", body(schedule={**WEEKLY, "weekday": -1}), "schedule.weekday"),
    ("weekday bool", body(schedule={**WEEKLY, "weekday": True}), "schedule.weekday"),
    ("weekday name", body(schedule={**WEEKLY, "weekday": "monday"}), "schedule.weekday"),
    ("weekday float", body(schedule={**WEEKLY, "weekday": 1.0}), "schedule.weekday"),
    ("daily with weekday", body(schedule={**DAILY, "weekday": 1}), "schedule.weekday"),
    ("monthly without day", body(schedule=_without(MONTHLY, "day_of_month")), "schedule.day_of_month"),
    ("day 0", body(schedule={**MONTHLY, "day_of_month": 0}), "schedule.day_of_month"),
    ("day 32", body(schedule={**MONTHLY, "day_of_month": 32}), "schedule.day_of_month"),
    ("weekly with day", body(schedule={**WEEKLY, "day_of_month": 3}), "schedule.day_of_month"),
    ("drip without offsets", body(schedule={"kind": "drip"}), "schedule.offsets_days"),
    ("drip empty offsets", body(schedule={**DRIP, "offsets_days": []}), "schedule.offsets_days"),
    ("drip offsets not a list", body(schedule={**DRIP, "offsets_days": 3}), "schedule.offsets_days"),
    ("drip decreasing", body(schedule={**DRIP, "offsets_days": [3, 1]}), "schedule.offsets_days"),
    ("drip repeated", body(schedule={**DRIP, "offsets_days": [1, 1]}), "schedule.offsets_days"),
    ("drip 366", body(schedule={**DRIP, "offsets_days": [0, 366]}), "schedule.offsets_days[1]"),
    ("drip negative", body(schedule={**DRIP, "offsets_days": [-1]}), "schedule.offsets_days[0]"),
    ("drip fractional", body(schedule={**DRIP, "offsets_days": [1.5]}), "schedule.offsets_days[0]"),
    ("drip with every", body(schedule={**DRIP, "every": "daily"}), "schedule.every"),
    ("no target", _without(body(), "target"), "target"),
    ("target not an object", body(target="all"), "target"),
    ("unknown target kind", body(target={"kind": "vip"}), "target.kind"),
    ("threshold above 100", body(target={"kind": "at_risk", "threshold": 101}), "target.threshold"),
    ("negative threshold", body(target={"kind": "at_risk", "threshold": -1}), "target.threshold"),
    ("threshold text", body(target={"kind": "at_risk", "threshold": "high"}), "target.threshold"),
    ("threshold on all", body(target={"kind": "all", "threshold": 50}), "target.threshold"),
    ("inactive 0 days", body(target={"kind": "inactive", "inactive_days": 0}), "target.inactive_days"),
    ("inactive 366 days", body(target={"kind": "inactive", "inactive_days": 366}), "target.inactive_days"),
    ("inactive 7.5 days", body(target={"kind": "inactive", "inactive_days": 7.5}), "target.inactive_days"),
    ("filter without field", body(target={"kind": "filter", "value": "x"}), "target.field"),
    ("filter unknown field", body(target={"kind": "filter", "field": "email", "value": "x"}), "target.field"),
    (
        "filter unknown op",
        body(target={"kind": "filter", "field": "location", "op": "like", "value": "x"}),
        "target.op",
    ),
    (
        "contains on a text field",
        body(target={"kind": "filter", "field": "location", "op": "contains", "value": "x"}),
        "target.op",
    ),
    (
        "gte on a list field",
        body(target={"kind": "filter", "field": "skills", "op": "gte", "value": 3}),
        "target.op",
    ),
    ("filter without value", body(target={"kind": "filter", "field": "location"}), "target.value"),
    (
        "number field with text",
        body(target={"kind": "filter", "field": "experience_years", "op": "gte", "value": "5"}),
        "target.value",
    ),
    (
        "text field with a number",
        body(target={"kind": "filter", "field": "location", "value": 5}),
        "target.value",
    ),
    (
        "contains a number",
        body(target={"kind": "filter", "field": "skills", "op": "contains", "value": 5}),
        "target.value",
    ),
    (
        "in without a list",
        body(target={"kind": "filter", "field": "location", "op": "in", "value": "Nairobi"}),
        "target.value",
    ),
    (
        "in an empty list",
        body(target={"kind": "filter", "field": "location", "op": "in", "value": []}),
        "target.value",
    ),
    (
        "in with a bad item",
        body(target={"kind": "filter", "field": "location", "op": "in", "value": ["Nairobi", 3]}),
        "target.value[1]",
    ),
    ("no intervention", _without(body(), "intervention"), "intervention"),
    ("unknown intervention", body(intervention="sms_blast"), "intervention"),
    ("blank template", body(template=""), "template"),
    ("long template", body(template="t" * 129), "template"),
    ("unknown status", body(status="archived"), "status"),
    ("completed status", body(status="completed"), "status"),
    ("bad start", body(start="soon"), "start"),
    ("end before start", body(start=FUTURE, end=FUTURE - 1), "end"),
    ("end equal to start", body(start=FUTURE, end=FUTURE), "end"),
    (
        "one_time outside its window",
        body(schedule={"kind": "one_time", "at": FUTURE}, end=FUTURE - 1),
        "schedule.at",
    ),
    (
        "active one_time in the past",
        body(schedule={"kind": "one_time", "at": NOW - 1}, status="active"),
        "schedule.at",
    ),
    ("active with its end passed", body(status="active", end=NOW), "end"),
    ("body id differs", body(id="c-2"), "id"),
]


@pytest.mark.parametrize(("case", "obj", "field"), BAD_BODIES, ids=[case for case, _, _ in BAD_BODIES])
def test_refused_bodies_name_the_field(case: str, obj: Any, field: str) -> None:
    with pytest.raises(InvalidCampaign) as info:
        parse_campaign(obj, "c-1", NOW)
    assert info.value.field == field
    assert field in str(info.value)


def test_unknown_field_messages_list_the_allowed_ones() -> None:
    with pytest.raises(InvalidCampaign, match=r"allowed: .*every.*local_time"):
        parse_campaign(body(schedule={**DAILY, "local_tme": "10:00"}), "c-1", NOW)
    with pytest.raises(InvalidCampaign) as info:
        parse_campaign(body(target={"kind": "filter", "field": "email", "value": "x"}), "c-1", NOW)
    assert all(name in str(info.value) for name in FILTER_FIELDS)
    with pytest.raises(InvalidCampaign, match="use one of contains"):
        parse_campaign(body(target={"kind": "filter", "field": "skills", "value": "sql"}), "c-1", NOW)


@pytest.mark.parametrize("campaign_id", ["", "x" * 129, "a b", "a:b", "-leading", "ünï", 7])
def test_refused_campaign_ids(campaign_id: Any) -> None:
    with pytest.raises(InvalidCampaign) as info:
        parse_campaign(body(), campaign_id, NOW)
    assert info.value.field == "id"


def test_longest_campaign_id_is_accepted() -> None:
    assert parse_campaign(body(), "x" * 128, NOW).id == "x" * 128


def test_invalid_campaign_is_a_value_error_that_pickles() -> None:
    error = InvalidCampaign("schedule.at", "schedule.at is required")
    assert isinstance(error, ValueError)
    copy_ = pickle.loads(pickle.dumps(error))
    assert (copy_.field, copy_.message, str(copy_)) == ("schedule.at", "schedule.at is required", str(error))


def test_every_intervention_type_is_accepted() -> None:
    assert len(INTERVENTION_TYPES) == 8
    for intervention in INTERVENTION_TYPES:
        assert parse_campaign(body(intervention=intervention), "c-1", NOW).intervention == intervention


# --- round trip ------------------------------------------------------------------------------

ROUND_TRIP = [
    daily(),
    make({"kind": "one_time", "at": FUTURE}, status="active", template="t-1"),
    make(WEEKLY, start=FUTURE, end=FUTURE + 30 * DAY),
    make(MONTHLY, target={"kind": "at_risk", "threshold": 75.5}),
    make(DRIP, target={"kind": "inactive", "inactive_days": 30}),
    make(DAILY, target={"kind": "filter", "field": "salary_expectation", "op": "in", "value": [1000, 2.5]}),
    make(DAILY, target={"kind": "filter", "field": "skills", "op": "contains", "value": "sql"}),
]


@pytest.mark.parametrize("campaign", ROUND_TRIP, ids=lambda c: f"{c.schedule.kind}-{c.target.kind}")
def test_to_dict_round_trips_through_json(campaign: Campaign) -> None:
    data = orjson.loads(orjson.dumps(campaign.to_dict()))
    assert Campaign.from_dict(data) == campaign
    assert Schedule.from_dict(data["schedule"]) == campaign.schedule
    assert Target.from_dict(data["target"]) == campaign.target


def test_in_filter_values_are_stored_as_a_tuple() -> None:
    c = ROUND_TRIP[5]
    assert c.target.value == (1000, 2.5)
    assert c.to_dict()["target"]["value"] == [1000, 2.5]
    assert Campaign.from_dict(c.to_dict()).target.value == (1000, 2.5)


# --- status ----------------------------------------------------------------------------------


def test_activate_pause_resume() -> None:
    draft = daily()
    active = with_status(draft, "active", NOW + 1)
    assert (active.status, active.updated_ms, active.activated_ms) == ("active", NOW + 1, NOW + 1)
    assert active.created_ms == NOW and draft.status == "draft"  # the original is untouched
    paused = with_status(active, "paused", NOW + 2)
    assert (paused.status, paused.updated_ms, paused.activated_ms) == ("paused", NOW + 2, NOW + 1)
    resumed = with_status(paused, "active", NOW + 3)
    assert (resumed.status, resumed.updated_ms, resumed.activated_ms) == ("active", NOW + 3, NOW + 3)


def test_each_change_is_newer_than_the_one_before_even_in_the_same_millisecond() -> None:
    # The campaigns view keeps the definition with the highest updated_ms: two changes in one
    # millisecond, or after the API's clock stepped back, must still order.
    active = with_status(daily(), "active", NOW + 5)
    paused = with_status(active, "paused", NOW + 5)
    resumed = with_status(paused, "active", NOW + 1)  # a clock that went back
    assert active.updated_ms < paused.updated_ms < resumed.updated_ms
    assert resumed.activated_ms == NOW + 1  # what fell due is judged by the clock, as before


def test_asking_for_the_current_status_changes_nothing() -> None:
    active = with_status(daily(), "active", NOW + 1)
    assert with_status(active, "active", NOW + 99) is active
    draft = daily()
    assert with_status(draft, "draft", NOW + 99) is draft


@pytest.mark.parametrize(
    ("start", "status", "match"),
    [
        ("active", "draft", "back to draft"),
        ("paused", "draft", "back to draft"),
        ("draft", "paused", "only an active campaign"),
        ("draft", "archived", "must be one of draft, active, paused"),
        ("active", "completed", "derived"),
        ("active", "", "must be one of"),
    ],
)
def test_illegal_transitions(start: str, status: str, match: str) -> None:
    c = daily()
    if start != "draft":
        c = with_status(c, "active", NOW)
    if start == "paused":
        c = with_status(c, "paused", NOW)
    with pytest.raises(InvalidCampaign, match=match) as info:
        with_status(c, status, NOW + 1)
    assert info.value.field == "status"


def test_activating_a_campaign_that_can_never_fire_is_refused() -> None:
    one_time = make({"kind": "one_time", "at": NOW + HOUR})
    assert with_status(one_time, "active", NOW + HOUR - 1).status == "active"
    with pytest.raises(InvalidCampaign, match="already passed") as info:
        with_status(one_time, "active", NOW + HOUR)
    assert info.value.field == "schedule.at"
    ended = daily(end=NOW + DAY)
    with pytest.raises(InvalidCampaign, match="already passed") as info:
        with_status(ended, "active", NOW + DAY)
    assert info.value.field == "end"


def test_completed_is_derived_for_active_campaigns_only() -> None:
    at = NOW + HOUR
    one_time = with_status(make({"kind": "one_time", "at": at}), "active", NOW)
    assert effective_status(one_time, at - 1) == "active"
    assert effective_status(one_time, at) == "completed"
    assert effective_status(with_status(one_time, "paused", NOW), at + DAY) == "paused"
    assert effective_status(make({"kind": "one_time", "at": at}), at + DAY) == "draft"
    ending = with_status(daily(end=NOW + DAY), "active", NOW)
    assert effective_status(ending, NOW + DAY - 1) == "active"
    assert effective_status(ending, NOW + DAY) == "completed"
    assert effective_status(with_status(daily(), "active", NOW), MAX_TS_MS - 1) == "active"


def test_public_campaign_shows_rfc3339_times_and_relevant_fields() -> None:
    at = ms("2026-02-01T07:00:00Z")
    c = with_status(make({"kind": "one_time", "at": at}, target={"kind": "at_risk"}), "active", NOW)
    view = public_campaign(c, NOW)
    assert view["schedule"] == {"kind": "one_time", "at": "2026-02-01T07:00:00Z"}
    assert view["target"] == {"kind": "at_risk", "threshold": 60.0}
    assert (view["status"], view["created_at"], view["activated_at"], view["end"]) == (
        "active",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z",
        None,
    )
    assert public_campaign(c, at)["status"] == "completed"
    weekly = public_campaign(make(WEEKLY, target={"kind": "filter", "field": "location", "value": "X"}), NOW)
    assert weekly["schedule"] == {"kind": "recurring", "every": "weekly", "local_time": "09:00", "weekday": 2}
    assert weekly["target"] == {"kind": "filter", "field": "location", "op": "eq", "value": "X"}
    drip = public_campaign(make(DRIP), NOW)
    assert drip["schedule"] == {"kind": "drip", "offsets_days": [0, 3], "local_time": "09:00"}
    assert orjson.loads(orjson.dumps(view)) == view


# --- targeting -------------------------------------------------------------------------------


def test_all_targets_everyone() -> None:
    assert targets(Target("all"), facts(risk_score=None, last_active_ms=None, signup_ms=None), NOW)


@pytest.mark.parametrize(
    ("score", "expected"),
    [(60.0, True), (59.999, False), (100.0, True), (None, False), (math.nan, False), (0.0, False)],
)
def test_at_risk_threshold_is_inclusive(score: float | None, expected: bool) -> None:
    assert targets(Target("at_risk", threshold=60.0), facts(risk_score=score), NOW) is expected


def test_at_risk_with_a_zero_threshold_still_needs_a_score() -> None:
    assert targets(Target("at_risk", threshold=0.0), facts(risk_score=0.0), NOW)
    assert not targets(Target("at_risk", threshold=0.0), facts(risk_score=None), NOW)


@pytest.mark.parametrize(
    ("days", "idle_ms", "expected"),
    [
        (7, 7 * DAY, True),  # exactly 7 days of event time
        (7, 7 * DAY - 1, False),
        (7, 30 * DAY, True),
        (30, 30 * DAY, True),
        (30, 29 * DAY, False),
        (7, -HOUR, False),  # activity after the evaluation time (a late look in a replay)
    ],
)
def test_inactive_boundaries(days: int, idle_ms: int, expected: bool) -> None:
    target = Target("inactive", inactive_days=days)
    assert targets(target, facts(last_active_ms=NOW - idle_ms), NOW) is expected


def test_never_active_counts_as_inactive() -> None:
    assert targets(Target("inactive", inactive_days=365), facts(last_active_ms=None), NOW)


PROFILE = {
    "location": " Nairobi ",
    "education": "BSc",
    "experience_years": 5,
    "interests": ["Data", "design"],
    "skills": ("SQL", "python "),
    "timezone": NAIROBI,
    "currency": "KES",
    "salary_expectation": 1500.5,
}


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("location", "eq", "nairobi", True),  # trimmed and case-folded
        ("location", "eq", "Mombasa", False),
        ("location", "ne", "Mombasa", True),
        ("location", "ne", "NAIROBI", False),
        ("location", "in", ("Mombasa", "Nairobi"), True),
        ("location", "in", ("Mombasa", "Kisumu"), False),
        ("timezone", "eq", "africa/nairobi", True),
        ("currency", "in", ("USD",), False),
        ("experience_years", "gte", 5, True),  # boundaries are inclusive
        ("experience_years", "gte", 5.01, False),
        ("experience_years", "lte", 5, True),
        ("experience_years", "lte", 4.99, False),
        ("experience_years", "eq", 5.0, True),
        ("experience_years", "ne", 5, False),
        ("experience_years", "in", (1, 5), True),
        ("salary_expectation", "ne", 1000, True),
        ("skills", "contains", "sql", True),
        ("skills", "contains", "Python", True),
        ("skills", "contains", "java", False),
        ("interests", "contains", "DESIGN", True),
    ],
)
def test_filter_ops(field: str, op: str, value: Any, expected: bool) -> None:
    target = Target("filter", field=field, op=op, value=value)
    assert targets(target, facts(profile=PROFILE), NOW) is expected


@pytest.mark.parametrize("op", ["eq", "ne", "in"])
def test_filter_on_a_missing_field_never_matches(op: str) -> None:
    value: Any = ("Nairobi",) if op == "in" else "Nairobi"
    target = Target("filter", field="location", op=op, value=value)
    assert not targets(target, facts(profile={}), NOW)
    assert not targets(target, facts(profile={"location": None}), NOW)


@pytest.mark.parametrize(
    ("field", "op", "value", "actual"),
    [
        ("experience_years", "gte", 3, "5"),
        ("experience_years", "ne", 3, "5"),
        ("experience_years", "eq", 1, True),  # a bool is not a number here
        ("experience_years", "lte", 3, math.nan),
        ("location", "eq", "5", 5),
        ("location", "ne", "x", ["x"]),
        ("skills", "contains", "sql", "sql"),  # a string is not a list of skills
        ("skills", "contains", "sql", [1, None, {"a": 1}]),
        ("currency", "in", ("KES",), {"code": "KES"}),
    ],
)
def test_filter_type_mismatches_are_false_and_never_raise(
    field: str, op: str, value: Any, actual: Any
) -> None:
    target = Target("filter", field=field, op=op, value=value)
    assert not targets(target, facts(profile={field: actual}), NOW)


def test_filter_targets_built_from_a_bad_record_do_not_raise() -> None:
    # Targets normally come from parse_campaign; a mangled stored one must still not raise.
    assert not targets(
        Target("filter", field="experience_years", op="gte", value="x"), facts(profile=PROFILE), NOW
    )
    assert not targets(Target("filter", field=None), facts(profile=PROFILE), NOW)
    assert not targets(Target("vip"), facts(), NOW)


# --- one_time --------------------------------------------------------------------------------


def test_one_time_fires_once_in_its_span() -> None:
    at = ms("2026-02-01T07:00:00Z")
    c = make({"kind": "one_time", "at": at})
    assert occurrences(c, NEW_YORK, None, at - 1, at) == [Occurrence("c-1", "once", at)]
    assert occurrences(c, NAIROBI, None, at - DAY, at + DAY) == [Occurrence("c-1", "once", at)]
    assert occurrences(c, NAIROBI, None, at, at + DAY) == []  # the span's start is exclusive
    assert occurrences(c, NAIROBI, None, at - DAY, at - 1) == []
    assert next_occurrence(c, NAIROBI, None, at - 1) == at
    assert next_occurrence(c, NAIROBI, None, at) is None


def test_one_time_respects_its_window_inclusively() -> None:
    at = ms("2026-02-01T07:00:00Z")
    for start, end in [(at, None), (None, at), (at, at + 1), (at - 1, at)]:
        c = make({"kind": "one_time", "at": at}, start=start, end=end)
        assert [o.at_ms for o in occurrences(c, "UTC", None, 0, MAX_TS_MS)] == [at], (start, end)


def test_occurrence_idempotency_key() -> None:
    assert Occurrence("c-1", "2026-11-22", 0).idempotency_key == "campaign:c-1:2026-11-22"
    assert Occurrence("c-1", "d3", 0).idempotency_key == "campaign:c-1:d3"


# --- recurring -------------------------------------------------------------------------------


def test_daily_in_nairobi_fires_at_local_time_keyed_by_local_date() -> None:
    assert spans(daily(), NAIROBI, "2026-11-22T00:00:00Z", "2026-11-25T00:00:00Z") == [
        ("2026-11-22", "2026-11-22T06:00:00Z"),
        ("2026-11-23", "2026-11-23T06:00:00Z"),
        ("2026-11-24", "2026-11-24T06:00:00Z"),
    ]
    # 01:00 in Nairobi is 22:00 UTC the evening before: the key is the LOCAL date.
    assert spans(daily("01:00"), NAIROBI, "2026-11-22T12:00:00Z", "2026-11-23T12:00:00Z") == [
        ("2026-11-23", "2026-11-22T22:00:00Z")
    ]


def test_local_dates_behind_and_ahead_of_the_utc_date() -> None:
    # 23:00 on the 22nd in New York is 04:00Z on the 23rd; a look starting at 02:00Z on the 23rd
    # (still the 22nd locally) must find it.
    assert spans(daily("23:00"), NEW_YORK, "2026-11-23T02:00:00Z", "2026-11-23T05:00:00Z") == [
        ("2026-11-22", "2026-11-23T04:00:00Z")
    ]
    assert next_occurrence(daily("23:00"), NEW_YORK, None, ms("2026-11-23T02:00:00Z")) == ms(
        "2026-11-23T04:00:00Z"
    )
    # 00:30 on the 23rd in Kiritimati (+14) is 10:30Z on the 22nd.
    assert spans(daily("00:30"), "Pacific/Kiritimati", "2026-11-22T10:00:00Z", "2026-11-22T11:00:00Z") == [
        ("2026-11-23", "2026-11-22T10:30:00Z")
    ]


def test_daily_in_new_york_follows_dst() -> None:
    assert spans(daily(), NEW_YORK, "2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z") == [
        ("2026-03-06", "2026-03-06T14:00:00Z"),  # EST
        ("2026-03-07", "2026-03-07T14:00:00Z"),
        ("2026-03-08", "2026-03-08T13:00:00Z"),  # EDT from today
        ("2026-03-09", "2026-03-09T13:00:00Z"),
    ]


def test_spring_forward_gap_fires_at_the_end_of_the_gap() -> None:
    # 02:30 does not exist on 2026-03-08 in New York (02:00 EST jumps to 03:00 EDT = 07:00Z).
    assert spans(daily("02:30"), NEW_YORK, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z") == [
        ("2026-03-07", "2026-03-07T07:30:00Z"),
        ("2026-03-08", "2026-03-08T07:00:00Z"),
        ("2026-03-09", "2026-03-09T06:30:00Z"),
    ]
    assert next_occurrence(daily("02:30"), NEW_YORK, None, ms("2026-03-07T07:30:00Z")) == ms(
        "2026-03-08T07:00:00Z"
    )


def test_spring_forward_at_the_gap_start_and_half_hour_zones() -> None:
    # 02:00 itself is the first missing minute.
    assert spans(daily("02:00"), NEW_YORK, "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z") == [
        ("2026-03-08", "2026-03-08T07:00:00Z")
    ]
    # Lord Howe Island moves by 30 minutes: 02:00 -> 02:30 (+10:30 -> +11) on 2026-10-04.
    assert spans(daily("02:15"), "Australia/Lord_Howe", "2026-10-03T00:00:00Z", "2026-10-04T00:00:00Z") == [
        ("2026-10-04", "2026-10-03T15:30:00Z")
    ]


def test_fall_back_ambiguous_time_fires_once_at_its_first_occurrence() -> None:
    # 01:30 happens twice on 2026-11-01 in New York: 05:30Z (EDT) and 06:30Z (EST).
    assert spans(daily("01:30"), NEW_YORK, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z") == [
        ("2026-10-31", "2026-10-31T05:30:00Z"),
        ("2026-11-01", "2026-11-01T05:30:00Z"),
        ("2026-11-02", "2026-11-02T06:30:00Z"),
    ]
    # A look that starts between the two 01:30s does not fire the day again.
    assert spans(daily("01:30"), NEW_YORK, "2026-11-01T05:30:00Z", "2026-11-02T00:00:00Z") == []


def test_a_skipped_calendar_day_still_fires_once() -> None:
    # Samoa skipped 2011-12-30 entirely; its occurrence fires when that day would have begun.
    assert spans(daily("09:00"), "Pacific/Apia", "2011-12-29T00:00:00Z", "2011-12-31T00:00:00Z") == [
        ("2011-12-29", "2011-12-29T19:00:00Z"),
        ("2011-12-30", "2011-12-30T10:00:00Z"),
        ("2011-12-31", "2011-12-30T19:00:00Z"),
    ]


def test_weekly_fires_on_its_weekday_at_local_time() -> None:
    sunday = make({"kind": "recurring", "every": "weekly", "weekday": 6, "local_time": "09:00"})
    found = occurrences(sunday, NEW_YORK, None, ms("2026-10-01T00:00:00Z"), ms("2026-12-01T00:00:00Z"))
    assert [o.key for o in found] == [
        "2026-10-04",
        "2026-10-11",
        "2026-10-18",
        "2026-10-25",
        "2026-11-01",
        "2026-11-08",
        "2026-11-15",
        "2026-11-22",
        "2026-11-29",
    ]
    assert all(date.fromisoformat(o.key).weekday() == 6 for o in found)
    assert all(o.at_ms == local(f"{o.key}T09:00:00", NEW_YORK) for o in found)
    assert found[4].at_ms - found[3].at_ms == 7 * DAY + HOUR  # the fall-back week is an hour longer


@pytest.mark.parametrize("weekday", range(7))
def test_weekly_every_weekday(weekday: int) -> None:
    c = make({"kind": "recurring", "every": "weekly", "weekday": weekday})
    found = occurrences(c, NAIROBI, None, ms("2026-11-01T00:00:00Z"), ms("2026-11-15T00:00:00Z"))
    assert len(found) == 2
    assert [date.fromisoformat(o.key).weekday() for o in found] == [weekday, weekday]
    assert found[1].at_ms - found[0].at_ms == 7 * DAY


def test_monthly_day_31_uses_the_last_day_of_short_months() -> None:
    c = make({"kind": "recurring", "every": "monthly", "day_of_month": 31, "local_time": "08:00"})
    found = occurrences(c, NAIROBI, None, ms("2026-01-01T00:00:00Z"), ms("2026-06-01T00:00:00Z"))
    assert [o.key for o in found] == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
    assert [format_ts(o.at_ms) for o in found][:2] == ["2026-01-31T05:00:00Z", "2026-02-28T05:00:00Z"]
    leap = occurrences(c, "UTC", None, ms("2028-02-01T00:00:00Z"), ms("2028-03-01T00:00:00Z"))
    assert [o.key for o in leap] == ["2028-02-29"]


def test_monthly_day_15() -> None:
    c = make(MONTHLY)
    found = occurrences(c, "UTC", None, ms("2026-01-15T09:00:00Z"), ms("2026-04-15T09:00:00Z"))
    assert [o.key for o in found] == ["2026-02-15", "2026-03-15", "2026-04-15"]


# --- drip ------------------------------------------------------------------------------------


def test_drip_counts_days_from_the_local_signup_date() -> None:
    c = make({"kind": "drip", "offsets_days": [1, 3], "local_time": "09:00"})
    # 22:30Z on the 22nd is already 01:30 on the 23rd in Nairobi: day 1 is the 24th there.
    signup = ms("2026-11-22T22:30:00Z")
    assert spans(c, NAIROBI, "2026-11-01T00:00:00Z", "2026-12-31T00:00:00Z", signup) == [
        ("d1", "2026-11-24T06:00:00Z"),
        ("d3", "2026-11-26T06:00:00Z"),
    ]
    # 03:00Z on the 23rd is still 22:00 on the 22nd in New York: day 1 is the 23rd there.
    signup = ms("2026-11-23T03:00:00Z")
    assert spans(c, NEW_YORK, "2026-11-01T00:00:00Z", "2026-12-31T00:00:00Z", signup) == [
        ("d1", "2026-11-23T14:00:00Z"),
        ("d3", "2026-11-25T14:00:00Z"),
    ]


def test_drip_day_zero_after_its_local_time_fires_at_signup() -> None:
    c = make({"kind": "drip", "offsets_days": [0, 1], "local_time": "09:00"})
    late = local("2026-11-22T22:00:00", NEW_YORK)
    assert [(o.key, o.at_ms) for o in occurrences(c, NEW_YORK, late, late - 1, late + 2 * DAY)] == [
        ("d0", late),
        ("d1", local("2026-11-23T09:00:00", NEW_YORK)),
    ]
    early = local("2026-11-22T07:00:00", NEW_YORK)
    assert [(o.key, o.at_ms) for o in occurrences(c, NEW_YORK, early, early - 1, early + 2 * DAY)] == [
        ("d0", local("2026-11-22T09:00:00", NEW_YORK)),
        ("d1", local("2026-11-23T09:00:00", NEW_YORK)),
    ]


def test_drip_without_signup_or_past_its_last_step_has_nothing() -> None:
    c = make({"kind": "drip", "offsets_days": [0, 7]})
    assert occurrences(c, NAIROBI, None, 0, MAX_TS_MS) == []
    assert next_occurrence(c, NAIROBI, None, 0) is None
    signup = ms("2026-11-22T10:00:00Z")
    last = next_occurrence(c, NAIROBI, signup, signup + DAY)
    assert last == ms("2026-11-29T06:00:00Z")
    assert next_occurrence(c, NAIROBI, signup, last) is None


def test_drip_across_dst_keeps_local_time() -> None:
    c = make({"kind": "drip", "offsets_days": [1, 30], "local_time": "09:00"})
    signup = ms("2026-10-20T15:00:00Z")
    found = occurrences(c, NEW_YORK, signup, signup, MAX_TS_MS)
    assert [format_ts(o.at_ms) for o in found] == ["2026-10-21T13:00:00Z", "2026-11-19T14:00:00Z"]


# --- window, cap, next_occurrence ------------------------------------------------------------


def test_recurring_window_is_inclusive_at_both_ends() -> None:
    first, last = ms("2026-11-23T06:00:00Z"), ms("2026-11-25T06:00:00Z")
    c = daily(start=first, end=last)
    found = occurrences(c, NAIROBI, None, 0, MAX_TS_MS)
    assert [o.key for o in found] == ["2026-11-23", "2026-11-24", "2026-11-25"]
    assert next_occurrence(c, NAIROBI, None, 0) == first
    assert next_occurrence(c, NAIROBI, None, last - 1) == last
    assert next_occurrence(c, NAIROBI, None, last) is None
    narrower = daily(start=first + 1, end=last - 1)
    assert [o.key for o in occurrences(narrower, NAIROBI, None, 0, MAX_TS_MS)] == ["2026-11-24"]


def test_drip_respects_the_window() -> None:
    signup = ms("2026-11-22T10:00:00Z")
    c = make(
        {"kind": "drip", "offsets_days": [0, 1, 2, 3]},
        start=ms("2026-11-23T06:00:00Z"),
        end=ms("2026-11-24T06:00:00Z"),
    )
    assert [o.key for o in occurrences(c, NAIROBI, signup, 0, MAX_TS_MS)] == ["d1", "d2"]


def test_empty_and_reversed_spans() -> None:
    assert occurrences(daily(), NAIROBI, None, NOW, NOW) == []
    assert occurrences(daily(), NAIROBI, None, NOW + DAY, NOW) == []


def test_occurrences_are_capped_and_resume_from_the_last() -> None:
    c = daily()
    start = ms("2026-01-01T00:00:00Z")
    found = occurrences(c, NAIROBI, None, start, start + 5 * 365 * DAY)
    assert len(found) == MAX_OCCURRENCES == 400
    assert found[0].key == "2026-01-01"
    assert found[-1].key == (date(2026, 1, 1) + timedelta(days=399)).isoformat()
    more = occurrences(c, NAIROBI, None, found[-1].at_ms, start + 5 * 365 * DAY)
    assert more[0].key == (date(2026, 1, 1) + timedelta(days=400)).isoformat()
    assert len(occurrences(c, NAIROBI, None, start, start + 5 * 365 * DAY, limit=3)) == 3
    assert len(occurrences(c, NAIROBI, None, start, start + 5 * 365 * DAY, limit=10_000)) == 400


def test_a_long_span_is_cheap_for_sparse_schedules() -> None:
    # Monthly over the whole representable range: only the capped 400 months are computed.
    c = make(MONTHLY)
    found = occurrences(c, NEW_YORK, None, 0, MAX_TS_MS)
    assert len(found) == 400
    assert found[0].key == "1970-01-15"
    assert next_occurrence(c, NEW_YORK, None, MAX_TS_MS - DAY) is None


def test_unknown_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        occurrences(daily(), "Mars/Olympus", None, NOW, NOW + DAY)


# --- due: status and activation gating -------------------------------------------------------


def test_due_fires_only_active_campaigns_after_activation() -> None:
    c = daily()
    activated_at = ms("2026-11-22T07:00:00Z")  # after today's 09:00 in Nairobi (06:00Z)
    until = ms("2026-11-24T00:00:00Z")
    assert due(c, NAIROBI, None, None, until) == []
    assert next_due(c, NAIROBI, None, 0) is None
    active = with_status(c, "active", activated_at)
    assert [o.key for o in due(active, NAIROBI, None, None, until)] == ["2026-11-23"]
    assert [o.key for o in due(active, NAIROBI, None, 0, until)] == ["2026-11-23"]
    assert due(active, NAIROBI, None, ms("2026-11-23T06:00:00Z"), until) == []
    assert next_due(active, NAIROBI, None, 0) == ms("2026-11-23T06:00:00Z")


def test_occurrences_missed_while_paused_are_not_caught_up() -> None:
    active = with_status(daily(), "active", ms("2026-11-20T00:00:00Z"))
    paused = with_status(active, "paused", ms("2026-11-21T00:00:00Z"))
    assert due(paused, NAIROBI, None, None, ms("2026-11-30T00:00:00Z")) == []
    assert next_due(paused, NAIROBI, None, 0) is None
    resumed = with_status(paused, "active", ms("2026-11-25T00:00:00Z"))
    found = due(resumed, NAIROBI, None, ms("2026-11-20T12:00:00Z"), ms("2026-11-27T00:00:00Z"))
    assert [o.key for o in found] == ["2026-11-25", "2026-11-26"]


def test_drip_for_users_who_signed_up_before_activation_continues_from_activation() -> None:
    c = make({"kind": "drip", "offsets_days": [0, 1, 3]})
    signup = ms("2026-11-20T10:00:00Z")
    active = with_status(c, "active", ms("2026-11-22T00:00:00Z"))
    assert [o.key for o in due(active, NAIROBI, signup, None, MAX_TS_MS)] == ["d3"]


# --- properties ------------------------------------------------------------------------------

ZONES = [
    "UTC",
    NAIROBI,
    NEW_YORK,
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
    "America/Santiago",
]
T0 = ms("2026-01-01T00:00:00Z")


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    kind = draw(st.sampled_from(CAMPAIGN_KINDS))
    local_time = f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 1, 15, 30, 45, 59])):02d}"
    schedule: dict[str, Any]
    if kind == "one_time":
        schedule = {"kind": kind, "at": draw(st.integers(T0, T0 + 400 * DAY))}
    elif kind == "drip":
        offsets = sorted(set(draw(st.lists(st.integers(0, 365), min_size=1, max_size=6))))
        schedule = {"kind": kind, "offsets_days": offsets, "local_time": local_time}
    else:
        every = draw(st.sampled_from(["daily", "weekly", "monthly"]))
        schedule = {"kind": kind, "every": every, "local_time": local_time}
        if every == "weekly":
            schedule["weekday"] = draw(st.integers(0, 6))
        if every == "monthly":
            schedule["day_of_month"] = draw(st.integers(1, 31))
    window: dict[str, Any] = {}
    if draw(st.booleans()):
        start = draw(st.integers(T0 - 30 * DAY, T0 + 300 * DAY))
        window = {"start": start, "end": start + draw(st.integers(1, 200 * DAY))}
        if kind == "one_time":
            window = {"start": min(start, schedule["at"]), "end": max(window["end"], schedule["at"])}
    return parse_campaign(body(schedule=schedule, **window), "c-p", 0)


users = st.tuples(st.sampled_from(ZONES), st.one_of(st.none(), st.integers(T0 - 400 * DAY, T0 + 400 * DAY)))
instants = st.integers(T0 - 60 * DAY, T0 + 420 * DAY)


@settings(max_examples=300, deadline=None)
@given(campaigns(), users, instants)
def test_next_occurrence_is_the_first_of_occurrences(
    c: Campaign, user: tuple[str, int | None], after: int
) -> None:
    tz, signup = user
    found = occurrences(c, tz, signup, after, MAX_TS_MS, limit=1)
    assert next_occurrence(c, tz, signup, after) == (found[0].at_ms if found else None)


@settings(max_examples=300, deadline=None)
@given(campaigns(), users, instants, st.integers(0, 150 * DAY), st.integers(0, 150 * DAY))
def test_splitting_a_span_changes_nothing(
    c: Campaign, user: tuple[str, int | None], a: int, first: int, second: int
) -> None:
    """What a watermark walk fires in steps is what one look over the whole span fires."""
    tz, signup = user
    b, end = a + first, a + first + second
    whole = occurrences(c, tz, signup, a, end)
    assert whole == occurrences(c, tz, signup, a, b) + occurrences(c, tz, signup, b, end)
    assert all(x.at_ms < y.at_ms for x, y in itertools.pairwise(whole))
    assert len({o.key for o in whole}) == len(whole)
    low = a if c.start_ms is None else max(a, c.start_ms - 1)
    high = end if c.end_ms is None else min(end, c.end_ms)
    assert all(low < o.at_ms <= high for o in whole)


@settings(max_examples=300, deadline=None)
@given(campaigns(), users, instants)
def test_occurrences_land_on_their_local_date_and_time(
    c: Campaign, user: tuple[str, int | None], after: int
) -> None:
    tz, signup = user
    s = c.schedule
    for o in occurrences(c, tz, signup, after, after + 120 * DAY):
        wall = datetime.fromtimestamp(o.at_ms / 1000, tz=UTC).astimezone(ZoneInfo(tz))
        if s.kind == "one_time":
            assert (o.key, o.at_ms) == ("once", s.at_ms)
            continue
        if s.kind == "drip":
            assert signup is not None and o.key.startswith("d")
            offset = int(o.key[1:])
            assert offset in s.offsets_days
            if o.at_ms == signup:  # day 0, signed up after its local time
                assert offset == 0 and wall.strftime("%H:%M") >= s.local_time
                continue
            assert wall.date().toordinal() == local_day(signup, tz) + offset
        else:
            assert wall.date().isoformat() == o.key
            if s.every == "weekly":
                assert wall.weekday() == s.weekday
            if s.every == "monthly":
                assert s.day_of_month is not None
                assert wall.day == s.day_of_month or (
                    wall.day < s.day_of_month and (wall + timedelta(days=1)).day == 1
                )
        # Exactly the local time, or later the same day when it fell into a spring-forward gap.
        assert wall.strftime("%H:%M") >= s.local_time
        if wall.strftime("%H:%M") != s.local_time:
            before = datetime.fromtimestamp(o.at_ms / 1000 - 1, tz=UTC).astimezone(ZoneInfo(tz))
            assert before.utcoffset() != wall.utcoffset()  # o.at_ms is a zone transition


# --- CampaignRun -----------------------------------------------------------------------------


def test_campaign_run_counts_and_spans_in_any_order() -> None:
    run = CampaignRun("c-1")
    for outcome, at in [("evaluated", 30), ("targeted", 10), ("sent", 20), ("suppressed:quiet_hours", 40)]:
        run.record(outcome, at)
    run.record("evaluated", 5, n=3)
    assert run.counts == {"evaluated": 4, "targeted": 1, "sent": 1, "suppressed:quiet_hours": 1}
    assert (run.first_ms, run.last_ms) == (5, 40)


@pytest.mark.parametrize(
    "outcome", ["delivered", "suppressed:", "suppressed:Quiet Hours", "suppressed:" + "x" * 49]
)
def test_campaign_run_refuses_unknown_outcomes(outcome: str) -> None:
    run = CampaignRun("c-1")
    with pytest.raises(ValueError, match="unknown outcome"):
        run.record(outcome, 1)
    assert run.counts == {} and run.first_ms is None


def test_campaign_run_bounds_suppression_reasons() -> None:
    run = CampaignRun("c-1")
    for i in range(MAX_SUPPRESSION_REASONS + 10):
        run.record(f"suppressed:r{i}", i)
    run.record("suppressed:r0", 99)
    suppressed = [key for key in run.counts if key.startswith("suppressed:")]
    assert len(suppressed) == MAX_SUPPRESSION_REASONS
    assert run.counts["suppressed:other"] == 11
    assert run.counts["suppressed:r0"] == 2
    assert sum(run.counts.values()) == MAX_SUPPRESSION_REASONS + 11


def test_campaign_run_merges_and_round_trips() -> None:
    a, b = CampaignRun("c-1"), CampaignRun("c-1")
    a.record("sent", 100)
    b.record("sent", 50)
    b.record("deferred", 300)
    before_b = copy.deepcopy(b)
    a.merge(b)
    assert a.counts == {"sent": 2, "deferred": 1}
    assert (a.first_ms, a.last_ms) == (50, 300)
    assert b == before_b
    empty = CampaignRun("c-1")
    empty.merge(CampaignRun("c-1"))
    assert (empty.counts, empty.first_ms, empty.last_ms) == ({}, None, None)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(CampaignRun("c-2"))
    assert CampaignRun.from_dict(orjson.loads(orjson.dumps(a.to_dict()))) == a
    assert a.to_dict() == {
        "campaign_id": "c-1",
        "counts": {"sent": 2, "deferred": 1},
        "first_ms": 50,
        "last_ms": 300,
    }
