"""Next best actions: what a user could do now, this week and over the coming months, from what
the engine already knows about them (docs/careers.md, "Recommendations").

Pure and deterministic: ``recommend(facts, market, now_ms)`` reads plain inputs and returns at
most ``MAX_PER_HORIZON`` items per horizon, so the worker (which pushes the list when it changes,
streams/recommendations_pipeline.py) and the API (which answers ``GET .../recommendations`` at the
reader's clock) compute the same list from the same facts. ``UserFacts`` is the bounded snapshot
of a user the worker gathers from its tables and keeps in the serving view; ``HotSkill`` is the
market pulse's part, read by both sides from the pulse.

Rules (each item names the fact it comes from in its ``reason``):

=================  ===========  ===============================================================
kind               horizon      when
=================  ===========  ===============================================================
streak_at_risk     immediate    streak > 0, active yesterday and not yet today (user's timezone),
                                and it is at least 19:00 there (the streak_warning nudge's hour)
apply_closing      immediate    an open match not applied for, closing within 7 days (soonest)
goal_behind        immediate    an active goal behind its pace, its deadline within a day
goal_behind        this_week    the same, deadline further away
learn_skill        this_week    the skill missing from the most of the user's top 10 open matches
                                (at least ``MIN_GAP_SHARE`` of them); further such skills: roadmap
practice_category  this_week    the user's weakest practice category, mean score below 70
use_hot_skill      this_week    one of today's hot skills the user has
learn_hot_skill    roadmap      one of today's hot skills (new or rising) the user lacks
=================  ===========  ===============================================================

Each item's ``id`` is ``<kind>:<subject>`` (the subject a digest when long or unprintable), stable
while the fact lasts, so a client can dedupe; ``list_digest`` is what the worker compares to decide
whether the list changed. It covers ids, titles and actions, not the wording of reasons, whose
counts move with every posting: a changed count alone is not worth a push (the GET shows it).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import orjson

from models.career import CareerState
from models.digests import id_digest
from models.events import InvalidEvent, format_ts, parse_ts
from models.gamification import UserState, weakest_category
from models.growth import GrowthState
from models.matching import URGENT_WITHIN_MS
from models.nudges import STREAK_WARNING_AT
from models.state_budget import clip_text
from models.stats import MIN_CATEGORY_SESSIONS
from models.streaks import StreakState, is_streak_at_risk, local_day, streak_as_of
from models.time_units import DAY_MS
from models.tz import zone

Horizon = Literal["immediate", "this_week", "roadmap"]
HORIZONS: tuple[Horizon, ...] = ("immediate", "this_week", "roadmap")
#: Items kept per horizon: a list to act on, not a feed.
MAX_PER_HORIZON = 3
#: The "top matches" a skill gap is counted over (best scores, open, not applied for).
TOP_MATCHES = 10
#: Matches the worker keeps in the facts (more than TOP_MATCHES: some may close before a read).
MAX_MATCH_FACTS = 20
#: Missing skills kept per match fact.
MAX_MISSING_PER_MATCH = 10
#: A skill is worth learning when at least this share of the top matches ask for it.
MIN_GAP_SHARE = 0.3
#: A category whose mean score is below this is worth practising (the rules' default high score).
WEAK_CATEGORY_BELOW = 70.0
#: A goal is behind when its progress trails the share of its time gone by more than this...
GOAL_SLACK = 0.15
#: ...and at least this share of its time has gone (early on, everyone is "behind").
GOAL_MIN_ELAPSED = 0.25
#: Bytes of a skill, category, title or id subject as shown (they are producers' and clients' text).
TEXT_BYTES = 64
TITLE_BYTES = 128
#: Active goals kept in the facts (the growth state allows 10).
MAX_GOAL_FACTS = 10
#: Hot skills read from the pulse (it lists 10).
MAX_HOT_SKILLS = 10
FACTS_VERSION = 1


def _clean(text: object, max_bytes: int = TEXT_BYTES) -> str:
    """Printable, single-line text within ``max_bytes`` of JSON: control characters (a newline, an
    escape sequence) are dropped, since these strings end up in titles a client renders."""
    if not isinstance(text, str):
        return ""
    return clip_text("".join(ch for ch in text if ch.isprintable()).strip(), max_bytes)


def _subject(text: str) -> str:
    """An id's subject: the text itself when short and plain, else its digest (ids stay bounded
    and cannot carry a ':' that would make two subjects one)."""
    if len(text) <= 48 and text.isprintable() and ":" not in text and text == text.strip():
        return text
    return id_digest(text)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class MatchFact:
    job_id: str
    title: str
    match_score: int
    missing_skills: tuple[str, ...]
    deadline_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "title": self.title,
            "score": self.match_score,
            "missing": list(self.missing_skills),
            "deadline": self.deadline_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MatchFact:
        return cls(
            str(data["job_id"]),
            str(data.get("title") or ""),
            int(data["score"]),
            tuple(str(s) for s in data.get("missing") or ()),
            data.get("deadline"),
        )


@dataclass(frozen=True, slots=True)
class GoalFact:
    goal_id: str
    kind: str
    target: float
    progress: float
    created_at_ms: int
    deadline_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.goal_id,
            "kind": self.kind,
            # As floats whatever was passed: the digest of the facts must not tell 10 from 10.0.
            "target": float(self.target),
            "progress": float(self.progress),
            "created": self.created_at_ms,
            "deadline": self.deadline_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GoalFact:
        return cls(
            str(data["id"]),
            str(data["kind"]),
            float(data["target"]),
            float(data["progress"]),
            int(data["created"]),
            int(data["deadline"]),
        )


@dataclass(frozen=True, slots=True)
class CategoryFact:
    """The user's weakest practice category (``models.gamification.weakest_category``)."""

    category: str
    mean_score: float
    sessions: int
    #: Categories with enough sessions to compare: "weakest" means something from two on.
    scored_categories: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "mean": float(self.mean_score),
            "sessions": self.sessions,
            "scored": self.scored_categories,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryFact:
        return cls(str(data["category"]), float(data["mean"]), int(data["sessions"]), int(data["scored"]))


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the engine knows of a user that the rules read; bounded by construction."""

    user_id: str
    timezone: str = "UTC"
    skills: tuple[str, ...] = ()
    #: The stored streak (as of the last active day); judged as of the reader's today.
    streak: StreakState | None = None
    #: Best open matches not applied for, best first (at most MAX_MATCH_FACTS).
    matches: tuple[MatchFact, ...] = ()
    #: Active goals (at most MAX_GOAL_FACTS).
    goals: tuple[GoalFact, ...] = ()
    weak_category: CategoryFact | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.streak
        return {
            "v": FACTS_VERSION,
            "user_id": self.user_id,
            "tz": self.timezone,
            "skills": list(self.skills),
            "streak": None if s is None else [s.current, s.longest, s.freezes, s.last_active_day],
            "matches": [m.to_dict() for m in self.matches],
            "goals": [g.to_dict() for g in self.goals],
            "weak": None if self.weak_category is None else self.weak_category.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserFacts:
        if data.get("v") != FACTS_VERSION:
            raise ValueError(f"unsupported facts version {data.get('v')!r}")
        streak = data.get("streak")
        weak = data.get("weak")
        return cls(
            user_id=str(data["user_id"]),
            timezone=str(data.get("tz") or "UTC"),
            skills=tuple(str(s) for s in data.get("skills") or ()),
            streak=None if streak is None else StreakState(streak[0], streak[1], streak[2], streak[3], 0),
            matches=tuple(MatchFact.from_dict(m) for m in data.get("matches") or ()),
            goals=tuple(GoalFact.from_dict(g) for g in data.get("goals") or ()),
            weak_category=None if weak is None else CategoryFact.from_dict(weak),
        )

    def digest(self) -> str:
        """Changes exactly when the facts do (the worker skips rewriting an unchanged view)."""
        return hashlib.blake2b(orjson.dumps(self.to_dict()), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class HotSkill:
    skill: str
    count: int
    trend: str


def hot_skills_of(pulse: Mapping[str, Any] | None) -> tuple[HotSkill, ...]:
    """The hot skills of a market pulse document (``hot_skills_today``), checked and bounded."""
    found: list[HotSkill] = []
    raw = pulse.get("hot_skills_today") if pulse else None
    for entry in raw if isinstance(raw, list) else ():
        if len(found) >= MAX_HOT_SKILLS:
            break
        if not isinstance(entry, dict):
            continue
        skill, count = _clean(entry.get("skill")).lower(), entry.get("count")
        if skill and isinstance(count, int) and not isinstance(count, bool):
            found.append(HotSkill(skill, count, _clean(entry.get("trend"), 16)))
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class Recommendation:
    id: str
    horizon: Horizon
    kind: str
    title: str
    reason: str
    action: dict[str, Any] = field(default_factory=dict)
    #: Order within the horizon (lower first); not shown.
    rank: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "horizon": self.horizon,
            "kind": self.kind,
            "title": self.title,
            "reason": self.reason,
            "action": self.action,
        }


def _days(ms: int) -> str:
    days = max(1, -(-ms // DAY_MS))  # ceiling: "closes in 1 day" until it has closed
    return f"{days} day" if days == 1 else f"{days} days"


def _open_matches(facts: UserFacts, now_ms: int) -> list[MatchFact]:
    return [m for m in facts.matches if m.deadline_ms is None or m.deadline_ms >= now_ms]


def _streak_item(facts: UserFacts, now_ms: int) -> Recommendation | None:
    if facts.streak is None:
        return None
    try:
        tz = zone(facts.timezone)
        today = local_day(now_ms, facts.timezone)
    except (ValueError, KeyError):
        return None
    # Freezes as the API shows them (api/routes/users.py streak_today): no rules needed here.
    shown = streak_as_of(facts.streak, today, max_freezes=facts.streak.freezes)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    if not is_streak_at_risk(shown, today) or local.time() < STREAK_WARNING_AT:
        return None
    days = shown.current
    cover = " (or uses one of your freezes)" if shown.freezes else ""
    return Recommendation(
        id=f"streak_at_risk:{date.fromordinal(today).isoformat()}",
        horizon="immediate",
        kind="streak_at_risk",
        title=f"Keep your {days}-day streak alive",
        reason=(
            f"You practised yesterday but not yet today, and it is {local:%H:%M} where you are: "
            f"your {days}-day streak ends at midnight{cover}."
        ),
        action={"type": "practice"},
        rank=(0,),
    )


def _closing_items(open_matches: Sequence[MatchFact], now_ms: int) -> list[Recommendation]:
    closing = [
        m for m in open_matches if m.deadline_ms is not None and m.deadline_ms - now_ms <= URGENT_WITHIN_MS
    ]
    closing.sort(key=lambda m: (m.deadline_ms or 0, -m.match_score, m.job_id))
    items = []
    for m in closing:
        title = _clean(m.title, TITLE_BYTES) or "a matching job"
        assert m.deadline_ms is not None
        items.append(
            Recommendation(
                id=f"apply_closing:{_subject(m.job_id)}",
                horizon="immediate",
                kind="apply_closing",
                title=f"Apply to {title}",
                reason=f"It closes in {_days(m.deadline_ms - now_ms)} and you match it at {m.match_score}%.",
                action={"type": "apply", "job_id": m.job_id},
                rank=(1, m.deadline_ms, -m.match_score, m.job_id),
            )
        )
    return items


def _goal_items(facts: UserFacts, now_ms: int) -> list[Recommendation]:
    items = []
    for g in facts.goals:
        span = g.deadline_ms - g.created_at_ms
        if span <= 0 or g.target <= 0 or not g.created_at_ms <= now_ms <= g.deadline_ms:
            continue
        elapsed = (now_ms - g.created_at_ms) / span
        done = max(0.0, g.progress / g.target)
        if elapsed < GOAL_MIN_ELAPSED or done >= elapsed - GOAL_SLACK:
            continue
        left = g.deadline_ms - now_ms
        horizon: Horizon = "immediate" if left <= DAY_MS else "this_week"
        items.append(
            Recommendation(
                id=f"goal_behind:{_subject(g.goal_id)}",
                horizon=horizon,
                kind="goal_behind",
                title=f"Catch up on your {g.kind.replace('_', ' ')} goal",
                reason=(
                    f"You are {round(done * 100)}% of the way with {round(elapsed * 100)}% of the time "
                    f"gone; it ends in {_days(left)}."
                ),
                action={"type": "view_goal", "goal_id": g.goal_id},
                rank=(2, g.deadline_ms, g.goal_id),
            )
        )
    return items


def skill_gaps(matches: Sequence[MatchFact]) -> list[tuple[str, int, int]]:
    """(skill, matches missing it, their summed score) over ``matches``, most missed first (ties:
    the higher summed score, then the name). Counted once per match, unweighted: "7 of your top
    10 matches ask for SQL" is the claim a reason can make plainly; the score breaks ties."""
    counts: Counter[str] = Counter()
    scores: Counter[str] = Counter()
    for m in matches:
        for skill in dict.fromkeys(m.missing_skills):
            counts[skill] += 1
            scores[skill] += m.match_score
    return sorted(((s, counts[s], scores[s]) for s in counts), key=lambda t: (-t[1], -t[2], t[0]))


