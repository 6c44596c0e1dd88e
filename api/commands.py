"""API → worker commands (docs/growth.md): submit one, wait for the worker's answer, map it.

Every state change of growth state is a **command** on ``user-commands`` keyed by the user whose
state changes (``infra.commands``): one worker applies a user's commands in order, so two racing
redemptions cannot spend one balance twice. The API waits a few seconds for the worker's answer
and maps it to a status; without an answer in time it says ``202`` with the command id, since the
command is durable in Kafka and will still be applied. Shared by the referral, reward and goal
routes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from api.auth import Principal
from api.deps import require_user_access
from api.errors import ApiError
from api.ids import OptionalIdQuery
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys, topics
from infra.commands import await_result
from infra.producer import ProducerUnavailable
from infra.redis_conn import RedisClient

Answer = dict[str, Any]

#: How long a request waits for the worker's answer before replying 202 (docs/growth.md).
COMMAND_TIMEOUT_S = 5.0
#: Token bucket per principal over every command POST. Far below the events limit: these are
#: human actions (a redemption, a claim), and each costs a worker round trip.
RATE_SCOPE = "growth"
RATE_PER_S = 5.0
RATE_BURST = 20

#: ``?user_id=`` on the growth reads: an id like any other (``api.ids``).
UserIdQuery = OptionalIdQuery


class StrictBody(BaseModel):
    """Request bodies: strict types ("5" is not a number, 1 is not a boolean), no extra fields."""

    model_config = ConfigDict(extra="forbid")


def now_ms() -> int:
    return int(time.time() * 1000)


def subject_of(principal: Principal, user_id: str | None) -> str:
    """Whose data a read is about: the caller's own, or ``?user_id=`` (admins, or oneself)."""
    if user_id is None:
        return principal.sub
    require_user_access(principal, user_id)
    return user_id


async def rate_limit(state: AppState, principal: Principal) -> None:
    # Built per request: register_script is local (no round trip) and AppState has no slot for
    # a growth limiter; the bucket itself lives in Redis, so nothing is lost between requests.
    await RateLimiter(state.redis, RATE_SCOPE, RATE_PER_S, RATE_BURST).require(principal.sub)


def server_command_id(user_id: str) -> str:
    """An id for a command the client gave no idempotency key for: never reuses an answer."""
    return f"{user_id}:{uuid.uuid4().hex}"


async def submit(
    state: AppState,
    command_id: str,
    command_type: str,
    user_id: str,
    fields: dict[str, Any],
    *,
    reuse_answer: bool = False,
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> Answer | None:
    """Produce one command and wait for its answer; None when none came in time.

    ``reuse_answer`` is for client-keyed commands: a retry whose answer is already stored gets
    it without another produce, which is what the worker would answer anyway.
    """
    if reuse_answer:
        stored = await state.redis.get(keys.command_result(command_id))
        if stored is not None:
            answer: Answer = orjson.loads(stored)
            return answer
    command = {"command_id": command_id, "type": command_type, "user_id": user_id, "ts": now_ms(), **fields}
    try:
        await state.producer.send_all(
            topics.USER_COMMANDS, [(user_id, command)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    return await await_result(state.redis, command_id, timeout_s)


def pending(command_id: str) -> OrjsonResponse:
    return OrjsonResponse({"command_id": command_id, "status": "pending"}, status_code=202)


def refused(answer: Answer, statuses: dict[str, int], default: int = 409) -> ApiError:
    """The error for a worker's refusal: its code, a status from ``statuses``, its other fields."""
    code = str(answer.get("code") or "refused")
    message = str(answer.get("message") or code.replace("_", " "))
    extra = {k: v for k, v in answer.items() if k not in ("ok", "code", "message")}
    return ApiError(statuses.get(code, default), code, message, extra=extra)


async def get_json(redis: RedisClient, key: str) -> Any:
    raw = await redis.get(key)
    return None if raw is None else orjson.loads(raw)
