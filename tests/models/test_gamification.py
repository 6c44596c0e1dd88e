from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import orjson
import pytest

from models.events import InvalidEvent, UserProfile
from models.gamification import (
    MAX_SEEN,
    Effects,
    UserState,
    apply_event,
    apply_profile,
    metric_value,
    public_view,
    seen_digest,
)
from models.leaderboard import encode_score
from models.rules import Rules
from models.streaks import StreakState, local_day
from tests.models.factories import default_rules, event, ms

RULES = default_rules()
DAY = 86_400_000
WINDOW = 7 * DAY
T = ms("2026-11-22T08:00:00Z")


def new_state(tz: str = "UTC") -> UserState:
    return UserState(user_id="u-1", timezone=tz)


def apply(state: UserState, type_: str, ts: int | str, rules: Rules = RULES, **props: Any) -> Effects:
    return apply_event(state, event(type_, ts, **props), rules, WINDOW)


# --- XP --------------------------------------------------------------------------------------


def test_first_learning_event_of_the_day() -> None:
    s = new_state()
    fx = apply(s, "lesson_complete", T)
    assert fx.breakdown == (("action:lesson_complete", 50), ("daily_first", 15))
    assert fx.xp_gained == 65 == s.xp
    assert fx.changed and not fx.duplicate
    assert fx.streak_before == StreakState() and fx.streak_after.current == 1
    assert s.active_days == [date(2026, 11, 22).toordinal()]
    assert fx.touched_periods == ("daily:2026-11-22", "weekly:2026-W47", "all_time:all")
    assert s.period_xp["all_time:all"] == [65, T]


def test_second_event_same_day_earns_only_its_action() -> None:
    s = new_state()
    apply(s, "lesson_complete", T)
    fx = apply(s, "lesson_complete", T + 3_600_000)
    assert fx.breakdown == (("action:lesson_complete", 50), ("level:2", 50))  # 115 reaches level 2
    assert fx.streak_after == fx.streak_before
    assert s.xp == 165


@pytest.mark.parametrize(
    ("action", "xp"),
    [
        ("assessment_complete", 100),
        ("daily_challenge_complete", 25),
        ("lesson_complete", 50),
        ("job_view", 2),
    ],
)
def test_contract_action_xp(action: str, xp: int) -> None:
    s = new_state()
    fx = apply(s, action, T)
    assert dict(fx.breakdown)[f"action:{action}"] == xp


def test_non_qualifying_action_adds_no_day() -> None:
    s = new_state()
    fx = apply(s, "job_view", T)
    assert fx.breakdown == (("action:job_view", 2),)
    assert s.active_days == [] and s.streak == StreakState()


def test_interview_perfect_score_bonus() -> None:
    s = new_state()
    fx = apply(s, "interview_session_complete", T, score=100)
    assert fx.breakdown == (
        ("action:interview_session_complete", 50),
        ("bonus:interview_session_complete:score", 100),
        ("daily_first", 15),
        # Per-badge rewards from the rules file (first interview 10, perfect score 100), not +30.
        ("badge:first_session", 10),
        ("badge:perfect_score", 100),
        # 275 XP reaches level 2; its +50 bonus lifts the total to 325, past level 3 (300).
        ("level:2", 50),
        ("level:3", 75),
    )
    assert s.xp == 400
    assert (fx.level_before, fx.level_after) == (1, 3)
    assert [b.id for b in fx.new_badges] == ["first_session", "perfect_score"]


@pytest.mark.parametrize("score", [99, 100.5, "100", None, True])
def test_no_bonus_unless_score_is_exactly_100(score: object) -> None:
    s = new_state()
    fx = apply(s, "interview_session_complete", T, score=score)
    assert "bonus:interview_session_complete:score" not in dict(fx.breakdown)
    assert "perfect_score" not in s.badges


def test_score_100_as_float_earns_the_bonus() -> None:
    s = new_state()
    assert (
        dict(apply(s, "interview_session_complete", T, score=100.0).breakdown)[
            "bonus:interview_session_complete:score"
        ]
        == 100
    )


def test_once_action_pays_once() -> None:
    s = new_state()
    assert apply(s, "profile_complete", T).breakdown == (("action:profile_complete", 100), ("level:2", 50))
    fx = apply(s, "profile_complete", T + 1000)
    assert fx.xp_gained == 0 and fx.breakdown == ()
    assert s.counters["count:profile_complete"] == 2


