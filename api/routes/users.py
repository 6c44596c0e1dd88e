"""``GET /v1/users/{user_id}`` and ``/stats``: a user's engagement state and statistics as the
workers last projected them.

The API only reads the serving view (``infra.keys``); engagement is computed by the workers. The
things that depend on the reader's clock, the streak as of today and which weeks a statistics
range covers, are shown through the same pure functions the workers use. ``level.benefits`` comes
from the rule book (``GET /v1/levels``).
"""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra import keys
from models.achievements import level_benefits
from models.stats import RANGES, Rank, parse_range, stats_view
from models.streaks import StreakState, is_streak_at_risk, local_day, streak_as_of

router = APIRouter(tags=["users"])

NO_RISK: dict[str, Any] = {"score": None, "level": None, "updated_at": None}


@router.get(
    "/v1/users/{user_id}",
    responses={403: {"description": "another user's data"}, 404: {"description": "unknown user"}},
)
async def get_user(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_state(user_id))
        pipe.get(keys.user_risk(user_id))
        raw_state, raw_risk = await pipe.execute()
    if raw_state is None:
        raise ApiError(404, "user_not_found", f"no engagement state for user {user_id!r}")
    document: dict[str, Any] = orjson.loads(raw_state)
    document["streak"] = streak_today(document, int(time.time() * 1000))
    level = document.get("level")
    if isinstance(level, dict):
        # From the rule book the API runs, not the view: benefits are catalogue data, and views
        # written before they existed show them too.
        document["level"] = {**level, "benefits": level_benefits(state.rules, level.get("level"))}
    document["risk"] = _risk(raw_risk)
    return OrjsonResponse(document)


@router.get(
    "/v1/users/{user_id}/stats",
    responses={
        400: {"description": "unknown range"},
        403: {"description": "another user's data"},
        404: {"description": "unknown user"},
    },
)
async def get_user_stats(
    user_id: str,
    state: StateDep,
    principal: PrincipalDep,
    range_: Annotated[str | None, Query(alias="range", description=f"one of {', '.join(RANGES)}")] = None,
) -> OrjsonResponse:
    """Scores, practice, improvement, categories, percentile and the weekly series (docs/stats.md).

    Two bounded round trips whatever the user did: the worker's statistics view with the user's
    ranking entry and the ranking's size, then (ranked users only) how many rank strictly below.
    """
    require_user_access(principal, user_id)
    try:
        range_name, _ = parse_range(range_)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_stats(user_id))
        pipe.zscore(keys.STATS_RANKING, user_id)
        pipe.zcard(keys.STATS_RANKING)
        raw, own, ranked = await pipe.execute()
    if raw is None:
        raise ApiError(404, "user_not_found", f"no statistics for user {user_id!r}")
    # Strictly below: up to the user's own stored score, exclusive (the same double, compared exactly).
    below = None if own is None else int(await state.redis.zcount(keys.STATS_RANKING, "-inf", f"({own!r}"))
    view = stats_view(orjson.loads(raw), range_name, int(time.time() * 1000), Rank(below, int(ranked)))
    return OrjsonResponse(view)


def streak_today(view: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The stored streak is as of the user's last active day; show it as of their local today.

    Missed days since then use up freezes or end the streak (``models.streaks.streak_as_of``, the
    same function the workers use), and ``at_risk`` is the streak-warning fact: active yesterday,
    not yet today.
    """
    s = view["streak"]
    last = s.get("last_active_day")
    stored = StreakState(
        s["current"], s["longest"], s["freezes"], date.fromisoformat(last).toordinal() if last else None, 0
    )
    try:
        today = local_day(now_ms, view.get("timezone") or "UTC")
    except ValueError:
        today = local_day(now_ms, "UTC")
    shown = streak_as_of(stored, today, max_freezes=stored.freezes)
    return {
        **s,
        "current": shown.current,
        "freezes": shown.freezes,
        "at_risk": is_streak_at_risk(shown, today),
    }


def _risk(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return dict(NO_RISK)
    risk = orjson.loads(raw)
    return {name: risk.get(name) for name in NO_RISK}
