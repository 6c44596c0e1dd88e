from __future__ import annotations

import random
from datetime import date

import pytest

from models.gamification import FREEZE_BOUGHT, UserState, apply_event
from models.streaks import (
    EMPTY_STREAK,
    StreakState,
    compute_streak,
    extend_streak,
    is_streak_at_risk,
    local_day,
    streak_as_of,
)
from tests.models.factories import default_rules, event, ms

MILESTONES = (7, 14, 30, 60, 100, 365)
D0 = date(2026, 11, 2).toordinal()


def d(text: str) -> int:
    return date.fromisoformat(text).toordinal()


def run(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


def streak(days: list[int], max_freezes: int = 2, milestones: tuple[int, ...] = MILESTONES) -> StreakState:
    return compute_streak(days, milestones, max_freezes)


# --- local_day ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "tz", "day"),
    [
        ("2026-11-22T23:59:59Z", "UTC", "2026-11-22"),
        ("2026-11-23T00:00:00Z", "UTC", "2026-11-23"),
        ("2026-11-22T09:59:59Z", "Pacific/Kiritimati", "2026-11-22"),  # UTC+14
        ("2026-11-22T10:00:00Z", "Pacific/Kiritimati", "2026-11-23"),
        ("2026-11-22T07:59:59Z", "America/Los_Angeles", "2026-11-21"),  # UTC-8 in November
        ("2026-11-22T08:00:00Z", "America/Los_Angeles", "2026-11-22"),
        ("2026-11-22T20:59:59Z", "Africa/Nairobi", "2026-11-22"),
        ("2026-11-22T21:00:00Z", "Africa/Nairobi", "2026-11-23"),
        ("2026-11-22T18:29:59Z", "Asia/Kolkata", "2026-11-22"),  # half-hour offset
        ("2026-11-22T18:30:00Z", "Asia/Kolkata", "2026-11-23"),
        # Los Angeles springs forward on 2026-03-08 (a 23-hour day) ...
        ("2026-03-08T07:59:59Z", "America/Los_Angeles", "2026-03-07"),
        ("2026-03-08T08:00:00Z", "America/Los_Angeles", "2026-03-08"),
        ("2026-03-09T06:59:59Z", "America/Los_Angeles", "2026-03-08"),
        ("2026-03-09T07:00:00Z", "America/Los_Angeles", "2026-03-09"),
        # ... and falls back on 2026-11-01 (a 25-hour day).
        ("2026-11-01T07:00:00Z", "America/Los_Angeles", "2026-11-01"),
        ("2026-11-02T07:59:59Z", "America/Los_Angeles", "2026-11-01"),
        ("2026-11-02T08:00:00Z", "America/Los_Angeles", "2026-11-02"),
        ("2026-12-31T23:59:59Z", "UTC", "2026-12-31"),
        ("2027-01-01T00:00:00Z", "UTC", "2027-01-01"),
        ("2026-12-31T10:00:00Z", "Pacific/Kiritimati", "2027-01-01"),
        ("2028-02-29T12:00:00Z", "UTC", "2028-02-29"),
    ],
)
def test_local_day(ts: str, tz: str, day: str) -> None:
    assert local_day(ms(ts), tz) == d(day)


def test_local_day_utc_fast_path_agrees_with_zoneinfo() -> None:
    rng = random.Random(7)
    for _ in range(500):
        t = rng.randrange(0, ms("2100-01-01T00:00:00Z"))
        assert local_day(t, "UTC") == local_day(t, "Etc/UTC")


def test_local_day_unknown_zone() -> None:
    with pytest.raises(ValueError, match="Mars"):
        local_day(0, "Mars/Base")


def test_dst_nights_do_not_break_a_streak() -> None:
    # 20:00 local every evening across both LA transitions: 8 consecutive local days each time.
    for first in ("2026-03-04", "2026-10-28"):
        days = [
            local_day(ms(f"{first}T20:00:00Z") + k * 86_400_000 + 8 * 3_600_000, "America/Los_Angeles")
            for k in range(8)
        ]
        assert days == run(d(first), 8)
        assert streak(days).current == 8


def test_kiritimati_user_gets_two_days_in_one_utc_day() -> None:
    tz = "Pacific/Kiritimati"
    days = {local_day(ms("2026-11-22T09:00:00Z"), tz), local_day(ms("2026-11-22T10:30:00Z"), tz)}
    assert days == {d("2026-11-22"), d("2026-11-23")}
    assert streak(sorted(days)).current == 2


# --- compute_streak ----------------------------------------------------------------------------


def test_empty() -> None:
    assert streak([]) == EMPTY_STREAK == StreakState(0, 0, 0, None, 0)


def test_consecutive_days() -> None:
    assert streak(run(D0, 5)) == StreakState(5, 5, 0, D0 + 4, 0)


