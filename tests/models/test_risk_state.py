"""One user's risk state in the engine (models/risk_state.py): persistence, label resolution in
event time, re-scoring with at most one label snapshot per gap and only for live users, the
sweep's schedule and the publishing thresholds. Pure: no broker, no Redis, no clock."""

from __future__ import annotations

import math

import orjson
import pytest

from models.interventions import UserContext, decide, deliver
from models.risk import PendingLabel, RiskModel, RiskScore, risk_level
from models.risk_features import FEATURE_NAMES, features
from models.risk_state import (
    AT_RISK_FROM,
    HOUR_MS,
    PUBLISH_DELTA,
    REPUBLISH_MS,
    RiskSettings,
    RiskState,
    expire,
    is_live,
    next_due,
    observe_activity,
    rescore,
    rescore_on_activity,
    score_where_it_happens,
    snapshot_due,
    worth_publishing,
)
from models.time_units import DAY_MS
from tests.models.factories import event

T0 = 1_790_000_000_000
SETTINGS = RiskSettings()
H = SETTINGS.horizon_ms
G = SETTINGS.grace_ms


def pending(scored_at: int, user_id: str = "u-1", probability: float = 0.3) -> PendingLabel:
    return PendingLabel(user_id, scored_at, {"recency_d": 0.5, "events_7d": 1.2}, probability)


def active_state(*timestamps: int, user_id: str = "u-1") -> RiskState:
    state = RiskState(user_id)
    for ts in timestamps:
        observe_activity(state, event("lesson_completed", ts, user_id=user_id, score=80), 10.0, SETTINGS)
    return state


def score_of(value: float, at_ms: int = T0) -> RiskScore:
    return RiskScore(
        user_id="u-1",
        score=value,
        level=risk_level(value),
        probability=value / 100.0,
        weekly_risk=value / 100.0,
        monthly_risk=value / 100.0,
        confidence=0.0,
        top_signals=(),
        scored_at_ms=at_ms,
    )


def published(value: float, at_ms: int = T0) -> dict[str, object]:
    return {"score": value, "level": risk_level(value), "scored_at_ms": at_ms}


# ---------------------------------------------------------------------------------------------
# Persistence


def test_a_full_state_round_trips_through_json() -> None:
    state = active_state(T0 - 3 * DAY_MS, T0 - DAY_MS, T0)
    state.pending = [pending(T0 - DAY_MS), pending(T0, probability=0.71)]
    state.scored_at_ms = T0
    state.snapshot_at_ms = T0
    state.last = {"user_id": "u-1", "score": 42.5, "level": "medium", "signals": ["recency_d"]}
    ctx = UserContext("u-1")
    decision = decide(
        state.notifications, ctx, "gentle_reminder", "risk:u-1:1", T0, source="risk", variables={}, stats={}
    )
    assert decision.notification is not None
    deliver(state.notifications, decision.notification, T0)
    state.campaigns_checked_ms = T0 - 5
    state.streak_warned_day = 739_000

    raw = orjson.dumps(state.to_dict())
    restored = RiskState.from_dict(orjson.loads(raw))

    assert restored == state
    assert restored.to_dict() == state.to_dict()
    assert restored.pending[1].probability == 0.71
    assert restored.activity.last_event_ms == T0
    assert restored.notifications.sent_log == state.notifications.sent_log != []


def test_a_fresh_state_round_trips_through_json() -> None:
    state = RiskState("u-9")
    restored = RiskState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored == state
    assert restored.scored_at_ms is None and restored.pending == [] and restored.last is None


def test_optional_fields_may_be_missing() -> None:
    data = RiskState("u-1").to_dict()
    for name in ("pending", "scored_at", "snapshot_at", "last", "notifications", "campaigns_at"):
        del data[name]
    restored = RiskState.from_dict(data)
    assert restored == RiskState("u-1")


@pytest.mark.parametrize("version", [None, 0, 2])
def test_another_state_version_is_refused(version: int | None) -> None:
    data = RiskState("u-1").to_dict()
    data["v"] = version
    with pytest.raises(ValueError, match="risk state version"):
        RiskState.from_dict(data)


# ---------------------------------------------------------------------------------------------
# Activity resolves pending labels as retained (0), within the horizon only


def test_activity_within_the_horizon_resolves_a_pending_as_retained() -> None:
    state = RiskState("u-1", pending=[pending(T0)])
    [r] = observe_activity(state, event("lesson_completed", T0 + 2 * DAY_MS), None, SETTINGS)
    assert (r.label, r.pending.scored_at_ms, r.resolved_at_ms) == (0, T0, T0 + 2 * DAY_MS)
    assert state.pending == []
    assert state.activity.last_event_ms == T0 + 2 * DAY_MS  # the event was folded in too


