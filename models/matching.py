"""Instant job matching: how well a posting fits a user, and who to tell when one arrives.

Pure functions and in-memory indexes, no I/O: the worker keeps a `CandidateIndex` (every
profile) and a `PostingIndex` (every open posting), calls `match_posting` when a posting
arrives and `match_candidate` when a profile changes, and publishes the `Match`es.

Score (0–100, rounded half up; each component is independent of the others):

============  ======  ==================================================================================
component     points  rule
============  ======  ==================================================================================
skills        50      50 × share of the posting's skills the user has; a posting listing none → 25
location      15      posting remote or without a location, or the same place (casefolded) → 15; else 0
experience    15      meets the posting's years (or it asks none) → 15; short by s ≤ 2 years → 15 × (1 − s/2)
education     10      meets → 10; one step below, or either side unrankable → 5; two or more below → 0
salary        10      "within"/"above_expectation" → 10; "below_expectation" → 10 × (1 − 2 × gap), at
                      least 0, where gap is the share of the expectation the posting's maximum misses
                      (10% short → 8, 50% short → 0); "unknown" → 5
============  ======  ==================================================================================

Education ladder: none < certificate < diploma < bachelor < master < phd (case, apostrophes and a
plural "s" ignored: "Bachelor's", "Masters"; "doctorate" is phd).

Hard filters (`score` returns None, whatever the threshold):

* the deadline has passed (a deadline equal to now is still open);
* the posting asks for more than 2 years more experience than the user has (unknown → 0 years);
* the posting lists skills and the user has none of them;
* the posting lists no skills and is not in the user's location (remote/unplaced included): with
  no skills, location is the only relevance signal there is, and without this rule a vague
  posting would reach most of the population on the generic components alone (25 + 15 + 10 +
  10 = 60 without any location match). It is also what lets the indexes below be exact.

Urgency (deadline within 7 days, not passed) only sets `is_urgent`; it adds no points, so a
pair's score does not drift as the clock runs and "perfect" (≥ 90) always means a good fit.
Notifiers can rank urgent matches first on their own.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from models.events import JobPosting, UserProfile, format_ts, normalize_skills
from models.state_budget import clip_optional, clip_text, fit_texts
from models.time_units import DAY_MS

SalaryFit = Literal["within", "above_expectation", "below_expectation", "unknown"]

W_SKILLS = 50
W_LOCATION = 15
W_EXPERIENCE = 15
W_EDUCATION = 10
W_SALARY = 10

PERFECT_SCORE = 90
DEFAULT_THRESHOLD = 60
MAX_EXPERIENCE_GAP_YEARS = 2.0
URGENT_WITHIN_MS = 7 * DAY_MS
REMOTE = "remote"  # a posting location (casefolded) that every user is in

# Years are often fractional, and 3.3 - 1.3 is 2.0000000000000004 in floats: without a tolerance
# a user exactly two years short could be filtered out by rounding noise.
_EPS = 1e-9

# Byte budgets of a match as shown and stored (`Match.to_dict`): each user keeps up to
# models.career.MAX_MATCHES of them in their state, and a posting's title, company and skills are
# free text of up to 512 characters (100 skills), so one unbounded match could be ~60 KB of JSON.
# Cut this way, a match is at most ~1.5 KB whatever the posting says; honest ones are unchanged.
MATCH_TITLE_BYTES = 256
MATCH_COMPANY_BYTES = 128
#: Missing skills shown: whole skills, in the posting's order, as many as fit.
MATCH_MISSING_SKILLS_BYTES = 512
#: The posting's industry and currency, carried for the match insights (top industries, salary
#: outlook: models/match_insights.py); compared whole, so a cut one is as good as any.
MATCH_INDUSTRY_BYTES = 64
MATCH_CURRENCY_BYTES = 16

_EDUCATION_LADDER = ("none", "certificate", "diploma", "bachelor", "master", "phd")
_EDUCATION_RANK = {name: rank for rank, name in enumerate(_EDUCATION_LADDER)} | {"doctorate": 5}


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Candidate:
    """The part of a profile matching needs. Skills are normalized on construction, whatever
    the caller passed, so the indexes and `score` can compare them with plain equality."""

    user_id: str
    skills: tuple[str, ...] = ()
    location: str | None = None
    experience_years: float | None = None
    education: str | None = None
    salary_expectation: float | None = None
    currency: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", normalize_skills(tuple(self.skills)))

    @classmethod
    def from_profile(cls, profile: UserProfile) -> Candidate:
        return cls(
            user_id=profile.user_id,
            skills=profile.skills,
            location=profile.location,
            experience_years=profile.experience_years,
            education=profile.education,
            salary_expectation=profile.salary_expectation,
            currency=profile.currency,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; unknown fields and an empty skill list are left out (one per profile in state)."""
        data: dict[str, Any] = {
            "user_id": self.user_id,
            "skills": list(self.skills),
            "location": self.location,
            "experience_years": self.experience_years,
            "education": self.education,
            "salary_expectation": self.salary_expectation,
            "currency": self.currency,
        }
        return {key: value for key, value in data.items() if value is not None and value != []}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            user_id=data["user_id"],
            skills=tuple(data.get("skills") or ()),
            location=data.get("location"),
            experience_years=data.get("experience_years"),
            education=data.get("education"),
            salary_expectation=data.get("salary_expectation"),
            currency=data.get("currency"),
        )