def _skill_items(
    open_matches: Sequence[MatchFact], hot: Mapping[str, HotSkill]
) -> tuple[list[Recommendation], set[str]]:
    top = list(open_matches)[:TOP_MATCHES]
    items: list[Recommendation] = []
    named: set[str] = set()
    for i, (skill, count, _) in enumerate(skill_gaps(top)):
        if count < max(1, MIN_GAP_SHARE * len(top)) or len(items) >= 2 * MAX_PER_HORIZON:
            break
        shown = _clean(skill)
        if not shown:
            continue
        named.add(skill)
        hot_note = f"; it is in {hot[skill].count} postings today" if skill in hot else ""
        items.append(
            Recommendation(
                id=f"learn_skill:{_subject(skill)}",
                horizon="this_week" if i == 0 else "roadmap",
                kind="learn_skill",
                title=f"Learn {shown}",
                reason=f"{count} of your top {len(top)} matches ask for {shown}{hot_note}.",
                action={"type": "learn_skill", "skill": shown},
                rank=(3, -count, skill),
            )
        )
    return items, named


def _category_item(facts: UserFacts) -> Recommendation | None:
    weak = facts.weak_category
    if weak is None or weak.scored_categories < 2 or weak.mean_score >= WEAK_CATEGORY_BELOW:
        return None
    shown = _clean(weak.category)
    if not shown:
        return None
    return Recommendation(
        id=f"practice_category:{_subject(weak.category)}",
        horizon="this_week",
        kind="practice_category",
        title=f"Practise {shown} questions",
        reason=(
            f"Your average in {shown} is {round(weak.mean_score)} over {weak.sessions} sessions, "
            f"your lowest of {weak.scored_categories} categories."
        ),
        action={"type": "practice", "category": shown},
        rank=(4,),
    )


