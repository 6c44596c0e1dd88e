from __future__ import annotations

import pytest

from models.rules import DEFAULT_BADGE_XP, RARITIES, Bonus, RecurringReward, Rules
from tests.models.factories import default_rules, default_rules_text

MINIMAL = """
[actions]
lesson_complete = { xp = 50, streak = true }

[[levels]]
level = 1
title = "Newcomer"
min_xp = 0
"""


def test_contract_xp_values() -> None:
    rules = default_rules()
    assert rules.actions["lesson_complete"].xp == 50
    assert rules.actions["interview_session_complete"].xp == 50
    assert rules.actions["assessment_complete"].xp == 100
    assert rules.actions["daily_challenge_complete"].xp == 25
    assert rules.daily_first_event_xp == 15
    assert rules.level_up_xp_per_level == 25
    assert rules.daily_xp_cap == 3000


def test_interview_perfect_score_bonus_is_the_only_bonus() -> None:
    rules = default_rules()
    assert rules.actions["interview_session_complete"].bonuses == (Bonus("score", "eq", 100, 100),)
    assert [a for a, r in rules.actions.items() if r.bonuses] == ["interview_session_complete"]


def test_at_least_25_actions_and_once_actions() -> None:
    rules = default_rules()
    assert len(rules.actions) >= 25
    assert {a for a, r in rules.actions.items() if r.once} == {"profile_complete", "resume_upload"}
    assert all(r.action == name for name, r in rules.actions.items())


def test_streak_qualifying_is_learning_not_browsing() -> None:
    q = default_rules().streak_qualifying
    for action in (
        "lesson_complete",
        "assessment_complete",
        "interview_session_complete",
        "daily_challenge_complete",
        "quiz_complete",
    ):
        assert action in q
    for action in ("job_view", "job_save", "login", "profile_complete", "course_enroll"):
        assert action not in q


def test_levels_exactly_as_contract() -> None:
    assert [(lv.level, lv.title, lv.min_xp) for lv in default_rules().levels] == [
        (1, "Newcomer", 0),
        (2, "Learner", 100),
        (3, "Practitioner", 300),
        (4, "Improver", 600),
        (5, "Dedicated", 1000),
        (6, "Skilled", 1500),
        (7, "Expert", 2200),
        (8, "Master", 3000),
        (9, "Veteran", 4000),
        (10, "Interview Guru", 5500),
    ]


def test_streak_settings() -> None:
    rules = default_rules()
    assert rules.streak_milestones == (7, 14, 30, 60, 100, 365)
    assert rules.max_freezes == 2


def test_badge_catalogue() -> None:
    badges = {b.id: b for b in default_rules().badges}
    assert {bid: (b.metric, b.threshold) for bid, b in badges.items()} == {
        "first_session": ("count:interview_session_complete", 1),
        "ten_sessions": ("count:interview_session_complete", 10),
        "fifty_sessions": ("count:interview_session_complete", 50),
        "streak_7": ("longest_streak", 7),
        "streak_30": ("longest_streak", 30),
        "perfect_score": ("perfect_scores", 1),
        "behavioral_master": ("category_high_scores:behavioral", 10),
        "marathon": ("max_daily_practice_minutes", 120),
        "first_assessment": ("count:assessment_complete", 1),
        "career_explorer": ("count:career_research", 5),
        "job_hunter": ("count:job_apply", 10),
        "first_mentor": ("count:mentor_connect", 1),
    }
    # The seed documents' rewards; the badges without one take [xp] badge_default (the
    # contract's "badge earned +30").
    assert {bid: b.xp for bid, b in badges.items()} == {
        "first_session": 10,
        "ten_sessions": 50,
        "fifty_sessions": 200,
        "streak_7": 30,
        "streak_30": 150,
        "perfect_score": 100,
        "behavioral_master": 80,
        "marathon": 75,
        "first_assessment": DEFAULT_BADGE_XP,
        "career_explorer": DEFAULT_BADGE_XP,
        "job_hunter": DEFAULT_BADGE_XP,
        "first_mentor": DEFAULT_BADGE_XP,
    }
    assert DEFAULT_BADGE_XP == 30
    assert {bid: b.category for bid, b in badges.items()} == {
        "first_session": "practice",
        "ten_sessions": "practice",
        "fifty_sessions": "practice",
        "streak_7": "streaks",
        "streak_30": "streaks",
        "perfect_score": "mastery",
        "behavioral_master": "mastery",
        "marathon": "practice",
        "first_assessment": "learning",
        "career_explorer": "career",
        "job_hunter": "career",
        "first_mentor": "community",
    }
    assert all(b.rarity in RARITIES for b in badges.values())
    # Every badge counts an event type the rules know, so its counter exists.
    rules = default_rules()
    for b in badges.values():
        if b.metric.startswith("count:"):
            assert b.metric[len("count:") :] in rules.actions


