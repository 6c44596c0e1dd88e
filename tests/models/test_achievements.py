"""The achievement catalogue, progress from the serving view, recurring rewards, and the reward
values the fold pays (models/achievements.py, models/gamification.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from models.achievements import (
    catalogue,
    criteria,
    level_benefits,
    level_catalogue,
    pay_recurring,
    progress,
    user_achievements,
    view_metric,
)
from models.challenges import completion_props
from models.gamification import Effects, UserState, apply_event, public_view
from models.rules import BADGE_CATEGORIES, BadgeDef, RecurringReward, Rules
from tests.models.factories import default_rules, event, ms
from tests.models.test_challenges import find

RULES = default_rules()
DAY = 86_400_000
WINDOW = 30 * DAY
T = ms("2026-11-22T08:00:00Z")


def apply(state: UserState, type_: str, ts: int, event_id: str | None = None, **props: Any) -> Effects:
    return apply_event(
        state, event(type_, ts, user_id=state.user_id, event_id=event_id, **props), RULES, WINDOW
    )


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in body["achievements"]}


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_lists_every_badge_with_its_fields() -> None:
    body = catalogue(RULES)
    assert [item["id"] for item in body["achievements"]] == [b.id for b in RULES.badges]
    for item in body["achievements"]:
        assert set(item) == {
            "id",
            "name",
            "description",
            "category",
            "rarity",
            "xp",
            "criteria",
            "target",
            "unit",
        }
        assert item["category"] in BADGE_CATEGORIES
        assert item["criteria"] and item["unit"]
    ten = by_id(body)["ten_sessions"]
    assert ten == {
        "id": "ten_sessions",
        "name": "Ten Sessions",
        "description": "Completed 10 interview practice sessions.",
        "category": "practice",
        "rarity": "uncommon",
        "xp": 50,
        "criteria": "Complete 10 interview practice sessions",
        "target": 10,
        "unit": "sessions",
    }
    assert [(r["id"], r["xp"], r["every"]) for r in body["recurring"]] == [
        ("weekly_streak", 75, 7),
        ("category_improvement", 40, 1),
    ]
    orjson.dumps(body)


@pytest.mark.parametrize(
    ("metric", "threshold", "words"),
    [
        ("count:interview_session_complete", 1, "Complete your first interview practice session"),
        ("count:interview_session_complete", 50, "Complete 50 interview practice sessions"),
        ("count:quiz_complete", 3, "Complete 3 quizzes"),
        ("count:job_apply", 10, "Apply to 10 jobs"),
        ("count:page_scrolled", 2, "Record 2 events of type 'page_scrolled'"),
        ("longest_streak", 7, "Keep a 7-day learning streak"),
        ("perfect_scores", 1, "Score 100 on a session, quiz or assessment"),
        ("perfect_scores", 5, "Score 100 5 times"),
        ("category_high_scores:behavioral", 10, "Score 90 or more in 10 behavioral sessions"),
        ("category_high_scores:technical", 1, "Score 90 or more in 1 technical session"),
        ("max_daily_practice_minutes", 120, "Practise for 120 minutes in one day"),
        ("high_score_categories", 3, "Score 90 or more in 3 practice categories"),
    ],
)
def test_criteria_in_words(metric: str, threshold: int, words: str) -> None:
    badge = BadgeDef("b", "B", "d", "common", 30, metric, threshold)
    assert criteria(badge, RULES) == words


def test_progress_is_capped_at_the_target_and_never_negative() -> None:
    assert progress("count:interview_session_complete", 3, 10) == {
        "current": 3,
        "target": 10,
        "unit": "sessions",
        "text": "3 of 10 sessions",
    }
    assert progress("count:interview_session_complete", 57, 10)["current"] == 10
    assert progress("longest_streak", -4, 7)["text"] == "0 of 7 days"
    assert progress("perfect_scores", 0, 1)["text"] == "0 of 1 perfect score"


# --- one user's achievements -----------------------------------------------------------------


def test_a_user_without_state_sees_everything_locked_at_zero() -> None:
    body = user_achievements("u-new", None, RULES)
    assert body["user_id"] == "u-new"
    assert (body["earned"], body["total"]) == (0, len(RULES.badges))
    for item in body["achievements"]:
        assert item["status"] == "locked" and item["earned_at"] is None
        assert item["progress"]["current"] == 0
        assert item["progress"]["target"] == item["target"]


def test_locked_partial_earned_and_capped_from_a_real_state() -> None:
    s = UserState(user_id="u-1")
    for i in range(3):
        apply(s, "interview_session_complete", T + i * DAY, score=95, category="behavioral", duration_s=1800)
    for i in range(7):
        apply(s, "career_research", T + i * 3_600_000)  # 7 researched, the badge wants 5
    body = user_achievements("u-1", orjson.loads(orjson.dumps(public_view(s, RULES))), RULES)
    items = by_id(body)
    first = items["first_session"]
    assert first["status"] == "earned" and first["earned_at"] == "2026-11-22T08:00:00Z"
    assert first["progress"] == {"current": 1, "target": 1, "unit": "session", "text": "1 of 1 session"}
    assert items["ten_sessions"]["status"] == "locked"
    assert items["ten_sessions"]["progress"]["text"] == "3 of 10 sessions"
    assert items["behavioral_master"]["progress"]["text"] == "3 of 10 sessions"
    assert items["streak_7"]["progress"]["text"] == "3 of 7 days"
    assert items["marathon"]["progress"]["text"] == "30 of 120 minutes"
    explorer = items["career_explorer"]
    assert explorer["status"] == "earned"
    assert explorer["progress"]["current"] == 5  # capped at the target, though 7 were counted
    assert body["earned"] == sum(item["status"] == "earned" for item in body["achievements"])
    assert set(s.badges) == {i for i, item in items.items() if item["status"] == "earned"}


def test_a_locked_badge_whose_metric_passed_the_target_shows_the_target() -> None:
    view = {"metrics": {"longest_streak": 40}, "badges": []}
    item = by_id(user_achievements("u-1", view, RULES))["streak_30"]
    assert item["status"] == "locked"
    assert item["progress"]["current"] == 30


def test_a_view_from_before_metrics_falls_back_to_counters_and_the_streak() -> None:
    view = {
        "badges": [],
        "counters": {"count:interview_session_complete": 4, "perfect_scores": 0},
        "streak": {"current": 2, "longest": 5},
    }
    items = by_id(user_achievements("u-1", view, RULES))
    assert items["ten_sessions"]["progress"]["current"] == 4
    assert items["streak_7"]["progress"]["current"] == 5
    assert items["marathon"]["progress"]["current"] == 0  # not in an old view: 0, not an error


@pytest.mark.parametrize(
    "view",
    [
        {"metrics": {"count:interview_session_complete": -3}},
        {"metrics": {"count:interview_session_complete": True}},
        {"metrics": {"count:interview_session_complete": "9"}},
        {"metrics": {"count:interview_session_complete": 2.5}},
        {"metrics": ["count:interview_session_complete"]},
        {"metrics": None, "counters": "nope", "streak": 7, "badges": "all"},
        {
            "badges": [None, 3, {"id": 5}, {"name": "x"}],
            "counters": {"count:interview_session_complete": None},
        },
    ],
)
def test_garbled_views_count_as_zero(view: dict[str, Any]) -> None:
    body = user_achievements("u-1", view, RULES)
    assert body["earned"] == 0
    assert all(item["progress"]["current"] == 0 for item in body["achievements"])


def test_a_retired_badge_stays_earned() -> None:
    view = {"badges": [{"id": "old_badge", "earned_at": "2026-01-01T00:00:00Z"}]}
    body = user_achievements("u-1", view, RULES)
    assert body["achievements"][-1] == {
        "id": "old_badge",
        "name": "old_badge",
        "status": "earned",
        "earned_at": "2026-01-01T00:00:00Z",
        "retired": True,
    }
    assert body["earned"] == 1 and body["total"] == len(RULES.badges)


def test_view_metric_prefers_the_published_metric() -> None:
    view = {"metrics": {"longest_streak": 9}, "streak": {"longest": 3}}
    assert view_metric(view, "longest_streak") == 9
    assert view_metric({"streak": {"longest": 3}}, "longest_streak") == 3
    assert view_metric({}, "category_high_scores:behavioral") == 0


# --- recurring rewards -----------------------------------------------------------------------

WEEKLY = RecurringReward("weekly_streak", "d", 75, "longest_streak", 7)


def test_pay_recurring_pays_each_multiple_once() -> None:
    paid: dict[str, int] = {}
    assert pay_recurring([WEEKLY], paid, lambda _: 6) == []
    assert pay_recurring([WEEKLY], paid, lambda _: 7) == [("recurring:weekly_streak", 75)]
    assert pay_recurring([WEEKLY], paid, lambda _: 13) == []
    # Two weeks at once (a late event joining two runs): both paid.
    assert pay_recurring([WEEKLY], paid, lambda _: 21) == [("recurring:weekly_streak", 150)]
    # The metric dips (a re-walk) and recovers: nothing is paid twice.
    assert pay_recurring([WEEKLY], paid, lambda _: 10) == []
    assert pay_recurring([WEEKLY], paid, lambda _: 21) == []
    assert paid == {"weekly_streak": 3}
    assert pay_recurring([WEEKLY], paid, lambda _: -50) == []


def test_weekly_streak_is_paid_by_the_fold_with_the_streak_badge() -> None:
    s = UserState(user_id="u-1")
    for d in range(6):
        fx = apply(s, "lesson_complete", T + d * DAY)
        assert not any(reason.startswith("recurring:") for reason, _ in fx.breakdown)
    fx = apply(s, "lesson_complete", T + 6 * DAY)
    gains = dict(fx.breakdown)
    assert gains["badge:streak_7"] == 30
    assert gains["recurring:weekly_streak"] == 75
    for d in range(7, 14):
        fx = apply(s, "lesson_complete", T + d * DAY)
    assert dict(fx.breakdown)["recurring:weekly_streak"] == 75  # day 14: the second week
    assert s.recurring == {"weekly_streak": 2}


def test_category_improvement_pays_once_per_category_reaching_a_high_score() -> None:
    s = UserState(user_id="u-1")
    fx = apply(s, "interview_session_complete", T, score=80, category="technical")
    assert "recurring:category_improvement" not in dict(fx.breakdown)
    fx = apply(s, "interview_session_complete", T + 1, score=92, category="technical")
    assert dict(fx.breakdown)["recurring:category_improvement"] == 40
    fx = apply(s, "interview_session_complete", T + 2, score=95, category="technical")
    assert "recurring:category_improvement" not in dict(fx.breakdown)
    fx = apply(s, "interview_session_complete", T + 3, score=90, category="leadership")
    assert dict(fx.breakdown)["recurring:category_improvement"] == 40
    # A scored event that is not a practice session of a category type does not count.
    fx = apply(s, "quiz_complete", T + 4, score=99, category="situational")
    assert "recurring:category_improvement" not in dict(fx.breakdown)


def test_recurring_memory_round_trips_and_old_states_load() -> None:
    s = UserState(user_id="u-1")
    assert "recurring" not in s.to_dict()  # nothing new in the changelog until paid
    apply(s, "interview_session_complete", T, score=95, category="technical")
    back = UserState.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
    assert back.recurring == {"category_improvement": 1}
    old = s.to_dict()
    del old["recurring"]
    assert UserState.from_dict(old).recurring == {}


# --- reward values the fold pays -------------------------------------------------------------


def test_the_seed_badge_rewards_are_paid() -> None:
    s = UserState(user_id="u-1")
    paid: dict[str, int] = {}
    for i in range(10):
        fx = apply(
            s,
            "interview_session_complete",
            T + i * 60_000,
            score=91,
            category="behavioral",
            duration_s=720 if i < 9 else 600,
        )
        paid.update({reason: xp for reason, xp in fx.breakdown if reason.startswith("badge:")})
    # 10 sessions of 12 minutes (the last 10): 118 minutes, one short of the marathon.
    assert paid == {"badge:first_session": 10, "badge:ten_sessions": 50, "badge:behavioral_master": 80}
    fx = apply(s, "lesson_complete", T + DAY // 2, duration_s=120)
    assert dict(fx.breakdown)["badge:marathon"] == 75
    fx = apply(s, "quiz_complete", T + DAY // 2 + 1, score=100)
    assert dict(fx.breakdown)["badge:perfect_score"] == 100
    fx = apply(s, "assessment_complete", T + DAY // 2 + 2)
    assert dict(fx.breakdown)["badge:first_assessment"] == 30  # no xp of its own: the default


def test_a_rule_book_without_per_badge_xp_pays_the_contract_default() -> None:
    text = (
        "[actions]\nlesson_complete = { xp = 50, streak = true }\n"
        "[[levels]]\nlevel = 1\ntitle = 'N'\nmin_xp = 0\n"
        "[[badges]]\nid = 'first'\nname = 'F'\ndescription = 'd'\nrarity = 'common'\n"
        "metric = 'count:lesson_complete'\nthreshold = 1\n"
    )
    rules = Rules.from_toml(text)
    s = UserState(user_id="u-1")
    fx = apply_event(s, event("lesson_complete", T), rules, WINDOW)
    assert dict(fx.breakdown)["badge:first"] == 30


@pytest.mark.parametrize(
    "template", ["quick_practice", "category_focus", "time_challenge", "streak_challenge"]
)
def test_a_challenge_completion_pays_its_variants_reward(template: str) -> None:
    challenge = find(template)
    s = UserState(user_id="u-1")
    fx = apply(
        s, "daily_challenge_complete", T, event_id=f"challenge:{challenge.id}", **completion_props(challenge)
    )
    assert dict(fx.breakdown)["action:daily_challenge_complete"] == challenge.xp


# --- levels ----------------------------------------------------------------------------------


def test_level_catalogue_and_benefits() -> None:
    body = level_catalogue(RULES)
    assert [(lv["level"], lv["title"], lv["min_xp"]) for lv in body["levels"]] == [
        (lv.level, lv.title, lv.min_xp) for lv in RULES.levels
    ]
    assert body["levels"][0]["benefits"] == ["Daily challenges", "Personal goals"]
    assert level_benefits(RULES, 3) == ["Custom avatar frame"]
    for bogus in (0, 11, -1, True, "3", None, 3.0):
        assert level_benefits(RULES, bogus) == []
