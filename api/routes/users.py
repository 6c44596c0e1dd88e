"""``GET /v1/users/{user_id}``: a user's engagement state as the workers last projected it.

The API only reads the serving view (``infra.keys``); it never computes engagement itself, so
this is one pipelined round trip for the state document and the risk score.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter

from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra import keys

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
    document["risk"] = _risk(raw_risk)
    return OrjsonResponse(document)


def _risk(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return dict(NO_RISK)
    risk = orjson.loads(raw)
    return {name: risk.get(name) for name in NO_RISK}
