"""The live job-market pulse: what is being posted today, for how much, wanting which skills.

`MarketBook` holds every posting that can still change a pulse and answers `pulse()` for any
(location, industry) scope. It is pure (no I/O, no clock): the worker feeds it postings, calls
`evict(now)` now and then, and publishes one `pulse(now, ...)` per entry of `scopes()`.

Why it is built the way it is:

* A pulse is read far more often than the book changes (one per scope, every tick), so nothing in
  `pulse()` walks the postings. Each posting adds itself to a tally per (UTC day, scope) for its
  four scopes (all, its location, its industry, both); a pulse reads at most eight day tallies
  (today and the seven days before it) plus a deadline-sorted list per scope for the urgent ones.
* Delivery is at-least-once and out of order, so `upsert` is idempotent by job_id and an update
  subtracts exactly what the previous version added. Salaries are summed as `Fraction`s: float
  sums would leave residue after add-then-subtract and depend on arrival order.
* The book has no clock of its own: `evict(now)` advances it, and `upsert` refuses a posting that
  eviction at that time would already have dropped. A fresh book replaying history therefore
  keeps everything until its first `evict`.

Decisions the contract leaves open: a posting with unknown experience is not entry level; the
last version of a posting to arrive wins (postings carry no version); currencies are compared
upper-cased, locations and industries casefolded with surrounding blanks ignored; a deadline at
exactly `now` has passed.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

from models.events import JobPosting, format_ts
from models.leaderboard import bucket
from models.time_units import DAY_MS

BASELINE_DAYS = 7
URGENT_WITHIN_MS = 7 * DAY_MS
ENTRY_LEVEL_MAX_YEARS = 1
TOP_N = 10
TREND_THRESHOLD_PCT = 20

# (casefolded location, casefolded industry); "" stands for "any", so ("", "") is the whole market.
ScopeKey = tuple[str, str]
_Deadline = tuple[int, str]  # (deadline_ms, job_id): ties in deadline ordered by job_id
_Salary = tuple[str, Fraction]  # (currency, midpoint of the advertised range)
_K = TypeVar("_K")


def _fold(name: str | None) -> str:
    return (name or "").strip().casefold()


def _scope_keys(posting: JobPosting) -> set[ScopeKey]:
    loc, ind = _fold(posting.location), _fold(posting.industry)
    return {(loc_key, ind_key) for loc_key in {"", loc} for ind_key in {"", ind}}


def _salary(posting: JobPosting) -> _Salary | None:
    """(currency, midpoint) of the advertised range, or None when either is missing."""
    currency = (posting.currency or "").strip().upper()
    bounds = [Fraction(v) for v in (posting.salary_min, posting.salary_max) if v is not None]
    if not currency or not bounds:
        return None
    return currency, sum(bounds, Fraction(0)) / len(bounds)


def _expiry_ms(posting: JobPosting) -> int:
    """The first instant at which the posting can no longer matter to any pulse.

    Until then it is either within today and the trailing BASELINE_DAYS days, or still open.
    """
    window_end = (posting.posted_at_ms // DAY_MS + BASELINE_DAYS + 1) * DAY_MS
    return max(window_end, posting.deadline_ms or 0)


def _bump(counts: dict[_K, int], name: _K, delta: int) -> None:
    # Zero entries are dropped so a key's presence always means "there is something".
    value = counts.get(name, 0) + delta
    if value:
        counts[name] = value
    else:
        counts.pop(name, None)


def _spell(names: dict[str, tuple[str, int]], name: str | None, sign: int) -> None:
    """Reference-count a name, keeping the spelling it had when it first (re)appeared."""
    key = _fold(name)
    if not key:
        return
    spelling, users = names.get(key, ((name or "").strip(), 0))
    if users + sign:
        names[key] = (spelling, users + sign)
    else:
        del names[key]


@dataclass(slots=True)
class _SalaryTally:
    totals: dict[str, Fraction] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, currency: str, amount: Fraction, sign: int) -> None:
        _bump(self.counts, currency, sign)
        if currency in self.counts:
            self.totals[currency] = self.totals.get(currency, Fraction(0)) + sign * amount
        else:
            self.totals.pop(currency, None)

    def averages(self) -> dict[str, float]:
        return {cur: float(round(self.totals[cur] / n, 2)) for cur, n in sorted(self.counts.items())}


@dataclass(slots=True)
class _DayTally:
    """What the postings of one UTC day contribute to one scope."""

    jobs: int = 0
    skills: dict[str, int] = field(default_factory=dict)
    salary: _SalaryTally = field(default_factory=_SalaryTally)
    entry_salary: _SalaryTally = field(default_factory=_SalaryTally)

    def add(self, posting: JobPosting, salary: _Salary | None, sign: int) -> None:
        self.jobs += sign
        for skill in posting.skills:
            _bump(self.skills, skill, sign)
        if salary is not None:
            self.salary.add(*salary, sign)
            years = posting.experience_years
            if years is not None and years <= ENTRY_LEVEL_MAX_YEARS:
                self.entry_salary.add(*salary, sign)


_NOTHING = _DayTally()  # read-only stand-in for a (day, scope) without postings


class MarketBook:
    """Postings that can still matter to a pulse, with the tallies that make `pulse()` cheap."""

    def __init__(self) -> None:
        self._postings: dict[str, JobPosting] = {}
        self._days: dict[int, dict[ScopeKey, _DayTally]] = {}
        self._deadlines: dict[ScopeKey, list[_Deadline]] = {}
        self._scope_sizes: dict[ScopeKey, int] = {}
        # casefolded name -> (first spelling seen, postings using it); forgotten at zero.
        self._locations: dict[str, tuple[str, int]] = {}
        self._industries: dict[str, tuple[str, int]] = {}
        # Lazily cleaned: an entry whose posting was replaced or removed is skipped when popped.
        self._expiries: list[tuple[int, str]] = []
        self._clock_ms = 0

    def __len__(self) -> int:
        return len(self._postings)

    def postings(self) -> Iterator[JobPosting]:
        return iter(self._postings.values())

    def get(self, job_id: str) -> JobPosting | None:
        return self._postings.get(job_id)

    def upsert(self, posting: JobPosting) -> bool:
        """Add or replace a posting; True when the book changed.

        An identical re-send, or a posting eviction would drop anyway, changes nothing. An update
        that falls out of the window removes the previous version.
        """
        old = self._postings.get(posting.job_id)
        if old == posting:
            return False
        keep = _expiry_ms(posting) > self._clock_ms
        if old is None and not keep:
            return False
        if old is not None:
            self._apply(old, -1)
            del self._postings[old.job_id]
        if keep:
            self._postings[posting.job_id] = posting
            self._apply(posting, +1)
            expiry = _expiry_ms(posting)
            if old is None or _expiry_ms(old) != expiry:
                heapq.heappush(self._expiries, (expiry, posting.job_id))
        return True

    def evict(self, now_ms: int) -> int:
        """Advance the book's clock to `now_ms` and drop what can no longer matter; returns how many."""
        self._clock_ms = max(self._clock_ms, now_ms)
        dropped = 0
        while self._expiries and self._expiries[0][0] <= self._clock_ms:
            expiry, job_id = heapq.heappop(self._expiries)
            posting = self._postings.get(job_id)
            if posting is not None and _expiry_ms(posting) == expiry:
                self._apply(posting, -1)
                del self._postings[job_id]
                dropped += 1
        return dropped

    def scopes(self) -> list[tuple[str | None, str | None]]:
        """Every scope with at least one posting, (None, None) first, in the first spelling seen."""
        return [
            (self._locations[loc][0] if loc else None, self._industries[ind][0] if ind else None)
            for loc, ind in sorted(self._scope_sizes)
        ]

    def pulse(self, now_ms: int, location: str | None = None, industry: str | None = None) -> dict[str, Any]:
        """The market as of `now_ms` for postings matching both filters (None matches everything)."""
        key = (_fold(location), _fold(industry))
        today = now_ms // DAY_MS
        tally = self._tally(today, key)
        yesterday_jobs = self._tally(today - 1, key).jobs
        urgent_count, urgent = self._urgent(now_ms, key)
        return {
            "new_jobs_today": tally.jobs,
            "new_jobs_yesterday": yesterday_jobs,
            "growth_pct_vs_yesterday": (
                round(100 * (tally.jobs - yesterday_jobs) / yesterday_jobs, 1) if yesterday_jobs else None
            ),
            "avg_salary_today": tally.salary.averages(),
            "entry_level_avg_salary": tally.entry_salary.averages(),
            "hot_skills_today": self._hot_skills(today, key),
            "urgent_count": urgent_count,
            "urgent_opportunities": urgent,
            "location": location,
            "industry": industry,
            "day": bucket("daily", now_ms),
            "updated_at": format_ts(now_ms),
        }

    # -- internals ------------------------------------------------------------------------------

    def _tally(self, day: int, key: ScopeKey) -> _DayTally:
        return self._days.get(day, {}).get(key, _NOTHING)

    def _apply(self, posting: JobPosting, sign: int) -> None:
        """Add (sign +1) or take back (sign -1) everything a posting contributes."""
        day = posting.posted_at_ms // DAY_MS
        tallies = self._days.setdefault(day, {})
        salary = _salary(posting)
        for key in _scope_keys(posting):
            tally = tallies.setdefault(key, _DayTally())
            tally.add(posting, salary, sign)
            if not tally.jobs:
                del tallies[key]
            if posting.deadline_ms is not None:
                self._index_deadline(key, (posting.deadline_ms, posting.job_id), sign)
            _bump(self._scope_sizes, key, sign)
        if not tallies:
            del self._days[day]
        _spell(self._locations, posting.location, sign)
        _spell(self._industries, posting.industry, sign)

    def _index_deadline(self, key: ScopeKey, entry: _Deadline, sign: int) -> None:
        deadlines = self._deadlines.setdefault(key, [])
        if sign > 0:
            insort(deadlines, entry)
            return
        deadlines.pop(bisect_right(deadlines, entry) - 1)
        if not deadlines:
            del self._deadlines[key]

    def _hot_skills(self, today: int, key: ScopeKey) -> list[dict[str, Any]]:
        counts = self._tally(today, key).skills
        top = heapq.nsmallest(TOP_N, counts.items(), key=lambda item: (-item[1], item[0]))
        past = [self._tally(today - back, key).skills for back in range(1, BASELINE_DAYS + 1)]
        hot = []
        for skill, count in top:
            baseline_total = sum(day.get(skill, 0) for day in past)
            hot.append({"skill": skill, "count": count, **_trend(count, baseline_total)})
        return hot

    def _urgent(self, now_ms: int, key: ScopeKey) -> tuple[int, list[dict[str, Any]]]:
        deadlines = self._deadlines.get(key, [])
        # Deadlines strictly after now, up to and including now + URGENT_WITHIN_MS.
        start = bisect_right(deadlines, now_ms, key=lambda entry: entry[0])
        end = bisect_right(deadlines, now_ms + URGENT_WITHIN_MS, key=lambda entry: entry[0])
        soonest = deadlines[start : min(end, start + TOP_N)]
        return end - start, [_opening(self._postings[job_id], deadline) for deadline, job_id in soonest]


def _trend(count: int, baseline_total: int) -> dict[str, Any]:
    """Today's count against the average day of the baseline; exact, so 20% is exactly 20%."""
    baseline_avg = Fraction(baseline_total, BASELINE_DAYS)
    if not baseline_total:
        return {"trend": "new", "baseline_avg": 0.0, "change_pct": None}
    change = 100 * (count - baseline_avg) / baseline_avg
    if change >= TREND_THRESHOLD_PCT:
        trend = "rising"
    elif change <= -TREND_THRESHOLD_PCT:
        trend = "falling"
    else:
        trend = "steady"
    return {
        "trend": trend,
        "baseline_avg": float(round(baseline_avg, 2)),
        "change_pct": float(round(change, 1)),
    }


def _opening(posting: JobPosting, deadline_ms: int) -> dict[str, Any]:
    return {
        "job_id": posting.job_id,
        "title": posting.title,
        "company": posting.company,
        "location": posting.location,
        "industry": posting.industry,
        "deadline": format_ts(deadline_ms),
    }