def test_year_boundary_and_leap_day() -> None:
    assert streak([d("2026-12-30"), d("2026-12-31"), d("2027-01-01")]).current == 3
    assert streak([d("2028-02-28"), d("2028-02-29"), d("2028-03-01")]).current == 3
    assert streak([d("2027-02-28"), d("2027-03-01")]).current == 2  # no Feb 29 in 2027
    assert streak([d("2028-02-28"), d("2028-03-01")]).current == 1  # Feb 29 2028 was missed


def test_gap_without_freezes_restarts() -> None:
    s = streak([*run(D0, 3), D0 + 4])
    assert (s.current, s.longest, s.freezes, s.freezes_used) == (1, 3, 0, 0)


def test_milestone_7_grants_a_freeze_that_covers_one_missed_day() -> None:
    before = streak(run(D0, 7))
    assert (before.current, before.freezes) == (7, 1)
    after = streak([*run(D0, 7), D0 + 8])  # D0+7 missed
    assert after == StreakState(current=8, longest=8, freezes=0, last_active_day=D0 + 8, freezes_used=1)


def test_covered_days_keep_the_streak_alive_but_do_not_count() -> None:
    s = streak([*run(D0, 14), *run(D0 + 16, 3)])  # 2 freezes cover D0+14, D0+15
    assert (s.current, s.freezes, s.freezes_used) == (17, 0, 2)


def test_freezes_exhausted_by_a_gap_they_cannot_cover() -> None:
    s = streak([*run(D0, 7), *run(D0 + 9, 2)])  # 2 missed days, 1 freeze held
    assert (s.current, s.longest, s.freezes, s.freezes_used) == (2, 7, 0, 1)


def test_two_freezes_then_a_third_missed_day_breaks() -> None:
    s = streak([*run(D0, 14), D0 + 17])  # 3 missed, 2 held
    assert (s.current, s.longest, s.freezes, s.freezes_used) == (1, 14, 0, 2)


def test_freezes_capped_at_max() -> None:
    assert streak(run(D0, 14)).freezes == 2
    assert streak(run(D0, 30)).freezes == 2  # 7, 14 and 30 reached: still only 2 held
    # Both freezes spent on D0+30 and D0+32; the next freeze only comes at the 60 milestone.
    spent = [*run(D0, 30), D0 + 31, *run(D0 + 33, 28)]
    s = streak(spent)
    assert (s.current, s.freezes, s.freezes_used) == (59, 0, 2)
    s = streak([*spent, D0 + 61])
    assert (s.current, s.freezes, s.freezes_used) == (60, 1, 2)


def test_max_freezes_parameter() -> None:
    assert streak(run(D0, 14), max_freezes=1).freezes == 1
    assert streak(run(D0, 14), max_freezes=0).freezes == 0
    assert streak(run(D0, 3), milestones=(1, 2, 3), max_freezes=5).freezes == 3


def test_milestone_reached_again_after_a_restart_grants_again() -> None:
    s = streak([*run(D0, 7), *run(D0 + 10, 7)])
    assert (s.current, s.freezes, s.freezes_used) == (7, 1, 1)


def test_out_of_order_and_duplicates() -> None:
    days = [*run(D0, 9), *run(D0 + 10, 5), D0 + 20]
    expected = streak(days)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = days + rng.sample(days, 5)
        rng.shuffle(shuffled)
        assert compute_streak(iter(shuffled), MILESTONES, 2) == expected


def test_extend_streak_matches_compute_and_refuses_the_past() -> None:
    days = [*run(D0, 9), D0 + 11, D0 + 15]
    state = EMPTY_STREAK
    for day in days:
        state = extend_streak(state, day, MILESTONES, 2)
        assert state == streak([x for x in days if x <= day])
    with pytest.raises(ValueError):
        extend_streak(state, D0 + 15, MILESTONES, 2)
    with pytest.raises(ValueError):
        extend_streak(state, D0, MILESTONES, 2)


# --- streak_as_of / at risk --------------------------------------------------------------------


def test_as_of_today_or_tomorrow_changes_nothing() -> None:
    s = streak(run(D0, 5))
    last = D0 + 4
    assert streak_as_of(s, last, 2) == s
    assert streak_as_of(s, last + 1, 2) == s  # today not active yet is not a miss
    assert streak_as_of(s, last - 3, 2) == s


def test_as_of_missed_days_without_freezes() -> None:
    s = streak(run(D0, 5))
    assert streak_as_of(s, D0 + 6, 2) == StreakState(0, 5, 0, D0 + 4, 0)


def test_as_of_missed_days_covered_by_freezes() -> None:
    s = streak(run(D0, 14))  # 2 freezes
    shown = streak_as_of(s, D0 + 15, 2)  # one missed day
    assert (shown.current, shown.freezes, shown.freezes_used) == (14, 1, 1)
    shown = streak_as_of(s, D0 + 16, 2)  # two missed days
    assert (shown.current, shown.freezes, shown.freezes_used) == (14, 0, 2)
    shown = streak_as_of(s, D0 + 17, 2)  # three: lost, freezes spent trying
    assert (shown.current, shown.longest, shown.freezes, shown.freezes_used) == (0, 14, 0, 2)