def test_unknown_type_awards_nothing_but_is_deduplicated() -> None:
    s = new_state()
    apply(s, "lesson_complete", T)
    before = s.to_dict()
    unknown = event("page_scrolled", T + 5)
    fx = apply_event(s, unknown, RULES, WINDOW)
    assert (fx.xp_gained, fx.changed, fx.duplicate, fx.touched_periods) == (0, False, False, ())
    after = s.to_dict()
    assert {k: v for k, v in after.items() if k not in ("seen", "wm")} == {
        k: v for k, v in before.items() if k not in ("seen", "wm")
    }
    assert "count:page_scrolled" not in s.counters
    # A redelivery is a duplicate: risk and challenges downstream must not count it twice.
    assert apply_event(s, unknown, RULES, WINDOW).duplicate


def test_the_dedup_memory_is_bounded_and_its_floor_refuses_what_it_forgot() -> None:
    s = new_state()
    first = event("page_view", T)
    apply_event(s, first, RULES, WINDOW)
    for i in range(1, MAX_SEEN + 1):
        apply_event(s, event("page_view", T + i, event_id="x" * 120 + str(i)), RULES, WINDOW)
    assert len(s.seen) <= MAX_SEEN
    assert len(orjson.dumps(s.to_dict())) < 100_000
    # The first id was forgotten; it cannot come back as new: it is older than the floor.
    assert seen_digest(first.event_id) not in s.seen
    with pytest.raises(InvalidEvent) as info:
        apply_event(s, first, RULES, WINDOW)
    assert info.value.reason == "too_late"
    restored = UserState.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
    assert restored.seen == s.seen and restored.seen_floor_ms == s.seen_floor_ms


def test_version_1_state_with_raw_ids_is_read_as_digests() -> None:
    s = new_state()
    ev = event("lesson_complete", T)
    apply_event(s, ev, RULES, WINDOW)
    v1 = {**s.to_dict(), "v": 1, "seen": {ev.event_id: ev.ts_ms}}
    del v1["floor"]
    restored = UserState.from_dict(v1)
    assert apply_event(restored, ev, RULES, WINDOW).duplicate


# --- daily cap -------------------------------------------------------------------------------


def capped(cap: int) -> Rules:
    return dataclasses.replace(RULES, daily_xp_cap=cap)


def test_daily_cap_limits_action_xp_per_utc_day() -> None:
    rules = capped(120)
    s = new_state()
    gains = [apply(s, "lesson_complete", T + i, rules).breakdown for i in range(4)]
    assert gains[0] == (("action:lesson_complete", 50), ("daily_first", 15))
    assert gains[1][0] == ("action:lesson_complete", 50)
    assert gains[2][0] == ("action:lesson_complete", 20)
    assert gains[3] == ()
    assert s.daily_action_xp["2026-11-22"] == 120
    # The next UTC day starts fresh (and its daily-first bonus is never capped).
    nxt = apply(s, "lesson_complete", ms("2026-11-23T00:00:00Z"), rules).breakdown
    assert nxt == (("action:lesson_complete", 50), ("daily_first", 15))


def test_cap_clips_bonuses_too() -> None:
    s = new_state()
    fx = apply(s, "interview_session_complete", T, capped(120), score=100)
    assert dict(fx.breakdown)["action:interview_session_complete"] == 50
    assert dict(fx.breakdown)["bonus:interview_session_complete:score"] == 70


def test_once_actions_bypass_the_cap() -> None:
    rules = capped(50)
    s = new_state()
    apply(s, "lesson_complete", T, rules)
    assert apply(s, "job_view", T + 1, rules).xp_gained == 0
    assert dict(apply(s, "resume_upload", T + 2, rules).breakdown)["action:resume_upload"] == 50


def test_default_cap_is_3000() -> None:
    s = new_state()
    total = sum(
        dict(apply(s, "assessment_complete", T + i).breakdown).get("action:assessment_complete", 0)
        for i in range(35)
    )
    assert total == 3000


# --- levels ----------------------------------------------------------------------------------

CASCADE = """
[xp]
level_up_per_level = 40
[actions]
big = { xp = 100 }
[[levels]]
level = 1
title = "A"
min_xp = 0
[[levels]]
level = 2
title = "B"
min_xp = 100
[[levels]]
level = 3
title = "C"
min_xp = 160
[[levels]]
level = 4
title = "D"
min_xp = 240
[[levels]]
level = 5
title = "E"
min_xp = 1000
"""


