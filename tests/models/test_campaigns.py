from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import pickle
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.campaigns.changes import deleted_marker, duplicate, edit
from models.campaigns.errors import CampaignConflict, InvalidCampaign
from models.campaigns.execution import MAX_RUN_LOG, MAX_SUPPRESSION_REASONS, CampaignRun, funnel_view
from models.campaigns.occurrences import (
    MAX_OCCURRENCES,
    due,
    next_due,
    next_occurrence,
    next_run,
    next_send,
    occurrences,
    sends_due,
)
from models.campaigns.parsing import MAX_NAME_LEN, check_templates, parse_campaign
from models.campaigns.records import (
    CAMPAIGN_KINDS,
    FILTER_FIELDS,
    Campaign,
    DripStep,
    ManualSend,
    Occurrence,
    Schedule,
    Target,
    UserFacts,
    stored_template_ids,
)
from models.campaigns.sends import (
    MAX_SENDS,
    SEND_DEDUP_MS,
    SEND_RETENTION_MS,
    TooManySends,
    add_send,
    check_send_id,
    parse_send,
)
from models.campaigns.status import effective_status, public_campaign, with_status
from models.campaigns.targeting import targets
from models.events import MAX_TS_MS, format_ts
from models.interventions import INTERVENTION_TYPES, UserContext
from models.interventions.templates import Template, TemplateLibrary, Variant
from models.nudges import NudgeOutcome, next_look, plan
from models.outcome_ledger import OutcomeLedger
from models.risk_state import RiskSettings, RiskState
from models.streaks import local_day
from streams.risk import RiskProcessor, stage_feedback
from tests.models.factories import event, ms
from tests.models.test_nudges import CountsSpy, context, facts_for

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
    ("weekly without weekday", body(schedule=_without(WEEKLY, "weekday")), "schedule.days"),
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
    ("drip without offsets", body(schedule={"kind": "drip"}), "schedule.steps"),
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
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    kind = draw(st.sampled_from(CAMPAIGN_KINDS))
    local_time = f"{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 1, 15, 30, 45, 59])):02d}"
    schedule: dict[str, Any]
    if kind == "one_time":
        schedule = {"kind": kind, "at": draw(st.integers(T0, T0 + 400 * DAY))}
    elif kind == "drip" and draw(st.booleans()):
        offsets = sorted(set(draw(st.lists(st.integers(0, 365), min_size=1, max_size=6))))
        schedule = {"kind": kind, "offsets_days": offsets, "local_time": local_time}
    elif kind == "drip":
        # Steps in any order, by days or by hours (keys unique), with a template now and then.
        delays = draw(
            st.lists(
                st.tuples(st.sampled_from(["offset_days", "delay_hours"]), st.integers(0, 400)),
                min_size=1,
                max_size=6,
                unique=True,
            )
        )
        steps = [{unit: min(n, 365) if unit == "offset_days" else n * 7} for unit, n in delays]
        steps = [step for i, step in enumerate(steps) if step not in steps[:i]]
        schedule = {"kind": kind, "steps": steps, "local_time": local_time}
    else:
        every = draw(st.sampled_from(["daily", "weekly", "monthly"]))
        schedule = {"kind": kind, "every": every, "local_time": local_time}
        if every == "weekly" and draw(st.booleans()):
            schedule["weekday"] = draw(st.integers(0, 6))
        elif every == "weekly":
            schedule["days"] = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
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
    # Time-ordered; only two drip steps can share an instant (a day step and an hour step).
    assert all(
        x.at_ms < y.at_ms or (c.schedule.steps and x.at_ms == y.at_ms) for x, y in itertools.pairwise(whole)
    )
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
        if s.kind == "drip" and o.key.startswith("h"):
            assert signup is not None and o.at_ms == signup + int(o.key[1:]) * HOUR
            assert int(o.key[1:]) in {step.delay_hours for step in s.drip_steps}
            continue
        if s.kind == "drip":
            assert signup is not None and o.key.startswith("d")
            offset = int(o.key[1:])
            assert offset in {step.offset_days for step in s.drip_steps}
            if o.at_ms == signup:  # day 0, signed up after its local time
                assert offset == 0 and wall.strftime("%H:%M") >= s.local_time
                continue
            assert wall.date().toordinal() == local_day(signup, tz) + offset
        else:
            assert wall.date().isoformat() == o.key
            if s.every == "weekly":
                assert wall.weekday() in s.days_of_week
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
        "funnel": funnel_view({}),
        "runs": [],
    }


# --- weekly on several days ------------------------------------------------------------------

SEVERAL_DAYS = {"kind": "recurring", "every": "weekly", "days": ["mon", "wed", "fri"], "local_time": "18:00"}


def test_weekly_days_by_name_or_number_in_any_order_and_case() -> None:
    c = make({"kind": "recurring", "every": "weekly", "days": ["fri", " Mon", 2], "local_time": "18:00"})
    assert c.schedule == Schedule("recurring", every="weekly", local_time="18:00", weekdays=(0, 2, 4))
    assert c.schedule.days_of_week == (0, 2, 4)
    # The one-day form is still accepted and kept as written.
    assert make(WEEKLY).schedule == Schedule("recurring", every="weekly", weekday=2)
    assert make(WEEKLY).schedule.days_of_week == (2,)
    every_day = make({"kind": "recurring", "every": "weekly", "days": WEEKDAYS})
    assert every_day.schedule.days_of_week == (0, 1, 2, 3, 4, 5, 6)


