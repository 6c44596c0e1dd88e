"""Daily challenges and personal goals: small targets that give users a reason to come back.

Daily challenges
  One challenge per calendar date, the same for everyone, so users can compare notes and the
  API needs no per-user storage to say what today's challenge is. A user's "today" is their
  local date (models.streaks.local_day); the caller picks the date, and an event only counts
  toward the challenge of its own local day. The template is chosen per block of four
  consecutive days as a hashed permutation of the four templates: every template appears once
  per block, so any 7 days show all four and over a month each template's count is within one
  of a quarter of the days (a pure hash per date would leave gaps of a week or more), while the
  order still looks random. Parameters (counts, category, minutes) come from a hash of the ISO date.
  Each template is a variant with its own XP reward and, where it asks for one, the minimum
  score an event needs to count (VARIANTS); the completion event carries the reward.

Goals
  A goal is something the user sets for themselves with a deadline of at most 90 days. Only
  events timed inside [created_at, deadline] count. A goal that already expired can still be
  completed by an event from inside its period that arrives late, so the final status does not
  depend on whether expiry or the late event was processed first (see models.gamification on
  order independence).

Shared rules
  * "Practice" means the rules' streak-qualifying actions minus the reward events this module
    causes (daily_challenge_complete, goal_achieved): counting those would let completing a
    challenge advance the next one.
  * Idempotency: each progress record keeps digests of the ids of the events it counted
    (models.digests: 22 characters whatever the id), bounded FIFO (the last 64 / 16) to keep
    the changelog small, and forgets them once the challenge or goal is completed, since nothing
    counts after that. The engine's own dedup drops repeats before they get here; these
    memories cover a batch replayed after a crash, whose events arrive close together.
  * Completion happens once, stamped with the time of the event that completed it (never the
    wall clock, so replays give the same state).
  * Scores are percentages: a score outside [0, 100] is ignored rather than clamped, so a bogus
    value cannot complete a goal.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

from models.digests import id_digest
from models.events import BehaviorEvent, format_ts
from models.rules import Rules
from models.streaks import local_day
from models.time_units import DAY_MS

# Reward events this module causes; never counted as practice (see the module docstring).
REWARD_TYPES = frozenset({"daily_challenge_complete", "goal_achieved"})
MAX_EVENT_DURATION_S = 86_400
MAX_SCORE = 100
MAX_CATEGORY_LEN = 64


def _practice_types(rules: Rules) -> frozenset[str]:
    return rules.streak_qualifying - REWARD_TYPES


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _score(event: BehaviorEvent) -> float | None:
    score = _number(event.props.get("score"))
    return score if score is not None and 0 <= score <= MAX_SCORE else None


def _remember(ids: list[str], key: str, limit: int) -> None:
    ids.append(key)
    del ids[:-limit]


def _text_within(value: object, max_bytes: int) -> bool:
    """A non-empty printable string of at most ``max_bytes`` UTF-8 bytes (what state may keep)."""
    return (
        isinstance(value, str)
        and bool(value)
        and value.isprintable()
        and len(value.encode("utf-8", "surrogatepass")) <= max_bytes
    )


@dataclass(frozen=True, slots=True)
class ProgressChange:
    """What one event did to a challenge or goal: progress went up, and/or it completed now."""

    advanced: bool = False
    completed_now: bool = False


GoalChange = ProgressChange
NO_CHANGE = ProgressChange()


# ---------------------------------------------------------------------------------------------
# Daily challenges

ChallengeTemplate = Literal["quick_practice", "category_focus", "time_challenge", "streak_challenge"]
TEMPLATES: tuple[ChallengeTemplate, ...] = (
    "quick_practice",
    "category_focus",
    "time_challenge",
    "streak_challenge",
)
CATEGORIES = ("behavioral", "technical", "situational", "leadership")
QUICK_PRACTICE_SESSIONS = (2, 3, 4)
CATEGORY_FOCUS_SESSIONS = (1, 2, 3)
TIME_CHALLENGE_MINUTES = (15, 20, 30, 45)
MAX_CHALLENGE_EVENT_IDS = 64


@dataclass(frozen=True, slots=True)
class Variant:
    """What a template pays and asks. ``min_score``: a practice event counts toward the
    challenge only with a ``props.score`` at least this (None: any practice event counts, scored
    or not, since most practice actions carry no score)."""

    xp: int
    min_score: int | None = None


#: Each template's own reward and minimum score. Harder variants pay more: category focus asks
#: for a passing score in one category, a time challenge for up to 45 minutes; a quick practice
#: and the streak challenge pay the rules' default for daily_challenge_complete (25, CONTRACT §6).
#: The completion event carries the reward (``CHALLENGE_REWARD_PROP``) and the rules' action
#: pays it (``xp_prop`` in models/default_rules.toml); a rule book without ``xp_prop`` pays its
#: flat ``xp`` for every variant.
VARIANTS: Mapping[ChallengeTemplate, Variant] = MappingProxyType(
    {
        "quick_practice": Variant(xp=25),
        "category_focus": Variant(xp=40, min_score=70),
        "time_challenge": Variant(xp=30),
        "streak_challenge": Variant(xp=25),
    }
)
#: The prop of ``daily_challenge_complete`` that carries the variant's reward.
CHALLENGE_REWARD_PROP = "reward_xp"

# Changing the salt reshuffles every future and past challenge: bump it only with a migration.
_SALT = "elimu-pulse/daily-challenge/v1"
_PERMUTATIONS = tuple(itertools.permutations(TEMPLATES))


def _hash(text: str) -> int:
    digest = hashlib.blake2b(f"{_SALT}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class DailyChallenge:
    """Today's challenge. `target` is in sessions, or in minutes for time_challenge."""

    id: str  # the ISO date, e.g. "2026-11-22"
    template: ChallengeTemplate
    target: int
    params: dict[str, Any] = field(hash=False)
    title: str
    description: str
    xp: int
    #: A counted event must score at least this (None: any practice event counts).
    min_score: int | None = None

    @property
    def day(self) -> date:
        return date.fromisoformat(self.id)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@lru_cache(maxsize=1024)
