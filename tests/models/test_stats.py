"""Student statistics (models/stats.py): the weekly series the fold keeps, its codec, and the view."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import BehaviorEvent, InvalidEvent
from models.gamification import MAX_EVENT_DURATION_S, UserState, apply_event
from models.stats import (
    BEST,
    PRACTICE,
    SCORE_SUM,
    SESSIONS,
    WEEK_S,
    WEEKS_KEPT,
    XP,
    Rank,
    WeeklyStats,
    parse_range,
    stats_document,
    stats_view,
    week_label,
    week_of,
)
from models.time_units import DAY_MS, HOUR_MS, WEEK_MS
from tests.models.factories import default_rules, event, ms

RULES = default_rules()
WINDOW = 7 * DAY_MS
MONDAY = ms("2026-12-07T10:00:00Z")  # ISO 2026-W50


def fold(state: UserState, ev: BehaviorEvent) -> None:
    apply_event(state, ev, RULES, WINDOW)


def row(state: UserState, ts_ms: int) -> list[int]:
    return state.weekly.weeks[week_of(ts_ms)]


# ---------------------------------------------------------------------------------------------
# Weeks


def test_weeks_are_utc_iso_weeks_numbered_consecutively_across_years() -> None:
    assert week_label(week_of(ms("2026-12-07T00:00:00Z"))) == "2026-W50"
    assert week_label(week_of(ms("2026-12-06T23:59:59Z"))) == "2026-W49"
    # 2026 has 53 ISO weeks: New Year's Day 2027 (a Friday) is in 2026-W53.
    assert week_label(week_of(ms("2027-01-01T12:00:00Z"))) == "2026-W53"
    assert week_of(ms("2027-01-04T00:00:00Z")) == week_of(ms("2026-12-28T00:00:00Z")) + 1
    assert week_of(ms("2027-01-04T00:00:00Z")) - week_of(ms("2026-12-21T00:00:00Z")) == 2


# ---------------------------------------------------------------------------------------------
# The fold


def test_scored_practice_events_fill_their_week_and_the_totals() -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY, score=87, duration_s=1800))
    fold(s, event("assessment_complete", MONDAY + HOUR_MS, score=91.4))
    fold(s, event("lesson_complete", MONDAY + WEEK_MS, score=70, duration_s=600))
    this, following = row(s, MONDAY), row(s, MONDAY + WEEK_MS)
    assert this[:4] == [2, 87 + 91, 91, 1800] and following[:4] == [1, 70, 70, 600]
    assert s.weekly.total == [3, 87 + 91 + 70, 91, 2400]
    # Every XP the fold granted is in some week (bonuses go to the event that earned them).
    assert this[XP] + following[XP] == s.xp


@pytest.mark.parametrize(
    "score",
    [-1, 100.6, 1e9, -1e9, math.nan, math.inf, -math.inf, "87", True, None, [87], {"v": 87}],
)
def test_a_score_outside_0_100_or_not_a_number_is_no_session(score: Any) -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY, score=score))
    assert s.weekly.total[SESSIONS] == 0
    assert row(s, MONDAY)[SESSIONS] == 0 and row(s, MONDAY)[XP] > 0  # the lesson still paid


@pytest.mark.parametrize("duration", [-5, 0, math.nan, math.inf, -math.inf, "1800", True, None])
def test_a_bad_duration_adds_no_practice(duration: Any) -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY, duration_s=duration))
    assert s.weekly.total[PRACTICE] == 0


def test_practice_is_clamped_per_event_and_per_week() -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY, duration_s=10**12))
    assert row(s, MONDAY)[PRACTICE] == MAX_EVENT_DURATION_S
    for i in range(10):
        fold(s, event("lesson_complete", MONDAY + i * 1000, duration_s=MAX_EVENT_DURATION_S))
    assert row(s, MONDAY)[PRACTICE] == WEEK_S == s.weekly.total[PRACTICE]


def test_non_practice_types_add_no_practice_and_unknown_types_nothing() -> None:
    s = UserState("u-1")
    fold(s, event("page_view", MONDAY, score=90, duration_s=600))  # unknown: kept out of state
    assert not s.weekly
    fold(s, event("job_apply", MONDAY, score=90, duration_s=600))  # an action, not practice
    assert row(s, MONDAY)[:4] == [1, 90, 90, 0]


def test_duplicates_count_once_and_too_late_events_are_refused() -> None:
    s = UserState("u-1")
    ev = event("lesson_complete", MONDAY, score=80, duration_s=100)
    fold(s, ev)
    fold(s, ev)
    assert s.weekly.total == [1, 80, 80, 100]
    fold(s, event("lesson_complete", MONDAY + 20 * DAY_MS, score=80))
    with pytest.raises(InvalidEvent) as refused:
        fold(s, event("lesson_complete", MONDAY, score=10))
    assert refused.value.reason == "too_late"
    assert s.weekly.total[SESSIONS] == 2


def test_a_late_event_lands_in_its_own_week() -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY + WEEK_MS, score=50))
    fold(s, event("lesson_complete", MONDAY + 2 * HOUR_MS, score=90, duration_s=60))  # 6 days late
    assert row(s, MONDAY)[:4] == [1, 90, 90, 60]
    assert row(s, MONDAY + WEEK_MS)[:4] == [1, 50, 50, 0]


def test_the_series_keeps_52_weeks_and_ignores_older_ones() -> None:
    w = WeeklyStats()
    for i in range(60):
        w.record(MONDAY + i * WEEK_MS, 50, 10, 5)
    newest = week_of(MONDAY + 59 * WEEK_MS)
    assert sorted(w.weeks) == list(range(newest - WEEKS_KEPT + 1, newest + 1))
    assert w.total[SESSIONS] == 60  # all-time totals are not cut
    w.record(MONDAY, 100, 10, 5)  # its week is gone: not counted anywhere (nor in any order)
    assert len(w.weeks) == WEEKS_KEPT and w.total[SESSIONS] == 60 and w.total[BEST] == 50


# ---------------------------------------------------------------------------------------------
# Order independence


scored = st.sampled_from(
    ["lesson_complete", "assessment_complete", "interview_session_complete", "quiz_complete"]
)
event_types = st.one_of(scored, st.sampled_from(["job_apply", "article_read", "page_view", "login"]))
scores = st.one_of(st.none(), st.integers(-5, 105), st.floats(allow_nan=True, allow_infinity=True))
durations = st.one_of(st.none(), st.integers(-10, 200_000), st.floats(allow_nan=True))
# Events over 6 days spanning a week boundary (inside the 7-day dedup window, so none is too late).
offsets = st.integers(0, 6 * DAY_MS - 1)
SUNDAY_NOON = ms("2026-12-03T12:00:00Z")


@st.composite
def histories(draw: st.DrawFn) -> list[BehaviorEvent]:
    n = draw(st.integers(1, 25))
    evs = []
    for i in range(n):
        props: dict[str, Any] = {"category": draw(st.sampled_from(["behavioral", "technical"]))}
        if (score := draw(scores)) is not None:
            props["score"] = score
        if (duration := draw(durations)) is not None:
            props["duration_s"] = duration
        evs.append(event(draw(event_types), SUNDAY_NOON + draw(offsets), event_id=f"h-{i}", **props))
    return evs


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False), st.data())
def test_any_order_with_repeats_gives_the_series_of_time_order(
    evs: list[BehaviorEvent], rnd: Any, data: st.DataObject
) -> None:
    in_order = UserState("u-1")
    for ev in sorted(evs, key=lambda e: e.ts_ms):
        fold(in_order, ev)
    shuffled = list(evs) + data.draw(st.lists(st.sampled_from(evs), max_size=5))
    rnd.shuffle(shuffled)
    any_order = UserState("u-1")
    for ev in shuffled:
        fold(any_order, ev)
    # Sessions, scores, best and practice are order-free; XP per week is as the weekly
    # leaderboard's (a bonus goes to the week of the event that triggered it), its total is not.
    fields = (SESSIONS, SCORE_SUM, BEST, PRACTICE)
    assert {w: [r[f] for f in fields] for w, r in in_order.weekly.weeks.items() if any(r[:4])} == {
        w: [r[f] for f in fields] for w, r in any_order.weekly.weeks.items() if any(r[:4])
    }
    assert in_order.weekly.total == any_order.weekly.total
    for state in (in_order, any_order):
        assert sum(r[XP] for r in state.weekly.weeks.values()) == state.xp


# ---------------------------------------------------------------------------------------------
# Codec


def test_the_state_round_trips_through_json_with_its_series() -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY, score=87, duration_s=1800))
    fold(s, event("lesson_complete", MONDAY + 3 * WEEK_MS, score=60))
    encoded = orjson.loads(orjson.dumps(s.to_dict()))
    restored = UserState.from_dict(encoded)
    assert restored.weekly == s.weekly
    assert restored.to_dict() == encoded
    # Compact: the format, 4 totals, then 6 small numbers a week (the gap, not the week number).
    assert encoded["wk"][:5] == [1, 2, 147, 87, 1800] and encoded["wk"][11] == 3


def test_a_state_written_before_statistics_decodes_with_an_empty_series() -> None:
    s = UserState("u-1")
    fold(s, event("lesson_complete", MONDAY, score=87))
    old = s.to_dict()
    del old["wk"]
    restored = UserState.from_dict(old)
    assert not restored.weekly and restored.weekly.total == [0, 0, 0, 0]
    assert "wk" not in UserState("u-2").to_dict()  # nothing written until there is something


@pytest.mark.parametrize(
    "bad",
    [
        "x",
        {},
        [],
        [2, 0, 0, 0, 0],
        [1, 0, 0, 0],
        [1, 0, 0, 0, 0, 5],
        [1, 0, 0, 0, -1],
        [1, 0, 0, 0, 0.5],
        [1, 0, 0, 0, True],
        [1, 0, 0, 0, 0] + [1, 1, 50, 50, 0, 0] * (WEEKS_KEPT + 1),
    ],
)
def test_a_malformed_series_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        WeeklyStats.decode(bad)


# ---------------------------------------------------------------------------------------------
# The view


def document(weekly: WeeklyStats, categories: dict[str, list[int]] | None = None) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(
        orjson.dumps(stats_document("u-1", weekly, categories or {}, 1234, MONDAY))
    )
    return decoded


def test_the_range_selector() -> None:
    assert parse_range(None) == ("12w", 12)
    assert parse_range("52w") == ("52w", 52)
    for bad in ("", "12", "1w", "53w", "12W", "x" * 10_000):
        with pytest.raises(ValueError, match="4w, 12w, 26w, 52w"):
            parse_range(bad)


def test_the_weekly_series_covers_the_range_back_from_the_current_week_zero_filled() -> None:
    w = WeeklyStats()
    w.record(MONDAY, 80, 600, 50)
    w.record(MONDAY + HOUR_MS, 100, 0, 150)
    w.record(MONDAY - 5 * WEEK_MS, 40, 60, 10)
    now = MONDAY + WEEK_MS + DAY_MS  # a week later: the current week has nothing yet
    view = stats_view(document(w), "4w", now, Rank(None, 0))
    assert [p["week"] for p in view["weekly"]] == ["2026-W48", "2026-W49", "2026-W50", "2026-W51"]
    assert view["weekly"][2] == {
        "week": "2026-W50",
        "start": "2026-12-07",
        "sessions": 2,
        "average_score": 90.0,
        "best_score": 100,
        "practice_s": 600,
        "xp": 200,
    }
    assert view["weekly"][3]["sessions"] == 0 and view["weekly"][3]["average_score"] is None
    # The 4-week range leaves out the week 5 weeks back; the overall totals do not.
    assert view["in_range"] == {
        "sessions": 2,
        "average_score": 90.0,
        "best_score": 100,
        "practice_s": 600,
        "xp": 200,
    }
    assert view["overall"] == {
        "sessions": 3,
        "average_score": 73.3,
        "best_score": 100,
        "practice_s": 660,
        "xp": 1234,
    }
    assert len(stats_view(document(w), "52w", now, Rank(None, 0))["weekly"]) == 52


def test_improvement_is_the_last_4_weeks_average_minus_the_4_before() -> None:
    w = WeeklyStats()
    now = MONDAY
    for score in (60, 70, 80):
        w.record(now - 5 * WEEK_MS, score, 0, 0)  # in the previous 4 weeks
    for score in (85, 90):
        w.record(now - WEEK_MS, score, 0, 0)  # in the last 4 weeks
    improvement = stats_view(document(w), "12w", now, Rank(None, 0))["improvement"]
    assert improvement == {
        "points": None,  # 2 recent sessions: too few to compare
        "recent_average": 87.5,
        "recent_sessions": 2,
        "previous_average": 70.0,
        "previous_sessions": 3,
    }
    w.record(now, 95, 0, 0)
    improvement = stats_view(document(w), "12w", now, Rank(None, 0))["improvement"]
    assert improvement["points"] == 20.0 and improvement["recent_sessions"] == 3
    # Eight weeks later both sides are empty.
    assert stats_view(document(w), "12w", now + 8 * WEEK_MS, Rank(None, 0))["improvement"]["points"] is None


def test_strengths_and_weaknesses_split_the_categories_with_enough_sessions() -> None:
    categories = {
        "behavioral": [4, 360, 2],  # 90
        "technical": [3, 150, 0],  # 50
        "case": [2, 140, 0],  # 70
        "once": [1, 100, 1],  # too few sessions to judge
        "hostile": [2, 2_000_000, 2],  # a score the fold clamped only to 1e6
    }
    view = stats_view(document(WeeklyStats(), categories), "12w", MONDAY, Rank(None, 0))
    assert view["strengths"] == ["hostile", "behavioral"]
    assert view["weaknesses"] == ["technical", "case"]
    assert [c["category"] for c in view["categories"]] == [
        "hostile",
        "once",
        "behavioral",
        "case",
        "technical",
    ]
    assert view["categories"][0] == {
        "category": "hostile",
        "sessions": 2,
        "average_score": 100.0,
        "high_scores": 2,
    }
    one = stats_view(document(WeeklyStats(), {"technical": [3, 150, 0]}), "12w", MONDAY, Rank(None, 0))
    assert (one["strengths"], one["weaknesses"]) == (["technical"], [])


def test_percentile_is_the_share_of_ranked_students_strictly_below() -> None:
    w = WeeklyStats()
    for score in (70, 80, 90):
        w.record(MONDAY, score, 0, 0)
    assert w.ranking_value() == 80.0
    view = stats_view(document(w), "12w", MONDAY, Rank(below=3, ranked=8))
    assert view["percentile"] == {
        "basis": "average_score",
        "value": 37.5,
        "ranked_students": 8,
        "min_sessions": 3,
    }
    alone = stats_view(document(w), "12w", MONDAY, Rank(below=0, ranked=1))["percentile"]
    assert alone["value"] == 0.0
    unranked = WeeklyStats()
    unranked.record(MONDAY, 100, 0, 0)
    assert unranked.ranking_value() is None  # one lucky session does not rank
    assert stats_view(document(unranked), "12w", MONDAY, Rank(None, 8))["percentile"]["value"] is None