def test_level_bonuses_cascade() -> None:
    rules = Rules.from_toml(CASCADE)
    s = new_state()
    fx = apply(s, "big", T, rules)
    # 100 reaches level 2 (+80 = 180), which reaches level 3 (+120 = 300), which reaches 4 (+160).
    assert fx.breakdown == (("action:big", 100), ("level:2", 80), ("level:3", 120), ("level:4", 160))
    assert s.xp == 460
    assert (fx.level_before, fx.level_after) == (1, 4)
    assert apply(s, "big", T + 1, rules).breakdown == (("action:big", 100),)  # levels pay once


def test_several_levels_in_one_event_each_pay() -> None:
    s = new_state()
    fx = apply(s, "course_complete", T)  # 200 + 15 -> level 2 (+50) -> 265
    assert ("level:2", 50) in fx.breakdown
    s2 = new_state()
    s2.xp = 280  # level 2, paid
    fx2 = apply(s2, "assessment_complete", T)  # +100 +15 +30 badge = 425 -> level 3 (+75)
    assert fx2.breakdown[-1] == ("level:3", 75)
    assert (fx2.level_before, fx2.level_after, s2.xp) == (2, 3, 500)


# --- badges ----------------------------------------------------------------------------------


def test_badges_are_awarded_once_at_their_threshold() -> None:
    s = new_state()
    earned = []
    for i in range(12):
        fx = apply(s, "interview_session_complete", T + i * 1000, score=50)
        earned.append([b.id for b in fx.new_badges])
    assert earned[0] == ["first_session"]
    assert earned[9] == ["ten_sessions"]
    assert sum(len(e) for e in earned) == 2
    assert s.badges == {"first_session": T, "ten_sessions": T + 9000}
    assert metric_value(s, "count:interview_session_complete") == 12


@pytest.mark.parametrize(
    ("action", "badge", "needed"),
    [
        ("assessment_complete", "first_assessment", 1),
        ("career_research", "career_explorer", 5),
        ("job_apply", "job_hunter", 10),
        ("mentor_connect", "first_mentor", 1),
    ],
)
def test_count_badges(action: str, badge: str, needed: int) -> None:
    s = new_state()
    for i in range(needed - 1):
        apply(s, action, T + i)
    assert badge not in s.badges
    fx = apply(s, action, T + needed)
    assert badge in [b.id for b in fx.new_badges]
    assert dict(fx.breakdown)[f"badge:{badge}"] == 30


def test_behavioral_master_counts_high_behavioral_sessions_only() -> None:
    s = new_state()
    for i in range(9):
        apply(s, "interview_session_complete", T + i, score=90 + i % 3, category="behavioral")
    apply(s, "interview_session_complete", T + 20, score=89, category="behavioral")
    apply(s, "interview_session_complete", T + 21, score=99, category="technical")
    apply(s, "quiz_complete", T + 22, score=99, category="behavioral")  # not an interview session
    assert "behavioral_master" not in s.badges
    assert s.category_stats["behavioral"] == [10, 9 * 91 + 89, 9]
    assert s.category_stats["technical"] == [1, 99, 1]
    fx = apply(s, "interview_session_complete", T + 30, score=95, category="behavioral")
    assert [b.id for b in fx.new_badges] == ["behavioral_master"]


def test_category_stats_are_bounded() -> None:
    s = new_state()
    for i in range(40):
        apply(s, "interview_session_complete", T + i, score=90, category=f"c{i}")
    apply(s, "interview_session_complete", T + 99, score=90, category="x" * 65)
    assert len(s.category_stats) == 32
    assert "x" * 65 not in s.category_stats


def test_marathon_is_120_practice_minutes_in_one_local_day() -> None:
    s = new_state("America/Los_Angeles")
    # LA's 2026-11-22 runs from 08:00Z on the 22nd to 08:00Z on the 23rd.
    apply(s, "lesson_complete", ms("2026-11-23T09:00:00Z"), duration_s=3600)  # LA 11-23, UTC 11-23
    apply(s, "quiz_complete", ms("2026-11-23T07:00:00Z"), duration_s=3600)  # LA 11-22, UTC 11-23
    apply(s, "job_view", ms("2026-11-23T06:00:00Z"), duration_s=9000)  # browsing is not practice
    assert "marathon" not in s.badges  # 120 minutes in one UTC day, but not in one LA day
    assert metric_value(s, "max_daily_practice_minutes") == 60
    fx = apply(s, "lesson_complete", ms("2026-11-22T23:00:00Z"), duration_s=3600)  # LA 11-22, UTC 11-22
    assert [b.id for b in fx.new_badges] == ["marathon"]
    assert metric_value(s, "max_daily_practice_minutes") == 120


