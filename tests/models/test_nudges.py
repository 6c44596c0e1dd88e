"""The retention sweep's decisions (models/nudges.py): risk nudges, streak warnings, campaigns,
deferred deliveries, and when to look at a user next. Pure: every instant is an argument."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import pytest

from models.campaigns.looks import CampaignLooks
from models.campaigns.parsing import parse_campaign
from models.campaigns.records import Campaign, UserFacts
from models.campaigns.status import with_status
from models.events import parse_ts
from models.gamification import Effects
from models.interventions import (
    DEFERRED,
    DUPLICATE,
    QUEUED,
    RETURN_GRACE_MS,
    RETURNED,
    THROTTLED,
    Notification,
    UserContext,
    risk_key,
)
from models.nudges import (
    Celebration,
    NudgeOutcome,
    celebrate,
    celebrations_for,
    next_look,
    plan,
    streak_warning_instant,
)
from models.risk import RiskScore, risk_level
from models.risk_state import RiskSettings, RiskState
from models.rules import BadgeDef
from models.streaks import StreakState, local_day
from models.time_units import DAY_MS, HOUR_MS

NAIROBI = "Africa/Nairobi"  # UTC+3, no DST
NEW_YORK = "America/New_York"  # UTC-4 in March 2026 (DST from 2026-03-08)


def ms(text: str) -> int:
    return parse_ts(text)


def risk(value: float, user_id: str = "u-1", at_ms: int = 0) -> RiskScore:
    return RiskScore(
        user_id=user_id,
        score=value,
        level=risk_level(value),
        probability=value / 100,
        weekly_risk=value / 100,
        monthly_risk=min(1.0, value / 50),
        confidence=0.2,
        top_signals=(),
        scored_at_ms=at_ms,
    )


def quiet_state(user_id: str = "u-1", last_ms: int | None = None) -> RiskState:
    state = RiskState(user_id)
    state.activity.last_event_ms = last_ms
    return state


def context(
    user_id: str = "u-1",
    *,
    tz: str = "UTC",
    last_active_ms: int | None = None,
    streak: int = 0,
    prefs: Mapping[str, Any] | None = None,
    signup_ms: int | None = None,
) -> UserContext:
    return UserContext(
        user_id=user_id,
        timezone=tz,
        prefs=dict(prefs or {}),
        streak=streak,
        last_active_ms=last_active_ms,
        signup_ms=signup_ms,
    )


def facts_for(ctx: UserContext, risk_score: float | None = None, **profile: Any) -> UserFacts:
    return UserFacts(ctx.user_id, ctx.timezone, ctx.signup_ms, ctx.last_active_ms, risk_score, profile)


class CountsSpy:
    """variant_counts that records which templates the bandit asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, template: str) -> Mapping[str, Mapping[str, int]]:
        self.asked.append(template)
        return {}


def run(
    state: RiskState,
    ctx: UserContext,
    score: RiskScore | None,
    now_ms: int,
    *,
    campaigns: Sequence[Campaign] = (),
    facts: UserFacts | None = None,
    counts: CountsSpy | None = None,
) -> NudgeOutcome:
    return plan(
        state,
        ctx,
        score,
        now_ms,
        campaigns=list(campaigns),
        facts=facts if facts is not None else facts_for(ctx),
        variant_counts=counts if counts is not None else CountsSpy(),
    )


def reasons(out: NudgeOutcome, source: str | None = None) -> list[str]:
    return [d.reason for s, d in out.decisions if source is None or s == source]


# ---------------------------------------------------------------------------------------------
# Risk nudges

NOW = ms("2026-03-10T12:00:00Z")
FIVE_DAYS_AGO = NOW - 5 * DAY_MS


