"""Hypothesis properties: the guarantees that at-least-once, out-of-order delivery relies on."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import BehaviorEvent
from models.gamification import UserState, apply_event
from models.leaderboard import encode_score
from models.rules import Rules
from models.streaks import compute_streak, extend_streak, streak_as_of
from tests.models.factories import default_rules, ms

DAY = 86_400_000
T0 = ms("2026-12-20T00:00:00Z")  # spans new year, ISO week 53 and a 2027 week
# Events span at most 19 days (20 local days in any zone). Up to 20 consecutive days an added day
# never shortens the longest streak (checked exhaustively), so badges are order independent here;
# see test_streaks.test_filling_a_day_can_shorten_the_longest_streak for longer histories.
SPAN = 19 * DAY
WINDOW = 21 * DAY

TYPES = [
    "lesson_complete",
    "interview_session_complete",
    "assessment_complete",
    "daily_challenge_complete",
    "career_research",
    "job_apply",
    "job_view",
    "profile_complete",
    "resume_upload",
    "mentor_connect",
    "quiz_complete",
    "page_scrolled",  # unknown: awards nothing
]
ZONES = ["UTC", "Pacific/Kiritimati", "America/Los_Angeles", "Africa/Nairobi", "Asia/Kolkata"]

milestone_sets = st.sampled_from([(7, 14, 30, 60, 100, 365), (1, 2, 3), (2, 5), (), (3,)])


@settings(max_examples=300, deadline=None)
@given(
    days=st.lists(st.integers(0, 60), max_size=40),
    extra=st.lists(st.integers(0, 60), max_size=10),
    milestones=milestone_sets,
    max_freezes=st.integers(0, 3),
    data=st.data(),
)
def test_compute_streak_depends_only_on_the_set(
    days: list[int], extra: list[int], milestones: tuple[int, ...], max_freezes: int, data: st.DataObject
) -> None:
    base = compute_streak(days, milestones, max_freezes)
    shuffled = data.draw(st.permutations(days + [d for d in extra if d in days]))
    assert compute_streak(shuffled, milestones, max_freezes) == base
    assert base.freezes <= max_freezes
    assert base.longest >= base.current
    assert (base.last_active_day is None) == (not days)


@settings(max_examples=200, deadline=None)
@given(
    days=st.sets(st.integers(0, 60), max_size=40),
    later=st.integers(1, 10),
    milestones=milestone_sets,
    max_freezes=st.integers(0, 3),
)
def test_streak_as_of_agrees_with_the_walk(
    days: set[int], later: int, milestones: tuple[int, ...], max_freezes: int
) -> None:
    state = compute_streak(days, milestones, max_freezes)
    if state.last_active_day is None:
        return
    back = state.last_active_day + later
    shown = streak_as_of(state, back, max_freezes)
    walked = extend_streak(state, back, milestones, max_freezes)
    assert walked == compute_streak(days | {back}, milestones, max_freezes)
    assert walked.freezes_used == shown.freezes_used
    assert walked.current == (shown.current + 1 if shown.current else 1)
    assert shown.longest == state.longest


@st.composite
def event_lists(draw: st.DrawFn) -> list[BehaviorEvent]:
    n = draw(st.integers(1, 45))
    events = []
    for i in range(n):
        props: dict[str, Any] = {}
        score = draw(st.sampled_from([None, 40, 90, 95, 100, 100.0]))
        if score is not None:
            props["score"] = score
        category = draw(st.sampled_from([None, "behavioral", "technical"]))
        if category is not None:
            props["category"] = category
        duration = draw(st.sampled_from([None, 600, 3600, 5400]))
        if duration is not None:
            props["duration_s"] = duration
        events.append(
            BehaviorEvent(
                event_id=f"e{i}",
                user_id="u",
                type=draw(st.sampled_from(TYPES)),
                ts_ms=T0 + draw(st.integers(0, SPAN)),
                session_id=None,
                device=None,
                platform=None,
                props=props,
            )
        )
    return events


def replay(events: list[BehaviorEvent], rules: Rules, tz: str) -> UserState:
    state = UserState(user_id="u", timezone=tz)
    for event in events:
        apply_event(state, event, rules, WINDOW)
    return state


def totals(state: UserState) -> dict[str, Any]:
    xp, reached = state.period_xp.get("all_time:all", [0, 0])
    return {
        "xp": state.xp,
        "active_days": state.active_days,
        "streak": state.streak,
        "badges": sorted(state.badges),
        "counters": state.counters,
        "category_stats": state.category_stats,
        "practice": state.daily_practice_s,
        "all_time": encode_score(xp, reached),
        "daily_action_xp": state.daily_action_xp,
    }


@settings(max_examples=150, deadline=None)
@given(
    events=event_lists(),
    tz=st.sampled_from(ZONES),
    cap=st.sampled_from([3000, 400, 120, 30]),
    data=st.data(),
)
def test_any_order_with_duplicates_gives_the_same_totals(
    events: list[BehaviorEvent], tz: str, cap: int, data: st.DataObject
) -> None:
    rules = dataclasses.replace(default_rules(), daily_xp_cap=cap)
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=10))
    in_order = replay(events, rules, tz)
    shuffled = data.draw(st.permutations(events + duplicates))
    other = replay(shuffled, rules, tz)
    assert totals(other) == totals(in_order)
    # Nothing was pruned inside the window, so the period buckets add up to the total.
    for state in (in_order, other):
        for period in ("daily:", "weekly:"):
            assert sum(v[0] for k, v in state.period_xp.items() if k.startswith(period)) == state.xp
        assert state.period_xp.get("all_time:all", [0])[0] == state.xp
    # And the state survives its changelog encoding exactly.
    assert UserState.from_dict(orjson.loads(orjson.dumps(other.to_dict()))) == other