def challenge_for(day: date) -> DailyChallenge:
    """The challenge of a calendar date: a pure function of the date, the same for everyone
    (cached: every practising event asks for its day's; callers treat it as read-only)."""
    ordinal = day.toordinal()
    template = _PERMUTATIONS[_hash(f"block:{ordinal // 4}") % len(_PERMUTATIONS)][ordinal % 4]
    iso = day.isoformat()

    variant = VARIANTS[template]

    def pick(options: tuple[Any, ...], what: str) -> Any:
        return options[_hash(f"{iso}:{what}") % len(options)]

    def made(target: int, params: dict[str, Any], title: str, description: str) -> DailyChallenge:
        return DailyChallenge(
            iso, template, target, params, title, description, variant.xp, variant.min_score
        )

    scoring = "" if variant.min_score is None else f" scoring {variant.min_score} or more"
    if template == "quick_practice":
        n = pick(QUICK_PRACTICE_SESSIONS, "sessions")
        return made(n, {}, "Quick practice", f"Complete {_plural(n, 'practice session')}{scoring} today.")
    if template == "category_focus":
        n, category = pick(CATEGORY_FOCUS_SESSIONS, "sessions"), pick(CATEGORIES, "category")
        return made(
            n,
            {"category": category},
            f"{category.capitalize()} focus",
            f"Complete {_plural(n, f'{category} interview session')}{scoring} today.",
        )
    if template == "time_challenge":
        minutes = pick(TIME_CHALLENGE_MINUTES, "minutes")
        return made(
            minutes, {"minutes": minutes}, "Time challenge", f"Practise for at least {minutes} minutes today."
        )
    return made(1, {}, "Keep the streak", "Practise today to extend your streak by another day.")


def completion_props(challenge: DailyChallenge) -> dict[str, Any]:
    """The props of the ``daily_challenge_complete`` event a completion becomes: which challenge,
    and the variant's reward, which the rules' action pays (``xp_prop``)."""
    return {"challenge_id": challenge.id, "template": challenge.template, CHALLENGE_REWARD_PROP: challenge.xp}


def _measured_target(challenge: DailyChallenge) -> int:
    # Time is measured in seconds so short activities add up instead of rounding away.
    return challenge.target * 60 if challenge.template == "time_challenge" else challenge.target