def test_weekly_on_several_days_fires_on_each_at_local_time() -> None:
    c = make(SEVERAL_DAYS)
    # 2026-01-05 is a Monday; 18:00 in Nairobi is 15:00 UTC.
    assert spans(c, NAIROBI, "2026-01-04T00:00:00Z", "2026-01-12T00:00:00Z") == [
        ("2026-01-05", "2026-01-05T15:00:00Z"),
        ("2026-01-07", "2026-01-07T15:00:00Z"),
        ("2026-01-09", "2026-01-09T15:00:00Z"),
    ]
    # From the middle of a week: the rest of that week, then the next one.
    assert [key for key, _ in spans(c, NAIROBI, "2026-01-07T16:00:00Z", "2026-01-14T16:00:00Z")] == [
        "2026-01-09",
        "2026-01-12",
        "2026-01-14",
    ]
    # In New York across the spring-forward night: still 18:00 local on each day.
    assert spans(c, NEW_YORK, "2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z") == [
        ("2026-03-06", "2026-03-06T23:00:00Z"),
        ("2026-03-09", "2026-03-09T22:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("days", "field"),
    [
        ([], "schedule.days"),
        ("mon", "schedule.days"),
        (["mon"] * 8, "schedule.days"),
        (["mon", "tue", "MON"], "schedule.days[2]"),
        (["funday"], "schedule.days[0]"),
        ([7], "schedule.days[0]"),
        ([-1], "schedule.days[0]"),
        ([True], "schedule.days[0]"),
        ([1.0], "schedule.days[0]"),
        ([None], "schedule.days[0]"),
    ],
)
def test_refused_weekly_days(days: Any, field: str) -> None:
    with pytest.raises(InvalidCampaign) as info:
        make({"kind": "recurring", "every": "weekly", "days": days})
    assert info.value.field == field


def test_weekly_takes_one_form_of_its_days_and_only_weekly_takes_days() -> None:
    with pytest.raises(InvalidCampaign) as info:
        make({"kind": "recurring", "every": "weekly", "days": ["mon"], "weekday": 0})
    assert info.value.field == "schedule.days"
    with pytest.raises(InvalidCampaign) as info:
        make({"kind": "recurring", "every": "daily", "days": ["mon"]})
    assert info.value.field == "schedule.days"
    with pytest.raises(InvalidCampaign) as info:
        make({"kind": "drip", "offsets_days": [0], "days": ["mon"]})
    assert info.value.field == "schedule.days"


# --- drip steps ------------------------------------------------------------------------------

STEPS = [
    {"offset_days": 0, "template": "welcome"},
    {"delay_hours": 2, "intervention": "personalized_content"},
    {"offset_days": 3, "template": "nudge-3", "intervention": "peer_comparison"},
]


def test_drip_steps_parse_with_their_own_delay_template_and_type() -> None:
    c = make({"kind": "drip", "steps": STEPS, "local_time": "10:00"}, template="gentle_reminder")
    assert c.schedule.steps == (
        DripStep(offset_days=0, template="welcome"),
        DripStep(delay_hours=2, intervention="personalized_content"),
        DripStep(offset_days=3, template="nudge-3", intervention="peer_comparison"),
    )
    assert [step.key for step in c.schedule.drip_steps] == ["d0", "h2", "d3"]
    assert c.template_ids() == {"welcome", "nudge-3", "gentle_reminder"}
    # The older form is still accepted and kept as written: steps with the campaign's wording.
    assert make(DRIP).schedule.offsets_days == (0, 3) and make(DRIP).schedule.steps == ()
    assert make(DRIP).schedule.drip_steps == (DripStep(offset_days=0), DripStep(offset_days=3))
    assert make(DRIP).template_ids() == set()


def test_drip_steps_fire_in_time_order_each_with_its_template_and_type() -> None:
    c = make({"kind": "drip", "steps": STEPS, "local_time": "10:00"})
    signup = ms("2026-01-05T05:00:00Z")  # 08:00 in Nairobi
    found = occurrences(c, NAIROBI, signup, signup - 1, signup + 10 * DAY)
    assert [(o.key, format_ts(o.at_ms), o.intervention, o.template) for o in found] == [
        # 10:00 on the signup day and two hours after signup are the same instant: listed order.
        ("d0", "2026-01-05T07:00:00Z", None, "welcome"),
        ("h2", "2026-01-05T07:00:00Z", "personalized_content", None),
        ("d3", "2026-01-08T07:00:00Z", "peer_comparison", "nudge-3"),
    ]
    assert found[2].idempotency_key == "campaign:c-1:d3"
    # Listed in any order, they still fire in time order; hours count from the signup instant.
    late = make({"kind": "drip", "steps": [{"offset_days": 1}, {"delay_hours": 30}, {"delay_hours": 1}]})
    evening = ms("2026-01-05T18:00:00Z")  # 21:00 in Nairobi
    assert [
        (o.key, format_ts(o.at_ms)) for o in occurrences(late, NAIROBI, evening, 0, evening + 3 * DAY)
    ] == [
        ("h1", "2026-01-05T19:00:00Z"),
        ("d1", "2026-01-06T06:00:00Z"),
        ("h30", "2026-01-07T00:00:00Z"),
    ]
    assert next_occurrence(late, NAIROBI, evening, evening + HOUR) == ms("2026-01-06T06:00:00Z")
    assert occurrences(late, NAIROBI, None, 0, MAX_TS_MS) == []  # no signup, no drip


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([], "schedule.steps"),
        ({"offset_days": 0}, "schedule.steps"),
        ([{"offset_days": i} for i in range(21)], "schedule.steps"),
        (["d0"], "schedule.steps[0]"),
        ([{}], "schedule.steps[0].offset_days"),
        ([{"template": "welcome"}], "schedule.steps[0].offset_days"),
        ([{"offset_days": 1, "delay_hours": 2}], "schedule.steps[0].offset_days"),
        ([{"offset_days": 366}], "schedule.steps[0].offset_days"),
        ([{"offset_days": -1}], "schedule.steps[0].offset_days"),
        ([{"offset_days": "3"}], "schedule.steps[0].offset_days"),
        ([{"delay_hours": -1}], "schedule.steps[0].delay_hours"),
        ([{"delay_hours": 24 * 365 + 1}], "schedule.steps[0].delay_hours"),
        ([{"delay_hours": 1.5}], "schedule.steps[0].delay_hours"),
        ([{"offset_days": 1}, {"offset_days": 1}], "schedule.steps[1].offset_days"),
        ([{"delay_hours": 4}, {"offset_days": 4}, {"delay_hours": 4}], "schedule.steps[2].delay_hours"),
        ([{"offset_days": 1, "subject": "Hi"}], "schedule.steps[0].subject"),
        ([{"offset_days": 1, "template": ""}], "schedule.steps[0].template"),
        ([{"offset_days": 1, "template": "t" * 129}], "schedule.steps[0].template"),
        ([{"offset_days": 1, "intervention": "spam"}], "schedule.steps[0].intervention"),
        ([{"offset_days": 0}, {"offset_days": 2, "intervention": 3}], "schedule.steps[1].intervention"),
    ],
)
def test_refused_drip_steps(steps: Any, field: str) -> None:
    with pytest.raises(InvalidCampaign) as info:
        make({"kind": "drip", "steps": steps})
    assert info.value.field == field
    assert field in str(info.value)