def test_as_of_agrees_with_the_walk_once_the_user_returns() -> None:
    for gap in range(0, 5):
        days = run(D0, 14)
        back = D0 + 14 + gap
        shown = streak_as_of(streak(days), back, 2)
        walked = streak([*days, back])
        assert walked.freezes_used == shown.freezes_used
        assert walked.current == (shown.current + 1 if shown.current else 1)


def test_as_of_clamps_freezes_to_a_lowered_maximum() -> None:
    assert streak_as_of(streak(run(D0, 14)), D0 + 13, 1).freezes == 1


def test_as_of_no_history() -> None:
    assert streak_as_of(EMPTY_STREAK, D0, 2) == EMPTY_STREAK


def test_at_risk_only_when_active_yesterday_not_today() -> None:
    s = streak(run(D0, 3))
    last = D0 + 2
    assert is_streak_at_risk(s, last + 1)
    assert not is_streak_at_risk(s, last)
    assert not is_streak_at_risk(s, last + 2)
    assert not is_streak_at_risk(EMPTY_STREAK, D0)


def test_filling_a_day_can_shorten_the_longest_streak() -> None:
    # A known consequence of milestone freezes (documented in models.gamification): with day 6
    # filled in, the milestone at 7 is reached earlier, the freeze is spent on day 8, and the
    # gap at day 19 is no longer covered. The streak is still a pure function of the set.
    days = [*run(1, 5), 7, *run(9, 10), *run(20, 12), *run(33, 12)]
    assert streak([d + D0 for d in days]).longest == 34
    assert streak([d + D0 for d in [*days, 6]]).longest == 29


# --- bought freezes (the streak_freeze perk) -----------------------------------------------------


def test_a_bought_freeze_covers_a_later_missed_day() -> None:
    days = [*run(D0, 3), D0 + 4]  # day D0+3 missed
    assert streak(days).current == 1  # no freeze earned yet: the streak starts over
    bought = compute_streak(days, MILESTONES, 2, bought_days=[D0 + 2], max_held=5)
    assert (bought.current, bought.freezes, bought.freezes_used) == (4, 0, 1)


def test_a_bought_freeze_never_mends_a_streak_that_had_already_ended() -> None:
    days = [*run(D0, 3), D0 + 5]  # D0+3 and D0+4 missed; bought on D0+4, the streak ended on D0+3
    after = compute_streak(days, MILESTONES, 2, bought_days=[D0 + 4], max_held=5)
    assert after.current == 1 and after.freezes == 1  # kept for later, not spent on the past
    # Bought on the first missed day, it covers that day and the next is one too many.
    early = compute_streak(days, MILESTONES, 2, bought_days=[D0 + 3], max_held=5)
    assert early.current == 1 and early.freezes == 0


def test_bought_freezes_are_held_up_to_max_held_and_milestones_never_take_them_back() -> None:
    many = compute_streak(run(D0, 2), MILESTONES, 2, bought_days=[D0 + 1] * 7, max_held=5)
    assert many.freezes == 5
    # Reaching the 7-day milestone while holding more than max_freezes earns nothing, loses nothing.
    week = compute_streak(run(D0, 7), MILESTONES, 2, bought_days=[D0, D0, D0], max_held=5)
    assert week.freezes == 3
    assert streak_as_of(week, D0 + 9, 5).current == 7  # two missed days, covered


@pytest.mark.parametrize("seed", range(40))
def test_buying_and_activity_in_any_arrival_order_give_the_walk(seed: int) -> None:
    """What the engine does live (a purchase re-walks, a later day extends, an earlier day
    re-walks) is the walk over all days with each purchase taken before its day's activity."""
    rng = random.Random(seed)
    rules = default_rules()
    active = sorted(rng.sample(range(D0, D0 + 40), rng.randint(1, 25)))
    bought = [rng.randint(D0, D0 + 40) for _ in range(rng.randint(0, 4))]
    arrivals = [("day", day) for day in active] + [("buy", day) for day in bought]
    rng.shuffle(arrivals)
    state = UserState("u-1")
    base = ms("2026-11-02T10:00:00Z")
    for i, (kind, day) in enumerate(arrivals):
        ts = base + (day - D0) * 86_400_000 + i
        kind_type = FREEZE_BOUGHT if kind == "buy" else "lesson_complete"
        apply_event(state, event(kind_type, ts, event_id=f"e{i}"), rules, 60 * 86_400_000)
    expected = compute_streak(
        active, rules.streak_milestones, rules.max_freezes, bought, rules.max_held_freezes
    )
    assert state.streak == expected