def test_marathon_awarded_on_the_event_that_crosses() -> None:
    s = new_state()
    apply(s, "lesson_complete", T, duration_s=3600)
    fx = apply(s, "interview_session_complete", T + 1, duration_s=3599.9)
    assert "marathon" not in s.badges
    fx = apply(s, "daily_challenge_complete", T + 2, duration_s=60)
    assert [b.id for b in fx.new_badges] == ["marathon"]


@pytest.mark.parametrize(("window", "kept"), [(DAY, 7), (WINDOW, 9), (20 * DAY, 22)])
def test_practice_days_are_bounded(window: int, kept: int) -> None:
    s = new_state()
    for i in range(30):
        apply_event(s, event("lesson_complete", T + i * DAY, duration_s=60), RULES, window)
    assert len(s.daily_practice_s) == kept
    assert max(s.daily_practice_s) == local_day(T + 29 * DAY, "UTC")


def test_streak_7_badge() -> None:
    s = new_state()
    for i in range(6):
        apply(s, "lesson_complete", T + i * DAY)
    assert "streak_7" not in s.badges
    fx = apply(s, "lesson_complete", T + 6 * DAY)
    assert [b.id for b in fx.new_badges] == ["streak_7"]
    assert (fx.streak_after.current, fx.streak_after.freezes) == (7, 1)


# --- streaks through the engine --------------------------------------------------------------


def test_late_day_in_the_middle_recomputes_the_streak() -> None:
    s = new_state()
    for i in (0, 1, 3, 4):
        apply(s, "lesson_complete", T + i * DAY)
    assert s.streak.current == 2
    fx = apply(s, "lesson_complete", T + 2 * DAY)
    assert fx.streak_after.current == 5
    assert dict(fx.breakdown)["daily_first"] == 15


def test_timezone_change_applies_to_future_events_only() -> None:
    s = new_state("UTC")
    apply(s, "lesson_complete", ms("2026-11-22T09:00:00Z"))
    assert apply_profile(s, UserProfile(user_id="u-1", timezone="Pacific/Kiritimati"))
    assert not apply_profile(s, UserProfile(user_id="u-1", timezone="Pacific/Kiritimati"))
    assert s.active_days == [date(2026, 11, 22).toordinal()]  # not recomputed
    apply(s, "lesson_complete", ms("2026-11-22T10:30:00Z"))  # 2026-11-23 00:30 in Kiritimati
    assert s.active_days == [date(2026, 11, 22).toordinal(), date(2026, 11, 23).toordinal()]
    assert s.streak.current == 2


def test_apply_profile_rejects_bad_zone_and_other_user() -> None:
    s = new_state()
    with pytest.raises(InvalidEvent) as info:
        apply_profile(s, UserProfile(user_id="u-1", timezone="Nowhere/Land"))
    assert info.value.reason == "bad_timezone"
    assert s.timezone == "UTC"
    with pytest.raises(ValueError):
        apply_profile(s, UserProfile(user_id="u-2", timezone="UTC"))


# --- idempotency -----------------------------------------------------------------------------


def test_duplicate_event_changes_nothing() -> None:
    s = new_state()
    e = event("interview_session_complete", T, score=100)
    first = apply_event(s, e, RULES, WINDOW)
    snapshot = orjson.dumps(s.to_dict())
    again = apply_event(s, e, RULES, WINDOW)
    assert again.duplicate and not again.changed
    assert (again.xp_gained, again.breakdown, again.new_badges, again.touched_periods) == (0, (), (), ())
    assert again.level_before == again.level_after == first.level_after
    assert orjson.dumps(s.to_dict()) == snapshot