@dataclass
class ChallengeProgress:
    """One user's progress on one day's challenge. `progress` and `target` are in sessions, or
    in seconds for time_challenge (public_challenge shows minutes)."""

    challenge_id: str
    target: int
    progress: int = 0
    completed_at_ms: int | None = None
    event_ids: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.completed_at_ms is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.challenge_id,
            "target": self.target,
            "progress": self.progress,
            "done": self.completed_at_ms,
            "ids": self.event_ids,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChallengeProgress:
        return cls(data["id"], data["target"], data["progress"], data["done"], list(data["ids"]))


def _challenge_amount(challenge: DailyChallenge, event: BehaviorEvent, rules: Rules) -> int:
    if event.type not in _practice_types(rules):
        return 0
    if challenge.min_score is not None:
        score = _score(event)
        if score is None or score < challenge.min_score:
            return 0  # an unscored or failing session does not complete a scored variant
    if challenge.template == "category_focus":
        matches = event.type in rules.category_types
        return int(matches and event.props.get("category") == challenge.params["category"])
    if challenge.template == "time_challenge":
        duration = _number(event.props.get("duration_s"))
        return 0 if duration is None or duration <= 0 else int(min(duration, MAX_EVENT_DURATION_S))
    return 1  # quick_practice, streak_challenge


def apply_to_challenge(
    progress: ChallengeProgress | None,
    challenge: DailyChallenge,
    event: BehaviorEvent,
    rules: Rules,
    tz: str,
) -> tuple[ChallengeProgress, ProgressChange]:
    """Count one event toward `challenge`; `progress` is updated in place (created when None).

    `tz` is the user's time zone: an event from another local day never counts, even when the
    caller passes the wrong day's challenge. Passing the progress of a different challenge is a
    ValueError, because silently starting over would erase a day's progress.
    """
    if progress is None:
        progress = ChallengeProgress(challenge.id, _measured_target(challenge))
    elif progress.challenge_id != challenge.id:
        raise ValueError(f"progress of challenge {progress.challenge_id!r} applied to {challenge.id!r}")
    key = id_digest(event.event_id)
    if progress.completed or key in progress.event_ids:
        return progress, NO_CHANGE
    if local_day(event.ts_ms, tz) != challenge.day.toordinal():
        return progress, NO_CHANGE
    amount = _challenge_amount(challenge, event, rules)
    if amount <= 0:
        return progress, NO_CHANGE
    _remember(progress.event_ids, key, MAX_CHALLENGE_EVENT_IDS)
    # Capped at the target: surplus would change nothing and only look odd in the API.
    progress.progress = min(progress.target, progress.progress + amount)
    if progress.progress >= progress.target:
        progress.completed_at_ms = event.ts_ms
        progress.event_ids.clear()  # nothing counts after completion
    return progress, ProgressChange(advanced=True, completed_now=progress.completed)


def public_challenge(
    challenge: DailyChallenge, progress: ChallengeProgress | None, streak_current: int | None = None
) -> dict[str, Any]:
    """The `GET /v1/challenges/today` body.

    With `streak_current` (the user's streak before today's practice) the streak challenge is
    worded for the user: "extend your streak to N+1 days".
    """
    done = progress is not None and progress.completed and progress.challenge_id == challenge.id
    shown = 0
    if progress is not None and progress.challenge_id == challenge.id:
        shown = progress.progress // 60 if challenge.template == "time_challenge" else progress.progress
    description = challenge.description
    if challenge.template == "streak_challenge" and streak_current is not None and not done:
        description = (
            f"Practise today to extend your streak to {_plural(streak_current + 1, 'day')}."
            if streak_current > 0
            else "Practise today to start a new streak."
        )
    return {
        "id": challenge.id,
        "date": challenge.day.isoformat(),
        "template": challenge.template,
        "title": challenge.title,
        "description": description,
        "target": challenge.target,
        "progress": min(shown, challenge.target),
        "completed": done,
        "xp": challenge.xp,
        "min_score": challenge.min_score,
    }


# ---------------------------------------------------------------------------------------------
# Goals

GoalKind = Literal["practice_frequency", "score_improvement", "category_mastery", "streak_maintenance"]
GoalStatus = Literal["active", "completed", "expired"]
GOAL_KINDS: tuple[GoalKind, ...] = (
    "practice_frequency",
    "score_improvement",
    "category_mastery",
    "streak_maintenance",
)
MAX_ACTIVE_GOALS = 10
#: Finished (completed or expired) goals kept for the API's list; older ones are dropped.
MAX_FINISHED_GOALS = 20
MAX_GOAL_DAYS = 90
MAX_GOAL_COUNT = 1000  # upper bound on targets counted in sessions or days
MAX_GOAL_EVENT_IDS = 16
#: A goal id, in UTF-8 bytes: a client's request id (the API allows 64) or a server uuid.
MAX_GOAL_ID_BYTES = 64
# One lucky session should not complete a score goal: the average needs a few samples.
MIN_SCORE_SESSIONS = 3


