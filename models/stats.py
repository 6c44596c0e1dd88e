"""Student statistics (``GET /v1/users/{id}/stats``; definitions in docs/stats.md).

Two halves, both pure:

* the **fold side**: ``WeeklyStats``, a bounded per-user series kept in the engagement state
  (``UserState.weekly``), fed once per applied event by ``models.gamification.apply_event`` with
  values that fold already validated (the score, the practice seconds, the XP the event earned);
* the **read side**: ``stats_document`` (what the worker writes to Redis next to the user's view)
  and ``stats_view`` (what the API answers, for a range and the reader's clock).

Weeks are **ISO weeks on UTC boundaries**, the weekly leaderboard's: a week key never depends on
the user's time zone, so a profile's zone change cannot move history between weeks (the same rule
the streak follows: zone changes apply forward only), and the daily XP cap's UTC day always lies
inside one week. Every field of a week is a sum, a maximum or ``min(cap, sum)``, so the same set
of events gives the same series in any order; duplicates never reach it (the fold dedups first).

This module imports nothing of ``models.gamification`` (which imports it): it sees the state's
parts it needs as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from models.events import format_ts
from models.leaderboard import bucket
from models.streaks import local_day
from models.time_units import DAY_MS, SECOND_MS, WEEK_MS

#: Weeks kept back from the newest week (inclusive): a year, the longest range shown.
WEEKS_KEPT = 52
#: Scores outside [0, MAX_STAT_SCORE] are not a session's score; they are left out of statistics.
MAX_STAT_SCORE = 100
#: A week holds at most this much practice: overlapping or inflated durations cannot claim more.
WEEK_S = WEEK_MS // SECOND_MS
#: The time-range selector: name -> weeks shown (the current UTC week and those before it).
RANGES = {"4w": 4, "12w": 12, "26w": 26, "52w": 52}
DEFAULT_RANGE = "12w"
#: Improvement compares the average score of the last IMPROVEMENT_WEEKS weeks with the ones before.
IMPROVEMENT_WEEKS = 4
#: Scored sessions each side of the improvement comparison needs, else it is null.
MIN_IMPROVEMENT_SESSIONS = 3
#: Scored sessions (all time) before a student enters the percentile ranking.
MIN_RANKED_SESSIONS = 3
#: Sessions of a category before its mean score says anything about the user: before it can be a
#: strength or a weakness here, or the weakest category a nudge suggests (models/gamification.py).
MIN_CATEGORY_SESSIONS = 2
#: At most this many strengths and as many weaknesses are named.
MAX_NAMED_CATEGORIES = 3
#: The encoding's format number (first item of ``WeeklyStats.encode``).
_FORMAT = 1
_TOTAL_FIELDS = 4  # sessions, score_sum, best, practice_s
_WEEK_FIELDS = 6  # week delta, sessions, score_sum, best, practice_s, xp
# Offsets in a week row [sessions, score_sum, best, practice_s, xp] and in the total
# [sessions, score_sum, best, practice_s].
SESSIONS, SCORE_SUM, BEST, PRACTICE = 0, 1, 2, 3
XP = 4


def week_of(ts_ms: int) -> int:
    """The UTC ISO week of an instant, as a number: weeks since Monday 0001-01-01 (day ordinal 1),
    so consecutive weeks are consecutive numbers, across years too."""
    return (local_day(ts_ms, "UTC") - 1) // 7


def week_monday(week: int) -> date:
    return date.fromordinal(week * 7 + 1)


def week_label(week: int) -> str:
    """ "2026-W49", the weekly leaderboard's bucket name for the same week."""
    return bucket("weekly", (week * 7 + 1 - local_day(0, "UTC")) * DAY_MS)


def valid_score(score: float | None) -> int | None:
    """A session's score as statistics count it: finite (the caller checked) and in [0, 100],
    rounded to a whole point like the category totals; anything else is no score."""
    if score is None or not 0 <= score <= MAX_STAT_SCORE:
        return None
    return round(score)