def test_too_late_events_are_refused() -> None:
    s = new_state()
    apply(s, "lesson_complete", T)
    fx = apply(s, "lesson_complete", T - WINDOW)  # exactly at the edge: still accepted
    assert fx.xp_gained > 0
    with pytest.raises(InvalidEvent) as info:
        apply(s, "lesson_complete", T - WINDOW - 1)
    assert info.value.reason == "too_late"


def test_seen_ids_are_pruned_and_then_too_late() -> None:
    s = new_state()
    old = event("lesson_complete", T)
    apply_event(s, old, RULES, WINDOW)
    for i in range(1, 10):
        apply(s, "job_view", T + i * DAY)
    assert seen_digest(old.event_id) not in s.seen
    assert all(ts >= s.watermark_ms - WINDOW for ts in s.seen.values())
    with pytest.raises(InvalidEvent, match="duplicate"):
        apply_event(s, old, RULES, WINDOW)


def test_out_of_order_stragglers_are_pruned_by_the_daily_sweep() -> None:
    s = new_state()
    apply(s, "job_view", T)
    straggler = event("job_view", T - 5 * DAY)
    apply_event(s, straggler, RULES, WINDOW)
    apply(s, "job_view", T + 3 * DAY)  # straggler expired, but not at the front of `seen`
    assert seen_digest(straggler.event_id) not in s.seen


def test_event_for_another_user_is_a_bug() -> None:
    with pytest.raises(ValueError):
        apply_event(new_state(), event("lesson_complete", T, user_id="u-2"), RULES, WINDOW)


# --- leaderboard periods ---------------------------------------------------------------------


def test_period_buckets_are_utc_and_keep_the_latest_time() -> None:
    s = new_state("Pacific/Kiritimati")
    t1 = ms("2026-12-31T23:30:00Z")
    apply(s, "lesson_complete", t1)
    apply(s, "job_view", t1 - 1000)
    assert s.period_xp["daily:2026-12-31"] == [67, t1]
    assert s.period_xp["weekly:2026-W53"] == [67, t1]
    fx = apply(s, "job_view", ms("2027-01-04T00:00:01Z"))
    assert fx.touched_periods == ("daily:2027-01-04", "weekly:2027-W01", "all_time:all")
    assert s.period_xp["all_time:all"] == [69, ms("2027-01-04T00:00:01Z")]


def test_capped_event_still_stamps_its_period_time() -> None:
    s = new_state()
    rules = capped(2)
    apply(s, "job_view", T, rules)
    fx = apply(s, "job_view", T + 5000, rules)
    assert fx.xp_gained == 0 and not fx.changed
    assert fx.touched_periods == ("daily:2026-11-22", "weekly:2026-W47", "all_time:all")
    assert s.period_xp["all_time:all"] == [2, T + 5000]


@pytest.mark.parametrize(("window", "days", "weeks"), [(DAY, 8, 5), (WINDOW, 9, 5), (40 * DAY, 42, 8)])
def test_period_buckets_are_bounded(window: int, days: int, weeks: int) -> None:
    s = new_state()
    for i in range(60):
        apply_event(s, event("job_view", T + i * DAY), RULES, window)
    daily = sorted(k for k in s.period_xp if k.startswith("daily:"))
    weekly = sorted(k for k in s.period_xp if k.startswith("weekly:"))
    assert len(daily) == days and daily[-1] == "daily:2027-01-20"
    assert len(weekly) == weeks and weekly[-1] == "weekly:2027-W03"
    assert s.period_xp["all_time:all"][0] == s.xp == 60 * 2 + 50
    assert len(s.daily_action_xp) == days


def test_a_longer_dedup_window_keeps_buckets_late_events_may_need() -> None:
    s = new_state()
    window = 30 * DAY
    for i in range(30):
        apply_event(s, event("job_view", T + i * DAY), RULES, window)
    assert "daily:2026-11-22" in s.period_xp
    apply_event(s, event("job_view", T + 1), RULES, window)
    assert s.period_xp["daily:2026-11-22"][0] == 4


# --- serialisation and view ------------------------------------------------------------------


def busy_state() -> UserState:
    s = new_state("Africa/Nairobi")
    apply(s, "profile_complete", T + 3)
    apply(s, "job_apply", T + 4)
    for i in range(9):
        apply(
            s,
            "interview_session_complete",
            T + i * DAY,
            score=100 - i,
            category="behavioral",
            duration_s=1200,
        )
    apply(s, "lesson_complete", T + 11 * DAY)
    return s


