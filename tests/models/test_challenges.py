from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from models.challenges import (
    CATEGORIES,
    CHALLENGE_REWARD_PROP,
    MAX_ACTIVE_GOALS,
    MAX_FINISHED_GOALS,
    MAX_GOAL_COUNT,
    NO_CHANGE,
    QUICK_PRACTICE_SESSIONS,
    TEMPLATES,
    TIME_CHALLENGE_MINUTES,
    VARIANTS,
    ChallengeProgress,
    DailyChallenge,
    Goal,
    ProgressChange,
    apply_to_challenge,
    apply_to_goal,
    can_add_goal,
    challenge_for,
    completion_props,
    expire_goals,
    new_goal,
    public_challenge,
    public_goal,
    settle_goals,
)
from models.digests import id_digest
from tests.models.factories import default_rules, event, ms

RULES = default_rules()
DAY = 86_400_000
T = ms("2026-11-22T08:00:00Z")
NAIROBI = "Africa/Nairobi"  # UTC+3 all year


def find(template: str, start: date = date(2026, 11, 1)) -> DailyChallenge:
    for offset in range(60):
        challenge = challenge_for(start + timedelta(days=offset))
        if challenge.template == template:
            return challenge
    raise AssertionError(f"no {template} challenge found")


def at(challenge: DailyChallenge, hhmm: str, tz: str = "UTC", day_offset: int = 0) -> int:
    """Epoch ms of a local wall-clock time on the challenge's day (or a day around it)."""
    hour, minute = map(int, hhmm.split(":"))
    day = challenge.day + timedelta(days=day_offset)
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(tz))
    return int(local.timestamp() * 1000)


def feed(
    challenge: DailyChallenge,
    progress: ChallengeProgress | None,
    type_: str,
    ts: int,
    tz: str = "UTC",
    event_id: str | None = None,
    **props: Any,
) -> tuple[ChallengeProgress, ProgressChange]:
    return apply_to_challenge(progress, challenge, event(type_, ts, event_id=event_id, **props), RULES, tz)


# --- challenge_for ---------------------------------------------------------------------------


def test_challenge_for_is_deterministic_and_pinned() -> None:
    day = date(2026, 11, 1)
    assert challenge_for(day) == challenge_for(date.fromisoformat("2026-11-01"))
    # Pinned: the schedule is part of the contract (a silent change would reshuffle history).
    assert challenge_for(day) == DailyChallenge(
        "2026-11-01",
        "category_focus",
        1,
        {"category": "behavioral"},
        "Behavioral focus",
        "Complete 1 behavioral interview session scoring 70 or more today.",
        40,
        70,
    )
    assert challenge_for(date(2026, 11, 2)).template == "time_challenge"


@pytest.mark.parametrize("year", [2026, 2027])
def test_every_month_covers_all_templates_roughly_evenly(year: int) -> None:
    for month in range(1, 13):
        first = date(year, month, 1)
        days = [first + timedelta(days=i) for i in range(31) if (first + timedelta(days=i)).month == month]
        counts = Counter(challenge_for(d).template for d in days)
        assert set(counts) == set(TEMPLATES), (year, month)
        assert all(abs(n - len(days) / 4) <= 1.75 for n in counts.values()), (year, month, counts)


def test_any_week_shows_every_template() -> None:
    start = date(2026, 1, 1)
    templates = [challenge_for(start + timedelta(days=i)).template for i in range(400)]
    assert all(set(templates[i : i + 7]) == set(TEMPLATES) for i in range(len(templates) - 6))


def test_parameters_cover_their_ranges() -> None:
    year = [challenge_for(date(2026, 1, 1) + timedelta(days=i)) for i in range(365)]
    by_template: dict[str, list[DailyChallenge]] = {
        t: [c for c in year if c.template == t] for t in TEMPLATES
    }
    assert {c.target for c in by_template["quick_practice"]} == set(QUICK_PRACTICE_SESSIONS)
    assert {c.params["category"] for c in by_template["category_focus"]} == set(CATEGORIES)
    assert {c.target for c in by_template["time_challenge"]} == set(TIME_CHALLENGE_MINUTES)
    assert all(c.params == {"minutes": c.target} for c in by_template["time_challenge"])
    assert {c.target for c in by_template["streak_challenge"]} == {1}
    assert all(c.id == c.day.isoformat() for c in year)
    # Each variant carries its own reward and minimum score, whatever the day's parameters.
    assert all((c.xp, c.min_score) == (VARIANTS[c.template].xp, VARIANTS[c.template].min_score) for c in year)


