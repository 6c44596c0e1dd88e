"""Drop-off features: event-time windows, day boundaries, order tolerance, bounded state."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from models.events import BehaviorEvent
from models.risk_features import (
    DAY_MS,
    FEATURE_NAMES,
    HOUR_CAP,
    HOUR_MS,
    NEUTRAL_SCORE,
    WINDOW_DAYS,
    ActivityProfile,
    features,
    hour_concentration,
    observe,
)
from tests.models.factories import event, ms

DAY0 = ms("2026-11-02T00:00:00Z")  # a Monday, 00:00 UTC


def at(day: int, hour: float = 0.0) -> int:
    return DAY0 + day * DAY_MS + int(hour * HOUR_MS)


def profile_of(*events: tuple[str, int, dict[str, Any]]) -> ActivityProfile:
    p = ActivityProfile()
    for type_, ts, props in events:
        observe(p, event(type_, ts, **props))
    return p


def count(value: float) -> float:
    """Inverse of the log1p compression of count features."""
    return math.expm1(value)


def test_feature_names_are_fixed_and_complete() -> None:
    f = features(ActivityProfile(), at(0))
    assert tuple(f) == FEATURE_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in f.values())


def test_recency_in_event_time() -> None:
    p = profile_of(("login", at(3, 10), {}))
    f = features(p, at(3, 16))
    assert f["recency_log_h"] == pytest.approx(math.log1p(6.0))
    assert f["recency_d"] == pytest.approx(0.25)
    # A "now" before the last event does not give negative recency.
    assert features(p, at(3, 9))["recency_log_h"] == 0.0


def test_one_day_window_slides_across_midnight() -> None:
    # 4 events yesterday (day 2), 2 today (day 3).
    p = profile_of(*[("login", at(2, 20), {})] * 4, *[("login", at(3, 1), {})] * 2)
    # At 00:00 of day 3 the trailing 24 h are exactly day 2 (today's bucket is still empty then,
    # as the day-3 events lie after now).
    p_midnight = profile_of(*[("login", at(2, 20), {})] * 4)
    assert count(features(p_midnight, at(3, 0))["events_1d"]) == pytest.approx(4.0)
    # At noon: today's 2 plus half of yesterday's 4.
    assert count(features(p, at(3, 12))["events_1d"]) == pytest.approx(2 + 0.5 * 4)
    # At 00:00 of day 4: today is empty, yesterday (day 3) counts fully, day 2 has left the window.
    assert count(features(p, at(4, 0))["events_1d"]) == pytest.approx(2.0)


def test_seven_and_28_day_windows_and_trend() -> None:
    # One event a day on days 0..13, then nothing: at 00:00 of day 14 the last 7 days are days
    # 7..13 (7 events) and the previous 7 are days 0..6 (7 events).
    p = profile_of(*[("login", at(d, 9), {}) for d in range(14)])
    f = features(p, at(14, 0))
    assert count(f["events_7d"]) == pytest.approx(7.0)
    assert count(f["events_28d"]) == pytest.approx(14.0)
    assert f["freq_trend_7d"] == pytest.approx(0.0)
    assert f["active_days_7d"] == pytest.approx(6 / 7)  # today (day 14) is not active yet
    assert f["active_days_28d"] == pytest.approx(14 / 28)
    # Three days later the recent week has 4 events (days 10..13) against 7 before.
    g = features(p, at(17, 0))
    assert count(g["events_7d"]) == pytest.approx(4.0)
    assert g["freq_trend_7d"] == pytest.approx((4 - 7) / (4 + 7 + 1))


def test_windows_ignore_days_after_now() -> None:
    p = profile_of(("login", at(1, 9), {}), ("login", at(5, 9), {}))
    assert count(features(p, at(2, 0))["events_7d"]) == pytest.approx(1.0)


def test_scores_durations_and_their_trend() -> None:
    p = profile_of(
        ("quiz_complete", at(0, 9), {"score": 90, "duration_s": 600}),
        ("quiz_complete", at(1, 9), {"score": 80, "duration_s": 1200}),
        ("quiz_complete", at(10, 9), {"score": 50, "duration_s": 300}),
    )
    f = features(p, at(11, 0))
    assert f["score_mean"] == pytest.approx((90 + 80 + 50) / 3 / 100)
    # Last 7 days (days 5..11): 50; days 8..28 back (days -17..4): mean 85.
    assert f["score_trend"] == pytest.approx((50 - 85) / 100)
    assert f["session_mean_min"] == pytest.approx(math.log1p((600 + 1200 + 300) / 3 / 60))
    empty = features(profile_of(("login", at(0), {})), at(1))
    assert (empty["score_mean"], empty["score_trend"], empty["session_mean_min"]) == (NEUTRAL_SCORE, 0.0, 0.0)


def test_bad_props_are_ignored() -> None:
    p = profile_of(("quiz_complete", at(0, 9), {"score": "high", "duration_s": True}))
    f = features(p, at(1))
    assert f["score_mean"] == NEUTRAL_SCORE and f["session_mean_min"] == 0.0
    assert count(f["events_7d"]) == pytest.approx(1.0)


def test_notifications_applications_xp_tenure_streak() -> None:
    p = profile_of(
        ("notification_opened", at(0, 8), {}),
        ("notification_opened", at(1, 8), {}),
        ("notification_clicked", at(1, 8), {}),
        ("job_apply", at(2, 8), {}),
        ("lesson_complete", at(2, 9), {}),
        ("assessment_complete", at(3, 9), {}),
    )
    f = features(p, at(4, 0))
    assert count(f["notif_opens_28d"]) == pytest.approx(2.0)
    assert count(f["notif_clicks_28d"]) == pytest.approx(1.0)
    assert count(f["applications_28d"]) == pytest.approx(1.0)
    assert count(f["xp_7d"]) == pytest.approx(50 + 100)  # approximated from the shipped rules
    assert f["tenure_log_d"] == pytest.approx(math.log1p(4 - 8 / 24))
    assert count(f["streak"]) == pytest.approx(4.0)  # days 0..3, today (4) not yet active
    assert count(features(p, at(4, 0), streak=9)["streak"]) == pytest.approx(9.0)
    assert features(p, at(6, 0))["streak"] == 0.0  # day 4 and 5 missed
    # The engine's own XP wins over the approximation.
    q = ActivityProfile()
    observe(q, event("lesson_complete", at(0, 9)), xp=65)
    assert count(features(q, at(1))["xp_7d"]) == pytest.approx(65.0)


def test_hour_concentration() -> None:
    assert hour_concentration([0] * 24) == 0.0
    assert hour_concentration([10] + [0] * 23) == pytest.approx(1.0)
    assert hour_concentration([5] * 24) == pytest.approx(0.0, abs=1e-12)
    regular = profile_of(*[("login", at(d, 19.5), {}) for d in range(10)])
    scattered = profile_of(*[("login", at(d, (d * 7) % 24), {}) for d in range(10)])
    assert features(regular, at(10))["hour_concentration"] == pytest.approx(1.0)
    assert features(scattered, at(10))["hour_concentration"] < 0.5


def test_order_tolerance_late_events_land_in_their_day() -> None:
    evs = [
        event("quiz_complete", at(d % 20, h), score=40 + d, duration_s=60 * d)
        for d, h in zip(range(60), [1, 5, 9, 13, 17, 21] * 10, strict=True)
    ]
    in_order = ActivityProfile()
    for e in sorted(evs, key=lambda e: e.ts_ms):
        observe(in_order, e)
    shuffled = ActivityProfile()
    rng = random.Random(3)
    mixed = evs[:]
    rng.shuffle(mixed)
    for e in mixed:
        observe(shuffled, e)
    assert shuffled.to_dict() == in_order.to_dict()
    assert features(shuffled, at(21, 6)) == features(in_order, at(21, 6))


def test_late_event_older_than_newest_day() -> None:
    p = profile_of(("login", at(10, 9), {}), ("login", at(8, 9), {}))
    assert sorted(p.days) == [(DAY0 // DAY_MS) + 8, (DAY0 // DAY_MS) + 10]
    assert p.last_event_ms == at(10, 9) and p.first_seen_ms == at(8, 9)


def test_bounded_size() -> None:
    p = ActivityProfile()
    for d in range(400):
        for h in (8, 20):
            observe(p, event("lesson_complete", at(d, h), score=70, duration_s=900))
    assert len(p.days) == WINDOW_DAYS
    assert min(p.days) == (DAY0 // DAY_MS) + 400 - WINDOW_DAYS
    assert sum(p.hours) <= HOUR_CAP
    # An event older than the window only moves first_seen.
    observe(p, event("login", at(-5, 9)))
    assert len(p.days) == WINDOW_DAYS and p.first_seen_ms == at(-5, 9)
    assert len(json.dumps(p.to_dict())) < 8_000


def test_to_dict_round_trip() -> None:
    p = profile_of(
        ("quiz_complete", at(0, 9), {"score": 75, "duration_s": 600}),
        ("notification_clicked", at(2, 7), {}),
        ("job_apply", at(3, 12), {}),
    )
    data = json.loads(json.dumps(p.to_dict()))
    back = ActivityProfile.from_dict(data)
    assert back == p
    assert features(back, at(4, 3)) == features(p, at(4, 3))
    with pytest.raises(ValueError, match="format"):
        ActivityProfile.from_dict({**data, "v": 99})


# --- the single-pass `features` against the straightforward per-window definition ----------


def _ref_window(profile: ActivityProfile, now_ms: int, n_days: int, col: int, skip_days: int = 0) -> float:
    """Sum of column `col` over the sliding window (now - (skip+n) days, now - skip days]."""
    today = now_ms // DAY_MS
    elapsed = (now_ms - today * DAY_MS) / DAY_MS  # fraction of today already past
    days = profile.days
    total = 0.0
    # Whole days inside the window, and the partial days at each end weighted by their overlap.
    start = today - skip_days
    for k in range(n_days + 1):
        row = days.get(start - k)
        if row is None:
            continue
        if k == 0:
            weight = 1.0 if skip_days == 0 else elapsed
        elif k == n_days:
            weight = 1.0 - elapsed
        else:
            weight = 1.0
        total += weight * row[col]
    return total


def _ref_active_days(profile: ActivityProfile, today: int, n_days: int) -> int:
    return sum(1 for d in range(today - n_days + 1, today + 1) if d in profile.days)


def _ref_streak_guess(profile: ActivityProfile, today: int) -> int:
    day = today if today in profile.days else today - 1
    streak = 0
    while day in profile.days:
        streak += 1
        day -= 1
    return streak


def _ref_mean(
    profile: ActivityProfile, today: int, lo: int, hi: int, sum_col: int, n_col: int
) -> float | None:
    """Mean of a column over whole days today-hi .. today-lo (both inclusive)."""
    total = count = 0.0
    for d in range(today - hi, today - lo + 1):
        row = profile.days.get(d)
        if row is not None:
            total += row[sum_col]
            count += row[n_col]
    return total / count if count else None


def _reference_features(profile: ActivityProfile, now_ms: int) -> dict[str, float]:
    from models.risk_features import _APPS, _CLICKS, _DUR_N, _DUR_SUM, _N, _OPENS, _SCORE_N, _SCORE_SUM, _XP

    today = now_ms // DAY_MS
    e7 = _ref_window(profile, now_ms, 7, _N)
    e7_prev = _ref_window(profile, now_ms, 7, _N, skip_days=7)
    dur_n = _ref_window(profile, now_ms, 28, _DUR_N)
    s_all = _ref_mean(profile, today, 0, 27, _SCORE_SUM, _SCORE_N)
    s_recent = _ref_mean(profile, today, 0, 6, _SCORE_SUM, _SCORE_N)
    s_before = _ref_mean(profile, today, 7, 27, _SCORE_SUM, _SCORE_N)
    return {
        "events_1d": math.log1p(_ref_window(profile, now_ms, 1, _N)),
        "events_7d": math.log1p(e7),
        "events_28d": math.log1p(_ref_window(profile, now_ms, 28, _N)),
        "active_days_7d": _ref_active_days(profile, today, 7) / 7.0,
        "active_days_28d": _ref_active_days(profile, today, 28) / 28.0,
        "freq_trend_7d": (e7 - e7_prev) / (e7 + e7_prev + 1.0),
        "session_mean_min": math.log1p(_ref_window(profile, now_ms, 28, _DUR_SUM) / dur_n / 60.0)
        if dur_n > 0
        else 0.0,
        "score_mean": NEUTRAL_SCORE if s_all is None else s_all / 100.0,
        "score_trend": 0.0 if s_recent is None or s_before is None else (s_recent - s_before) / 100.0,
        "streak": math.log1p(_ref_streak_guess(profile, today)),
        "xp_7d": math.log1p(_ref_window(profile, now_ms, 7, _XP)),
        "applications_28d": math.log1p(_ref_window(profile, now_ms, 28, _APPS)),
        "notif_opens_28d": math.log1p(_ref_window(profile, now_ms, 28, _OPENS)),
        "notif_clicks_28d": math.log1p(_ref_window(profile, now_ms, 28, _CLICKS)),
    }


@pytest.mark.parametrize("seed", range(25))
def test_single_pass_features_equal_the_per_window_definition(seed: int) -> None:
    rng = random.Random(seed)
    profile = ActivityProfile()
    start = 1_790_000_000_000
    types = ["lesson_complete", "job_apply", "notification_opened", "notification_clicked", "login"]
    for i in range(rng.randint(0, 300)):
        ts = start + rng.randint(0, 60 * DAY_MS)
        props: dict[str, object] = {}
        if rng.random() < 0.5:
            props["score"] = rng.randint(0, 100)
        if rng.random() < 0.5:
            props["duration_s"] = rng.randint(0, 3600)
        event = BehaviorEvent(f"e{i}", "u", rng.choice(types), ts, None, None, None, props)
        observe(profile, event, xp=rng.choice([None, 10.0, 50.0]))
    for _ in range(5):
        now = start + rng.randint(0, 70 * DAY_MS)
        fast = features(profile, now)
        for name, value in _reference_features(profile, now).items():
            assert fast[name] == pytest.approx(value, abs=1e-12), (name, now)


def test_missed_days_counts_the_users_usual_days_by_weekday() -> None:
    # Four weeks of Saturdays and Sundays (DAY0 is a Monday: days 5, 6, 12, 13, ...).
    weekender = profile_of(
        *[("lesson_complete", at(d, 10), {}) for w in range(4) for d in (7 * w + 5, 7 * w + 6)]
    )
    daily = profile_of(*[("lesson_complete", at(d, 10), {}) for d in range(28)])
    thursday = at(31, 12)  # four days after the weekender's last Sunday, three after the daily's last day
    assert features(weekender, thursday)["missed_days"] < 0.5  # weekdays: nothing missed
    # 3.5 days of silence at the rate of the last 28 days (25 active of 28: the quiet ones count).
    assert 2.5 < features(daily, thursday)["missed_days"] < 3.5
    assert features(weekender, at(34, 23.9))["missed_days"] > 1.5  # a whole weekend missed
    assert features(daily, at(27, 20))["missed_days"] == 0.0  # active today
    assert features(ActivityProfile(), thursday)["missed_days"] == 0.0
    assert features(daily, at(200))["missed_days"] <= WINDOW_DAYS