def _hot_items(facts: UserFacts, hot: Sequence[HotSkill], named: set[str]) -> list[Recommendation]:
    have = set(facts.skills)
    items = []
    for position, h in enumerate(hot, start=1):
        if h.skill in named:
            continue
        if h.skill in have:
            items.append(
                Recommendation(
                    id=f"use_hot_skill:{_subject(h.skill)}",
                    horizon="this_week",
                    kind="use_hot_skill",
                    title=f"Put your {h.skill} to work",
                    reason=(
                        f"{h.skill} is today's #{position} skill in new postings ({h.count}), "
                        "and you have it."
                    ),
                    action={"type": "browse_matches", "skill": h.skill},
                    rank=(5, position),
                )
            )
        elif h.trend in ("new", "rising"):
            items.append(
                Recommendation(
                    id=f"learn_hot_skill:{_subject(h.skill)}",
                    horizon="roadmap",
                    kind="learn_hot_skill",
                    title=f"Consider learning {h.skill}",
                    reason=(
                        f"{h.skill} is {h.trend} in today's postings ({h.count}), "
                        "and it is not among your skills."
                    ),
                    action={"type": "learn_skill", "skill": h.skill},
                    rank=(6, position),
                )
            )
    return items


def recommend(facts: UserFacts, hot_skills: Iterable[HotSkill], now_ms: int) -> list[Recommendation]:
    """The user's next best actions at ``now_ms``: by horizon (immediate, this_week, roadmap),
    within one by the rules' order (the table in the module docstring), at most MAX_PER_HORIZON
    each. Same inputs, same list."""
    hot = list(hot_skills)[:MAX_HOT_SKILLS]
    by_skill = {h.skill: h for h in hot}
    open_matches = _open_matches(facts, now_ms)
    candidates: list[Recommendation] = []
    streak = _streak_item(facts, now_ms)
    if streak is not None:
        candidates.append(streak)
    candidates += _closing_items(open_matches, now_ms)
    candidates += _goal_items(facts, now_ms)
    skills, named = _skill_items(open_matches, by_skill)
    candidates += skills
    category = _category_item(facts)
    if category is not None:
        candidates.append(category)
    candidates += _hot_items(facts, hot, named)
    out: list[Recommendation] = []
    seen: set[str] = set()
    for horizon in HORIZONS:
        mine = sorted((c for c in candidates if c.horizon == horizon), key=lambda c: (c.rank, c.id))
        kept = 0
        for c in mine:
            if c.id in seen or kept >= MAX_PER_HORIZON:
                continue
            seen.add(c.id)
            out.append(c)
            kept += 1
    return out


