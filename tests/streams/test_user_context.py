"""What the nudges know about a user, gathered from the other tables of the user's partition."""

from __future__ import annotations

import orjson

from infra.settings import DEFAULT_RULES
from models.campaigns.records import Target
from models.campaigns.targeting import targets
from models.career import CareerState
from models.events import parse_profile
from models.gamification import UserState
from models.risk_state import RiskState
from models.rules import Rules
from streams.user_context import UserDirectory

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