@dataclass(frozen=True, slots=True)
class Match:
    job_id: str
    user_id: str
    title: str
    company: str | None
    match_score: int
    missing_skills: tuple[str, ...]
    salary_fit: SalaryFit
    is_urgent: bool
    is_perfect: bool
    deadline_ms: int | None
    #: The posting's industry and salary range, for the match insights (defaults: older callers).
    industry: str | None = None
    salary_min: float | None = None
    salary_max: float | None = None
    currency: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The match-alert contract's shape (the user is the record's key, so not repeated here).

        Text is cut to the MATCH_* byte budgets: this is both the `match-alerts` record and the
        entry kept in the user's state, so neither grows with what a posting's producer wrote."""
        return {
            "job_id": self.job_id,
            "title": clip_text(self.title, MATCH_TITLE_BYTES),
            "company": clip_optional(self.company, MATCH_COMPANY_BYTES),
            "match_score": self.match_score,
            "missing_skills": list(fit_texts(self.missing_skills, MATCH_MISSING_SKILLS_BYTES)),
            "salary_fit": self.salary_fit,
            "is_urgent": self.is_urgent,
            "is_perfect": self.is_perfect,
            "deadline": None if self.deadline_ms is None else format_ts(self.deadline_ms),
            # Only when the posting says: every byte here is kept up to MAX_MATCHES times a user.
            **_present(
                industry=clip_optional(self.industry, MATCH_INDUSTRY_BYTES),
                salary_min=self.salary_min,
                salary_max=self.salary_max,
                currency=clip_optional(self.currency, MATCH_CURRENCY_BYTES),
            ),
        }


def _present(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# Scoring


def _place(location: str | None) -> str | None:
    """A location as compared: casefolded and trimmed; blank means unknown."""
    if location is None:
        return None
    return location.strip().casefold() or None


def _is_anywhere(place: str | None) -> bool:
    return place is None or place == REMOTE


def _education_rank(education: str | None) -> int | None:
    if education is None:
        return None
    key = education.strip().casefold().replace("'", "").replace("’", "")
    rank = _EDUCATION_RANK.get(key)
    return rank if rank is not None else _EDUCATION_RANK.get(key.removesuffix("s"))


def _deadline_passed(posting: JobPosting, now_ms: int) -> bool:
    return posting.deadline_ms is not None and posting.deadline_ms < now_ms


def salary_fit(posting: JobPosting, candidate: Candidate) -> SalaryFit:
    """Where the user's expectation sits against the posting's range (a missing bound is open).

    Only comparable amounts are compared: both currencies known and equal, a positive
    expectation, and at least one bound on the posting.
    """
    expectation = candidate.salary_expectation
    if (
        expectation is None
        or expectation <= 0
        or posting.currency is None
        or candidate.currency is None
        or posting.currency.strip().casefold() != candidate.currency.strip().casefold()
        or (posting.salary_min is None and posting.salary_max is None)
    ):
        return "unknown"
    if posting.salary_min is not None and expectation < posting.salary_min:
        return "above_expectation"
    if posting.salary_max is not None and expectation > posting.salary_max:
        return "below_expectation"
    return "within"


def _skills_points(posting: JobPosting, matched: int) -> float:
    if not posting.skills:
        return W_SKILLS / 2
    return W_SKILLS * matched / len(posting.skills)


def _location_points(posting_place: str | None, candidate: Candidate) -> float:
    return W_LOCATION if _is_anywhere(posting_place) or posting_place == _place(candidate.location) else 0


def _experience_points(shortfall: float) -> float:
    if shortfall <= _EPS:
        return W_EXPERIENCE
    return W_EXPERIENCE * max(0.0, 1 - shortfall / MAX_EXPERIENCE_GAP_YEARS)


def _education_points(posting: JobPosting, candidate: Candidate) -> float:
    if posting.education is None:
        return W_EDUCATION
    required = _education_rank(posting.education)
    if required == 0:  # "none" asks nothing, so even an unknown education meets it.
        return W_EDUCATION
    have = _education_rank(candidate.education)
    if required is None or have is None:
        return W_EDUCATION / 2
    if have >= required:
        return W_EDUCATION
    return W_EDUCATION / 2 if required - have == 1 else 0


def _salary_points(fit: SalaryFit, posting: JobPosting, candidate: Candidate) -> float:
    if fit in ("within", "above_expectation"):
        return W_SALARY
    if fit == "unknown":
        return W_SALARY / 2
    # below_expectation guarantees a positive expectation and a salary_max under it.
    assert candidate.salary_expectation is not None and posting.salary_max is not None
    gap = (candidate.salary_expectation - posting.salary_max) / candidate.salary_expectation
    return W_SALARY * max(0.0, 1 - 2 * gap)


def is_urgent(posting: JobPosting, now_ms: int) -> bool:
    deadline = posting.deadline_ms
    return deadline is not None and now_ms <= deadline <= now_ms + URGENT_WITHIN_MS


def score(posting: JobPosting, candidate: Candidate, now_ms: int) -> Match | None:
    """How well `candidate` fits `posting` at `now_ms`, or None when unsuitable (see module doc).

    `posting.skills` are taken as normalized, which `parse_posting` guarantees.
    """
    if _deadline_passed(posting, now_ms):
        return None
    shortfall = (posting.experience_years or 0.0) - (candidate.experience_years or 0.0)
    if shortfall > MAX_EXPERIENCE_GAP_YEARS + _EPS:
        return None
    posting_place = _place(posting.location)
    if not posting.skills and (_is_anywhere(posting_place) or posting_place != _place(candidate.location)):
        return None
    have = set(candidate.skills)
    missing = tuple(skill for skill in posting.skills if skill not in have)
    matched = len(posting.skills) - len(missing)
    if posting.skills and matched == 0:
        return None

    fit = salary_fit(posting, candidate)
    total = (
        _skills_points(posting, matched)
        + _location_points(posting_place, candidate)
        + _experience_points(shortfall)
        + _education_points(posting, candidate)
        + _salary_points(fit, posting, candidate)
    )
    # Half up, not Python's round-half-even, so 74.5 and 75.5 both go up; the clamp only guards
    # against float noise at the ends.
    points = min(100, max(0, math.floor(total + 0.5)))
    return Match(
        job_id=posting.job_id,
        user_id=candidate.user_id,
        title=posting.title,
        company=posting.company,
        match_score=points,
        missing_skills=missing,
        salary_fit=fit,
        is_urgent=is_urgent(posting, now_ms),
        is_perfect=points >= PERFECT_SCORE,
        deadline_ms=posting.deadline_ms,
        industry=posting.industry,
        salary_min=posting.salary_min,
        salary_max=posting.salary_max,
        currency=posting.currency,
    )


# ---------------------------------------------------------------------------------------------
# Indexes
#
# Both are exact for `score`'s hard filters: a pair the index does not propose would have been
# scored None anyway (no shared skill, or a skill-less posting outside the user's location), so
# matching through them equals a scan of everything, at the cost of only the pairs that share
# something.


def _add(index: dict[str, set[str]], key: str, member: str) -> None:
    index.setdefault(key, set()).add(member)


def _discard(index: dict[str, set[str]], key: str, member: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:  # Drop empty buckets, or a churn of rare skills would grow the dict forever.
            del index[key]


def _union(index: dict[str, set[str]], keys: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for key in keys:
        found |= index.get(key, set())
    return found


class CandidateIndex:
    """Every candidate, by user id, by skill and by location."""

    def __init__(self) -> None:
        self._candidates: dict[str, Candidate] = {}
        self._by_skill: dict[str, set[str]] = {}
        self._by_place: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._candidates)

    def get(self, user_id: str) -> Candidate | None:
        return self._candidates.get(user_id)

    def upsert(self, candidate: Candidate) -> None:
        # Unindex the previous version first: a dropped skill or a move must stop proposing it.
        self.remove(candidate.user_id)
        self._candidates[candidate.user_id] = candidate
        for skill in candidate.skills:
            _add(self._by_skill, skill, candidate.user_id)
        place = _place(candidate.location)
        if place is not None:
            _add(self._by_place, place, candidate.user_id)

    def remove(self, user_id: str) -> None:
        old = self._candidates.pop(user_id, None)
        if old is None:
            return
        for skill in old.skills:
            _discard(self._by_skill, skill, user_id)
        place = _place(old.location)
        if place is not None:
            _discard(self._by_place, place, user_id)

    def shortlist(self, posting: JobPosting, threshold: int) -> list[Candidate]:
        """The candidates that can still reach `threshold` on `posting`, before any is scored.

        Skill overlap and location are known from the index alone; the other components are at
        most their weights. A candidate whose best case rounds below the threshold cannot match,
        so it is not scored: with a skewed skill vocabulary most of those sharing one common skill
        with a posting are dropped here (measured in docs/benchmarks.md). The result is the same
        as scoring every proposed candidate, since the bound is never below the real score.
        """
        if not posting.skills:
            return [self._candidates[u] for u in self.candidates_for(posting)]
        overlap: Counter[str] = Counter()
        for skill in posting.skills:
            overlap.update(self._by_skill.get(skill, ()))
        place = _place(posting.location)
        everywhere = _is_anywhere(place)
        local = self._by_place.get(place, set()) if place is not None else set()
        rest = W_EXPERIENCE + W_EDUCATION + W_SALARY
        k = len(posting.skills)
        kept: list[Candidate] = []
        for user_id, shared in overlap.items():
            location = W_LOCATION if everywhere or user_id in local else 0
            if math.floor(W_SKILLS * shared / k + location + rest + 0.5) >= threshold:
                kept.append(self._candidates[user_id])
        return kept

    def candidates_for(self, posting: JobPosting) -> set[str]:
        """User ids that may match `posting`: those sharing a skill, or, for a posting listing no
        skills, those in its location (a remote or unplaced one matches nobody)."""
        if posting.skills:
            return _union(self._by_skill, posting.skills)
        place = _place(posting.location)
        if place is None or place == REMOTE:
            return set()
        return set(self._by_place.get(place, ()))


class PostingIndex:
    """Open postings, by job id, by skill and (for those listing no skills) by location."""

    def __init__(self) -> None:
        self._postings: dict[str, JobPosting] = {}
        self._by_skill: dict[str, set[str]] = {}
        self._skill_less_by_place: dict[str, set[str]] = {}
        # (deadline_ms, job_id), lazily cleaned: an entry whose posting was removed or re-dated
        # is skipped when it surfaces, so `evict` costs only the postings it drops.
        self._deadlines: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._postings)

    def get(self, job_id: str) -> JobPosting | None:
        return self._postings.get(job_id)

    def upsert(self, posting: JobPosting) -> None:
        old = self._postings.get(posting.job_id)
        self.remove(posting.job_id)
        self._postings[posting.job_id] = posting
        for skill in posting.skills:
            _add(self._by_skill, skill, posting.job_id)
        place = _place(posting.location)
        if not posting.skills and place is not None:
            _add(self._skill_less_by_place, place, posting.job_id)
        if posting.deadline_ms is not None and (old is None or old.deadline_ms != posting.deadline_ms):
            heapq.heappush(self._deadlines, (posting.deadline_ms, posting.job_id))
            self._compact()

    def remove(self, job_id: str) -> None:
        old = self._postings.pop(job_id, None)
        if old is None:
            return
        for skill in old.skills:
            _discard(self._by_skill, skill, job_id)
        place = _place(old.location)
        if not old.skills and place is not None:
            _discard(self._skill_less_by_place, place, job_id)

    def evict(self, now_ms: int) -> int:
        """Drop the postings whose deadline has passed; returns how many."""
        evicted = 0
        while self._deadlines and self._deadlines[0][0] < now_ms:
            deadline, job_id = heapq.heappop(self._deadlines)
            current = self._postings.get(job_id)
            if current is not None and current.deadline_ms == deadline:
                self.remove(job_id)
                evicted += 1
        return evicted

    def _compact(self) -> None:
        # Stale heap entries only go when their deadline passes; rebuild when they outnumber
        # the live ones, so memory stays proportional to the open postings.
        if len(self._deadlines) > 2 * len(self._postings) + 64:
            self._deadlines = [
                (p.deadline_ms, p.job_id) for p in self._postings.values() if p.deadline_ms is not None
            ]
            heapq.heapify(self._deadlines)

    def postings_for(self, candidate: Candidate) -> list[JobPosting]:
        """Postings that may match `candidate`, by job id: those sharing a skill, plus those
        listing no skills in the candidate's location."""
        job_ids = _union(self._by_skill, candidate.skills)
        place = _place(candidate.location)
        if place is not None and place != REMOTE:
            job_ids |= self._skill_less_by_place.get(place, set())
        return [self._postings[job_id] for job_id in sorted(job_ids)]


# ---------------------------------------------------------------------------------------------
# Matching


def match_posting(
    posting: JobPosting, index: CandidateIndex, now_ms: int, threshold: int = DEFAULT_THRESHOLD
) -> list[Match]:
    """Every indexed candidate scoring at least `threshold` on `posting`, best first (ties by user id)."""
    if _deadline_passed(posting, now_ms):
        return []
    matches = []
    for candidate in index.shortlist(posting, threshold):
        match = score(posting, candidate, now_ms)
        if match is not None and match.match_score >= threshold:
            matches.append(match)
    matches.sort(key=lambda m: (-m.match_score, m.user_id))
    return matches


def match_candidate(
    candidate: Candidate, postings: PostingIndex, now_ms: int, threshold: int = DEFAULT_THRESHOLD
) -> list[Match]:
    """Every indexed posting on which `candidate` scores at least `threshold`, best first (ties by job id)."""
    matches = []
    for posting in postings.postings_for(candidate):
        match = score(posting, candidate, now_ms)
        if match is not None and match.match_score >= threshold:
            matches.append(match)
    matches.sort(key=lambda m: (-m.match_score, m.job_id))
    return matches