def test_recurring_rewards() -> None:
    assert default_rules().recurring == (
        RecurringReward(
            "weekly_streak",
            "Every full week of your longest streak: 7, 14, 21, ... days.",
            75,
            "longest_streak",
            7,
        ),
        RecurringReward(
            "category_improvement",
            "Scoring 90 or more in a practice category for the first time.",
            40,
            "high_score_categories",
            1,
        ),
    )


def test_levels_list_benefits() -> None:
    levels = default_rules().levels
    assert all(level.benefits for level in levels)
    assert levels[2].benefits == ("Custom avatar frame",)
    assert Rules.from_toml(MINIMAL).levels[0].benefits == ()


def test_badge_default_xp_and_category_apply_to_badges_that_set_none() -> None:
    text = MINIMAL.replace("[actions]", "[xp]\nbadge_default = 12\n\n[actions]") + (
        '[[badges]]\nid = "b"\nname = "B"\ndescription = "d"\nrarity = "common"\n'
        'metric = "longest_streak"\nthreshold = 3\n'
    )
    (badge,) = Rules.from_toml(text).badges
    assert (badge.xp, badge.category) == (12, "general")
    (badge,) = Rules.from_toml(text.replace("badge_default = 12\n", "")).badges
    assert badge.xp == DEFAULT_BADGE_XP


def test_daily_challenge_pays_the_variant_reward_within_bounds() -> None:
    rule = default_rules().actions["daily_challenge_complete"]
    assert rule.xp == 25  # the contract's default, for a completion that names no reward
    assert rule.base_xp({}) == 25
    assert rule.base_xp({"reward_xp": 40}) == 40
    assert rule.base_xp({"reward_xp": 0}) == 0
    for bogus in (-1, rule.xp_prop_max + 1, 40.0, "40", True, None):
        assert rule.base_xp({"reward_xp": bogus}) == 25, bogus
    # Actions without xp_prop ignore the prop altogether.
    assert default_rules().actions["lesson_complete"].base_xp({"reward_xp": 99}) == 50


def test_derived_type_sets() -> None:
    rules = default_rules()
    assert rules.counted_types == frozenset(rules.actions)
    assert "page_scrolled" not in rules.known_types
    assert rules.category_types == {"interview_session_complete"}
    assert rules.high_score == 90


def test_minimal_file_uses_defaults() -> None:
    rules = Rules.from_toml(MINIMAL)
    assert rules.streak_qualifying == {"lesson_complete"}
    assert rules.daily_first_event_xp == 15
    assert rules.streak_milestones == (7, 14, 30, 60, 100, 365)
    assert rules.max_freezes == 2
    assert rules.badges == ()
    assert rules.daily_xp_cap == 3000


def test_count_metric_of_non_action_is_counted() -> None:
    text = MINIMAL + (
        '[[badges]]\nid = "clicker"\nname = "Clicker"\ndescription = "d"\nrarity = "common"\n'
        'xp = 5\nmetric = "count:notification_clicked"\nthreshold = 3\n'
    )
    rules = Rules.from_toml(text)
    assert "notification_clicked" in rules.counted_types
    assert "notification_clicked" in rules.known_types