def test_a_drip_takes_one_form_of_its_steps() -> None:
    with pytest.raises(InvalidCampaign) as info:
        make({"kind": "drip", "steps": [{"offset_days": 0}], "offsets_days": [0]})
    assert info.value.field == "schedule.steps"


TEMPLATE_TYPES = {
    "gentle_reminder": "gentle_reminder",
    "peer_comparison": "peer_comparison",
    "welcome": "gentle_reminder",
    "nudge-3": "peer_comparison",
    "promo": "discount_offer",
}


def test_check_templates_accepts_templates_of_the_type_they_send() -> None:
    c = make({"kind": "drip", "steps": STEPS}, template="welcome")
    check_templates(c, TEMPLATE_TYPES)  # welcome and d0 are gentle_reminder, d3 peer_comparison
    check_templates(daily(), {})  # names none


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"template": "nope"}, "template", "names no template"),
        ({"template": "promo"}, "template", "is a discount_offer template, not a gentle_reminder one"),
        (
            {
                "schedule": {
                    "kind": "drip",
                    "steps": [{"offset_days": 0}, {"offset_days": 1, "template": "x"}],
                }
            },
            "schedule.steps[1].template",
            "names no template",
        ),
        (
            # A step without its own type sends the campaign's: gentle_reminder, not peer_comparison.
            {"schedule": {"kind": "drip", "steps": [{"offset_days": 0, "template": "nudge-3"}]}},
            "schedule.steps[0].template",
            "not a gentle_reminder one",
        ),
        (
            {
                "schedule": {
                    "kind": "drip",
                    "steps": [{"offset_days": 0, "template": "welcome", "intervention": "discount_offer"}],
                }
            },
            "schedule.steps[0].template",
            "not a discount_offer one",
        ),
    ],
)
def test_check_templates_names_a_missing_or_mismatched_template(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    c = parse_campaign(body(**overrides), "c-1", NOW)
    with pytest.raises(InvalidCampaign, match=re.escape(words)) as info:
        check_templates(c, TEMPLATE_TYPES)
    assert info.value.field == field


def test_new_forms_round_trip_through_storage_and_the_public_view() -> None:
    weekly = make({"kind": "recurring", "every": "weekly", "days": ["wed", "mon"]})
    drip = make({"kind": "drip", "steps": STEPS, "local_time": "10:00"})
    for c in (weekly, drip):
        assert Campaign.from_dict(orjson.loads(orjson.dumps(c.to_dict()))) == c
        # The public schedule is a body that parses back to the same schedule.
        shown = public_campaign(c, NOW)["schedule"]
        assert make(shown).schedule == c.schedule
    assert public_campaign(weekly, NOW)["schedule"] == {
        "kind": "recurring",
        "every": "weekly",
        "local_time": "09:00",
        "days": ["mon", "wed"],
    }
    assert public_campaign(drip, NOW)["schedule"] == {
        "kind": "drip",
        "local_time": "10:00",
        "steps": [
            {"offset_days": 0, "template": "welcome"},
            {"delay_hours": 2, "intervention": "personalized_content"},
            {"offset_days": 3, "template": "nudge-3", "intervention": "peer_comparison"},
        ],
    }
    # Records stored before these forms existed read back unchanged.
    old = {k: v for k, v in make(DRIP).to_dict().items() if k != "sends"}
    old["schedule"] = {k: v for k, v in old["schedule"].items() if k not in ("weekdays", "steps")}
    assert Campaign.from_dict(old) == make(DRIP)


# --- next run --------------------------------------------------------------------------------


def test_next_run_is_the_next_occurrence_in_utc_or_per_user_for_a_drip() -> None:
    active = with_status(daily("09:00"), "active", NOW)
    assert next_run(daily("09:00"), NOW) is None  # a draft does not run
    assert next_run(active, NOW) == ms("2026-01-01T09:00:00Z")
    assert next_run(active, ms("2026-01-01T09:00:00Z")) == ms("2026-01-02T09:00:00Z")
    assert next_run(with_status(active, "paused", NOW + 1), NOW + 1) is None
    # 2026-01-01 is a Thursday: Friday is next.
    several = with_status(make(SEVERAL_DAYS), "active", NOW)
    assert next_run(several, NOW) == ms("2026-01-02T18:00:00Z")
    at = NOW + 5 * DAY
    once = with_status(make({"kind": "one_time", "at": at}), "active", NOW)
    assert (next_run(once, NOW), next_run(once, at)) == (at, None)
    drip = with_status(make(DRIP, end=NOW + DAY), "active", NOW)
    assert (next_run(drip, NOW), next_run(drip, NOW + DAY)) == ("per user", None)
    assert public_campaign(active, NOW)["next_run"] == "2026-01-01T09:00:00Z"
    assert public_campaign(drip, NOW)["next_run"] == "per user"
    assert public_campaign(daily(), NOW)["next_run"] is None


# --- edit, duplicate, delete -----------------------------------------------------------------

A_SEND = ManualSend("s1", NOW + 1, user_id="u-1")


def test_edit_replaces_the_definition_and_keeps_identity_activation_and_sends() -> None:
    c = dataclasses.replace(with_status(daily(), "active", NOW), sends=(A_SEND,))
    edited = edit(c, body(name="Evening", schedule=SEVERAL_DAYS, template="welcome"), NOW + HOUR)
    assert edited == dataclasses.replace(
        c,
        name="Evening",
        schedule=Schedule("recurring", every="weekly", local_time="18:00", weekdays=(0, 2, 4)),
        template="welcome",
        updated_ms=NOW + HOUR,
    )
    assert (edited.created_ms, edited.activated_ms, edited.status, edited.sends) == (
        NOW,
        NOW,
        "active",
        (A_SEND,),
    )
    # Strictly newer than what it replaces, even in the same millisecond or after a clock step back.
    assert edit(edited, body(), NOW).updated_ms == NOW + HOUR + 1
    # Fields left out take their defaults: a PUT replaces the whole definition.
    assert edit(edited, body(), NOW + DAY).template is None


def test_edit_changes_the_status_by_the_usual_rules() -> None:
    draft = daily()
    activated = edit(draft, body(status="active"), NOW + HOUR)
    assert (activated.status, activated.activated_ms) == ("active", NOW + HOUR)
    paused = edit(activated, body(status="paused"), NOW + 2 * HOUR)
    assert (paused.status, paused.activated_ms) == ("paused", NOW + HOUR)
    assert edit(paused, body(), NOW + 3 * HOUR).status == "paused"  # no status: it stays
    assert edit(paused, body(status="paused"), NOW + 3 * HOUR).status == "paused"
    for old, status in [(activated, "draft"), (draft, "paused")]:
        with pytest.raises(CampaignConflict) as conflict:
            edit(old, body(status=status), NOW + 4 * HOUR)
        assert conflict.value.field == "status"
    for bad in ("completed", "archived", 3):
        with pytest.raises(InvalidCampaign) as info:
            edit(activated, body(status=bad), NOW + 4 * HOUR)
        assert info.value.field == "status" and not isinstance(info.value, CampaignConflict)


def test_an_edit_that_leaves_an_active_campaign_unable_to_fire_is_refused() -> None:
    at = NOW + DAY
    active = with_status(make({"kind": "one_time", "at": at}), "active", NOW)
    with pytest.raises(InvalidCampaign) as info:
        edit(active, body(schedule={"kind": "one_time", "at": NOW}), NOW + HOUR)
    assert info.value.field == "schedule.at" and not isinstance(info.value, CampaignConflict)
    with pytest.raises(InvalidCampaign) as info:
        edit(with_status(daily(), "active", NOW), body(end=NOW + HOUR), NOW + HOUR)
    assert info.value.field == "end"
    # Paused, it may say so (it cannot be resumed until it can fire again).
    paused = with_status(active, "paused", NOW + 1)
    assert edit(paused, body(schedule={"kind": "one_time", "at": NOW}), NOW + HOUR).status == "paused"
    with pytest.raises(InvalidCampaign) as info:
        edit(paused, body(schedule={"kind": "one_time", "at": NOW}, status="active"), NOW + HOUR)
    assert info.value.field == "schedule.at"
    # One that could already never fire (completed) may still be renamed.
    renamed = edit(active, body(name="Done", schedule={"kind": "one_time", "at": at}), at + 1)
    assert (renamed.name, effective_status(renamed, at + 1)) == ("Done", "completed")


def test_edit_refuses_bad_bodies_naming_the_field() -> None:
    c = daily()
    for bad, field in [
        (body(id="c-2"), "id"),
        (body(name=""), "name"),
        ([1], "campaign"),
        (None, "campaign"),
        (body(schedule={"kind": "drip", "steps": []}), "schedule.steps"),
    ]:
        with pytest.raises(InvalidCampaign) as info:
            edit(c, bad, NOW + 1)
        assert info.value.field == field
    assert edit(c, body(id="c-1"), NOW + 1).id == "c-1"  # the same id in the body is fine


def test_duplicate_is_a_draft_copy_under_a_new_id() -> None:
    c = dataclasses.replace(with_status(daily(template="welcome"), "active", NOW), sends=(A_SEND,))
    copy_ = duplicate(c, "c-2", None, NOW + DAY)
    assert copy_ == dataclasses.replace(
        c,
        id="c-2",
        name="Copy of Morning nudge",
        status="draft",
        created_ms=NOW + DAY,
        updated_ms=NOW + DAY,
        activated_ms=None,
        sends=(),
    )
    assert duplicate(c, "c-3", "Evening", NOW).name == "Evening"
    assert len(duplicate(dataclasses.replace(c, name="n" * 200), "c-3", None, NOW).name) == MAX_NAME_LEN
    for new_id, name, field in [
        ("c-1", None, "id"),
        ("bad id", None, "id"),
        ("c-4", "  ", "name"),
        ("c-4", 5, "name"),
    ]:
        with pytest.raises(InvalidCampaign) as info:
            duplicate(c, new_id, name, NOW)
        assert info.value.field == field


def test_a_deleted_marker_is_newer_than_the_definition() -> None:
    c = daily()
    assert deleted_marker(c, NOW + 5) == {"id": "c-1", "deleted": True, "updated_ms": NOW + 5}
    assert deleted_marker(c, NOW - 5)["updated_ms"] == NOW + 1


# --- manual sends ----------------------------------------------------------------------------

NAIROBI_FILTER = {"kind": "filter", "field": "location", "op": "eq", "value": "Nairobi"}


def test_parse_send_bodies() -> None:
    assert parse_send({"user_id": "u-42"}, "gen", NOW) == (ManualSend("gen", NOW, user_id="u-42"), False)
    assert parse_send({"filter": NAIROBI_FILTER, "send_id": "retry-1"}, "gen", NOW) == (
        ManualSend("retry-1", NOW, target=Target("filter", field="location", value="Nairobi")),
        True,
    )
    assert parse_send({"filter": {"kind": "at_risk", "threshold": 80}}, "gen", NOW)[0].target == Target(
        "at_risk", threshold=80.0
    )
    # No audience: the campaign's own; null is the same as absent.
    assert parse_send({}, "gen", NOW) == (ManualSend("gen", NOW), False)
    assert parse_send(None, "gen", NOW) == (ManualSend("gen", NOW), False)
    assert parse_send({"user_id": None, "send_id": None}, "gen", NOW) == (ManualSend("gen", NOW), False)
    assert check_send_id("a" * 64) == "a" * 64


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ([], "send"),
        ("u-1", "send"),
        ({"user_id": "u-1", "filter": {"kind": "all"}}, "filter"),
        ({"user_id": 5}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": "a\nb"}, "user_id"),
        ({"user_id": "\ud800"}, "user_id"),
        ({"send_id": "bad id"}, "send_id"),
        ({"send_id": "-x"}, "send_id"),
        ({"send_id": "x" * 65}, "send_id"),
        ({"send_id": 3}, "send_id"),
        ({"filter": "all"}, "filter"),
        ({"filter": {"kind": "vip"}}, "filter.kind"),
        ({"filter": {"kind": "filter", "field": "skills", "op": "eq", "value": "sql"}}, "filter.op"),
        (
            {"filter": {"kind": "filter", "field": "location", "op": "in", "value": ["a", 3]}},
            "filter.value[1]",
        ),
        ({"filter": {"kind": "all", "threshold": 3}}, "filter.threshold"),
        ({"everyone": True}, "everyone"),
    ],
)
def test_refused_send_bodies_name_the_field(obj: Any, field: str) -> None:
    with pytest.raises(InvalidCampaign) as info:
        parse_send(obj, "gen", NOW)
    assert info.value.field == field
    assert field in str(info.value)