@dataclass
class WeeklyStats:
    """All-time totals and a series of at most WEEKS_KEPT UTC ISO weeks, newest-relative.

    ``weeks``: week number -> [sessions, score_sum, best, practice_s, xp]; ``total``: [sessions,
    score_sum, best, practice_s] over every event counted. An event whose week is older than the
    kept weeks is not counted at all (with the shipped 7-day dedup window that cannot happen: the
    fold refuses it as too_late first), so what is kept does not depend on arrival order.
    """

    weeks: dict[int, list[int]] = field(default_factory=dict)
    total: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def __bool__(self) -> bool:
        return bool(self.weeks)

    def record(self, ts_ms: int, score: float | None, practice_s: int, xp: int) -> None:
        """Count one applied event: its score (None or out of range: not a scored session), its
        practice seconds (validated and clamped by the fold) and the XP it earned."""
        points = valid_score(score)
        if points is None and practice_s <= 0 and xp <= 0:
            return
        week = week_of(ts_ms)
        row = self.weeks.get(week)
        if row is None:
            # Only a new week costs a look at the others (most events fall in an existing week).
            newest = max(self.weeks, default=week)
            if week <= newest - WEEKS_KEPT:
                return
            row = self.weeks[week] = [0, 0, 0, 0, 0]
            if week > newest:
                for old in [w for w in self.weeks if w <= week - WEEKS_KEPT]:
                    del self.weeks[old]
        total = self.total
        if points is not None:
            row[SESSIONS] += 1
            row[SCORE_SUM] += points
            total[SESSIONS] += 1
            total[SCORE_SUM] += points
            if points > row[BEST]:
                row[BEST] = points
            if points > total[BEST]:
                total[BEST] = points
        if practice_s > 0:
            # min(cap, Σ) whatever the order: the increment is what the cap lets through.
            added = min(WEEK_S, row[PRACTICE] + practice_s) - row[PRACTICE]
            row[PRACTICE] += added
            total[PRACTICE] += added
        if xp > 0:
            row[XP] += xp

    def encode(self) -> list[int]:
        """A flat list of ints (the state is written to a changelog on every update): the format,
        the total, then per week (oldest first) the gap from the previous week, then its row.
        A year of weekly activity is ~52 × 6 small numbers, about 1 KB of JSON."""
        out = [_FORMAT, *self.total]
        previous = 0
        for week in sorted(self.weeks):
            out += [week - previous, *self.weeks[week]]
            previous = week
        return out

    @classmethod
    def decode(cls, data: object) -> WeeklyStats:
        """Reads ``encode``'s list; None (a state written before statistics existed) is empty."""
        if data is None:
            return cls()
        if (
            not isinstance(data, list)
            or len(data) < 1 + _TOTAL_FIELDS
            or data[0] != _FORMAT
            or (len(data) - 1 - _TOTAL_FIELDS) % _WEEK_FIELDS
            or (len(data) - 1 - _TOTAL_FIELDS) // _WEEK_FIELDS > WEEKS_KEPT
            or not all(type(n) is int and n >= 0 for n in data)
        ):
            raise ValueError("malformed weekly statistics")
        weeks: dict[int, list[int]] = {}
        week = 0
        for i in range(1 + _TOTAL_FIELDS, len(data), _WEEK_FIELDS):
            week += data[i]
            weeks[week] = list(data[i + 1 : i + _WEEK_FIELDS])
        return cls(weeks, list(data[1 : 1 + _TOTAL_FIELDS]))

    def ranking_value(self) -> float | None:
        """The value the percentile ranks students by: the all-time average score, once the student
        has MIN_RANKED_SESSIONS scored sessions (one lucky session does not top the ranking)."""
        sessions, score_sum = self.total[SESSIONS], self.total[SCORE_SUM]
        return score_sum / sessions if sessions >= MIN_RANKED_SESSIONS else None


# ---------------------------------------------------------------------------------------------
# The serving document (worker side)


def stats_document(
    user_id: str, weekly: WeeklyStats, category_stats: dict[str, list[int]], xp: int, updated_at_ms: int
) -> dict[str, Any]:
    """What the worker writes to ``keys.user_stats``: the state's parts statistics are built from,
    bounded (52 weeks, the state's ≤ 32 categories), so a read costs the same for every user."""
    return {
        "user_id": user_id,
        "weekly": weekly.encode(),
        "categories": {name: list(stats[:3]) for name, stats in category_stats.items()},
        "xp": xp,
        "updated_at": format_ts(updated_at_ms) if updated_at_ms else None,
    }


# ---------------------------------------------------------------------------------------------
# The answer (API side)


def parse_range(value: str | None) -> tuple[str, int]:
    """The range selector's name and weeks; ValueError names the accepted values."""
    name = DEFAULT_RANGE if value is None else value
    weeks = RANGES.get(name)
    if weeks is None:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    return name, weeks


@dataclass(frozen=True)
class Rank:
    """The student's place in the ranking: how many ranked students are strictly below them (None
    while they are not ranked themselves), of how many ranked in all (themselves included)."""

    below: int | None
    ranked: int


def _average(sessions: int, score_sum: int) -> float | None:
    return round(score_sum / sessions, 1) if sessions else None