def _replace(old: str, new: str, text: str | None = None) -> str:
    text = default_rules_text() if text is None else text
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is = = not toml", "not valid TOML"),
        (_replace("[xp]", "[xpp]"), "unknown key"),
        (_replace("daily_cap = 3000", "daily_capp = 3000"), "daily_capp"),
        (_replace("daily_cap = 3000", "daily_cap = 0"), "xp.daily_cap"),
        (
            _replace("lesson_complete = { xp = 50", "lesson_complete = { xp = -5"),
            "actions.lesson_complete.xp",
        ),
        (
            _replace("lesson_complete = { xp = 50", "lesson_complete = { xp = 1.5"),
            "actions.lesson_complete.xp",
        ),
        (_replace("job_view = { xp = 2 }", "job_view = { xp = 2, streak = 1 }"), "actions.job_view"),
        (_replace("job_view = { xp = 2 }", "job_view = { points = 2 }"), "actions.job_view"),
        (_replace('op = "eq"', 'op = "lt"'), "op must be"),
        (_replace("value = 100", 'value = "100"', _replace('op = "eq"', 'op = "gte"')), "value must be"),
        (_replace("value = 100", "value = true"), "value must be"),
        (
            _replace(
                "profile_complete = { xp = 100, once = true }",
                "profile_complete = { xp = 100, once = true, "
                'bonuses = [{ prop = "a", op = "eq", value = 1, xp = 1 }] }',
            ),
            "once-only",
        ),
        (_replace('title = "Learner"\nmin_xp = 100', 'title = "Learner"\nmin_xp = 0'), "increase strictly"),
        (_replace("level = 2\n", "level = 3\n"), "numbered"),
        (_replace('title = "Newcomer"\nmin_xp = 0', 'title = "Newcomer"\nmin_xp = 10'), "level 1"),
        (_replace('rarity = "epic"', 'rarity = "mythic"'), "rarity"),
        (_replace('metric = "perfect_scores"', 'metric = "perfect_scorez"'), "metric"),
        (_replace('metric = "perfect_scores"', 'metric = "count:"'), "metric"),
        (_replace('id = "ten_sessions"', 'id = "first_session"'), "duplicate badge id"),
        (_replace("threshold = 120", "threshold = 0"), "threshold"),
        (_replace('description = "Applied to 10 jobs."\n', ""), "missing key"),
        (_replace("milestones = [7, 14, 30, 60, 100, 365]", "milestones = [14, 7]"), "milestones"),
        (_replace("max_freezes = 2", "max_freezes = -1"), "max_freezes"),
        (MINIMAL.replace("[[levels]]", "[[levelz]]"), "unknown key"),
        (_replace('category = "mastery"', 'category = "wizardry"'), r"badges\[5\]\.category must be one of"),
        (_replace('category = "mastery"', "category = 7"), r"badges\[5\]\.category"),
        (_replace("xp = 200\n", "xp = -200\n"), r"badges\[2\]\.xp must be an integer >= 0"),
        (_replace("xp = 200\n", "xp = 2.5\n"), r"badges\[2\]\.xp"),
        (_replace("badge_default = 30", "badge_default = -1"), "xp.badge_default"),
        (
            _replace('metric = "longest_streak"', 'metric = "streak_length"'),
            r"badges\[3\]\.metric 'streak_length'",
        ),
        (_replace('metric = "high_score_categories"', 'metric = "categories"'), r"recurring\[1\]\.metric"),
        (
            _replace('xp = 75\nmetric = "longest_streak"', 'xp = -75\nmetric = "longest_streak"'),
            r"recurring\[0\]\.xp",
        ),
        (_replace("every = 7", "every = 0"), r"recurring\[0\]\.every"),
        (_replace('id = "category_improvement"', 'id = "weekly_streak"'), "duplicate recurring id"),
        (_replace("every = 7\n", ""), "missing key"),
        (
            _replace('benefits = ["Custom avatar frame"]', 'benefits = "Custom avatar frame"'),
            r"levels\[2\]\.benefits",
        ),
        (_replace('benefits = ["Custom avatar frame"]', "benefits = [1]"), r"levels\[2\]\.benefits\[0\]"),
        (_replace('benefits = ["Custom avatar frame"]', 'benefits = ["a\\u0000b"]'), "printable"),
        (_replace('benefits = ["Custom avatar frame"]', f'benefits = ["{"x" * 81}"]'), "at most 80"),
        (_replace('benefits = ["Custom avatar frame"]', f"benefits = {['b'] * 9}"), "at most 8 benefits"),
        (_replace(", xp_prop_max = 100", ""), "xp_prop and xp_prop_max go together"),
        (_replace("xp_prop_max = 100", "xp_prop_max = -1"), "xp_prop_max"),
        (_replace('xp_prop = "reward_xp"', 'xp_prop = ""'), "xp_prop"),
        ("[actions]\n", "at least one action"),
        ("[[levels]]\nlevel = 1\ntitle = 'N'\nmin_xp = 0\n", "missing key"),
    ],
)
def test_validation_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rules.from_toml(text)


@pytest.mark.parametrize(
    ("bonus", "props", "applies"),
    [
        (Bonus("score", "eq", 100, 100), {"score": 100}, True),
        (Bonus("score", "eq", 100, 100), {"score": 100.0}, True),
        (Bonus("score", "eq", 100, 100), {"score": 99}, False),
        (Bonus("score", "eq", 100, 100), {"score": "100"}, False),
        (Bonus("score", "eq", 1, 100), {"score": True}, False),
        (Bonus("score", "eq", 100, 100), {}, False),
        (Bonus("score", "gte", 90, 10), {"score": 95}, True),
        (Bonus("score", "gte", 90, 10), {"score": 90}, True),
        (Bonus("score", "gte", 90, 10), {"score": 89.9}, False),
        (Bonus("score", "gte", 90, 10), {"score": None}, False),
        (Bonus("level", "eq", "hard", 10), {"level": "hard"}, True),
        (Bonus("level", "eq", "hard", 10), {"level": "easy"}, False),
    ],
)
def test_bonus_applies(bonus: Bonus, props: dict[str, object], applies: bool) -> None:
    assert bonus.applies(props) is applies