# --- challenge progress ----------------------------------------------------------------------


def test_quick_practice_completes_once() -> None:
    challenge = find("quick_practice")
    progress: ChallengeProgress | None = None
    changes = []
    types = ["lesson_complete", "quiz_complete", "interview_session_complete", "coding_exercise_complete"]
    for i, type_ in enumerate(types[: challenge.target]):
        progress, change = feed(challenge, progress, type_, at(challenge, f"{9 + i}:00"))
        changes.append(change)
    assert progress is not None
    assert changes[:-1] == [ProgressChange(advanced=True)] * (challenge.target - 1)
    assert changes[-1] == ProgressChange(advanced=True, completed_now=True)
    assert progress.progress == challenge.target and progress.completed
    assert progress.completed_at_ms == at(challenge, f"{8 + challenge.target}:00")

    after, change = feed(challenge, progress, "lesson_complete", at(challenge, "20:00"))
    assert change == NO_CHANGE
    assert after.progress == challenge.target
    assert after.completed_at_ms == at(challenge, f"{8 + challenge.target}:00")


@pytest.mark.parametrize("type_", ["job_view", "goal_set", "daily_challenge_complete", "goal_achieved", "x"])
def test_non_practice_events_do_not_count(type_: str) -> None:
    challenge = find("quick_practice")
    progress, change = feed(challenge, None, type_, at(challenge, "10:00"), duration_s=3600)
    assert change == NO_CHANGE
    assert progress.progress == 0 and progress.event_ids == []


def test_same_event_id_counts_once() -> None:
    challenge = find("quick_practice")
    progress, first = feed(challenge, None, "lesson_complete", at(challenge, "10:00"), event_id="dup")
    progress, again = feed(challenge, progress, "lesson_complete", at(challenge, "10:00"), event_id="dup")
    assert first.advanced and again == NO_CHANGE
    # Remembered as a fixed-size digest, whatever the id's length (models.digests).
    assert progress.progress == 1 and progress.event_ids == [id_digest("dup")]


def test_category_focus_counts_only_its_category() -> None:
    challenge = find("category_focus")
    category = challenge.params["category"]
    other = next(c for c in CATEGORIES if c != category)
    ts = at(challenge, "10:00")
    progress, change = feed(challenge, None, "interview_session_complete", ts, category=other, score=99)
    assert change == NO_CHANGE
    progress, change = feed(challenge, progress, "lesson_complete", ts, category=category)
    assert change == NO_CHANGE
    progress, change = feed(challenge, progress, "interview_session_complete", ts)
    assert change == NO_CHANGE
    for i in range(challenge.target):
        progress, change = feed(
            challenge, progress, "interview_session_complete", ts + i, category=category, score=80
        )
    assert change.completed_now and progress.progress == challenge.target


def test_category_focus_needs_its_minimum_score() -> None:
    challenge = find("category_focus")
    category = challenge.params["category"]
    assert challenge.min_score == VARIANTS["category_focus"].min_score == 70
    ts = at(challenge, "10:00")
    progress: ChallengeProgress | None = None
    # Unscored, below the minimum, or a bogus score (outside 0..100, a bool, a string): no count.
    for score in (None, 69, 69.99, 101, True, "95", float("nan")):
        props = {"category": category} if score is None else {"category": category, "score": score}
        progress, change = feed(challenge, progress, "interview_session_complete", ts, **props)
        assert change == NO_CHANGE, score
    for i in range(challenge.target):
        progress, change = feed(
            challenge, progress, "interview_session_complete", ts + i, category=category, score=70
        )
    assert change.completed_now and progress is not None and progress.completed


def test_unscored_variants_count_any_practice() -> None:
    for template in ("quick_practice", "time_challenge", "streak_challenge"):
        challenge = find(template)
        assert challenge.min_score is None
        _, change = feed(challenge, None, "lesson_complete", at(challenge, "10:00"), duration_s=60)
        assert change.advanced, template


def test_completion_props_carry_the_variants_reward_which_the_rules_pay() -> None:
    for template in TEMPLATES:
        challenge = find(template)
        props = completion_props(challenge)
        assert props == {
            "challenge_id": challenge.id,
            "template": template,
            "reward_xp": VARIANTS[template].xp,
        }
        # The shipped rule book pays that prop (and only up to its bound).
        rule = RULES.actions["daily_challenge_complete"]
        assert rule.xp_prop == CHALLENGE_REWARD_PROP
        assert rule.base_xp(props) == challenge.xp <= rule.xp_prop_max


