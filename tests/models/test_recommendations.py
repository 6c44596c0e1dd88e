"""Next best actions (models/recommendations.py): each rule, the horizons and their caps, stable
ids, the digest the worker compares, hostile text, and gathering facts from the worker's states."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from models.applications import apply_status
from models.career import CareerState
from models.challenges import Goal
from models.events import parse_application_status
from models.gamification import UserState
from models.growth import GrowthState
from models.matching import Candidate
from models.recommendations import (
    MAX_MATCH_FACTS,
    MAX_PER_HORIZON,
    CategoryFact,
    GoalFact,
    HotSkill,
    MatchFact,
    Recommendation,
    UserFacts,
    gather_facts,
    hot_skills_of,
    list_digest,
    public_list,
    recommend,
)
from models.streaks import StreakState, local_day
from models.time_units import DAY_MS, HOUR_MS

#: 2026-11-22 20:00 in Nairobi (UTC+3): late in the day there.
EVENING = int(datetime(2026, 11, 22, 17, 0, tzinfo=UTC).timestamp() * 1000)
#: 2026-11-22 10:00 in Nairobi.
MORNING = int(datetime(2026, 11, 22, 7, 0, tzinfo=UTC).timestamp() * 1000)
NAIROBI = "Africa/Nairobi"


def match(
    job_id: str, score: int = 80, missing: tuple[str, ...] = (), deadline: int | None = None
) -> MatchFact:
    return MatchFact(job_id, f"Job {job_id}", score, missing, deadline)


def facts(**fields: object) -> UserFacts:
    return UserFacts(user_id="u-1", **fields)  # type: ignore[arg-type]


def by_id(items: list[Recommendation]) -> dict[str, Recommendation]:
    return {i.id: i for i in items}


# --- skill gaps ----------------------------------------------------------------------------------


def test_the_skill_most_missing_from_the_top_matches_is_this_weeks_and_the_reason_cites_it() -> None:
    matches = tuple(
        match(f"j-{n}", 90 - n, ("sql",) if n < 7 else ("tableau",) if n < 10 else ("excel",))
        for n in range(12)
    )
    items = recommend(facts(matches=matches), (), EVENING)
    sql = by_id(items)["learn_skill:sql"]
    assert sql.horizon == "this_week"
    assert sql.kind == "learn_skill"
    assert sql.title == "Learn sql"
    assert sql.reason == "7 of your top 10 matches ask for sql."
    assert sql.action == {"type": "learn_skill", "skill": "sql"}
    # tableau: 3 of the top 10 (at the 30% floor) is the roadmap; excel is outside the top 10.
    assert by_id(items)["learn_skill:tableau"].horizon == "roadmap"
    assert "learn_skill:excel" not in by_id(items)


def test_closed_matches_do_not_count_and_a_rare_gap_is_not_recommended() -> None:
    matches = (
        match("j-1", 90, ("sql",), deadline=EVENING - 1),  # closed
        *(match(f"j-{n}", 80, ("python",) if n == 2 else ()) for n in range(2, 10)),
    )
    items = recommend(facts(matches=matches), (), EVENING)
    assert not [i for i in items if i.kind == "learn_skill"]  # python: 1 of 8 < 30%


# --- streak --------------------------------------------------------------------------------------


def streak(last_day: int, current: int = 5, freezes: int = 0) -> StreakState:
    return StreakState(current, current, freezes, last_day, 0)


def test_a_streak_active_yesterday_is_at_risk_late_in_the_users_day() -> None:
    today = local_day(EVENING, NAIROBI)
    f = facts(timezone=NAIROBI, streak=streak(today - 1))
    [item] = recommend(f, (), EVENING)
    assert (item.id, item.horizon, item.kind) == ("streak_at_risk:2026-11-22", "immediate", "streak_at_risk")
    assert "5-day streak" in item.title
    assert "20:00" in item.reason
    assert recommend(f, (), MORNING) == []  # too early in their day
    assert recommend(facts(timezone=NAIROBI, streak=streak(today)), (), EVENING) == []  # done today
    assert recommend(facts(timezone=NAIROBI, streak=streak(today - 3)), (), EVENING) == []  # broken


def test_a_freeze_is_mentioned_and_an_unknown_timezone_is_no_risk() -> None:
    today = local_day(EVENING, NAIROBI)
    [item] = recommend(facts(timezone=NAIROBI, streak=streak(today - 1, freezes=1)), (), EVENING)
    assert "freezes" in item.reason
    assert recommend(facts(timezone="Mars/Olympus", streak=streak(today - 1)), (), EVENING) == []


# --- closing matches -----------------------------------------------------------------------------


def test_a_match_closing_within_a_week_is_immediate_soonest_first() -> None:
    matches = (
        match("j-late", 95, deadline=EVENING + 30 * DAY_MS),
        match("j-soon", 70, deadline=EVENING + 2 * DAY_MS - HOUR_MS),
        match("j-sooner", 75, deadline=EVENING + HOUR_MS),
    )
    items = recommend(facts(matches=matches), (), EVENING)
    immediate = [i for i in items if i.horizon == "immediate"]
    assert [i.id for i in immediate] == ["apply_closing:j-sooner", "apply_closing:j-soon"]
    assert immediate[0].reason == "It closes in 1 day and you match it at 75%."
    assert immediate[1].action == {"type": "apply", "job_id": "j-soon"}


# --- goals ---------------------------------------------------------------------------------------


def goal(progress: float, created: int, deadline: int, goal_id: str = "g-1") -> GoalFact:
    return GoalFact(goal_id, "practice_frequency", 10, progress, created, deadline)


def test_a_goal_behind_its_pace_this_week_or_today_when_it_ends_within_a_day() -> None:
    behind = goal(1, EVENING - 10 * DAY_MS, EVENING + 10 * DAY_MS)
    [item] = recommend(facts(goals=(behind,)), (), EVENING)
    assert (item.id, item.horizon) == ("goal_behind:g-1", "this_week")
    assert item.reason == "You are 10% of the way with 50% of the time gone; it ends in 10 days."
    ending = goal(5, EVENING - 9 * DAY_MS, EVENING + 12 * HOUR_MS)
    assert recommend(facts(goals=(ending,)), (), EVENING)[0].horizon == "immediate"


def test_a_goal_on_pace_or_just_started_is_not_behind() -> None:
    on_pace = goal(4, EVENING - 10 * DAY_MS, EVENING + 10 * DAY_MS)  # 40% done, 50% gone: within slack
    early = goal(0, EVENING - DAY_MS, EVENING + 9 * DAY_MS)  # 10% gone
    over = goal(0, EVENING - 10 * DAY_MS, EVENING - 1)  # past its deadline
    assert recommend(facts(goals=(on_pace, early, over)), (), EVENING) == []


# --- categories ----------------------------------------------------------------------------------


def test_the_weakest_category_is_practised_when_weak_and_compared_with_another() -> None:
    weak = CategoryFact("technical", 52.5, 4, 3)
    [item] = recommend(facts(weak_category=weak), (), EVENING)
    assert (item.id, item.horizon, item.kind) == (
        "practice_category:technical",
        "this_week",
        "practice_category",
    )
    assert item.reason == "Your average in technical is 52 over 4 sessions, your lowest of 3 categories."
    assert recommend(facts(weak_category=CategoryFact("technical", 52.5, 4, 1)), (), EVENING) == []
    assert recommend(facts(weak_category=CategoryFact("technical", 75, 4, 3)), (), EVENING) == []


# --- hot skills ----------------------------------------------------------------------------------


def test_hot_skills_the_user_has_or_lacks() -> None:
    hot = (HotSkill("python", 40, "steady"), HotSkill("dbt", 12, "rising"), HotSkill("cobol", 9, "falling"))
    items = by_id(recommend(facts(skills=("python",)), hot, EVENING))
    assert set(items) == {"use_hot_skill:python", "learn_hot_skill:dbt"}
    assert items["use_hot_skill:python"].horizon == "this_week"
    assert items["learn_hot_skill:dbt"].horizon == "roadmap"
    assert "rising" in items["learn_hot_skill:dbt"].reason


def test_a_hot_skill_that_is_also_a_gap_is_one_item_citing_both() -> None:
    matches = tuple(match(f"j-{n}", 80, ("sql",)) for n in range(3))
    items = recommend(facts(matches=matches), (HotSkill("sql", 31, "rising"),), EVENING)
    assert [i.id for i in items] == ["learn_skill:sql"]
    assert items[0].reason == "3 of your top 3 matches ask for sql; it is in 31 postings today."


def test_hot_skills_of_reads_a_pulse_and_ignores_junk() -> None:
    pulse = {
        "hot_skills_today": [
            {"skill": "SQL", "count": 5, "trend": "new"},
            {"skill": 3, "count": 5},
            "junk",
            {"skill": "x", "count": True},
        ]
    }
    assert hot_skills_of(pulse) == (HotSkill("sql", 5, "new"),)
    assert hot_skills_of(None) == () == hot_skills_of({"hot_skills_today": "nope"})


# --- the list ------------------------------------------------------------------------------------


def everything() -> UserFacts:
    today = local_day(EVENING, NAIROBI)
    return facts(
        timezone=NAIROBI,
        streak=streak(today - 1),
        skills=("python", "excel"),
        matches=tuple(
            match(f"j-{n}", 90 - n, ("sql", f"s{n % 3}"), deadline=EVENING + (n + 1) * HOUR_MS)
            for n in range(8)
        ),
        goals=tuple(goal(0, EVENING - 10 * DAY_MS, EVENING + 10 * DAY_MS, f"g-{n}") for n in range(5)),
        weak_category=CategoryFact("technical", 40, 3, 2),
    )


def test_at_most_three_per_horizon_immediate_first() -> None:
    hot = tuple(HotSkill(s, 10, "rising") for s in ("python", "excel", "dbt", "go", "rust"))
    items = recommend(everything(), hot, EVENING)
    horizons = [i.horizon for i in items]
    assert horizons == sorted(horizons, key=["immediate", "this_week", "roadmap"].index)
    for h in ("immediate", "this_week", "roadmap"):
        assert horizons.count(h) == MAX_PER_HORIZON
    assert items[0].kind == "streak_at_risk"  # the streak outranks the closing jobs
    assert len({i.id for i in items}) == len(items)


def test_same_inputs_same_list_and_the_digest_ignores_only_the_reasons_counts() -> None:
    hot = (HotSkill("dbt", 12, "rising"),)
    first = recommend(everything(), hot, EVENING)
    assert recommend(everything(), hot, EVENING) == first
    recounted = recommend(everything(), (HotSkill("dbt", 13, "rising"),), EVENING)
    assert [i.reason for i in recounted] != [i.reason for i in first]
    assert list_digest(recounted) == list_digest(first)
    assert list_digest(first[1:]) != list_digest(first)
    body = public_list("u-1", first, EVENING)
    assert body["digest"] == list_digest(first) and body["as_of"] == "2026-11-22T17:00:00Z"
    assert set(body["items"][0]) == {"id", "horizon", "kind", "title", "reason", "action"}


def test_hostile_text_is_cleaned_bounded_and_ids_stay_short() -> None:
    skill = "\x1b[31m" + "ß" * 300 + "\n:x"
    matches = tuple(match(f"j-{n}", 80, (skill,)) for n in range(3))
    weak = CategoryFact("cat\u2028egory\x00" * 10, 10, 3, 2)
    items = recommend(facts(matches=matches, weak_category=weak), (), EVENING)
    assert len(items) == 2
    for item in items:
        assert item.title.isprintable() and len(item.title.encode()) <= 100
        assert item.reason.isprintable()
        assert len(item.id) <= 64 and item.id.count(":") == 1


# --- facts ---------------------------------------------------------------------------------------


def test_facts_round_trip_and_refuse_another_version() -> None:
    f = everything()
    assert UserFacts.from_dict(f.to_dict()) == f
    assert f.digest() == UserFacts.from_dict(f.to_dict()).digest()
    with pytest.raises(ValueError, match="version"):
        UserFacts.from_dict({**f.to_dict(), "v": 99})


def test_gather_facts_from_the_workers_states() -> None:
    user = UserState("u-1", timezone=NAIROBI)
    user.streak = StreakState(3, 3, 0, local_day(EVENING, NAIROBI) - 1, 0)
    user.category_stats = {"technical": [4, 200, 0], "behavioral": [2, 170, 1], "leadership": [1, 10, 0]}
    career = CareerState("u-1", candidate=Candidate("u-1", skills=("Python",)))
    for n in range(MAX_MATCH_FACTS + 5):
        career.matches[f"j-{n:02}"] = {
            "job_id": f"j-{n:02}",
            "title": "Analyst",
            "match_score": 60 + n,
            "missing_skills": ["sql"],
            "deadline": "2026-11-29T00:00:00Z",
        }
    applied = {
        "event_id": "a-1",
        "application_id": "app-1",
        "user_id": "u-1",
        "job_id": f"j-{MAX_MATCH_FACTS + 4:02}",  # the best match, applied for
        "status": "submitted",
        "ts": EVENING - DAY_MS,
    }
    application, _ = apply_status(None, parse_application_status(orjson.dumps(applied), EVENING))
    career.record_application(application)
    growth = GrowthState("u-1")
    growth.goals["g-1"] = Goal("g-1", "practice_frequency", 10, {}, EVENING - DAY_MS, EVENING + DAY_MS, 2)
    growth.goals["g-2"] = Goal(
        "g-2", "practice_frequency", 10, {}, EVENING - DAY_MS, EVENING + DAY_MS, 10, status="completed"
    )

    f = gather_facts("u-1", user, career, growth)
    assert f.timezone == NAIROBI and f.skills == ("python",)
    assert f.streak == user.streak
    assert len(f.matches) == MAX_MATCH_FACTS
    assert f.matches[0].job_id == f"j-{MAX_MATCH_FACTS + 3:02}"  # best not applied for
    assert f.matches[0].deadline_ms == int(datetime(2026, 11, 29, tzinfo=UTC).timestamp() * 1000)
    assert [g.goal_id for g in f.goals] == ["g-1"]
    assert f.weak_category == CategoryFact("technical", 50.0, 4, 2)  # leadership: 1 session, unscored
    assert gather_facts("u-2", None, None, None) == UserFacts("u-2")


def test_actions_carry_the_cleaned_text() -> None:
    matches = tuple(match(f"j-{n}", 80, ("sq\x1bl",)) for n in range(3))
    weak = CategoryFact("tech\nnical", 10, 3, 2)
    items = {i.kind: i for i in recommend(facts(matches=matches, weak_category=weak), (), EVENING)}
    assert items["learn_skill"].action == {"type": "learn_skill", "skill": "sql"}
    assert items["practice_category"].action == {"type": "practice", "category": "technical"}
    # The ids keep the raw subject apart from a clean one ("sql"): a digest of it.
    assert items["learn_skill"].id != "learn_skill:sql" and items["learn_skill"].id.isprintable()