def test_a_send_is_kept_in_the_definition_and_moves_it_forward() -> None:
    c = daily()
    send, named = parse_send({"user_id": "u-1"}, "a1", NOW + 5)
    changed, standing, repeated = add_send(c, send, named, NOW + 5)
    assert (changed.sends, standing, repeated) == ((send,), send, False)
    assert changed.updated_ms == NOW + 5 and changed.status == "draft"


def test_a_retried_send_is_the_same_send() -> None:
    c = daily()
    first, _ = parse_send({"user_id": "u-1", "send_id": "r1"}, "gen", NOW)
    c, _, _ = add_send(c, first, True, NOW)
    # The same id and audience later: that send, nothing changed.
    again, _ = parse_send({"user_id": "u-1", "send_id": "r1"}, "gen", NOW + DAY)
    assert add_send(c, again, True, NOW + DAY) == (c, first, True)
    # The same id for another audience is a conflict.
    other, _ = parse_send({"user_id": "u-2", "send_id": "r1"}, "gen", NOW + 1)
    with pytest.raises(CampaignConflict) as info:
        add_send(c, other, True, NOW + 1)
    assert info.value.field == "send_id"
    # Without an id: the same audience within SEND_DEDUP_MS is that send, later a new one.
    unnamed, _ = parse_send({"user_id": "u-1"}, "gen-2", NOW + SEND_DEDUP_MS - 1)
    assert add_send(c, unnamed, False, NOW + SEND_DEDUP_MS - 1) == (c, first, True)
    later = dataclasses.replace(unnamed, at_ms=NOW + SEND_DEDUP_MS)
    changed, standing, repeated = add_send(c, later, False, NOW + SEND_DEDUP_MS)
    assert (standing, repeated, changed.sends) == (later, False, (first, later))
    # ... and another audience at once is another send.
    everyone, _ = parse_send({}, "gen-3", NOW + 2)
    assert add_send(c, everyone, False, NOW + 2)[1:] == (everyone, False)