def test_high_risk_quiet_user_gets_one_risk_nudge_per_utc_day() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(last_active_ms=FIVE_DAYS_AGO)
    counts = CountsSpy()

    first = run(state, ctx, risk(65.0), NOW, counts=counts)

    assert reasons(first) == [QUEUED]
    assert first.decisions[0][0] == "risk"
    [n] = first.delivered
    assert n.type == "gentle_reminder"  # first of the high level's defaults
    assert n.key == risk_key("u-1", "gentle_reminder", NOW // DAY_MS)
    assert n.source == "risk" and n.urgency == "high"
    assert n.status == "sent" and n.sent_ms == NOW
    assert state.notifications.inbox == [n]  # IN_APP (the default channel) goes to the inbox
    assert counts.asked == ["gentle_reminder"]

    later_same_day = ms("2026-03-10T23:59:59Z")
    second = run(state, ctx, risk(70.0), later_same_day)
    assert reasons(second, "risk") == [DUPLICATE]
    assert second.delivered == []
    assert len(state.notifications.inbox) == 1


def test_risk_key_changes_with_the_utc_day_so_only_the_gap_holds_it_back() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(last_active_ms=FIVE_DAYS_AGO)
    run(state, ctx, risk(65.0), NOW)

    next_day = ms("2026-03-11T00:00:00Z")
    assert reasons(run(state, ctx, risk(65.0), next_day), "risk") == [THROTTLED]  # not a duplicate

    after_gap = NOW + 48 * HOUR_MS
    out = run(state, ctx, risk(65.0), after_gap)
    assert reasons(out, "risk") == [QUEUED]
    assert [n.key for n in out.delivered] == [risk_key("u-1", "gentle_reminder", after_gap // DAY_MS)]


@pytest.mark.parametrize("value", [0.0, 20.0, 39.9])
def test_low_risk_user_gets_no_nudge(value: float) -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(last_active_ms=FIVE_DAYS_AGO)
    counts = CountsSpy()
    out = run(state, ctx, risk(value), NOW, counts=counts)
    assert out.decisions == [] and out.delivered == []
    assert state.notifications.keys == {}
    assert counts.asked == []


def test_no_score_means_no_risk_nudge() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    out = run(state, context(last_active_ms=FIVE_DAYS_AGO), None, NOW)
    assert out.decisions == [] and out.delivered == []


@pytest.mark.parametrize(
    ("quiet_for_ms", "expected"),
    [(0, RETURNED), (HOUR_MS, RETURNED), (RETURN_GRACE_MS, RETURNED), (RETURN_GRACE_MS + 1, QUEUED)],
)
def test_user_active_within_two_hours_gets_no_reengagement_nudge(quiet_for_ms: int, expected: str) -> None:
    last = NOW - quiet_for_ms
    state = quiet_state(last_ms=last)
    out = run(state, context(last_active_ms=last), risk(65.0), NOW)
    assert reasons(out, "risk") == [expected]
    assert len(out.delivered) == (1 if expected == QUEUED else 0)


QUIET_PREFS = {"channels": ["PUSH", "IN_APP"], "quiet_hours": ["21:00", "07:00"]}
IN_QUIET_HOURS = ms("2026-03-10T19:00:00Z")  # 22:00 in Nairobi
QUIET_ENDS = ms("2026-03-11T04:00:00Z")  # 07:00 in Nairobi


def test_quiet_hours_defer_a_push_nudge_and_a_later_plan_delivers_it() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(tz=NAIROBI, last_active_ms=FIVE_DAYS_AGO, prefs=QUIET_PREFS)

    held = run(state, ctx, risk(65.0), IN_QUIET_HOURS)
    assert reasons(held) == [DEFERRED]
    assert held.delivered == []
    [pending] = state.notifications.pending
    assert pending.deliver_at_ms == QUIET_ENDS
    assert pending.channels == ("PUSH", "IN_APP")
    assert pending.status == "pending"

    assert run(state, ctx, None, QUIET_ENDS - 1).decisions == []
    assert state.notifications.pending == [pending]

    released = run(state, ctx, None, QUIET_ENDS)
    assert released.decisions == [("deferred", released.decisions[0][1])]
    assert reasons(released) == [QUEUED]
    assert [n.id for n in released.delivered] == [pending.id]
    assert pending.status == "sent" and pending.sent_ms == QUIET_ENDS
    assert state.notifications.pending == []
    assert state.notifications.inbox == [pending]


def test_a_silent_in_app_nudge_is_not_held_by_quiet_hours() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(tz=NAIROBI, last_active_ms=FIVE_DAYS_AGO, prefs=QUIET_PREFS)
    out = run(state, ctx, risk(45.0), IN_QUIET_HOURS)  # medium: IN_APP only
    assert reasons(out) == [QUEUED]
    assert [n.channels for n in out.delivered] == [("IN_APP",)]
    assert state.notifications.pending == []


def test_a_deferred_reengagement_nudge_is_cancelled_when_the_user_came_back() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(tz=NAIROBI, last_active_ms=FIVE_DAYS_AGO, prefs=QUIET_PREFS)
    run(state, ctx, risk(65.0), IN_QUIET_HOURS)

    back = context(tz=NAIROBI, last_active_ms=IN_QUIET_HOURS + HOUR_MS, prefs=QUIET_PREFS)
    out = run(state, back, None, QUIET_ENDS)
    assert reasons(out, "deferred") == [RETURNED]
    assert out.delivered == []
    assert out.decisions[0][1].notification is not None
    assert out.decisions[0][1].notification.status == "cancelled"


# ---------------------------------------------------------------------------------------------
# Streak warnings

# (zone, last activity, its local day L, the warning instant: 19:00 local on L + 1)
STREAK_CASES = [
    # 01:30 on Mar 11 in Nairobi (still Mar 10 in UTC): L is Mar 11, warning 16:00Z on Mar 12.
    (NAIROBI, "2026-03-10T22:30:00Z", date(2026, 3, 11), "2026-03-12T16:00:00Z"),
    # 23:00 EDT on Mar 10 (already Mar 11 in UTC): L is Mar 10, warning 23:00Z on Mar 11.
    (NEW_YORK, "2026-03-11T03:00:00Z", date(2026, 3, 10), "2026-03-11T23:00:00Z"),
]


@pytest.mark.parametrize(("tz", "last", "local_date", "warning_at"), STREAK_CASES)
def test_streak_warning_at_19h_local_on_the_next_day_once(
    tz: str, last: str, local_date: date, warning_at: str
) -> None:
    last_ms, warn_ms = ms(last), ms(warning_at)
    day = local_date.toordinal() + 1
    state = quiet_state(last_ms=last_ms)
    ctx = context(tz=tz, last_active_ms=last_ms, streak=4)
    assert local_day(last_ms, tz) == local_date.toordinal()
    assert streak_warning_instant(state, ctx) == (day, warn_ms)

    early = run(state, ctx, None, warn_ms - 1)
    assert reasons(early, "streak") == [] and early.delivered == []
    assert state.streak_warned_day is None

    counts = CountsSpy()
    out = run(state, ctx, None, warn_ms, counts=counts)
    assert reasons(out, "streak") == [QUEUED]
    [n] = out.delivered
    assert n.type == "streak_warning" and n.source == "streak" and n.urgency == "high"
    assert n.key == f"streak:u-1:{day}"
    assert state.streak_warned_day == day
    assert counts.asked == ["streak_warning"]

    # Once: the mark stops a second warning for the same day.
    assert streak_warning_instant(state, ctx) is None
    again = run(state, ctx, None, warn_ms + HOUR_MS)
    assert reasons(again, "streak") == [] and again.delivered == []


@pytest.mark.parametrize(("tz", "last", "local_date", "warning_at"), STREAK_CASES)
def test_no_streak_warning_when_already_active_on_the_next_day(
    tz: str, last: str, local_date: date, warning_at: str
) -> None:
    active_next_day = ms(warning_at) - 6 * HOUR_MS  # 13:00 local on L + 1
    assert local_day(active_next_day, tz) == local_date.toordinal() + 1
    assert active_next_day < ms(warning_at)
    state = quiet_state(last_ms=active_next_day)
    ctx = context(tz=tz, last_active_ms=active_next_day, streak=5)

    out = run(state, ctx, None, ms(warning_at) + 30 * 60_000)
    assert reasons(out, "streak") == [] and out.delivered == []
    assert state.streak_warned_day is None
    warning = streak_warning_instant(state, ctx)
    assert warning is not None and warning[0] == local_date.toordinal() + 2
    assert warning[1] == ms(warning_at) + DAY_MS  # no DST change in these zones that week


@pytest.mark.parametrize(("tz", "last", "local_date", "warning_at"), STREAK_CASES)
def test_streak_warning_too_late_is_marked_but_not_sent(
    tz: str, last: str, local_date: date, warning_at: str
) -> None:
    state = quiet_state(last_ms=ms(last))
    ctx = context(tz=tz, last_active_ms=ms(last), streak=4)
    day_after = ms(warning_at) + 15 * HOUR_MS  # 10:00 local on L + 2
    assert local_day(day_after, tz) == local_date.toordinal() + 2

    out = run(state, ctx, None, day_after)
    assert reasons(out, "streak") == [] and out.delivered == []
    assert state.streak_warned_day == local_date.toordinal() + 1
    assert streak_warning_instant(state, ctx) is None
    assert state.notifications.keys == {}


def test_no_streak_warning_without_a_streak() -> None:
    last = ms("2026-03-10T10:00:00Z")
    state = quiet_state(last_ms=last)
    ctx = context(last_active_ms=last, streak=0)
    assert streak_warning_instant(state, ctx) is None
    out = run(state, ctx, None, ms("2026-03-11T19:30:00Z"))
    assert out.decisions == [] and state.streak_warned_day is None


def test_no_streak_warning_without_activity() -> None:
    state = quiet_state(last_ms=None)
    assert streak_warning_instant(state, context(streak=3)) is None


def test_a_streak_warning_is_never_delivered_after_its_day() -> None:
    last = ms("2026-03-10T10:00:00Z")  # 13:00 in Nairobi, local day L = Mar 10
    ctx = context(
        tz=NAIROBI,
        last_active_ms=last,
        streak=5,
        prefs={"channels": ["PUSH", "IN_APP"], "quiet_hours": ["18:00", "08:00"]},
    )
    state = quiet_state(last_ms=last)
    warn = ms("2026-03-11T16:00:00Z")  # 19:00 on L+1, inside the quiet window
    run(state, ctx, None, warn)
    out = run(state, ctx, None, ms("2026-03-12T05:00:00Z"))  # 08:00 on L+2: the window ends
    late = [n for n in out.delivered if n.type == "streak_warning"]
    assert late == [], [local_day(n.sent_ms or 0, NAIROBI) for n in late]


# ---------------------------------------------------------------------------------------------
# Campaigns

CREATED = ms("2026-03-01T08:00:00Z")
AT = ms("2026-03-10T12:00:00Z")


def one_time(
    campaign_id: str = "c1",
    *,
    at_ms: int = AT,
    target: dict[str, Any] | None = None,
    intervention: str = "gentle_reminder",
    status: str | None = "active",
) -> Campaign:
    body: dict[str, Any] = {
        "name": f"campaign {campaign_id}",
        "schedule": {"kind": "one_time", "at": at_ms},
        "target": target or {"kind": "all"},
        "intervention": intervention,
    }
    if status is not None:
        body["status"] = status
    return parse_campaign(body, campaign_id, CREATED)


def outcomes(out: NudgeOutcome) -> list[tuple[str, str, str]]:
    return list(out.campaign_outcomes)


def test_one_time_campaign_fires_once_when_stream_time_passes_its_instant() -> None:
    campaign = one_time()
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(last_active_ms=FIVE_DAYS_AGO)

    before = run(state, ctx, None, AT - 1, campaigns=[campaign])
    assert outcomes(before) == [] and before.delivered == []
    assert state.campaigns_checked_ms == AT - 1

    counts = CountsSpy()
    fired = run(state, ctx, None, AT + 30 * 60_000, campaigns=[campaign], counts=counts)
    assert outcomes(fired) == [
        ("c1", "once", "evaluated"),
        ("c1", "once", "targeted"),
        ("c1", "once", "sent"),
    ]
    assert reasons(fired, "campaign:c1") == [QUEUED]
    [n] = fired.delivered
    assert n.key == "campaign:c1:once" and n.source == "campaign:c1" and n.type == "gentle_reminder"
    assert counts.asked == ["gentle_reminder"]
    assert state.campaigns_checked_ms == AT + 30 * 60_000

    after = run(state, ctx, None, AT + 2 * HOUR_MS, campaigns=[campaign])
    assert outcomes(after) == [] and after.delivered == []
    assert state.campaigns_checked_ms == AT + 2 * HOUR_MS


def test_a_campaign_occurrence_seen_again_is_a_duplicate_not_a_second_send() -> None:
    campaign = one_time()
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(last_active_ms=FIVE_DAYS_AGO)
    run(state, ctx, None, AT, campaigns=[campaign])

    state.campaigns_checked_ms = None  # as if the look were replayed
    again = run(state, ctx, None, AT + HOUR_MS, campaigns=[campaign])
    assert outcomes(again)[-1] == ("c1", "once", "suppressed:duplicate")
    assert again.delivered == []


def test_each_user_gets_the_campaign_once() -> None:
    campaign = one_time()
    delivered: list[Notification] = []
    for user in ("u-1", "u-2"):
        state = quiet_state(user, last_ms=FIVE_DAYS_AGO)
        out = run(state, context(user, last_active_ms=FIVE_DAYS_AGO), None, AT, campaigns=[campaign])
        delivered.extend(out.delivered)
    assert [n.user_id for n in delivered] == ["u-1", "u-2"]
    assert {n.key for n in delivered} == {"campaign:c1:once"}
    assert len({n.id for n in delivered}) == 2  # same key, distinct notification per user


def test_campaign_targeting_is_respected() -> None:
    campaign = one_time(target={"kind": "at_risk", "threshold": 60})
    ctx = context(last_active_ms=FIVE_DAYS_AGO)

    low = quiet_state(last_ms=FIVE_DAYS_AGO)
    out = run(low, ctx, None, AT, campaigns=[campaign], facts=facts_for(ctx, risk_score=30.0))
    assert outcomes(out) == [("c1", "once", "evaluated"), ("c1", "once", "not_targeted")]
    assert out.decisions == [] and out.delivered == []
    assert low.notifications.keys == {}
    assert low.campaigns_checked_ms == AT

    high = quiet_state(last_ms=FIVE_DAYS_AGO)
    out = run(high, ctx, None, AT, campaigns=[campaign], facts=facts_for(ctx, risk_score=75.0))
    assert outcomes(out)[-1] == ("c1", "once", "sent")
    assert len(out.delivered) == 1


def test_campaign_filter_target_reads_the_profile_facts() -> None:
    campaign = one_time(target={"kind": "filter", "field": "location", "op": "eq", "value": "Nairobi"})
    ctx = context(last_active_ms=FIVE_DAYS_AGO)
    inside = run(
        quiet_state(last_ms=FIVE_DAYS_AGO),
        ctx,
        None,
        AT,
        campaigns=[campaign],
        facts=facts_for(ctx, location=" nairobi "),
    )
    outside = run(
        quiet_state(last_ms=FIVE_DAYS_AGO),
        ctx,
        None,
        AT,
        campaigns=[campaign],
        facts=facts_for(ctx, location="Mombasa"),
    )
    assert outcomes(inside)[-1] == ("c1", "once", "sent")
    assert outcomes(outside)[-1] == ("c1", "once", "not_targeted")


def test_campaign_held_by_quiet_hours_reports_deferred() -> None:
    at = ms("2026-03-10T19:30:00Z")  # 22:30 in Nairobi
    campaign = one_time(at_ms=at)
    ctx = context(
        tz=NAIROBI,
        last_active_ms=FIVE_DAYS_AGO,
        prefs={"channels": ["PUSH"], "quiet_hours": ["21:00", "07:00"]},
    )
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    out = run(state, ctx, None, at, campaigns=[campaign])
    assert outcomes(out)[-1] == ("c1", "once", "deferred")
    assert reasons(out, "campaign:c1") == [DEFERRED]
    assert out.delivered == []
    assert [n.deliver_at_ms for n in state.notifications.pending] == [QUIET_ENDS]


@pytest.mark.parametrize(
    ("ctx_kwargs", "reason"),
    [
        ({"last_active_ms": AT - 10 * 60_000}, "returned"),
        ({"last_active_ms": FIVE_DAYS_AGO, "prefs": {"opt_out": ["gentle_reminder"]}}, "opted_out"),
    ],
)
def test_campaign_suppressions_are_reported_with_their_reason(
    ctx_kwargs: dict[str, Any], reason: str
) -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    out = run(state, context(**ctx_kwargs), None, AT, campaigns=[one_time()])
    assert outcomes(out)[-1] == ("c1", "once", f"suppressed:{reason}")
    assert out.delivered == []
    assert Counter(o for _, _, o in outcomes(out)) == Counter(
        {"evaluated": 1, "targeted": 1, f"suppressed:{reason}": 1}
    )


@pytest.mark.parametrize("status", ["draft", "paused"])
def test_draft_and_paused_campaigns_never_fire(status: str) -> None:
    campaign = one_time(status=None)  # created as draft
    if status == "paused":
        campaign = with_status(with_status(campaign, "active", CREATED + 1), "paused", CREATED + 2)
    assert campaign.status == status

    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    ctx = context(last_active_ms=FIVE_DAYS_AGO)
    for now in (AT - 1, AT, AT + DAY_MS):
        out = run(state, ctx, None, now, campaigns=[campaign])
        assert outcomes(out) == [] and out.delivered == []
    state.scored_at_ms = AT + DAY_MS  # no risk re-score due before the one below
    assert next_look(state, ctx, RiskSettings(rescore_ms=30 * DAY_MS), [campaign]) == AT + 31 * DAY_MS


def test_campaigns_checked_advances_even_without_campaigns() -> None:
    state = quiet_state(last_ms=FIVE_DAYS_AGO)
    run(state, context(last_active_ms=FIVE_DAYS_AGO), None, NOW)
    assert state.campaigns_checked_ms == NOW


def test_a_new_user_does_not_get_a_burst_of_past_campaign_occurrences() -> None:
    daily = parse_campaign(
        {
            "name": "daily tip",
            "schedule": {"kind": "recurring", "every": "daily", "local_time": "09:00"},
            "target": {"kind": "all"},
            "intervention": "achievement_notification",
            "status": "active",
        },
        "daily",
        ms("2026-03-01T08:00:00Z"),
    )
    signup = ms("2026-03-10T10:00:00Z")
    state = quiet_state("u-new", last_ms=signup)
    ctx = context("u-new", last_active_ms=signup, signup_ms=signup)
    out = run(state, ctx, None, signup + 5 * 60_000, campaigns=[daily])
    keys = [n.key for n in out.delivered]
    assert len(keys) <= 1, keys
    assert all(n.key >= "campaign:daily:2026-03-10" for n in out.delivered), keys


# ---------------------------------------------------------------------------------------------
# next_look

LAST = ms("2026-03-10T10:00:00Z")
STREAK_AT = ms("2026-03-11T19:00:00Z")  # UTC user active on Mar 10


def pending_notification(deliver_at_ms: int) -> Notification:
    return Notification(
        id="n-pending",
        user_id="u-1",
        type="gentle_reminder",
        channels=("PUSH",),
        template="gentle_reminder",
        variant="a",
        subject="s",
        body="b",
        cta="c",
        created_ms=LAST,
        deliver_at_ms=deliver_at_ms,
        key="k-pending",
        source="risk",
    )


def look_state(pending_at: int | None = None, checked_ms: int | None = None) -> RiskState:
    state = quiet_state(last_ms=LAST)
    state.scored_at_ms = LAST  # scored since the last activity: the next re-score is scheduled
    state.campaigns_checked_ms = checked_ms
    if pending_at is not None:
        state.notifications.pending.append(pending_notification(pending_at))
    return state


@pytest.mark.parametrize(
    ("rescore_ms", "pending_at", "streak", "campaign_at", "expected"),
    [
        (2 * HOUR_MS, ms("2026-03-11T02:00:00Z"), 3, ms("2026-03-11T01:00:00Z"), LAST + 2 * HOUR_MS),
        (5 * DAY_MS, ms("2026-03-11T02:00:00Z"), 3, ms("2026-03-11T03:00:00Z"), ms("2026-03-11T02:00:00Z")),
        (5 * DAY_MS, None, 3, ms("2026-03-12T00:00:00Z"), STREAK_AT),
        (5 * DAY_MS, None, 3, ms("2026-03-11T18:00:00Z"), ms("2026-03-11T18:00:00Z")),
        (5 * DAY_MS, None, 0, None, LAST + 5 * DAY_MS),
    ],
    ids=["risk", "pending", "streak", "campaign", "only-risk"],
)
def test_next_look_is_the_earliest_thing_due(
    rescore_ms: int, pending_at: int | None, streak: int, campaign_at: int | None, expected: int
) -> None:
    state = look_state(pending_at)
    ctx = context(last_active_ms=LAST, streak=streak)
    campaigns = [] if campaign_at is None else [one_time(at_ms=campaign_at)]
    assert next_look(state, ctx, RiskSettings(rescore_ms=rescore_ms), campaigns) == expected


def test_next_look_after_activity_worth_a_score_is_at_once() -> None:
    state = quiet_state(last_ms=LAST)  # never scored
    assert next_look(state, context(), RiskSettings(), []) == LAST


def test_next_look_is_none_when_nothing_is_scheduled() -> None:
    assert next_look(RiskState("u-1"), context(streak=4), RiskSettings(), []) is None


def test_next_look_for_a_user_never_looked_at_counts_occurrences_after_activation() -> None:
    daily = parse_campaign(
        {
            "name": "daily",
            "schedule": {"kind": "recurring", "every": "daily", "local_time": "09:00"},
            "target": {"kind": "all"},
            "intervention": "gentle_reminder",
            "status": "active",
        },
        "daily",
        ms("2026-03-10T07:00:00Z"),  # 10:00 in Nairobi: today's 09:00 has passed
    )
    state = RiskState("u-1")  # no activity, never scored, never looked at
    assert state.campaigns_checked_ms is None
    ctx = context(tz=NAIROBI)
    assert next_look(state, ctx, RiskSettings(), [daily]) == ms("2026-03-11T06:00:00Z")  # 09:00 EAT

    one = one_time(at_ms=AT)
    assert next_look(RiskState("u-1"), context(), RiskSettings(), [one]) == AT


def test_next_look_skips_campaign_occurrences_already_checked() -> None:
    campaign = one_time(at_ms=ms("2026-03-11T01:00:00Z"))
    ctx = context(last_active_ms=LAST, streak=3)
    settings = RiskSettings(rescore_ms=5 * DAY_MS)
    assert next_look(look_state(), ctx, settings, [campaign]) == ms("2026-03-11T01:00:00Z")
    checked = look_state(checked_ms=ms("2026-03-11T01:00:00Z"))
    assert next_look(checked, ctx, settings, [campaign]) == STREAK_AT


def test_a_campaign_that_reached_the_worker_after_the_users_look_still_fires_once() -> None:
    """The broadcast race: the user was looked at (stream time past the campaign's instant)
    before the worker knew the campaign. The lookback catches it, once."""
    at = ms("2026-03-11T01:00:00Z")
    campaign = one_time(at_ms=at)
    ctx = context(last_active_ms=LAST, streak=3)
    settings = RiskSettings(rescore_ms=5 * DAY_MS)
    state = look_state(checked_ms=at + 10 * 60_000)
    state.campaign_looks = CampaignLooks(floor_ms=-1)  # a state of this version: looks remembered
    # Rescheduled when the campaigns change: due at once for the occurrence it missed.
    assert next_look(state, ctx, settings, [campaign]) == at + 10 * 60_000
    out = run(state, ctx, None, at + 11 * 60_000, campaigns=[campaign])
    assert [n.type for n in out.delivered] == ["gentle_reminder"]
    assert next_look(state, ctx, settings, [campaign]) == STREAK_AT  # nothing missed any more
    again = run(state, ctx, None, at + 12 * 60_000, campaigns=[campaign])
    assert again.delivered == [] and again.campaign_outcomes == []  # not looked at twice
    # Past the lookback, a campaign that old is not fired for a user looked at since.
    late = look_state(checked_ms=at + 2 * HOUR_MS)
    late.campaign_looks = CampaignLooks(floor_ms=-1)
    assert run(late, ctx, None, at + 2 * HOUR_MS + 60_000, campaigns=[campaign]).delivered == []


def test_a_state_from_before_looks_were_remembered_gets_no_lookback_once() -> None:
    at = ms("2026-03-11T01:00:00Z")
    state = look_state(checked_ms=at + 10 * 60_000)  # campaigns_seen None: an older state
    out = run(state, context(last_active_ms=LAST), None, at + 11 * 60_000, campaigns=[one_time(at_ms=at)])
    assert out.delivered == [] and state.campaign_looks is not None
    # Its lookback never reaches before the look the memory started at.
    assert state.campaign_looks.floor_ms == at + 10 * 60_000
    again = run(state, context(last_active_ms=LAST), None, at + 12 * 60_000, campaigns=[one_time(at_ms=at)])
    assert again.delivered == [] and again.campaign_outcomes == []


def test_many_campaigns_in_one_hour_are_each_looked_at_once() -> None:
    """Past any count: the memory is kept by time, so a second look re-evaluates nothing and
    the user is not rescheduled at once over and over."""
    at = ms("2026-03-11T01:00:00Z")
    campaigns = [one_time(f"c{i}", at_ms=at + i * 30_000) for i in range(70)]
    ctx = context(last_active_ms=LAST, streak=3)
    state = look_state(checked_ms=at - 60_000)
    state.campaign_looks = CampaignLooks(floor_ms=-1)
    first = run(state, ctx, None, at + HOUR_MS, campaigns=campaigns)
    assert len(first.delivered) >= 1
    second = run(state, ctx, None, at + HOUR_MS + 60_000, campaigns=campaigns)
    assert second.campaign_outcomes == []
    assert next_look(state, ctx, RiskSettings(rescore_ms=5 * DAY_MS), campaigns) != state.campaigns_checked_ms


def test_next_look_drops_the_streak_warning_once_it_was_considered() -> None:
    state = look_state()
    ctx = context(last_active_ms=LAST, streak=3)
    settings = RiskSettings(rescore_ms=5 * DAY_MS)
    assert next_look(state, ctx, settings, []) == STREAK_AT
    state.streak_warned_day = local_day(STREAK_AT, "UTC")
    assert next_look(state, ctx, settings, []) == LAST + 5 * DAY_MS


# ---------------------------------------------------------------------------------------------
# Celebrations


def effects(
    *,
    badges: tuple[BadgeDef, ...] = (),
    streak: tuple[int, int] = (0, 0),
    level: tuple[int, int] = (1, 1),
    day: int = 739_685,
) -> Effects:
    return Effects(
        event_id="e-1",
        duplicate=False,
        xp_gained=10,
        breakdown=(),
        level_before=level[0],
        level_after=level[1],
        new_badges=badges,
        streak_before=StreakState(current=streak[0], last_active_day=day - 1),
        streak_after=StreakState(current=streak[1], last_active_day=day),
        touched_periods=(),
    )


BADGE = BadgeDef(
    id="first-steps", name="First Steps", description="d", rarity="common", xp=5, metric="m", threshold=1
)


def test_celebrations_for_badges_streak_milestones_and_levels() -> None:
    found = celebrations_for("u-1", effects(badges=(BADGE,), streak=(6, 7), level=(2, 3)), {3, 7, 30})
    assert found == [
        Celebration("achievement_notification", "badge:u-1:first-steps", {"badge": "First Steps"}),
        Celebration("milestone_celebration", "streak:u-1:7:739685", {"milestone": "a 7-day streak"}),
        Celebration("milestone_celebration", "level:u-1:3", {"milestone": "level 3"}),
    ]


def test_nothing_achieved_means_no_celebration() -> None:
    assert celebrations_for("u-1", effects(streak=(7, 8), level=(3, 3)), {7, 30}) == []


def test_celebrations_reach_an_active_user_once_each() -> None:
    now = ms("2026-03-10T12:00:00Z")
    state = quiet_state(last_ms=now)
    ctx = context(last_active_ms=now)  # active right now: celebrations are not re-engagement
    found = celebrations_for("u-1", effects(badges=(BADGE,), level=(2, 3)), ())
    counts = CountsSpy()

    out = celebrate(state, ctx, found, now, counts)
    assert reasons(out) == [QUEUED, QUEUED]
    assert {s for s, _ in out.decisions} == {"achievement"}
    assert [(n.type, n.key) for n in out.delivered] == [
        ("achievement_notification", "badge:u-1:first-steps"),
        ("milestone_celebration", "level:u-1:3"),
    ]
    assert "First Steps" in out.delivered[0].subject
    assert counts.asked == ["achievement_notification", "milestone_celebration"]

    again = celebrate(state, ctx, found, now + 60_000, CountsSpy())  # a redelivered event
    assert reasons(again) == [DUPLICATE, DUPLICATE]
    assert again.delivered == []