def test_time_challenge_sums_seconds_and_shows_minutes() -> None:
    challenge = find("time_challenge")
    needed_s = challenge.target * 60
    ts = at(challenge, "10:00")
    progress, change = feed(challenge, None, "lesson_complete", ts, duration_s=needed_s - 90)
    assert change == ProgressChange(advanced=True)
    view = public_challenge(challenge, progress)
    assert view["progress"] == challenge.target - 2  # 90 s short: whole minutes, rounded down
    assert not view["completed"]

    for bad in (True, -5, 0, "600", float("inf")):
        progress, change = feed(challenge, progress, "lesson_complete", ts, duration_s=bad)
        assert change == NO_CHANGE, bad
    progress, change = feed(challenge, progress, "job_view", ts, duration_s=600)
    assert change == NO_CHANGE
    progress, change = feed(challenge, progress, "quiz_complete", ts, duration_s=60)
    assert change == ProgressChange(advanced=True)
    progress, change = feed(challenge, progress, "quiz_complete", ts + 1, duration_s=45)
    assert change == ProgressChange(advanced=True, completed_now=True)
    assert progress.progress == progress.target == needed_s  # surplus is not stored
    assert public_challenge(challenge, progress)["progress"] == challenge.target


def test_streak_challenge_completes_on_first_practice_and_words_the_streak() -> None:
    challenge = find("streak_challenge")
    assert challenge.target == 1
    assert public_challenge(challenge, None, streak_current=4)["description"] == (
        "Practise today to extend your streak to 5 days."
    )
    assert public_challenge(challenge, None, streak_current=0)["description"] == (
        "Practise today to start a new streak."
    )
    assert public_challenge(challenge, None)["description"] == challenge.description
    progress, change = feed(challenge, None, "article_read", at(challenge, "07:00"))
    assert change == ProgressChange(advanced=True, completed_now=True)
    view = public_challenge(challenge, progress, streak_current=5)
    assert view["completed"] and view["description"] == challenge.description


def test_local_day_boundaries_in_a_non_utc_zone() -> None:
    challenge = find("streak_challenge")
    late_evening = at(challenge, "23:30", NAIROBI)  # 20:30Z on the same date
    after_midnight = at(challenge, "00:30", NAIROBI, day_offset=1)  # 21:30Z, still that UTC date
    assert datetime.fromtimestamp(after_midnight / 1000, ZoneInfo("UTC")).date() == challenge.day

    progress, change = feed(challenge, None, "lesson_complete", after_midnight, NAIROBI)
    assert change == NO_CHANGE  # the next local day, though the same UTC date
    progress, change = feed(challenge, progress, "lesson_complete", late_evening, NAIROBI)
    assert change.completed_now

    # 00:30 local on the day itself is 21:30Z the day before: it belongs to this challenge.
    early = at(challenge, "00:30", NAIROBI)
    assert datetime.fromtimestamp(early / 1000, ZoneInfo("UTC")).date() < challenge.day
    assert feed(challenge, None, "lesson_complete", early, NAIROBI)[1].completed_now
    assert feed(challenge, None, "lesson_complete", early, "UTC")[1] == NO_CHANGE


def test_progress_of_another_challenge_is_refused() -> None:
    challenge = challenge_for(date(2026, 11, 22))
    yesterday = ChallengeProgress("2026-11-21", 3, 1)
    with pytest.raises(ValueError, match="2026-11-21"):
        feed(challenge, yesterday, "lesson_complete", at(challenge, "10:00"))


def test_challenge_progress_round_trips_through_json() -> None:
    challenge = find("quick_practice")
    progress, _ = feed(challenge, None, "lesson_complete", at(challenge, "10:00"), event_id="a")
    progress, _ = feed(challenge, progress, "lesson_complete", at(challenge, "11:00"), event_id="b")
    restored = ChallengeProgress.from_dict(orjson.loads(orjson.dumps(progress.to_dict())))
    assert restored == progress
    # The restored record is still idempotent.
    assert feed(challenge, restored, "lesson_complete", at(challenge, "11:00"), event_id="b")[1] == NO_CHANGE


