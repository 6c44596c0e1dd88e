"""Web Push subscriptions (docs/notifications.md): the key a browser subscribes with, and the
user's subscriptions, one per browser.

The API is the subscriptions' writer for the user; the delivery service removes one only when
its push service says it is gone (404/410). An endpoint must be a browser push service's
(models/push.py): the delivery service POSTs to it, so an arbitrary URL would let a user make
our servers call anything.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from api.bodies import read_json_object
from api.commands import now_ms, rate_limit
from api.delivery_settings import delivery_config
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra import keys
from infra.redis_conn import as_text
from infra.settings import Settings
from infra.vapid import private_pem, public_key_b64
from models.push import MAX_SUBSCRIPTIONS, InvalidSubscription, parse_subscription

router = APIRouter(tags=["push"])

_ADD_BOUNDED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

SubscriptionId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


@lru_cache(maxsize=4)
def _public_key(configured: str | None, data_dir: str) -> str:
    from pathlib import Path as FsPath

    return public_key_b64(private_pem(configured, FsPath(data_dir)))


def vapid_public_key(settings: Settings) -> str:
    config = delivery_config(settings.api_port)
    return _public_key(config.vapid_private_key, str(settings.data_dir))


@router.get("/v1/push/vapid-key")
async def vapid_key(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """The ``applicationServerKey`` for ``PushManager.subscribe``."""
    return OrjsonResponse({"public_key": vapid_public_key(state.settings)})


def _public(subscription_id: str, raw: bytes | str) -> dict[str, Any]:
    data = orjson.loads(raw)
    endpoint = str(data.get("endpoint", ""))
    # The endpoint is a capability (anyone holding it may push); show only its service.
    return {"id": subscription_id, "service": endpoint.split("/")[2] if endpoint.count("/") >= 2 else ""}


@router.get("/v1/users/{user_id}/push-subscriptions", responses={403: {"description": "another user's"}})
async def list_subscriptions(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    stored = await state.redis.hgetall(keys.user_push_subscriptions(user_id))
    items = [_public(as_text(k), v) for k, v in stored.items()]
    return OrjsonResponse({"subscriptions": sorted(items, key=lambda s: s["id"])})


@router.post(
    "/v1/users/{user_id}/push-subscriptions",
    status_code=201,
    responses={
        403: {"description": "another user's"},
        409: {"description": "too many"},
        422: {"description": "invalid"},
    },
)
async def subscribe(
    user_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    body = await read_json_object(request, 4096, "subscription")
    try:
        subscription = parse_subscription(body, delivery_config(state.settings.api_port).push_hosts)
    except InvalidSubscription as exc:
        raise ApiError(422, "invalid_subscription", str(exc)) from exc
    await rate_limit(state, principal)
    key = keys.user_push_subscriptions(user_id)
    value = orjson.dumps({**subscription.to_dict(), "created_ms": now_ms()})
    # Checked and added in one step: concurrent POSTs cannot pass the bound together.
    added = await state.redis.eval(_ADD_BOUNDED, 1, key, subscription.id, value, str(MAX_SUBSCRIPTIONS))
    if int(added) == 0:
        raise ApiError(
            409, "too_many_subscriptions", f"at most {MAX_SUBSCRIPTIONS} browsers; remove one first"
        )
    return OrjsonResponse(_public(subscription.id, value), status_code=201)


@router.delete(
    "/v1/users/{user_id}/push-subscriptions/{subscription_id}",
    status_code=204,
    responses={403: {"description": "another user's"}, 404: {"description": "no such subscription"}},
)
async def unsubscribe_browser(
    user_id: str, subscription_id: SubscriptionId, state: StateDep, principal: PrincipalDep
) -> Response:
    require_user_access(principal, user_id)
    if not await state.redis.hdel(keys.user_push_subscriptions(user_id), subscription_id):
        raise ApiError(404, "subscription_not_found", "no such subscription")
    return Response(status_code=204)