def test_sends_age_out_and_are_bounded() -> None:
    c = daily()
    for i in range(MAX_SENDS):
        c, _, _ = add_send(c, ManualSend(f"s{i}", NOW + i, user_id=f"u-{i}"), True, NOW + i)
    assert len(c.sends) == MAX_SENDS
    with pytest.raises(TooManySends) as info:
        add_send(c, ManualSend("one-more", NOW + HOUR, user_id="u-x"), True, NOW + HOUR)
    assert info.value.retry_after_ms == NOW + SEND_RETENTION_MS - (NOW + HOUR)
    # Once the oldest has aged out there is room; the aged ones are dropped on the way.
    at = NOW + SEND_RETENTION_MS + 2
    c, _, repeated = add_send(c, ManualSend("one-more", at, user_id="u-x"), True, at)
    assert not repeated
    assert [s.id for s in c.sends] == [f"s{i}" for i in range(3, MAX_SENDS)] + ["one-more"]


def test_sends_due_for_the_user_they_name_or_for_everyone() -> None:
    a, b, d = (
        ManualSend("a", NOW + 10, user_id="u-1"),
        ManualSend("b", NOW + 20),
        ManualSend("d", NOW + 30, "u-2"),
    )
    c = dataclasses.replace(daily(), sends=(d, b, a))
    assert sends_due(c, "u-1", NOW, NOW + 100) == [
        (a, Occurrence("c-1", "s-a", NOW + 10)),
        (b, Occurrence("c-1", "s-b", NOW + 20)),
    ]
    assert sends_due(c, "u-1", NOW + 10, NOW + 20) == [(b, Occurrence("c-1", "s-b", NOW + 20))]
    assert [s.id for s, _ in sends_due(c, "u-2", None, NOW + 30)] == ["b", "d"]
    assert sends_due(c, "u-2", NOW + 30, MAX_TS_MS) == []
    assert (next_send(c, "u-1", NOW), next_send(c, "u-1", NOW + 20), next_send(c, "u-2", NOW + 20)) == (
        NOW + 10,
        None,
        NOW + 30,
    )
    # A send is not gated by status or window: a draft fires it; due() still fires nothing.
    assert due(c, "UTC", None, NOW, NOW + DAY) == []


# --- plan(): drip steps and manual sends through the gate ------------------------------------