def test_a_tracked_open_or_click_is_feedback_not_activity() -> None:
    """A mail scanner loads a mail's pixel and links too: those never prove a user retained nor
    make them look active; only the notification counts see them (an in-app open does count)."""
    state = RiskState("u-1", pending=[pending(T0)])
    observe_activity(state, event("lesson_completed", T0 - DAY_MS), None, SETTINGS)
    for kind in ("notification_opened", "notification_clicked"):
        tracked = event(kind, T0 + DAY_MS, notification_id="n-1", via="email")
        assert observe_activity(state, tracked, None, SETTINGS) == []
    assert state.activity.last_event_ms == T0 - DAY_MS and len(state.pending) == 1
    counts = features(state.activity, T0 + DAY_MS)
    assert (counts["notif_opens_28d"], counts["notif_clicks_28d"]) == (math.log1p(1), math.log1p(1))
    in_app = event("notification_opened", T0 + DAY_MS, notification_id="n-2")
    [r] = observe_activity(state, in_app, None, SETTINGS)
    assert r.label == 0 and state.activity.last_event_ms == T0 + DAY_MS


def test_days_of_feedback_alone_are_not_active_days_nor_a_streak() -> None:
    state = RiskState("u-1")
    observe_activity(state, event("lesson_completed", T0), None, SETTINGS)
    before = features(state.activity, T0 + 6 * DAY_MS)
    for day in range(1, 6):
        opened = event("notification_opened", T0 + day * DAY_MS, notification_id=f"n-{day}", via="email")
        observe_activity(state, opened, None, SETTINGS)
    after = features(state.activity, T0 + 6 * DAY_MS)
    for name in ("active_days_7d", "active_days_28d", "streak", "recency_d", "events_7d"):
        assert after[name] == before[name], name
    assert after["notif_opens_28d"] == math.log1p(5)


def test_feedback_before_any_activity_is_dropped() -> None:
    state = RiskState("u-1")
    observe_activity(state, event("notification_opened", T0, via="push"), None, SETTINGS)
    assert state.activity.last_event_ms is None and state.activity.days == {}


def test_activity_at_the_scoring_instant_does_not_resolve() -> None:
    state = RiskState("u-1", pending=[pending(T0)])
    assert observe_activity(state, event("lesson_completed", T0), None, SETTINGS) == []
    assert observe_activity(state, event("lesson_completed", T0 - HOUR_MS), None, SETTINGS) == []
    assert state.pending == [pending(T0)]


def test_activity_exactly_at_the_deadline_counts_as_seen() -> None:
    state = RiskState("u-1", pending=[pending(T0)])
    [r] = observe_activity(state, event("lesson_completed", T0 + H), None, SETTINGS)
    assert r.label == 0


def test_activity_after_the_deadline_leaves_the_pending_to_expire() -> None:
    state = RiskState("u-1", pending=[pending(T0)])
    # Within the grace period the label is not resolved as dropped yet, but it is no longer
    # "seen again within the horizon" either.
    assert observe_activity(state, event("lesson_completed", T0 + H + 1), None, SETTINGS) == []
    assert state.pending == [pending(T0)]
    [r] = expire(state, T0 + H + G + 1, SETTINGS)
    assert r.label == 1


def test_activity_resolves_only_the_pendings_still_within_their_horizon() -> None:
    old, recent = pending(T0), pending(T0 + 2 * DAY_MS)
    state = RiskState("u-1", pending=[old, recent])
    resolved = observe_activity(state, event("lesson_completed", T0 + H + HOUR_MS), None, SETTINGS)
    assert [(r.pending, r.label) for r in resolved] == [(recent, 0)]
    assert state.pending == [old]


# ---------------------------------------------------------------------------------------------
# Silence resolves pending labels as dropped (1), only after deadline + grace


def test_expire_waits_for_deadline_plus_grace() -> None:
    state = RiskState("u-1", pending=[pending(T0)])
    assert expire(state, T0 + H, SETTINGS) == []
    assert expire(state, T0 + H + G, SETTINGS) == []  # reached, not passed
    assert state.pending == [pending(T0)]
    [r] = expire(state, T0 + H + G + 1, SETTINGS)
    assert (r.label, r.pending.scored_at_ms, r.resolved_at_ms) == (1, T0, T0 + H + G + 1)
    assert state.pending == []
    assert expire(state, T0 + 30 * DAY_MS, SETTINGS) == []  # resolved once