@dataclass
class Goal:
    """A user-set goal. For score_improvement, `samples`/`score_sum` accumulate the period's
    scored sessions and `progress` is their average (minus params["baseline"] if given)."""

    goal_id: str
    kind: GoalKind
    target: float
    params: dict[str, Any]
    created_at_ms: int
    deadline_ms: int
    progress: float = 0
    status: GoalStatus = "active"
    completed_at_ms: int | None = None
    samples: int = 0
    score_sum: float = 0
    event_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.goal_id,
            "kind": self.kind,
            "target": self.target,
            "params": self.params,
            "created": self.created_at_ms,
            "deadline": self.deadline_ms,
            "progress": self.progress,
            "status": self.status,
            "done": self.completed_at_ms,
            "n": self.samples,
            "sum": self.score_sum,
            "ids": self.event_ids,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Goal:
        return cls(
            goal_id=data["id"],
            kind=data["kind"],
            target=data["target"],
            params=dict(data["params"]),
            created_at_ms=data["created"],
            deadline_ms=data["deadline"],
            progress=data["progress"],
            status=data["status"],
            completed_at_ms=data["done"],
            samples=data["n"],
            score_sum=data["sum"],
            event_ids=list(data["ids"]),
        )


def new_goal(
    goal_id: str,
    kind: str,
    target: float,
    deadline_ms: int,
    now_ms: int,
    params: Mapping[str, Any] | None = None,
) -> Goal:
    """A validated new goal starting at `now_ms`; ValueError says what is wrong with the input."""
    if not _text_within(goal_id, MAX_GOAL_ID_BYTES):
        raise ValueError(f"goal_id must be printable text of 1..{MAX_GOAL_ID_BYTES} bytes")
    if kind not in GOAL_KINDS:
        raise ValueError(f"unknown goal kind {kind!r}; expected one of {', '.join(GOAL_KINDS)}")
    if _number(target) is None or target <= 0:
        raise ValueError(f"target must be a positive number, got {target!r}")
    if deadline_ms <= now_ms:
        raise ValueError("deadline must be in the future")
    if deadline_ms - now_ms > MAX_GOAL_DAYS * DAY_MS:
        raise ValueError(f"deadline must be at most {MAX_GOAL_DAYS} days ahead")
    checked = _check_goal_params(kind, target, dict(params or {}))
    return Goal(goal_id, kind, target, checked, created_at_ms=now_ms, deadline_ms=deadline_ms)


def _check_goal_params(kind: GoalKind, target: float, params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"score_improvement": {"baseline"}, "category_mastery": {"category"}}.get(kind, set())
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"{kind}: unknown param(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if kind == "score_improvement":
        baseline = params.get("baseline", 0)
        if _number(baseline) is None or not 0 <= baseline <= MAX_SCORE:
            raise ValueError(f"score_improvement: baseline must be a score in 0..{MAX_SCORE}")
        if baseline + target > MAX_SCORE:
            raise ValueError(f"score_improvement: baseline + target must be at most {MAX_SCORE}")
        return params
    if isinstance(target, float) or target > MAX_GOAL_COUNT:
        raise ValueError(f"{kind}: target must be a whole number up to {MAX_GOAL_COUNT}")
    if kind == "category_mastery" and not _text_within(params.get("category"), MAX_CATEGORY_LEN):
        raise ValueError(f"category_mastery: category must be printable text of 1..{MAX_CATEGORY_LEN} bytes")
    return params


def can_add_goal(goals: Iterable[Goal]) -> bool:
    """Whether the user is below the cap on active goals (completed and expired ones are free)."""
    return sum(goal.status == "active" for goal in goals) < MAX_ACTIVE_GOALS


def _reached(goal: Goal) -> bool:
    if goal.kind == "score_improvement":
        return goal.samples >= MIN_SCORE_SESSIONS and goal.progress >= goal.target
    return goal.progress >= goal.target