def test_to_dict_round_trips_through_json() -> None:
    s = busy_state()
    raw = orjson.dumps(s.to_dict())
    back = UserState.from_dict(orjson.loads(raw))
    assert back == s
    assert orjson.dumps(back.to_dict()) == raw
    assert all(isinstance(k, int) for k in back.daily_practice_s)
    # The copy keeps behaving identically.
    e = event("interview_session_complete", T + 12 * DAY, score=100)
    assert apply_event(back, e, RULES, WINDOW) == apply_event(s, e, RULES, WINDOW)
    assert back == s


def test_active_days_are_stored_as_runs() -> None:
    s = busy_state()
    assert s.to_dict()["days"] == [[s.active_days[0], 9], [s.active_days[-1], 1]]


def test_from_dict_refuses_unknown_versions() -> None:
    data = busy_state().to_dict()
    data["v"] = 99
    with pytest.raises(ValueError, match="version"):
        UserState.from_dict(data)


def test_public_view() -> None:
    s = busy_state()
    view = public_view(s, RULES)
    assert set(view) == {
        "user_id",
        "xp",
        "level",
        "streak",
        "badges",
        "counters",
        "metrics",
        "timezone",
        "updated_at",
    }
    assert view["user_id"] == "u-1" and view["xp"] == s.xp
    assert set(view["level"]) == {"level", "title", "xp_into_level", "xp_to_next"}
    assert view["streak"] == {"current": 1, "longest": 9, "freezes": 0, "last_active_day": "2026-12-03"}
    first = view["badges"][0]
    assert first == {
        "id": "first_session",
        "name": "First Session",
        "rarity": "common",
        "earned_at": "2026-11-22T08:00:00Z",
    }
    assert [b["id"] for b in view["badges"]][:2] == ["first_session", "perfect_score"]
    assert view["counters"]["count:interview_session_complete"] == 9
    # Every metric a badge or recurring reward reads, so the API can show progress.
    assert view["metrics"] == {
        "count:interview_session_complete": 9,
        "longest_streak": 9,
        "perfect_scores": 1,
        "category_high_scores:behavioral": 9,  # scores 100..92, all >= 90
        "max_daily_practice_minutes": 20,
        "count:assessment_complete": 0,
        "count:career_research": 0,
        "count:job_apply": 1,
        "count:mentor_connect": 0,
        "high_score_categories": 1,
    }
    assert view["timezone"] == "Africa/Nairobi"
    assert view["updated_at"] == "2026-12-03T08:00:00Z"
    orjson.dumps(view)  # JSON-ready


def test_public_view_as_of_today() -> None:
    s = new_state()
    for i in range(3):
        apply(s, "lesson_complete", T + i * DAY)
    last = s.streak.last_active_day
    assert last is not None
    assert public_view(s, RULES, today_local=last + 1)["streak"]["current"] == 3
    assert public_view(s, RULES, today_local=last + 2)["streak"]["current"] == 0
    assert public_view(s, RULES)["streak"]["current"] == 3


def test_public_view_of_a_new_user_and_a_retired_badge() -> None:
    s = new_state()
    view = public_view(s, RULES)
    assert view["streak"]["last_active_day"] is None and view["updated_at"] is None
    assert view["level"] == {"level": 1, "title": "Newcomer", "xp_into_level": 0, "xp_to_next": 100}
    s.badges["retired"] = T
    assert public_view(s, RULES)["badges"] == [
        {"id": "retired", "name": "retired", "rarity": "common", "earned_at": "2026-11-22T08:00:00Z"}
    ]


def test_all_time_score_encodes_xp_and_time() -> None:
    s = busy_state()
    xp, at = s.period_xp["all_time:all"]
    assert xp == s.xp
    assert encode_score(xp, at) == encode_score(s.xp, T + 11 * DAY)


def test_badges_are_never_revoked_when_a_late_day_shortens_the_longest_streak() -> None:
    s = new_state()
    window = 60 * DAY
    days = [*range(1, 6), 7, *range(9, 19), *range(20, 32), *range(33, 45)]
    for d in days:
        apply_event(s, event("lesson_complete", T + d * DAY), RULES, window)
    assert s.streak.longest == 34 and "streak_30" in s.badges
    apply_event(s, event("lesson_complete", T + 6 * DAY), RULES, window)
    assert s.streak.longest == 29
    assert "streak_30" in s.badges
