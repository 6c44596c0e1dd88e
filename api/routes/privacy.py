"""A user's data, on request (docs/security.md "A user's data"): ``GET /v1/users/{id}/export``
returns everything the engine holds about the user, ``DELETE /v1/users/{id}`` erases it everywhere.

Both are commands to the worker that owns the user (api/commands.py): only it holds the user's
state tables, and it is the one writer of the Redis views it removes. The export's answer holds
personal data, so the API deletes it once read (and the worker lets it expire within minutes).
The user themself or an admin may ask; both are paced, since each walks every table and view.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.auth import Principal
from api.commands import pending, server_command_id, submit
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys, topics
from infra.commands import ERASE_USER, EXPORT_USER
from infra.producer import ProducerUnavailable
from infra.user_data import dump_user
from models.events import format_ts

router = APIRouter(tags=["privacy"])

#: Per principal: a few requests, then one a minute. Each walks every table and view of a user.
RATE_SCOPE = "privacy"
RATE_PER_S = 1 / 60
RATE_BURST = 5
#: An export gathers every table; give the worker longer than a redemption's 5 s.
EXPORT_TIMEOUT_S = 15.0
ERASE_TIMEOUT_S = 15.0

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "another user's data"},
    429: {"description": "rate limited"},
    503: {"description": "Kafka or the worker did not answer in time; retry"},
}


async def _paced(state: AppState, principal: Principal) -> None:
    limiter = RateLimiter(state.redis, RATE_SCOPE, RATE_PER_S, RATE_BURST)
    await limiter.require(principal.sub, "too many data requests; slow down")


@router.get("/v1/users/{user_id}/export", responses=_RESPONSES)
async def export_user(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    await _paced(state, principal)
    command_id = server_command_id(user_id)
    answer = await submit(state, command_id, EXPORT_USER, user_id, {}, timeout_s=EXPORT_TIMEOUT_S)
    if answer is None:
        raise ApiError(
            503, "unavailable", "the worker did not answer in time; retry", headers={"Retry-After": "5"}
        )
    await state.redis.delete(keys.command_result(command_id))
    now = int(time.time() * 1000)
    return OrjsonResponse(
        {
            "user_id": user_id,
            "exported_at": format_ts(now),
            "state": answer.get("tables", {}),
            "serving": await dump_user(state.redis, user_id, now),
        }
    )


@router.delete(
    "/v1/users/{user_id}",
    responses={
        **_RESPONSES,
        202: {"description": "accepted, not yet confirmed: repeat the DELETE to learn the result"},
    },
)
async def erase_user(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    await _paced(state, principal)
    try:
        # The profile's tombstone first: compaction then forgets the profile (and its contact) in
        # Kafka too. The workers skip a tombstone; the signed command below erases.
        await state.producer.send_all(topics.USER_PROFILES, [(user_id, None)], state.config.produce_timeout_s)
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    command_id = server_command_id(user_id)
    answer = await submit(state, command_id, ERASE_USER, user_id, {}, timeout_s=ERASE_TIMEOUT_S)
    if answer is None:
        return pending(command_id)
    erased = {"tables": answer.get("tables", []), "redis": answer.get("redis", {})}
    return OrjsonResponse({"user_id": user_id, "erased": True, **erased})
