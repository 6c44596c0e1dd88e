"""The job-market and career reads: market pulse, a user's matches and applications, and the
applications analytics for admins. All read the serving view the workers project
(``infra.keys``); the API computes nothing but filters and the analytics fold."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.ids import OptionalNameQuery
from api.responses import OrjsonResponse
from infra import keys
from models.applications import ApplicationFacts, application_analytics
from models.events import parse_ts

router = APIRouter(tags=["careers"])

#: A location or industry: part of a Redis field name, so bounded and printable like an id.
Name = OptionalNameQuery


@router.get("/v1/market/pulse", responses={404: {"description": "no pulse yet for that scope"}})
async def market_pulse(
    state: StateDep, principal: PrincipalDep, location: Name = None, industry: Name = None
) -> OrjsonResponse:
    del principal  # any signed-in client may read the market
    raw = await state.redis.hget(keys.MARKET_PULSE, keys.market_scope(location, industry))
    if raw is None:
        if location or industry:
            # A scope with no postings in the window: an empty market there, not an error.
            overall = await state.redis.hget(keys.MARKET_PULSE, keys.market_scope(None, None))
            if overall is not None:
                return OrjsonResponse(_empty_scope(orjson.loads(overall), location, industry))
        raise ApiError(404, "no_pulse", "no market pulse has been published yet")
    return OrjsonResponse(orjson.loads(raw))


def _empty_scope(overall: dict[str, Any], location: str | None, industry: str | None) -> dict[str, Any]:
    return {
        **overall,
        "new_jobs_today": 0,
        "new_jobs_yesterday": 0,
        "growth_pct_vs_yesterday": None,
        "avg_salary_today": {},
        "entry_level_avg_salary": {},
        "hot_skills_today": [],
        "urgent_count": 0,
        "urgent_opportunities": [],
        "location": location,
        "industry": industry,
    }


@router.get(
    "/v1/users/{user_id}/matches",
    responses={403: {"description": "another user's data"}},
)
async def user_matches(
    user_id: str,
    state: StateDep,
    principal: PrincipalDep,
    min_score: Annotated[int, Query(ge=0, le=100)] = 60,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    raw = await state.redis.get(keys.user_matches(user_id))
    matches: list[dict[str, Any]] = orjson.loads(raw) if raw else []
    now = int(time.time() * 1000)
    # Postings whose deadline passed are no longer offered, though the worker still remembers
    # them (so they are never alerted again).
    live = [
        m
        for m in matches
        if m["match_score"] >= min_score and (m.get("deadline") is None or parse_ts(m["deadline"]) >= now)
    ]
    return OrjsonResponse([{k: v for k, v in m.items() if k != "alerted_at_ms"} for m in live[:limit]])


@router.get("/v1/users/{user_id}/applications", responses={403: {"description": "another user's data"}})
async def user_applications(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    raw = await state.redis.get(keys.user_applications(user_id))
    return OrjsonResponse({"user_id": user_id, "applications": orjson.loads(raw) if raw else []})


@router.get("/v1/analytics/applications", responses={403: {"description": "not an admin"}})
async def applications_analytics(
    state: StateDep, principal: PrincipalDep, days: Annotated[int, Query(ge=1, le=365)] = 30
) -> OrjsonResponse:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "analytics are for admins only")
    rows = await state.redis.hvals(keys.APPLICATION_FACTS)
    facts = [ApplicationFacts(**orjson.loads(r)) for r in rows]
    return OrjsonResponse(application_analytics(facts, int(time.time() * 1000), days))
