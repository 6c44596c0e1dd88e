"""The achievement catalogue and a user's progress toward each badge; recurring rewards.

Badges are defined in the rule book (``[[badges]]``, models/rules.py) and awarded by the
engagement fold (models/gamification.py). This module is what users see of them: each badge's
criteria in words and, for one user, whether it is earned or how far along it is. Progress is
read from the serving view the worker writes (``public_view``: ``badges``, ``metrics`` and, for
views written before ``metrics`` existed, ``counters`` and ``streak.longest``), never from a
scan of history, and it is capped at the badge's target: a count past the threshold says
nothing more about the badge.

Recurring rewards (``[[recurring]]``) pay again each time their metric reaches another multiple
of ``every``; ``pay_recurring`` is the arithmetic the fold applies.

Pure: no I/O. The view is untrusted in the sense that it may come from an older worker or an
older rule book, so every value read from it is checked and a missing one counts as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Literal, TypedDict

from models.rules import BadgeDef, Level, RecurringReward, Rules

AchievementStatus = Literal["earned", "locked"]


class Progress(TypedDict):
    current: int
    target: int
    unit: str
    text: str


# ---------------------------------------------------------------------------------------------
# Recurring rewards


def pay_recurring(
    rewards: Iterable[RecurringReward], paid: MutableMapping[str, int], value_of: Callable[[str], int]
) -> list[tuple[str, int]]:
    """The XP due for every multiple of ``every`` reached and not yet paid, as (reason, xp);
    ``paid`` (reward id -> multiples paid) is updated. A metric that falls back and climbs again
    pays nothing until it passes the highest multiple already paid."""
    due: list[tuple[str, int]] = []
    for reward in rewards:
        reached = max(0, value_of(reward.metric)) // reward.every
        already = paid.get(reward.id, 0)
        if reached > already:
            paid[reward.id] = reached
            due.append((f"recurring:{reward.id}", reward.xp * (reached - already)))
    return due


# ---------------------------------------------------------------------------------------------
# Criteria in words

#: How a count of an event type reads: (verb, what is counted, the short unit progress is in).
#: Types not listed read generically ("Record 3 events of type 'x'"); the rule book may name
#: any type.
_COUNT_WORDS: Mapping[str, tuple[str, str, str]] = {
    "interview_session_complete": ("Complete", "interview practice session", "session"),
    "assessment_complete": ("Complete", "assessment", "assessment"),
    "lesson_complete": ("Complete", "lesson", "lesson"),
    "video_lesson_complete": ("Watch", "video lesson", "lesson"),
    "quiz_complete": ("Complete", "quiz", "quiz"),
    "course_complete": ("Complete", "course", "course"),
    "coding_exercise_complete": ("Complete", "coding exercise", "exercise"),
    "daily_challenge_complete": ("Complete", "daily challenge", "challenge"),
    "career_research": ("Research", "career", "career"),
    "job_apply": ("Apply to", "job", "job"),
    "mentor_connect": ("Connect with", "mentor", "mentor"),
    "mentor_session_complete": ("Complete", "mentor session", "session"),
    "forum_post": ("Write", "forum post", "post"),
    "peer_review_submit": ("Submit", "peer review", "review"),
}
#: Plurals that are not just "+s".
_PLURALS = {"quiz": "quizzes", "category": "categories"}


def _plural(noun: str) -> str:
    last = noun.rsplit(" ", 1)[-1]
    return noun[: len(noun) - len(last)] + _PLURALS.get(last, last + "s")


def _count(n: int, singular: str) -> str:
    return f"{n} {singular if n == 1 else _plural(singular)}"


def criteria(badge: BadgeDef, rules: Rules) -> str:
    """What earns ``badge``, in words derived from its metric and threshold."""
    kind, _, arg = badge.metric.partition(":")
    n = badge.threshold
    if kind == "count":
        words = _COUNT_WORDS.get(arg)
        if words is None:
            return f"Record {_count(n, 'event')} of type '{arg}'"
        verb, singular, _ = words
        return f"{verb} your first {singular}" if n == 1 else f"{verb} {_count(n, singular)}"
    if kind == "longest_streak":
        return f"Keep a {n}-day learning streak"
    if kind == "perfect_scores":
        return "Score 100 on a session, quiz or assessment" if n == 1 else f"Score 100 {n} times"
    if kind == "category_high_scores":
        return f"Score {rules.high_score} or more in {_count(n, f'{arg} session')}"
    if kind == "max_daily_practice_minutes":
        return f"Practise for {_count(n, 'minute')} in one day"
    if kind == "high_score_categories":
        return f"Score {rules.high_score} or more in {_count(n, 'practice category')}"
    raise ValueError(f"unknown badge metric {badge.metric!r}")


def _unit(metric: str, n: int) -> str:
    """The noun a progress count is in ("3 of 10 sessions")."""
    kind, _, arg = metric.partition(":")
    if kind == "count":
        words = _COUNT_WORDS.get(arg)
        singular = "event" if words is None else words[2]
        return singular if n == 1 else _plural(singular)
    singular = {
        "longest_streak": "day",
        "perfect_scores": "perfect score",
        "category_high_scores": "session",
        "max_daily_practice_minutes": "minute",
        "high_score_categories": "category",
    }.get(kind, "point")
    return singular if n == 1 else _plural(singular)


def progress(metric: str, value: int, target: int) -> Progress:
    """Progress toward ``target``, capped at it."""
    current = min(max(0, value), target)
    unit = _unit(metric, target)
    return {"current": current, "target": target, "unit": unit, "text": f"{current} of {target} {unit}"}


# ---------------------------------------------------------------------------------------------
# The catalogue


def catalogue_entry(badge: BadgeDef, rules: Rules) -> dict[str, Any]:
    return {
        "id": badge.id,
        "name": badge.name,
        "description": badge.description,
        "category": badge.category,
        "rarity": badge.rarity,
        "xp": badge.xp,
        "criteria": criteria(badge, rules),
        "target": badge.threshold,
        "unit": _unit(badge.metric, badge.threshold),
    }


def catalogue(rules: Rules) -> dict[str, Any]:
    """The ``GET /v1/achievements`` body: every badge in rule-book order, and the recurring
    rewards (which are not badges: they have no status, they pay again)."""
    return {
        "achievements": [catalogue_entry(badge, rules) for badge in rules.badges],
        "recurring": [
            {
                "id": r.id,
                "description": r.description,
                "xp": r.xp,
                "every": r.every,
                "unit": _unit(r.metric, 2),
            }
            for r in rules.recurring
        ],
    }


# ---------------------------------------------------------------------------------------------
# One user's achievements, from the serving view


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def view_metric(view: Mapping[str, Any], metric: str) -> int:
    """A badge metric's value as the view says it; 0 when the view does not say.

    ``metrics`` is what the worker publishes; a view written before it existed still has the
    counters and the longest streak, which cover most badges until the user's next event
    rewrites the view.
    """
    metrics = view.get("metrics")
    if isinstance(metrics, Mapping):
        value = _whole(metrics.get(metric))
        if value is not None:
            return value
    counters = view.get("counters")
    if metric.startswith("count:") or metric == "perfect_scores":
        found = _whole(counters.get(metric)) if isinstance(counters, Mapping) else None
        return found or 0
    if metric == "longest_streak":
        streak = view.get("streak")
        found = _whole(streak.get("longest")) if isinstance(streak, Mapping) else None
        return found or 0
    return 0


def _earned(view: Mapping[str, Any]) -> dict[str, str | None]:
    """Badge id -> earned_at, from the view's ``badges`` list (malformed entries skipped)."""
    earned: dict[str, str | None] = {}
    badges = view.get("badges")
    for item in badges if isinstance(badges, list) else ():
        if isinstance(item, Mapping) and isinstance(item.get("id"), str):
            at = item.get("earned_at")
            earned[item["id"]] = at if isinstance(at, str) else None
    return earned