WELCOME = Template(
    id="welcome",
    type="gentle_reminder",
    variants=(Variant("w", "Welcome {display_name}", "Your first lesson is ready", "Start"),),
    builtin=False,
)
LIBRARY = TemplateLibrary({"welcome": WELCOME})
LONG_AGO = NOW - 30 * DAY


def plan_for(
    state: RiskState,
    ctx: UserContext,
    now_ms: int,
    campaigns: list[Campaign],
    counts: CountsSpy | None = None,
    **profile: Any,
) -> NudgeOutcome:
    return plan(
        state,
        ctx,
        None,
        now_ms,
        campaigns=campaigns,
        facts=facts_for(ctx, **profile),
        variant_counts=counts or CountsSpy(),
        templates=LIBRARY,
    )


def test_each_drip_step_sends_its_own_template_and_type() -> None:
    steps = [
        {"offset_days": 0, "template": "welcome"},
        {"offset_days": 2, "intervention": "peer_comparison"},
        {"offset_days": 5},
    ]
    c = with_status(make({"kind": "drip", "steps": steps, "local_time": "10:00"}), "active", NOW)
    signup = ms("2026-01-05T05:00:00Z")
    state, ctx = RiskState("u-1"), context("u-1", tz=NAIROBI, signup_ms=signup)
    counts = CountsSpy()
    day0 = plan_for(state, ctx, ms("2026-01-05T07:00:00Z"), [c], counts)
    [n] = day0.delivered
    assert (n.key, n.type, n.template, n.source) == (
        "campaign:c-1:d0",
        "gentle_reminder",
        "welcome",
        "campaign:c-1",
    )
    assert n.subject == "Welcome there"  # the admin's wording (no display name known)
    assert counts.asked == ["welcome"]  # the bandit reads the chosen template's variants
    day2 = plan_for(state, ctx, ms("2026-01-07T07:00:00Z"), [c], counts)
    [n] = day2.delivered
    assert (n.key, n.type, n.template) == ("campaign:c-1:d2", "peer_comparison", "peer_comparison")
    day5 = plan_for(state, ctx, ms("2026-01-10T07:00:00Z"), [c], counts)
    [n] = day5.delivered
    assert (n.key, n.type, n.template) == ("campaign:c-1:d5", "gentle_reminder", "gentle_reminder")
    assert counts.asked == ["welcome", "peer_comparison", "gentle_reminder"]


def test_a_step_of_another_type_does_not_inherit_the_campaigns_template() -> None:
    steps = [{"offset_days": 0}, {"offset_days": 1, "intervention": "peer_comparison"}]
    c = with_status(make({"kind": "drip", "steps": steps}, template="welcome"), "active", NOW)
    signup = ms("2026-01-05T05:00:00Z")
    state, ctx = RiskState("u-1"), context("u-1", signup_ms=signup)
    [first] = plan_for(state, ctx, ms("2026-01-05T09:00:00Z"), [c]).delivered
    [second] = plan_for(state, ctx, ms("2026-01-06T09:00:00Z"), [c]).delivered
    assert (first.template, second.template) == ("welcome", "peer_comparison")


def test_an_edit_never_resends_an_occurrence_already_sent() -> None:
    # (a type without a per-type gap, so only the keys can stop the second day's send)
    c = with_status(daily("09:00", intervention="achievement_notification"), "active", NOW)
    state, ctx = RiskState("u-1"), context("u-1", signup_ms=LONG_AGO)
    assert len(plan_for(state, ctx, ms("2026-01-02T09:00:00Z"), [c]).delivered) == 1
    # Moved to 18:00 the same day: the same local date, the same key.
    evening_body = body(
        schedule={"kind": "recurring", "every": "daily", "local_time": "18:00"},
        intervention="achievement_notification",
    )
    evening = edit(c, evening_body, NOW + DAY)
    out = plan_for(state, ctx, ms("2026-01-02T18:00:00Z"), [evening])
    assert out.delivered == [] and out.campaign_outcomes[-1] == ("c-1", "2026-01-02", "suppressed:duplicate")
    # The next day it fires at its new time.
    [n] = plan_for(state, ctx, ms("2026-01-03T18:00:00Z"), [evening]).delivered
    assert n.key == "campaign:c-1:2026-01-03"


def test_a_manual_send_reaches_the_one_student_it_names_even_from_a_draft() -> None:
    at = NOW + HOUR
    draft = make({"kind": "one_time", "at": NOW + 9 * DAY}, target={"kind": "at_risk", "threshold": 90})
    c, _, _ = add_send(draft, ManualSend("a", at, user_id="u-1"), True, at)
    assert c.status == "draft"
    chosen, other = RiskState("u-1"), RiskState("u-2")
    ctx1, ctx2 = context("u-1", signup_ms=LONG_AGO), context("u-2", signup_ms=LONG_AGO)
    chosen.campaigns_checked_ms = other.campaigns_checked_ms = at - 1
    out = plan_for(chosen, ctx1, at + 5, [c])  # risk unknown: the campaign's target is not asked
    [n] = out.delivered
    assert (n.key, n.source, n.type) == ("campaign:c-1:s-a", "campaign:c-1", "gentle_reminder")
    assert out.campaign_outcomes == [
        ("c-1", "s-a", "evaluated"),
        ("c-1", "s-a", "targeted"),
        ("c-1", "s-a", "sent"),
    ]
    assert plan_for(other, ctx2, at + 5, [c]).campaign_outcomes == []
    # Looked at again: nothing; replayed from scratch: a duplicate, not a second send.
    assert plan_for(chosen, ctx1, at + HOUR, [c]).campaign_outcomes == []
    chosen.campaigns_checked_ms = None
    again = plan_for(chosen, ctx1, at + HOUR, [c])
    assert again.delivered == [] and again.campaign_outcomes[-1] == ("c-1", "s-a", "suppressed:duplicate")
    # The sweep looks at the named user when the send falls due, and only at them.
    settings_ = RiskSettings()
    fresh1, fresh2 = RiskState("u-1"), RiskState("u-2")
    fresh1.campaigns_checked_ms = fresh2.campaigns_checked_ms = at - 1
    assert next_look(fresh1, ctx1, settings_, [c]) == at
    assert next_look(fresh2, ctx2, settings_, [c]) == next_look(fresh2, ctx2, settings_, [])


