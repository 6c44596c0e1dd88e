"""What the nudges know about a user, gathered from the other tables of the user's partition."""

from __future__ import annotations

import orjson

from infra.settings import DEFAULT_RULES
from models.boards import Standing
from models.campaigns.records import Target
from models.campaigns.targeting import targets
from models.career import CareerState
from models.events import UserProfile, parse_profile
from models.gamification import UserState, apply_profile
from models.leaderboard import bucket
from models.risk_state import RiskState
from models.rules import Rules
from streams.user_context import BoardStanding, UserDirectory

RULES = Rules.from_toml(DEFAULT_RULES.read_text())
PROFILE = {
    "user_id": "u",
    "display_name": "Amina",
    "timezone": "Africa/Nairobi",
    "location": "Nairobi",
    "skills": ["sql"],
    "interests": ["data", "design"],
    "notification_prefs": {"channels": ["IN_APP", "PUSH"], "quiet_hours": ["21:00", "07:00"]},
}


def career() -> CareerState:
    state = CareerState("u")
    state.adopt_profile(parse_profile(orjson.dumps(PROFILE), 0))
    # Through the changelog codec, as a recovering worker would read it.
    return CareerState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))


def test_context_and_facts_come_from_the_profile_and_engagement_state() -> None:
    user = UserState(user_id="u", xp=350, timezone="Africa/Nairobi")
    directory = UserDirectory(RULES, {"u": user}.get, {"u": career()}.get)
    risk = RiskState("u", last={"score": 72.5})
    ctx, facts = directory.context(risk, 1_790_000_000_000)
    assert (ctx.display_name, ctx.timezone, ctx.level) == ("Amina", "Africa/Nairobi", 3)
    assert ctx.prefs["quiet_hours"] == ["21:00", "07:00"]
    assert facts.risk_score == 72.5 and facts.profile["location"] == "Nairobi"
    assert targets(Target("filter", field="interests", op="contains", value="data"), facts, 0)
    assert not targets(Target("filter", field="interests", op="contains", value="law"), facts, 0)


def test_a_user_known_only_by_risk_state_gets_defaults() -> None:
    directory = UserDirectory(RULES, lambda uid: None, lambda uid: None)
    ctx, facts = directory.context(RiskState("x"), 0)
    assert (ctx.timezone, ctx.level, ctx.streak, ctx.display_name) == ("UTC", 1, 0, None)
    assert facts.risk_score is None and facts.profile == {"timezone": "UTC"}


def test_the_context_carries_the_user_s_weekly_standing_from_the_boards() -> None:
    now = 1_796_000_000_000
    week = f"weekly:{bucket('weekly', now)}"
    users: dict[str, UserState] = {}
    for i in range(30):  # 30 pupils of Alliance, weekly XP 0, 10, ..., 290
        state = UserState(f"p-{i}")
        apply_profile(state, UserProfile(f"p-{i}", school="Alliance"))
        state.period_xp = {week: [10 * i, now]}
        users[state.user_id] = state
    hidden = users["p-29"]
    apply_profile(hidden, UserProfile("p-29", school="Alliance", leaderboard_visible=False))
    ticks = iter([0.0, 1.0, 10_000.0])
    standings = BoardStanding(lambda partitions: list(users.values()), clock=lambda: next(ticks))
    directory = UserDirectory(RULES, users.get, lambda uid: None, standings=standings)
    assert directory.context(RiskState("p-15"), now)[0].standing is None  # not refreshed yet
    standings.refresh({0}, now)
    # p-15 (150) is ahead of 15 of the 28 other listed pupils (p-29 is hidden).
    assert directory.context(RiskState("p-15"), now)[0].standing == Standing(53.6, "Alliance")
    # The hidden pupil still hears where they stand (ahead of all 29 listed), nobody counts them.
    assert directory.context(RiskState("p-29"), now)[0].standing == Standing(100.0, "Alliance")
    # The boards are refreshed at most every REFRESH_S; the user's own score is always current
    # (their older one in the snapshot is left out of the comparison).
    users["p-15"].period_xp[week][0] = 155
    users["p-16"].period_xp[week][0] = 0
    standings.refresh({0}, now)  # a second later: the same snapshot
    assert directory.context(RiskState("p-15"), now)[0].standing == Standing(53.6, "Alliance")
    standings.refresh({0}, now)  # past REFRESH_S: p-16 fell below p-15
    assert directory.context(RiskState("p-15"), now)[0].standing == Standing(57.1, "Alliance")