def user_achievements(user_id: str, view: Mapping[str, Any] | None, rules: Rules) -> dict[str, Any]:
    """The ``GET /v1/users/{id}/achievements`` body: every badge of the catalogue with the user's
    status, then any badge the user earned that the rule book no longer has (badges are never
    taken back). ``view`` None (no event yet): everything locked at 0."""
    view = view or {}
    earned = _earned(view)
    items: list[dict[str, Any]] = []
    for badge in rules.badges:
        entry = catalogue_entry(badge, rules)
        if badge.id in earned:
            entry["status"] = "earned"
            entry["earned_at"] = earned[badge.id]
            entry["progress"] = progress(badge.metric, badge.threshold, badge.threshold)
        else:
            entry["status"] = "locked"
            entry["earned_at"] = None
            entry["progress"] = progress(badge.metric, view_metric(view, badge.metric), badge.threshold)
        items.append(entry)
    for badge_id, at in earned.items():
        if badge_id not in rules.badge_by_id:
            items.append(
                {"id": badge_id, "name": badge_id, "status": "earned", "earned_at": at, "retired": True}
            )
    return {
        "user_id": user_id,
        "earned": sum(item["status"] == "earned" for item in items),
        "total": len(rules.badges),
        "achievements": items,
    }


# ---------------------------------------------------------------------------------------------
# Levels


def level_entry(level: Level) -> dict[str, Any]:
    return {
        "level": level.level,
        "title": level.title,
        "min_xp": level.min_xp,
        "benefits": list(level.benefits),
    }


def level_catalogue(rules: Rules) -> dict[str, Any]:
    """The ``GET /v1/levels`` body."""
    return {"levels": [level_entry(level) for level in rules.levels]}


def level_benefits(rules: Rules, level: object) -> list[str]:
    """The benefits of level number ``level`` ([] for a number the rule book does not have)."""
    number = _whole(level)
    if number is None or not 1 <= number <= len(rules.levels):
        return []
    return list(rules.levels[number - 1].benefits)