def _count_goal_event(goal: Goal, event: BehaviorEvent, rules: Rules) -> bool:
    """Fold the event into the goal's accumulators; False if it does not count for this kind."""
    if goal.kind == "practice_frequency":
        if event.type not in _practice_types(rules):
            return False
        goal.progress += 1
        return True
    if event.type not in rules.category_types:
        return False
    score = _score(event)
    if score is None:
        return False
    if goal.kind == "category_mastery":
        if event.props.get("category") != goal.params["category"] or score < rules.high_score:
            return False
        goal.progress += 1
        return True
    goal.samples += 1
    goal.score_sum += score
    # Rounded so that e.g. an average of 80.1 over a baseline of 70.1 reaches a target of 10.
    goal.progress = round(goal.score_sum / goal.samples - goal.params.get("baseline", 0), 6)
    return True


def apply_to_goal(goal: Goal, event: BehaviorEvent, rules: Rules, streak_current: int) -> GoalChange:
    """Count one event toward `goal` (mutated in place).

    `streak_current` is the user's streak after this event (only streak_maintenance reads it;
    its progress follows the streak, down as well as up, until reached).
    """
    if goal.status == "completed" or not goal.created_at_ms <= event.ts_ms <= goal.deadline_ms:
        return NO_CHANGE
    before = goal.progress
    if goal.kind == "streak_maintenance":
        # A level, not a sum: a repeated event reports the same streak, so no ids are needed.
        goal.progress = streak_current
    else:
        key = id_digest(event.event_id)
        if key in goal.event_ids or not _count_goal_event(goal, event, rules):
            return NO_CHANGE
        _remember(goal.event_ids, key, MAX_GOAL_EVENT_IDS)
    completed_now = _reached(goal)
    if completed_now:
        goal.status = "completed"
        goal.completed_at_ms = event.ts_ms
        goal.event_ids.clear()  # a completed goal counts nothing more
    return ProgressChange(advanced=goal.progress > before, completed_now=completed_now)


def expire_goals(goals: Iterable[Goal], now_ms: int) -> list[Goal]:
    """Mark active goals whose deadline has passed as expired; returns the ones just expired."""
    expired = [goal for goal in goals if goal.status == "active" and now_ms > goal.deadline_ms]
    for goal in expired:
        goal.status = "expired"
    return expired


def _finished_at(goal: Goal) -> int:
    return goal.completed_at_ms if goal.completed_at_ms is not None else goal.deadline_ms


def settle_goals(goals: dict[str, Goal], now_ms: int) -> bool:
    """What the owner of the goals does on every command or event of the user: expire goals past
    their deadline (so they stop counting toward MAX_ACTIVE_GOALS), forget their event ids, and
    keep only the newest MAX_FINISHED_GOALS finished ones (completed or expired). True when
    anything changed.

    Dropping the oldest finished goals bounds the state; an expired goal kept here can still be
    completed by a late event from inside its period (see the module docstring).
    """
    expired = expire_goals(goals.values(), now_ms)
    for goal in expired:
        goal.event_ids.clear()
    return bool(prune_finished_goals(goals, MAX_FINISHED_GOALS) or expired)


def prune_finished_goals(goals: dict[str, Goal], keep: int) -> int:
    """Drop all but the ``keep`` newest finished goals (by when they finished); how many went."""
    finished = sorted(
        (g for g in goals.values() if g.status != "active"), key=lambda g: (_finished_at(g), g.goal_id)
    )
    dropped = finished[: max(0, len(finished) - keep)]
    for goal in dropped:
        del goals[goal.goal_id]
    return len(dropped)


def public_goal(goal: Goal) -> dict[str, Any]:
    """A goal as the API shows it. Only a completed goal shows 100 percent."""
    ratio = max(0.0, goal.progress / goal.target)
    percent = 100 if goal.status == "completed" else min(99, math.floor(ratio * 100))
    return {
        "goal_id": goal.goal_id,
        "kind": goal.kind,
        "target": goal.target,
        "params": dict(goal.params),
        "progress": round(goal.progress, 1) if goal.kind == "score_improvement" else goal.progress,
        "percent": percent,
        "status": goal.status,
        "created_at": format_ts(goal.created_at_ms),
        "deadline": format_ts(goal.deadline_ms),
        "completed_at": None if goal.completed_at_ms is None else format_ts(goal.completed_at_ms),
    }
