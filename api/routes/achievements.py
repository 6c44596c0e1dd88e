"""The achievement catalogue, a user's achievements and the level table (docs/rules.md).

The catalogue and the levels are the rule book the API loaded at start (``AppState.rules``, the
same ``ELIMU_RULES`` file the workers run). A user's status and progress are read from the
serving view the workers write (``public_view``: earned badges and badge metrics), never from
history; ``models.achievements`` turns the two into the response.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.commands import get_json
from api.deps import PrincipalDep, StateDep, require_user_access
from api.responses import OrjsonResponse
from infra import keys
from models.achievements import catalogue, level_catalogue, user_achievements

router = APIRouter(tags=["achievements"])


@router.get("/v1/achievements")
async def list_achievements(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Every badge: id, name, description, category, rarity, criteria, target and XP; and the
    recurring rewards. The same for every signed-in client."""
    return OrjsonResponse(catalogue(state.rules))


@router.get("/v1/levels")
async def list_levels(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Every level: number, title, the total XP it starts at, and its benefits."""
    return OrjsonResponse(level_catalogue(state.rules))


@router.get(
    "/v1/users/{user_id}/achievements", responses={403: {"description": "another user's achievements"}}
)
async def list_user_achievements(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Each badge with the user's status: earned (``earned_at``) or locked with progress toward
    it, capped at the target. A user with no engagement state yet sees everything locked at 0."""
    require_user_access(principal, user_id)
    view = await get_json(state.redis, keys.user_state(user_id))
    return OrjsonResponse(user_achievements(user_id, view if isinstance(view, dict) else None, state.rules))
