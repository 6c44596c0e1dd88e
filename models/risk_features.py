"""Per-user drop-off features, kept incrementally from behaviour events in EVENT time.

`ActivityProfile` is the compact state one user needs: a sparse map of UTC-day buckets for the
last `WINDOW_DAYS` (56) days, a 24-slot hour-of-day histogram and three instants. It never keeps
raw events, so its size is bounded (at most 56 day rows of 10 numbers, 24 hour counts) whatever
the user does, and it serialises to a small JSON object (`to_dict`/`from_dict`) for a changelog
table. `observe` folds one event in; `features(profile, now_ms)` reads the fixed feature vector.

Time: everything is event time. `now_ms` is the stream's clock (the engine's watermark or the
event being processed), never the wall clock, so a replay computes what live computed. Day
buckets are UTC days (`ts // 86_400_000`): the model only needs a consistent calendar, and a
timezone change on the profile must not rewrite history. Windows slide: a window of N days at
`now` is today's bucket (partial) plus the previous N-1 whole days plus the fraction of day N
that still lies inside `[now - N days, now]`, assuming that day's events were spread evenly. So
`events_1d` at 12:00 is today's events plus half of yesterday's, and at 00:00 exactly
yesterday's: no cliff at midnight, O(N) to read, and exact at day boundaries.

Order tolerance: an event older than the newest bucket still lands in its own day (late events
are expected); an event older than the 56-day horizon only moves `first_seen_ms` and the hour
histogram. Duplicates are the engine's business (it dedups by `event_id` before calling here).

Features kept (names in `FEATURE_NAMES`; counts are `log1p`-compressed because engagement counts
are heavy-tailed and the model on top is linear, so a power user must not dominate the scale):

- `recency_log_h`: log1p(hours since the last event), and `recency_d`: days since the last event
  (capped at 56). The strongest drop-off signal, twice on purpose: the log separates "an hour
  ago" from "yesterday", the linear term carries the steady rise of risk over a quiet week,
  which the log flattens (the benchmark measured +0.01 AUC for the linear term).
- `events_1d`, `events_7d`, `events_28d`: log1p(event count) over sliding 1/7/28-day windows;
  short and long windows together let a linear model see acceleration and habit.
- `active_days_7d`, `active_days_28d`: distinct active UTC days (today included), as a fraction of
  the window. Robust to one binge day that event counts overweight.
- `freq_trend_7d`: (last 7 days - previous 7 days) / (sum + 1) in [-1, 1]: declining frequency.
- `session_mean_min`: log1p(mean `props.duration_s` in minutes) over 28 days (0 when none).
- `score_mean`: mean `props.score` / 100 over 28 days; 0.75 (a neutral prior near the
  platform's mean) when the user has no scored activity, so "no scores" is not read as "failing".
- `score_trend`: mean score of the last 7 days minus that of days 8-28, / 100 (0 unless both
  periods have scores): falling scores precede giving up.
- `streak`: log1p(current streak), passed in by the engine (`models.streaks` knows freezes and
  the user's timezone); without it, consecutive active UTC days ending today or yesterday.
- `xp_7d`: log1p(XP gained over 7 days). The engine passes the XP it awarded to `observe`; when
  it does not, XP is approximated from the shipped rules' base amounts (`XP_APPROX`).
- `tenure_log_d`: log1p(days since first seen): new users churn far more than settled ones.
- `applications_28d`: log1p(job applications over 28 days) (`APPLICATION_TYPES`): a career
  goal in motion keeps users around.
- `notif_opens_28d`, `notif_clicks_28d`: log1p(`notification_opened` / `notification_clicked`
  over 28 days): responsiveness to nudges, and what interventions can act on.
- `hour_concentration`: 1 - normalised entropy of the hour-of-day histogram (0 = activity spread
  uniformly over the day, 1 = always the same hour). Regular study times mark a habit; the
  histogram is halved whenever it exceeds `HOUR_CAP` events, so it forgets old habits
  geometrically and stays bounded. Below `MIN_HOUR_EVENTS` events it reads 0 (unknown).
- `missed_days`: how many of the user's usual active days have passed since their last event,
  by day of the week (`_missed_days`): silence in the user's own rhythm, so a weekend-only
  student is not "three days quiet" every Wednesday. Regularity of days, which the MOOC
  drop-out work (KDD Cup 2015 and after) found predictive; it is also the `silence` candidate
  of models.risk.

Dropped on purpose: device/platform (not behaviour, and one-hot columns would dilute a small linear
model), per-type counts beyond the ones above (most are collinear with `events_*`), and raw
timestamps of recent events (unbounded, and recency plus windows summarise them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.events import BehaviorEvent
from models.time_units import DAY_MS, HOUR_MS

WINDOW_DAYS = 56
HOUR_CAP = 512
#: A session's `props.duration_s` counts for at most a day: longer is not a session, and a
#: producer's 1e308 would overflow a day's sum to infinity, which JSON cannot carry (orjson
#: writes null), so the user's state could no longer be read back from its changelog.
MAX_DURATION_S = 86_400.0
#: XP counted per event, for the same reason (the engine's awards are far below it).
MAX_XP = 1_000_000.0
MIN_HOUR_EVENTS = 4
NEUTRAL_SCORE = 0.75
FORMAT = 1

APPLICATION_TYPES = frozenset({"job_apply", "job_application", "application_submitted"})
NOTIFICATION_OPENED = "notification_opened"
NOTIFICATION_CLICKED = "notification_clicked"
_FEEDBACK_TYPES = frozenset({NOTIFICATION_OPENED, NOTIFICATION_CLICKED})
#: The ``via`` of the opens and clicks the tracking links record (models/delivery.py).
TRACKED_VIA = frozenset({"email", "push", "sms"})
# Base XP of the shipped rules (CONTRACT §6), used only when the engine does not pass the XP it awarded.
XP_APPROX: dict[str, float] = {
    "lesson_complete": 50.0,
    "interview_session_complete": 50.0,
    "assessment_complete": 100.0,
    "daily_challenge_complete": 25.0,
}

FEATURE_NAMES: tuple[str, ...] = (
    "recency_log_h",
    "recency_d",
    "events_1d",
    "events_7d",
    "events_28d",
    "active_days_7d",
    "active_days_28d",
    "freq_trend_7d",
    "session_mean_min",
    "score_mean",
    "score_trend",
    "streak",
    "xp_7d",
    "tenure_log_d",
    "applications_28d",
    "notif_opens_28d",
    "notif_clicks_28d",
    "hour_concentration",
    "missed_days",
)

# Columns of one day row.
_N, _DUR_SUM, _DUR_N, _SCORE_SUM, _SCORE_N, _APPS, _OPENS, _CLICKS, _XP = range(9)
_ROW = 9


@dataclass(slots=True)
class ActivityProfile:
    """One user's bounded activity summary; mutated in place by `observe`."""

    first_seen_ms: int | None = None
    last_event_ms: int | None = None
    # UTC day number -> [events, duration_s sum, duration count, score sum, score count,
    # applications, notification opens, notification clicks, xp]; only the last WINDOW_DAYS days.
    days: dict[int, list[float]] = field(default_factory=dict)
    hours: list[int] = field(default_factory=lambda: [0] * 24)

    @property
    def newest_day(self) -> int | None:
        return None if self.last_event_ms is None else self.last_event_ms // DAY_MS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (ints and floats only); day rows as lists, oldest first."""
        return {
            "v": FORMAT,
            "first": self.first_seen_ms,
            "last": self.last_event_ms,
            "days": [[day, *row] for day, row in sorted(self.days.items())],
            "hours": list(self.hours),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActivityProfile:
        if data.get("v") != FORMAT:
            raise ValueError(f"unknown ActivityProfile format {data.get('v')!r}; expected {FORMAT}")
        hours = [int(h) for h in data["hours"]]
        if len(hours) != 24:
            raise ValueError("ActivityProfile.hours must have 24 entries")
        days: dict[int, list[float]] = {}
        for row in data["days"]:
            if len(row) != _ROW + 1:
                raise ValueError(f"ActivityProfile day rows have {_ROW + 1} entries, got {len(row)}")
            days[int(row[0])] = [float(v) for v in row[1:]]
        if data["last"] is not None:  # the invariant `observe` keeps: only days inside the window
            oldest_kept = data["last"] // DAY_MS - WINDOW_DAYS + 1
            days = {d: row for d, row in days.items() if d >= oldest_kept}
        return cls(first_seen_ms=data["first"], last_event_ms=data["last"], days=days, hours=hours)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def observe(profile: ActivityProfile, event: BehaviorEvent, xp: float | None = None) -> ActivityProfile:
    """Fold one event into `profile` (in place; returned for chaining).

    `xp` is the XP the engine awarded for this event; None approximates it from `XP_APPROX`.
    Late events land in their own day; events older than the 56-day horizon (relative to the
    newest event seen) only update `first_seen_ms` and the hour histogram.
    """
    if feedback_only(event):
        _count_feedback(profile, event)
        return profile
    ts = event.ts_ms
    profile.first_seen_ms = ts if profile.first_seen_ms is None else min(profile.first_seen_ms, ts)
    previous = profile.last_event_ms
    last = ts if previous is None else max(previous, ts)
    profile.last_event_ms = last
    newest = last // DAY_MS
    oldest_kept = newest - WINDOW_DAYS + 1
    # Days enter only inside the window, so stale ones appear only when the window moves.
    moved = previous is None or previous // DAY_MS != newest
    if moved and profile.days and min(profile.days) < oldest_kept:
        for stale in [d for d in profile.days if d < oldest_kept]:
            del profile.days[stale]

    hours = profile.hours
    hours[(ts // HOUR_MS) % 24] += 1
    if sum(hours) > HOUR_CAP:
        profile.hours = [h // 2 for h in hours]

    day = ts // DAY_MS
    if day < oldest_kept:
        return profile
    row = profile.days.get(day)
    if row is None:
        row = profile.days[day] = [0.0] * _ROW
    row[_N] += 1
    props = event.props
    duration = _number(props.get("duration_s"))
    if duration is not None and duration >= 0:
        row[_DUR_SUM] += min(duration, MAX_DURATION_S)
        row[_DUR_N] += 1
    score = _number(props.get("score"))
    if score is not None:
        row[_SCORE_SUM] += min(max(score, 0.0), 100.0)
        row[_SCORE_N] += 1
    if event.type in APPLICATION_TYPES:
        row[_APPS] += 1
    elif event.type == NOTIFICATION_OPENED:
        row[_OPENS] += 1
    elif event.type == NOTIFICATION_CLICKED:
        row[_CLICKS] += 1
    row[_XP] += XP_APPROX.get(event.type, 0.0) if xp is None else min(max(xp, 0.0), MAX_XP)
    return profile


def feedback_only(event: BehaviorEvent) -> bool:
    """An open or click of a mail, push or SMS recorded by the engine's tracking links: the
    notification's feedback, not the user's activity. A mail scanner or a mail app's privacy
    prefetch loads those links too, so they neither make a user look active (recency, active
    days, the hour habit) nor prove a pending label retained; only the `notif_*` counts see them.
    An open in the app (no ``via``) is the user in the app, and counts as activity."""
    return event.type in _FEEDBACK_TYPES and event.props.get("via") in TRACKED_VIA


def _count_feedback(profile: ActivityProfile, event: BehaviorEvent) -> None:
    last = profile.last_event_ms
    if last is None:
        return  # no activity yet: no window for a count to land in
    day = event.ts_ms // DAY_MS
    if day <= last // DAY_MS - WINDOW_DAYS:
        return  # older than the window the activity keeps
    # Feedback usually comes after the last activity (a quiet user opening a nudge): its day
    # moves the window's end as activity would, so the rows stay within one window.
    oldest_kept = day - WINDOW_DAYS + 1
    for stale in [d for d in profile.days if d < oldest_kept]:
        del profile.days[stale]
    row = profile.days.get(day)
    if row is None:
        row = profile.days[day] = [0.0] * _ROW
    row[_OPENS if event.type == NOTIFICATION_OPENED else _CLICKS] += 1


def _weight(age: int, n_days: int, skip_days: int, elapsed: float) -> float:
    """Weight of the day `age` days before today in the sliding window
    (now - (skip + n) days, now - skip days]: whole days 1, the partial days at each end by
    their overlap with the window (today is `elapsed` of a day old)."""
    k = age - skip_days
    if k < 0 or k > n_days:
        return 0.0
    if k == 0:
        return 1.0 if skip_days == 0 else elapsed
    return 1.0 - elapsed if k == n_days else 1.0


def _streak_guess(profile: ActivityProfile, today: int) -> int:
    days = profile.days

    def active(day: int) -> bool:  # a row of notification feedback alone is no activity
        row = days.get(day)
        return row is not None and row[_N] > 0

    day = today if active(today) else today - 1
    streak = 0
    while active(day):
        streak += 1
        day -= 1
    return streak


def hour_concentration(hours: list[int]) -> float:
    """1 - H(p)/log(24) of the hour histogram; 0 below MIN_HOUR_EVENTS events."""
    total = sum(hours)
    if total < MIN_HOUR_EVENTS:
        return 0.0
    entropy = -sum((h / total) * math.log(h / total) for h in hours if h)
    return 1.0 - entropy / math.log(24)


def features(profile: ActivityProfile, now_ms: int, streak: int | None = None) -> dict[str, float]:
    """The fixed feature vector (keys = FEATURE_NAMES) of `profile` at event time `now_ms`.

    Days after `now_ms` are ignored, so a profile read "in the past" (a late sweep) sees only
    what had happened by then. `streak` is the engine's current streak; None approximates it.
    One pass over the day rows (at most 56) computes every window: this runs for every score.
    """
    today = now_ms // DAY_MS
    elapsed = (now_ms - today * DAY_MS) / DAY_MS  # fraction of today already past
    e1 = e7 = e7_prev = e28 = dur_sum = dur_n = xp7 = apps = opens = clicks = 0.0
    active7 = active28 = 0
    score_all = [0.0, 0.0]
    score_recent = [0.0, 0.0]
    score_before = [0.0, 0.0]
    # Active days per day of the week over the 28 whole days before today (`missed_days`).
    weekday_active = [0] * 7
    for day, row in profile.days.items():
        age = today - day
        if age < 0 or age > 28:
            continue
        n = row[_N]
        if 1 <= age <= 28 and n > 0:
            weekday_active[day % 7] += 1
        w1 = _weight(age, 1, 0, elapsed)
        w7 = _weight(age, 7, 0, elapsed)
        w28 = _weight(age, 28, 0, elapsed)
        e1 += w1 * n
        e7 += w7 * n
        e7_prev += _weight(age, 7, 7, elapsed) * n
        e28 += w28 * n
        dur_sum += w28 * row[_DUR_SUM]
        dur_n += w28 * row[_DUR_N]
        xp7 += w7 * row[_XP]
        apps += w28 * row[_APPS]
        opens += w28 * row[_OPENS]
        clicks += w28 * row[_CLICKS]
        if age <= 27:
            # A day with notification feedback alone (`feedback_only`) is not an active day.
            active28 += n > 0
            score_all[0] += row[_SCORE_SUM]
            score_all[1] += row[_SCORE_N]
            bucket = score_recent if age <= 6 else score_before
            bucket[0] += row[_SCORE_SUM]
            bucket[1] += row[_SCORE_N]
            if age <= 6:
                active7 += n > 0
    last = profile.last_event_ms
    hours_since = 24.0 * WINDOW_DAYS if last is None else max(0.0, (now_ms - last) / HOUR_MS)
    first = profile.first_seen_ms
    tenure_days = 0.0 if first is None else max(0.0, (now_ms - first) / DAY_MS)
    score_trend = 0.0
    if score_recent[1] and score_before[1]:
        score_trend = (score_recent[0] / score_recent[1] - score_before[0] / score_before[1]) / 100.0
    current_streak = _streak_guess(profile, today) if streak is None else max(streak, 0)
    return {
        "recency_log_h": math.log1p(hours_since),
        "recency_d": min(hours_since / 24.0, float(WINDOW_DAYS)),
        "events_1d": math.log1p(e1),
        "events_7d": math.log1p(e7),
        "events_28d": math.log1p(e28),
        "active_days_7d": active7 / 7.0,
        "active_days_28d": active28 / 28.0,
        "freq_trend_7d": (e7 - e7_prev) / (e7 + e7_prev + 1.0),
        "session_mean_min": math.log1p(dur_sum / dur_n / 60.0) if dur_n > 0 else 0.0,
        "score_mean": NEUTRAL_SCORE if not score_all[1] else score_all[0] / score_all[1] / 100.0,
        "score_trend": score_trend,
        "streak": math.log1p(current_streak),
        "xp_7d": math.log1p(xp7),
        "tenure_log_d": math.log1p(tenure_days),
        "applications_28d": math.log1p(apps),
        "notif_opens_28d": math.log1p(opens),
        "notif_clicks_28d": math.log1p(clicks),
        "hour_concentration": hour_concentration(profile.hours),
        "missed_days": _missed_days(weekday_active, today, elapsed, first, last),
    }


def _weekday_counts(start: int, end: int) -> list[int]:
    """How many days of each weekday (day % 7) lie in [start, end), in O(7): this runs per score."""
    n = max(end - start, 0)
    counts = [n // 7] * 7
    for day in range(start, start + n % 7):
        counts[day % 7] += 1
    return counts


def _missed_days(
    weekday_active: list[int], today: int, elapsed: float, first_ms: int | None, last_ms: int | None
) -> float:
    """How many of the user's usual active days have passed since their last event: the sum,
    over the days after the last event's day up to now (today by the fraction elapsed), of the
    user's rate of activity on that day of the week over the 28 whole days before today (only
    days since they were first seen count; each rate is pulled towards the user's overall rate
    by one day of evidence, so one Tuesday does not make a rule). A student who comes every
    Saturday and Sunday has missed almost nothing on a Thursday; one who comes daily has
    missed four days. Capped at `WINDOW_DAYS`."""
    if last_ms is None or first_ms is None:
        return 0.0
    last_day = last_ms // DAY_MS
    if last_day >= today:
        return 0.0
    seen_from = max(first_ms // DAY_MS, today - 28)
    span = _weekday_counts(seen_from, today)  # days of each weekday since seen (at most 28)
    total = sum(span)
    overall = sum(weekday_active) / total if total else 0.5
    rates = [(weekday_active[w] + overall) / (span[w] + 1) for w in range(7)]
    quiet = _weekday_counts(max(last_day + 1, today - WINDOW_DAYS), today)  # whole quiet days
    missed = rates[today % 7] * elapsed + sum(r * n for r, n in zip(rates, quiet, strict=True))
    return min(missed, float(WINDOW_DAYS))