def test_public_challenge_shape() -> None:
    challenge = find("quick_practice")
    assert public_challenge(challenge, None) == {
        "id": challenge.id,
        "date": challenge.id,
        "template": "quick_practice",
        "title": "Quick practice",
        "description": f"Complete {challenge.target} practice sessions today.",
        "target": challenge.target,
        "progress": 0,
        "completed": False,
        "xp": 25,
        "min_score": None,
    }
    progress, _ = feed(challenge, None, "lesson_complete", at(challenge, "10:00"))
    assert public_challenge(challenge, progress)["progress"] == 1


# --- goals -----------------------------------------------------------------------------------


def goal(kind: str = "practice_frequency", target: float = 3, days: int = 7, **params: Any) -> Goal:
    return new_goal("g-1", kind, target, T + days * DAY, T, params)


def apply_g(g: Goal, type_: str, ts: int, streak: int = 0, event_id: str | None = None, **props: Any) -> Any:
    return apply_to_goal(g, event(type_, ts, event_id=event_id, **props), RULES, streak)


def test_new_goal_fields() -> None:
    g = new_goal("g-7", "category_mastery", 5, T + 90 * DAY, T, {"category": "technical"})
    assert (g.goal_id, g.kind, g.target, g.params) == (
        "g-7",
        "category_mastery",
        5,
        {"category": "technical"},
    )
    assert (g.created_at_ms, g.deadline_ms, g.progress, g.status) == (T, T + 90 * DAY, 0, "active")
    assert g.completed_at_ms is None and g.event_ids == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("g", "run_marathon", 3, T + DAY, T, {}), "unknown goal kind"),
        (("g", "practice_frequency", 0, T + DAY, T, {}), "positive"),
        (("g", "practice_frequency", -2, T + DAY, T, {}), "positive"),
        (("g", "practice_frequency", True, T + DAY, T, {}), "positive"),
        (("g", "score_improvement", float("nan"), T + DAY, T, {}), "positive"),
        (("g", "practice_frequency", 3, T, T, {}), "future"),
        (("g", "practice_frequency", 3, T - DAY, T, {}), "future"),
        (("g", "practice_frequency", 3, T + 90 * DAY + 1, T, {}), "90 days"),
        (("g", "practice_frequency", 2.5, T + DAY, T, {}), "whole number"),
        (("g", "streak_maintenance", MAX_GOAL_COUNT + 1, T + DAY, T, {}), "whole number"),
        (("g", "practice_frequency", 3, T + DAY, T, {"category": "x"}), "unknown param"),
        (("g", "category_mastery", 3, T + DAY, T, {}), "category must be"),
        (("g", "category_mastery", 3, T + DAY, T, {"category": ""}), "category must be"),
        (("g", "score_improvement", 101, T + DAY, T, {}), "at most 100"),
        (("g", "score_improvement", 20, T + DAY, T, {"baseline": 85}), "at most 100"),
        (("g", "score_improvement", 5, T + DAY, T, {"baseline": "70"}), "baseline must be"),
        (("", "practice_frequency", 3, T + DAY, T, {}), "goal_id"),
        (("g" * 129, "practice_frequency", 3, T + DAY, T, {}), "goal_id"),
    ],
)
def test_new_goal_validation(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_goal(*args)


def test_practice_frequency() -> None:
    g = goal(target=2)
    assert apply_g(g, "job_view", T + 1) == NO_CHANGE
    assert apply_g(g, "daily_challenge_complete", T + 1) == NO_CHANGE
    assert apply_g(g, "lesson_complete", T + 2, event_id="a") == ProgressChange(advanced=True)
    assert apply_g(g, "lesson_complete", T + 2, event_id="a") == NO_CHANGE  # same id
    assert g.progress == 1 and g.status == "active"
    assert apply_g(g, "quiz_complete", T + 3) == ProgressChange(advanced=True, completed_now=True)
    assert (g.status, g.completed_at_ms, g.progress) == ("completed", T + 3, 2)
    assert apply_g(g, "quiz_complete", T + 4) == NO_CHANGE
    assert g.progress == 2 and g.completed_at_ms == T + 3


def test_only_events_inside_the_period_count() -> None:
    g = goal(target=10, days=7)
    deadline = T + 7 * DAY
    assert apply_g(g, "lesson_complete", T - 1) == NO_CHANGE
    assert apply_g(g, "lesson_complete", deadline + 1) == NO_CHANGE
    assert apply_g(g, "lesson_complete", T).advanced
    assert apply_g(g, "lesson_complete", deadline).advanced
    assert g.progress == 2


def test_score_improvement_absolute_average_needs_three_sessions() -> None:
    g = goal("score_improvement", target=80)
    assert apply_g(g, "interview_session_complete", T + 1, score=90) == ProgressChange(advanced=True)
    assert g.progress == 90 and g.status == "active"  # one lucky session is not enough
    assert public_goal(g)["percent"] == 99
    assert apply_g(g, "interview_session_complete", T + 2, score=150) == NO_CHANGE  # not a percentage
    assert apply_g(g, "lesson_complete", T + 2, score=100) == NO_CHANGE  # not an interview session
    assert apply_g(g, "interview_session_complete", T + 3, score=70) == NO_CHANGE  # average fell to 80
    assert g.progress == 80 and g.samples == 2
    change = apply_g(g, "interview_session_complete", T + 4, score=80)
    assert change == ProgressChange(advanced=False, completed_now=True)
    assert (g.status, g.completed_at_ms) == ("completed", T + 4)


def test_score_improvement_over_a_baseline() -> None:
    g = goal("score_improvement", target=5, baseline=55.7)
    apply_g(g, "interview_session_complete", T + 1, score=50)
    assert g.progress == pytest.approx(-5.7)
    assert public_goal(g)["percent"] == 0 and public_goal(g)["progress"] == -5.7
    apply_g(g, "interview_session_complete", T + 2, score=90.1)
    change = apply_g(g, "interview_session_complete", T + 3, score=42.0)
    # The average is exactly 60.7 = 55.7 + 5, which plain float arithmetic misses by 7e-15.
    assert change.completed_now
    assert g.progress == 5


def test_category_mastery() -> None:
    g = goal("category_mastery", target=2, category="behavioral")
    high = RULES.high_score
    assert apply_g(g, "interview_session_complete", T + 1, category="behavioral", score=high - 1) == NO_CHANGE
    assert apply_g(g, "interview_session_complete", T + 1, category="technical", score=100) == NO_CHANGE
    assert apply_g(g, "interview_session_complete", T + 1, category="behavioral") == NO_CHANGE
    assert apply_g(g, "interview_session_complete", T + 2, category="behavioral", score=high).advanced
    change = apply_g(g, "interview_session_complete", T + 3, category="behavioral", score=97)
    assert change.completed_now and g.progress == 2


def test_streak_maintenance_follows_the_streak() -> None:
    g = goal("streak_maintenance", target=5, days=30)
    assert apply_g(g, "lesson_complete", T + 1, streak=3) == ProgressChange(advanced=True)
    assert apply_g(g, "lesson_complete", T + 2 * DAY, streak=1) == NO_CHANGE  # the streak broke
    assert g.progress == 1
    assert apply_g(g, "lesson_complete", T + 9 * DAY, streak=5).completed_now
    assert (g.status, g.completed_at_ms) == ("completed", T + 9 * DAY)
    assert apply_g(g, "lesson_complete", T + 10 * DAY, streak=6) == NO_CHANGE
    assert (
        apply_g(goal("streak_maintenance", target=5), "lesson_complete", T + 8 * DAY, streak=9) == NO_CHANGE
    )


def test_expire_goals() -> None:
    done = goal(target=1)
    apply_g(done, "lesson_complete", T + 1)
    open_ = goal(target=1)
    goals = [done, open_]
    deadline = T + 7 * DAY
    assert expire_goals(goals, deadline) == []  # the deadline itself is still inside the period
    assert expire_goals(goals, deadline + 1) == [open_]
    assert (done.status, open_.status) == ("completed", "expired")
    assert expire_goals(goals, deadline + DAY) == []


def test_late_event_from_inside_the_period_completes_an_expired_goal() -> None:
    g = goal(target=1)
    expire_goals([g], T + 8 * DAY)
    assert apply_g(g, "lesson_complete", T + 8 * DAY) == NO_CHANGE
    assert g.status == "expired"
    assert apply_g(g, "lesson_complete", T + 7 * DAY - 60_000).completed_now
    assert public_goal(g)["status"] == "completed"


def test_max_active_goals() -> None:
    goals = [new_goal(f"g-{i}", "practice_frequency", 3, T + DAY, T) for i in range(MAX_ACTIVE_GOALS)]
    assert not can_add_goal(goals)
    goals[0].status = "completed"
    assert can_add_goal(goals)
    goals[0].status = "active"
    expire_goals(goals[:1], T + 2 * DAY)
    assert can_add_goal(goals)
    assert can_add_goal([])


def test_public_goal() -> None:
    g = goal(target=4)
    apply_g(g, "lesson_complete", T + 1_500)
    apply_g(g, "lesson_complete", T + 2_000)
    assert public_goal(g) == {
        "goal_id": "g-1",
        "kind": "practice_frequency",
        "target": 4,
        "params": {},
        "progress": 2,
        "percent": 50,
        "status": "active",
        "created_at": "2026-11-22T08:00:00Z",
        "deadline": "2026-11-29T08:00:00Z",
        "completed_at": None,
    }
    apply_g(g, "lesson_complete", T + 3_000)
    apply_g(g, "lesson_complete", T + 4_500)
    view = public_goal(g)
    assert (view["percent"], view["status"], view["completed_at"]) == (
        100,
        "completed",
        "2026-11-22T08:00:04.500Z",
    )


@pytest.mark.parametrize(
    ("kind", "params", "events"),
    [
        ("practice_frequency", {}, [("lesson_complete", {})]),
        ("score_improvement", {"baseline": 60}, [("interview_session_complete", {"score": 72.5})] * 2),
        (
            "category_mastery",
            {"category": "leadership"},
            [("interview_session_complete", {"category": "leadership", "score": 95})],
        ),
        ("streak_maintenance", {}, []),
    ],
)
def test_goal_round_trips_through_json(kind: str, params: dict[str, Any], events: list[Any]) -> None:
    g = new_goal("g-rt", kind, 5, T + DAY, T, params)
    for i, (type_, props) in enumerate(events):
        apply_g(g, type_, T + i, event_id=f"e{i}", **props)
    restored = Goal.from_dict(orjson.loads(orjson.dumps(g.to_dict())))
    assert restored == g
    if events:
        assert apply_g(restored, events[0][0], T, event_id="e0", **events[0][1]) == NO_CHANGE


# --- settling: expiry and a bounded history of finished goals -----------------------------------


def test_lapsed_goals_stop_counting_toward_the_cap_once_settled() -> None:
    goals = {
        f"g-{i}": new_goal(f"g-{i}", "practice_frequency", 3, T + DAY, T) for i in range(MAX_ACTIVE_GOALS)
    }
    assert not can_add_goal(goals.values())
    apply_to_goal(goals["g-0"], event("lesson_complete", T + 1, event_id="e-1"), RULES, 0)
    assert settle_goals(goals, T + DAY) is False  # the deadline itself is inside the period
    assert settle_goals(goals, T + DAY + 1) is True
    assert can_add_goal(goals.values())
    assert {g.status for g in goals.values()} == {"expired"}
    assert goals["g-0"].event_ids == []  # finished: its id memory is forgotten
    assert settle_goals(goals, T + 2 * DAY) is False


def test_only_the_newest_finished_goals_are_kept() -> None:
    goals: dict[str, Goal] = {}
    for i in range(3 * MAX_FINISHED_GOALS):
        goals[f"old-{i}"] = new_goal(f"old-{i}", "practice_frequency", 3, T + (i + 1) * 3_600_000, T)
    live = new_goal("live", "practice_frequency", 3, T + 60 * DAY, T)
    done = new_goal("done", "practice_frequency", 1, T + 60 * DAY, T)
    apply_to_goal(done, event("lesson_complete", T + 50 * DAY), RULES, 0)
    goals |= {"live": live, "done": done}
    assert settle_goals(goals, T + 59 * DAY)
    finished = [g for g in goals.values() if g.status != "active"]
    assert len(finished) == MAX_FINISHED_GOALS and done in finished
    assert goals["live"] is live  # an active goal is never dropped
    newest = {
        f"old-{i}" for i in range(3 * MAX_FINISHED_GOALS - MAX_FINISHED_GOALS + 1, 3 * MAX_FINISHED_GOALS)
    }
    assert newest <= set(goals)


def test_goal_ids_and_categories_are_bounded_in_bytes() -> None:
    with pytest.raises(ValueError, match="goal_id"):
        new_goal("é" * 33, "practice_frequency", 3, T + DAY, T)  # 66 bytes
    with pytest.raises(ValueError, match="goal_id"):
        new_goal("a\tb", "practice_frequency", 3, T + DAY, T)
    with pytest.raises(ValueError, match="category"):
        new_goal("g", "category_mastery", 3, T + DAY, T, {"category": "é" * 33})
    g = goal()
    apply_g(g, "lesson_complete", T + 1, event_id="x" * 128)
    assert g.event_ids == [id_digest("x" * 128)]
