"""A user's next best actions and match insights (docs/careers.md, "Match insights" and
"Recommendations"). Both are pure functions of views the workers keep (``models.recommendations``,
``models.match_insights``), applied at the reader's clock, so a streak that is at risk now or a
match that closed since the last event shows as such; each reads a bounded number of keys."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter

from api.commands import now_ms
from api.deps import PrincipalDep, StateDep, require_user_access
from api.responses import OrjsonResponse
from infra import keys
from models.match_insights import match_insights
from models.recommendations import UserFacts, hot_skills_of, public_list, recommend

router = APIRouter(tags=["careers"])


def _json(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


@router.get(
    "/v1/users/{user_id}/recommendations",
    responses={403: {"description": "another user's data"}},
)
async def user_recommendations(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """``{"user_id", "items": [{"id", "horizon", "kind", "title", "reason", "action"}], "digest",
    "as_of"}``: immediate items first, then this_week, then roadmap, at most 3 each. A user the
    workers know nothing of has no items."""
    require_user_access(principal, user_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.user_recommendations(user_id), keys.RECOMMENDATION_FACTS)
        pipe.hget(keys.MARKET_PULSE, keys.market_scope(None, None))
        raw_facts, raw_pulse = await pipe.execute()
    now = now_ms()
    data = _json(raw_facts)
    try:
        facts = UserFacts.from_dict(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError, IndexError):
        facts = None  # a view of another version: empty until the worker rewrites it
    if facts is None:
        return OrjsonResponse(public_list(user_id, [], now))
    pulse = _json(raw_pulse)
    items = recommend(facts, hot_skills_of(pulse if isinstance(pulse, dict) else None), now)
    return OrjsonResponse(public_list(user_id, items, now))


@router.get(
    "/v1/users/{user_id}/matches/insights",
    responses={403: {"description": "another user's data"}},
)
async def user_match_insights(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """``{"user_id", "total", "perfect", "perfect_threshold", "urgent", "average_score",
    "top_industries", "skills_to_improve", "salary_outlook"}`` over the user's held matches whose
    posting is still open (``models.match_insights``)."""
    require_user_access(principal, user_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_matches(user_id))
        pipe.get(keys.user_profile(user_id))
        raw_matches, raw_profile = await pipe.execute()
    matches = _json(raw_matches)
    profile = _json(raw_profile)
    profile = profile if isinstance(profile, dict) else {}
    expectation = profile.get("salary_expectation")
    body = match_insights(
        [m for m in matches if isinstance(m, dict)] if isinstance(matches, list) else [],
        now_ms(),
        expectation if isinstance(expectation, int | float) and not isinstance(expectation, bool) else None,
        profile.get("currency") if isinstance(profile.get("currency"), str) else None,
    )
    return OrjsonResponse({"user_id": user_id, **body})