def test_a_bulk_send_reaches_the_users_its_filter_selects_through_the_gate() -> None:
    at = NOW + HOUR
    c = with_status(daily("23:00", target={"kind": "all"}), "active", NOW)
    c, _, _ = add_send(c, parse_send({"filter": NAIROBI_FILTER}, "b", at)[0], False, at)
    results = {}
    for user, location, prefs in [
        ("u-1", "Nairobi", {}),
        ("u-2", "Mombasa", {}),
        ("u-3", "nairobi", {"opt_out": ["gentle_reminder"]}),
    ]:
        state = RiskState(user)
        state.campaigns_checked_ms = at - 1
        out = plan_for(state, context(user, signup_ms=LONG_AGO, prefs=prefs), at, [c], location=location)
        results[user] = out.campaign_outcomes[-1][2]
    assert results == {"u-1": "sent", "u-2": "not_targeted", "u-3": "suppressed:opted_out"}
    # Without a filter, a send reaches the campaign's own audience.
    own = with_status(daily("23:00", target=NAIROBI_FILTER), "active", NOW)
    own, _, _ = add_send(own, ManualSend("c", at), False, at)
    state = RiskState("u-2")
    state.campaigns_checked_ms = at - 1
    out = plan_for(state, context("u-2", signup_ms=LONG_AGO), at, [own], location="Mombasa")
    assert out.campaign_outcomes[-1] == ("c-1", "s-c", "not_targeted")


def test_a_send_and_a_scheduled_occurrence_due_together_both_fire() -> None:
    c = with_status(daily("09:00", intervention="achievement_notification"), "active", NOW)
    at = ms("2026-01-02T08:00:00Z")
    c, _, _ = add_send(c, ManualSend("x", at, user_id="u-1"), True, at)
    state = RiskState("u-1")
    state.campaigns_checked_ms = at - 1
    out = plan_for(
        state,
        context("u-1", signup_ms=LONG_AGO, prefs={"channels": ["IN_APP"]}),
        ms("2026-01-02T09:00:00Z"),
        [c],
    )
    assert sorted(n.key for n in out.delivered) == ["campaign:c-1:2026-01-02", "campaign:c-1:s-x"]


# --- the funnel and the run log, from the sweep to the ledger ---------------------------------


def test_campaign_run_logs_each_occurrence_with_its_counts_funnel_and_span() -> None:
    run = CampaignRun("c-1")
    run.record("evaluated", 100, occurrence="2026-01-02")
    run.record("sent", 120, occurrence="2026-01-02")
    run.record("suppressed:throttled", 90, occurrence="2026-01-02")
    run.record("evaluated", 500, occurrence="d3")
    run.record("evaluated", 50)  # without an occurrence: the totals only
    run.record_stage("sent", "2026-01-02", 120)
    run.record_stage("opened", "2026-01-02")
    run.record_stage("clicked", "gone")  # a run the log does not hold: the totals only
    assert run.counts == {"evaluated": 3, "sent": 1, "suppressed:throttled": 1}
    assert run.funnel == {"sent": 1, "opened": 1, "clicked": 1}
    day = run.runs["2026-01-02"]
    assert (day.counts, day.funnel, day.first_ms, day.last_ms) == (
        {"evaluated": 1, "sent": 1, "suppressed:throttled": 1},
        {"sent": 1, "opened": 1},
        90,
        120,
    )
    view = run.to_dict()
    assert [r["key"] for r in view["runs"]] == ["d3", "2026-01-02"]  # most recent first
    assert view["funnel"] == {
        "sent": 1,
        "opened": 1,
        "clicked": 1,
        "converted": 0,
        "open_rate": 1.0,
        "click_rate": 1.0,
        "conversion_rate": 0.0,
    }
    assert view["runs"][1]["funnel"]["open_rate"] == 1.0
    assert CampaignRun.from_dict(orjson.loads(orjson.dumps(view))) == run
    # A stage with a time starts the run it names (the send is counted before its outcomes).
    run.record_stage("sent", "s-abc", 700)
    assert run.runs["s-abc"].funnel == {"sent": 1} and run.runs["s-abc"].first_ms == 700


@pytest.mark.parametrize("key", ["", "a b", "x" * 81, "campaign:c-1:d3", "ü"])
def test_campaign_run_refuses_malformed_occurrence_keys_and_counts_nothing(key: str) -> None:
    run = CampaignRun("c-1")
    with pytest.raises(ValueError, match="occurrence key"):
        run.record("sent", 1, occurrence=key)
    with pytest.raises(ValueError, match="occurrence key"):
        run.record_stage("sent", key, 1)
    assert run == CampaignRun("c-1")
    with pytest.raises(ValueError, match="unknown stage"):
        run.record_stage("bounced", "d0", 1)


def test_the_run_log_keeps_the_most_recent_runs() -> None:
    run = CampaignRun("c-1")
    for i in range(MAX_RUN_LOG + 5):
        run.record("sent", 1_000 + i, occurrence=f"k{i:03d}")
    assert len(run.runs) == MAX_RUN_LOG
    assert set(run.runs) == {f"k{i:03d}" for i in range(5, MAX_RUN_LOG + 5)}
    # A late report of a forgotten run counts in the totals, and does not push a newer run out.
    run.record("sent", 1_000, occurrence="k000")
    assert "k000" not in run.runs and len(run.runs) == MAX_RUN_LOG
    assert run.counts["sent"] == MAX_RUN_LOG + 6
    # A newer run pushes the oldest out.
    run.record("sent", 9_999, occurrence="new")
    assert "new" in run.runs and "k005" not in run.runs