def _summary(rows: list[list[int]]) -> dict[str, Any]:
    sessions = sum(r[SESSIONS] for r in rows)
    return {
        "sessions": sessions,
        "average_score": _average(sessions, sum(r[SCORE_SUM] for r in rows)),
        "best_score": max((r[BEST] for r in rows if r[SESSIONS]), default=None),
        "practice_s": sum(r[PRACTICE] for r in rows),
        "xp": sum(r[XP] for r in rows),
    }


def _improvement(weekly: WeeklyStats, current: int) -> dict[str, Any]:
    def side(last: int) -> tuple[int, int]:
        rows = [weekly.weeks.get(w) for w in range(last - IMPROVEMENT_WEEKS + 1, last + 1)]
        return sum(r[SESSIONS] for r in rows if r), sum(r[SCORE_SUM] for r in rows if r)

    (recent_n, recent_sum), (before_n, before_sum) = side(current), side(current - IMPROVEMENT_WEEKS)
    enough = min(recent_n, before_n) >= MIN_IMPROVEMENT_SESSIONS
    return {
        "points": round(recent_sum / recent_n - before_sum / before_n, 1) if enough else None,
        "recent_average": _average(recent_n, recent_sum),
        "recent_sessions": recent_n,
        "previous_average": _average(before_n, before_sum),
        "previous_sessions": before_n,
    }


def _categories(raw: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Every category with its totals, best average first (ties by name). The fold's category
    totals clamp scores to ±1e6 only; an average is shown within [0, 100] whatever was sent."""
    ranked: list[tuple[float, str, int, int]] = []
    for name, (sessions, score_sum, high) in raw.items():
        if sessions > 0:
            average = round(min(max(score_sum / sessions, 0.0), float(MAX_STAT_SCORE)), 1)
            ranked.append((average, name, sessions, high))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    return [
        {"category": name, "sessions": sessions, "average_score": average, "high_scores": high}
        for average, name, sessions, high in ranked
    ]


def _strengths_and_weaknesses(categories: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Of the categories with MIN_CATEGORY_SESSIONS sessions, ranked best average first: the
    strengths are the first ⌈n/2⌉ (at most 3), the weaknesses the last ⌊n/2⌋ (at most 3, weakest
    first), so a category is never both and a single one is a strength."""
    ranked = [c["category"] for c in categories if c["sessions"] >= MIN_CATEGORY_SESSIONS]
    n_strong = min(MAX_NAMED_CATEGORIES, (len(ranked) + 1) // 2)
    n_weak = min(MAX_NAMED_CATEGORIES, len(ranked) // 2)
    return ranked[:n_strong], ranked[::-1][:n_weak]


def stats_view(document: dict[str, Any], range_name: str, now_ms: int, rank: Rank) -> dict[str, Any]:
    """The ``GET /v1/users/{id}/stats`` body: ``document`` as ``stats_document`` wrote it, the
    range as ``parse_range`` read it, weeks counted back from the reader's current UTC week.
    Bounded work: at most 52 weeks and 32 categories, whatever the user sent."""
    weekly = WeeklyStats.decode(document.get("weekly"))
    weeks_shown = RANGES[range_name]
    current = week_of(now_ms)
    shown = range(current - weeks_shown + 1, current + 1)
    empty = [0, 0, 0, 0, 0]
    series = []
    for week in shown:
        row = weekly.weeks.get(week, empty)
        series.append(
            {
                "week": week_label(week),
                "start": week_monday(week).isoformat(),
                "sessions": row[SESSIONS],
                "average_score": _average(row[SESSIONS], row[SCORE_SUM]),
                "best_score": row[BEST] if row[SESSIONS] else None,
                "practice_s": row[PRACTICE],
                "xp": row[XP],
            }
        )
    total = weekly.total
    categories = _categories(document.get("categories") or {})
    strengths, weaknesses = _strengths_and_weaknesses(categories)
    return {
        "user_id": document["user_id"],
        "range": range_name,
        "overall": {
            "sessions": total[SESSIONS],
            "average_score": _average(total[SESSIONS], total[SCORE_SUM]),
            "best_score": total[BEST] if total[SESSIONS] else None,
            "practice_s": total[PRACTICE],
            "xp": document.get("xp", 0),
        },
        "in_range": _summary([weekly.weeks.get(w, empty) for w in shown]),
        "improvement": _improvement(weekly, current),
        "categories": categories,
        "strengths": strengths,
        "weaknesses": weaknesses,
        "percentile": {
            "basis": "average_score",
            "value": None
            if rank.below is None or not rank.ranked
            else round(100 * rank.below / rank.ranked, 1),
            "ranked_students": rank.ranked,
            "min_sessions": MIN_RANKED_SESSIONS,
        },
        "weekly": series,
        "updated_at": document.get("updated_at"),
    }