def test_expire_follows_the_settings_grace() -> None:
    settings = RiskSettings(grace_ms=0)
    state = RiskState("u-1", pending=[pending(T0)])
    assert [r.label for r in expire(state, T0 + H + 1, settings)] == [1]


def test_expire_resolves_only_the_pendings_past_their_deadline() -> None:
    old, recent = pending(T0), pending(T0 + DAY_MS)
    state = RiskState("u-1", pending=[old, recent])
    resolved = expire(state, T0 + H + G + 1, SETTINGS)
    assert [r.pending for r in resolved] == [old]
    assert state.pending == [recent]


# ---------------------------------------------------------------------------------------------
# Liveness and re-scoring


def test_is_live_within_the_horizon_inclusive() -> None:
    state = active_state(T0)
    assert is_live(state, T0, SETTINGS)
    assert is_live(state, T0 + H, SETTINGS)
    assert not is_live(state, T0 + H + 1, SETTINGS)
    assert not is_live(RiskState("u-1"), T0, SETTINGS)


def test_rescore_snapshots_a_live_user_once_per_gap() -> None:
    model = RiskModel()
    state = active_state(T0)

    first = rescore(state, model, T0 + HOUR_MS, None, SETTINGS)
    assert state.scored_at_ms == T0 + HOUR_MS and state.snapshot_at_ms == T0 + HOUR_MS
    [label] = state.pending
    assert label.scored_at_ms == T0 + HOUR_MS
    assert label.probability == first.probability
    assert set(label.features) == set(FEATURE_NAMES)
    assert label.features["recency_d"] == pytest.approx(1 / 24)

    # Hourly re-scores within the gap: scored, no new label.
    rescore(state, model, T0 + 2 * HOUR_MS, None, SETTINGS)
    rescore(state, model, T0 + HOUR_MS + DAY_MS - 1, None, SETTINGS)
    assert len(state.pending) == 1
    assert state.scored_at_ms == T0 + HOUR_MS + DAY_MS - 1
    assert state.snapshot_at_ms == T0 + HOUR_MS

    # One gap after the last snapshot (not after the last score): a second label.
    rescore(state, model, T0 + HOUR_MS + DAY_MS, None, SETTINGS)
    assert [p.scored_at_ms for p in state.pending] == [T0 + HOUR_MS, T0 + HOUR_MS + DAY_MS]
    assert state.snapshot_at_ms == T0 + HOUR_MS + DAY_MS


def test_rescore_never_snapshots_a_user_gone_past_the_horizon() -> None:
    model = RiskModel()
    state = active_state(T0)
    score = rescore(state, model, T0 + H + 1, None, SETTINGS)
    assert state.pending == [] and state.snapshot_at_ms is None
    assert state.scored_at_ms == T0 + H + 1  # still scored
    assert score.scored_at_ms == T0 + H + 1 and score.level in ("high", "critical")


def test_rescore_snapshots_at_the_horizon_boundary() -> None:
    state = active_state(T0)
    rescore(state, RiskModel(), T0 + H, None, SETTINGS)
    assert [p.scored_at_ms for p in state.pending] == [T0 + H]


def test_rescore_never_snapshots_a_user_without_activity() -> None:
    state = RiskState("u-1")
    rescore(state, RiskModel(), T0, None, SETTINGS)
    assert state.pending == [] and state.scored_at_ms == T0


def test_rescore_uses_the_given_model_and_streak() -> None:
    state = active_state(T0)
    model = RiskModel()
    for i in range(30):
        model.learn({"recency_d": float(i % 5), "streak": float(i % 3)}, i % 2)
    score = rescore(state, model, T0 + HOUR_MS, 6, SETTINGS)
    x = state.pending[0].features
    assert x["streak"] == pytest.approx(math.log1p(6))
    assert score.probability == pytest.approx(model.predict(x)[0])


def test_snapshot_due_counts_from_the_last_snapshot() -> None:
    state = RiskState("u-1")
    assert snapshot_due(state, T0, SETTINGS)
    state.snapshot_at_ms = T0
    assert not snapshot_due(state, T0 + DAY_MS - 1, SETTINGS)
    assert snapshot_due(state, T0 + DAY_MS, SETTINGS)


# ---------------------------------------------------------------------------------------------
# When the sweep looks next


def test_next_due_is_none_before_any_activity_or_score() -> None:
    assert next_due(RiskState("u-1"), SETTINGS) is None