def list_digest(items: Sequence[Recommendation]) -> str:
    """What the worker compares to the last list pushed: ids, horizons, titles and actions (not
    the reasons' counts, see the module docstring)."""
    body = [(i.id, i.horizon, i.title, i.action) for i in items]
    return hashlib.blake2b(orjson.dumps(body), digest_size=12).hexdigest()


def public_list(user_id: str, items: Sequence[Recommendation], now_ms: int) -> dict[str, Any]:
    """The API's and the push's shape: the items (immediate first), the list's digest (equal
    digests: the same list, whatever the reasons say) and when it was computed."""
    return {
        "user_id": user_id,
        "items": [item.to_dict() for item in items],
        "digest": list_digest(items),
        "as_of": format_ts(now_ms),
    }


# ---------------------------------------------------------------------------------------------
# Gathering (from the worker's per-user states)


def gather_facts(
    user_id: str,
    user: UserState | None,
    career: CareerState | None,
    growth: GrowthState | None,
) -> UserFacts:
    """The facts of one user from the states of their partition, bounded: the best
    MAX_MATCH_FACTS matches not applied for, MAX_GOAL_FACTS active goals, the weakest category."""
    skills: tuple[str, ...] = ()
    matches: list[MatchFact] = []
    timezone = user.timezone if user else career.timezone if career else "UTC"
    if career is not None:
        if career.candidate is not None:
            skills = tuple(_clean(s).lower() for s in career.candidate.skills[:100])
        applied = {a.job_id for a in career.applications.values()}
        best = heapq.nsmallest(
            MAX_MATCH_FACTS,
            (e for e in career.matches.values() if e["job_id"] not in applied),
            key=lambda e: (-int(e["match_score"]), e["job_id"]),
        )
        for entry in best:
            deadline = entry.get("deadline")
            matches.append(
                MatchFact(
                    job_id=entry["job_id"],
                    title=_clean(entry.get("title"), TITLE_BYTES),
                    match_score=int(entry["match_score"]),
                    missing_skills=tuple(entry.get("missing_skills") or ())[:MAX_MISSING_PER_MATCH],
                    deadline_ms=_deadline_ms(deadline) if deadline else None,
                )
            )
    goals: list[GoalFact] = []
    if growth is not None:
        active = sorted(
            (g for g in growth.goals.values() if g.status == "active"), key=lambda g: g.deadline_ms
        )
        goals = [
            GoalFact(g.goal_id, g.kind, float(g.target), float(g.progress), g.created_at_ms, g.deadline_ms)
            for g in active[:MAX_GOAL_FACTS]
        ]
    weak: CategoryFact | None = None
    if user is not None:
        category = weakest_category(user)
        if category is not None:
            sessions, total = user.category_stats[category][0], user.category_stats[category][1]
            scored = sum(stats[0] >= MIN_CATEGORY_SESSIONS for stats in user.category_stats.values())
            # Whole points, as the reason shows it: a mean moving by decimals changes nothing shown
            # and would rewrite the view after every scored session.
            weak = CategoryFact(category, float(round(total / sessions)), sessions, scored)
    return UserFacts(
        user_id=user_id,
        timezone=timezone,
        skills=skills,
        streak=user.streak if user is not None and user.streak.current > 0 else None,
        matches=tuple(matches),
        goals=tuple(goals),
        weak_category=weak,
    )


def _deadline_ms(text: str) -> int | None:
    try:
        return parse_ts(text)
    except InvalidEvent:
        return None