def test_campaign_runs_with_logs_merge() -> None:
    a, b = CampaignRun("c-1"), CampaignRun("c-1")
    a.record("sent", 100, occurrence="once")
    a.record_stage("sent", "once", 100)
    b.record("sent", 300, occurrence="once")
    b.record("evaluated", 50, occurrence="d0")
    b.record_stage("opened", "once", 300)
    a.merge(b)
    assert a.funnel == {"sent": 1, "opened": 1}
    once = a.runs["once"]
    assert (once.counts, once.funnel, once.first_ms, once.last_ms) == (
        {"sent": 2},
        {"sent": 1, "opened": 1},
        100,
        300,
    )
    assert a.runs["d0"].counts == {"evaluated": 1}


def test_the_ledger_counts_a_campaigns_notifications_in_its_own_funnel() -> None:
    ledger = OutcomeLedger()
    report = {
        "id": "n-1:sent", "kind": "stage", "stage": "sent", "type": "gentle_reminder", "channel": "IN_APP",
        "template": "welcome", "variant": "w", "source": "campaign:c-1", "key": "campaign:c-1:d0",
        "at_ms": 500,
    }  # fmt: skip
    assert ledger.apply(report) == "c-1"
    assert ledger.apply({**report, "id": "n-1:opened", "stage": "opened"}) == "c-1"
    assert ledger.apply({**report, "id": "n-1:opened"}) is None  # a repeat
    outcome = {
        "id": "r1",
        "kind": "campaign",
        "campaign_id": "c-1",
        "occurrence": "d0",
        "outcome": "sent",
        "at_ms": 510,
    }
    assert ledger.apply(outcome) == "c-1"
    run = ledger.runs["c-1"]
    assert run.funnel == {"sent": 1, "opened": 1}
    assert (run.runs["d0"].funnel, run.runs["d0"].counts) == ({"sent": 1, "opened": 1}, {"sent": 1})
    assert (run.runs["d0"].first_ms, run.runs["d0"].last_ms) == (500, 510)
    # The type/channel/template analytics still count it.
    assert ledger.stats.by_type["gentle_reminder"]["opened"] == 1
    # Other sources are not a campaign's; a campaign source without an id is malformed.
    assert ledger.apply({**report, "id": "n-2:sent", "source": "risk", "key": "risk:u-1:x:1"}) is None
    assert ledger.apply({k: v for k, v in report.items() if k != "source"} | {"id": "n-3:sent"}) is None
    with pytest.raises(ValueError, match="names no campaign"):
        ledger.apply({**report, "id": "n-4:sent", "source": "campaign:"})
    with pytest.raises(ValueError, match="occurrence key"):
        ledger.apply({**outcome, "id": "r2", "occurrence": "bad key"})
    assert ledger.runs["c-1"].counts == {"sent": 1} and "n-4:sent" not in ledger.seen


def test_the_sweep_reports_a_sends_occurrence_source_and_key_to_the_ledger() -> None:
    at = T0 + HOUR
    c, _, _ = add_send(daily(), ManualSend("x1", at, user_id="a"), True, at)
    p = RiskProcessor(RiskSettings(), lambda user_id, now_ms: None, _UtcUsers(), campaigns=lambda: [c])
    store = _Store()
    p.on_events([(event("lesson_complete", T0, user_id="a"), 10)], store)
    p.on_events([(event("lesson_complete", at + 1, user_id="b"), 10)], store)
    out = p.sweep(store, lambda user_id: True)
    ledger = OutcomeLedger()
    for report in out.feedback:
        ledger.apply(orjson.loads(orjson.dumps(report)))
    [n] = [n for n in out.delivered if n.source == "campaign:c-1"]
    assert n.user_id == "a" and n.key == "campaign:c-1:s-x1"
    run = ledger.runs["c-1"]
    assert run.counts == {"evaluated": 1, "targeted": 1, "sent": 1}
    assert run.funnel == {"sent": 1}
    assert set(run.runs) == {"s-x1"} and run.runs["s-x1"].funnel == {"sent": 1}
    # The student opens it: the campaign's funnel, and that run's, count the open.
    ledger.apply(stage_feedback(n, "opened"))
    assert run.funnel == {"sent": 1, "opened": 1} and run.runs["s-x1"].funnel == {"sent": 1, "opened": 1}


class _UtcUsers:
    def context(self, state: RiskState, now_ms: int) -> tuple[UserContext, UserFacts]:
        first = state.activity.first_seen_ms
        return (
            UserContext(state.user_id, signup_ms=first),
            UserFacts(state.user_id, "UTC", first, None, None, {}),
        )


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, RiskState] = {}

    def get(self, key: str) -> RiskState | None:
        return self.data.get(key)

    def put(self, key: str, state: RiskState) -> None:
        self.data[key] = state


def test_stored_template_ids_read_any_document_leniently() -> None:
    c = make({"kind": "drip", "steps": STEPS}, template="gentle_reminder")
    assert stored_template_ids(c.to_dict()) == c.template_ids() == {"welcome", "nudge-3", "gentle_reminder"}
    assert stored_template_ids({"id": "x", "deleted": True, "updated_ms": 1}) == set()
    odd = {"template": "t", "schedule": {"steps": [None, {"template": 3}, "x"]}}
    assert stored_template_ids(odd) == {"t"}
    assert stored_template_ids({"schedule": "daily"}) == set()


def test_the_broadcast_view_hands_the_sweep_active_campaigns_and_any_with_a_send() -> None:
    from streams.broadcast import Broadcasts, campaign_key

    b = Broadcasts(RiskProcessor(RiskSettings(), lambda user_id, now_ms: None, _UtcUsers()))
    active = with_status(daily(), "active", NOW)
    draft = dataclasses.replace(daily(), id="draft")
    tried = dataclasses.replace(daily(), id="tried", sends=(A_SEND,))
    for offset, c in enumerate((active, draft, tried)):
        b.on_record(campaign_key(c.id), orjson.dumps(c.to_dict()), offset)
    assert [c.id for c in b.active_campaigns()] == ["c-1", "tried"]
    # The schedule of a draft with a send still never fires; only the send does.
    assert due(b.campaigns["tried"], "UTC", None, NOW, NOW + 10 * DAY) == []