def test_next_due_is_at_once_for_a_user_never_scored() -> None:
    state = active_state(T0)
    assert next_due(state, SETTINGS) == T0


def test_next_due_is_the_rescore_when_it_comes_first() -> None:
    state = active_state(T0)
    rescore(state, RiskModel(), T0, None, SETTINGS)
    assert state.pending  # a deadline exists, but a week away
    assert next_due(state, SETTINGS) == T0 + SETTINGS.rescore_ms


def test_next_due_is_just_after_the_earliest_deadline_plus_grace() -> None:
    settings = RiskSettings(rescore_ms=30 * DAY_MS)
    state = active_state(T0)
    state.scored_at_ms = T0 + 2 * DAY_MS
    state.pending = [pending(T0 + DAY_MS), pending(T0), pending(T0 + 2 * DAY_MS)]
    assert next_due(state, settings) == T0 + settings.horizon_ms + settings.grace_ms + 1
    # Just then `expire` resolves it: the schedule and the resolution agree on the instant.
    assert expire(state, T0 + settings.horizon_ms + settings.grace_ms, settings) == []
    [r] = expire(state, T0 + settings.horizon_ms + settings.grace_ms + 1, settings)
    assert r.pending.scored_at_ms == T0


def test_next_due_is_at_once_after_activity_worth_a_score() -> None:
    state = active_state(T0)
    rescore(state, RiskModel(), T0, None, SETTINGS)
    observe_activity(state, event("lesson_completed", T0 + 5 * 60_000), None, SETTINGS)
    assert not rescore_on_activity(state, SETTINGS)  # 5 minutes: not worth a score yet
    assert next_due(state, SETTINGS) == T0 + SETTINGS.rescore_ms

    observe_activity(state, event("lesson_completed", T0 + SETTINGS.activity_rescore_ms), None, SETTINGS)
    assert rescore_on_activity(state, SETTINGS)
    assert next_due(state, SETTINGS) == T0 + SETTINGS.activity_rescore_ms


def test_next_due_is_at_once_after_any_activity_of_a_user_at_risk() -> None:
    state = active_state(T0)
    rescore(state, RiskModel(), T0, None, SETTINGS)
    state.last = published(AT_RISK_FROM)
    observe_activity(state, event("lesson_completed", T0 + 60_000), None, SETTINGS)
    assert next_due(state, SETTINGS) == T0 + 60_000


def test_score_where_it_happens() -> None:
    state = RiskState("u-1")
    assert not score_where_it_happens(state, SETTINGS)  # nothing to score
    observe_activity(state, event("lesson_completed", T0), None, SETTINGS)
    assert score_where_it_happens(state, SETTINGS)  # never scored
    rescore(state, RiskModel(), T0, None, SETTINGS)
    assert not score_where_it_happens(state, SETTINGS)  # nothing new
    observe_activity(state, event("lesson_completed", T0 + HOUR_MS), None, SETTINGS)
    assert not score_where_it_happens(state, SETTINGS)  # left to the sweep
    state.last = published(55.0)
    assert score_where_it_happens(state, SETTINGS)  # at risk: scored now
    state.last = published(10.0)
    observe_activity(state, event("lesson_completed", T0 + DAY_MS), None, SETTINGS)
    assert score_where_it_happens(state, SETTINGS)  # takes a label snapshot


# ---------------------------------------------------------------------------------------------
# Publishing thresholds


def test_a_first_score_is_always_published() -> None:
    assert worth_publishing(None, score_of(3.0))


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (20.0, 20.0, False),
        (20.0, 20.9, False),
        (20.0, 19.1, False),
        (20.0, 20.0 + PUBLISH_DELTA, True),
        (20.0, 20.0 - PUBLISH_DELTA, True),
        (39.9, 40.0, True),  # a tenth of a point, but low -> medium
        (40.0, 39.9, True),  # and back
        (79.5, 80.0, True),  # high -> critical
        (60.0, 60.5, False),  # same level, under a point
    ],
)
def test_worth_publishing_on_a_level_change_or_a_point(before: float, after: float, expected: bool) -> None:
    assert worth_publishing(published(before), score_of(after, T0 + HOUR_MS)) is expected


def test_an_unchanged_score_is_republished_after_a_while() -> None:
    previous = published(20.0, T0)
    assert not worth_publishing(previous, score_of(20.0, T0 + REPUBLISH_MS - 1))
    assert worth_publishing(previous, score_of(20.0, T0 + REPUBLISH_MS))
