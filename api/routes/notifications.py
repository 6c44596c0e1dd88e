"""A user's in-app notifications (CONTRACT.md §7): the inbox the workers keep, and marking one
read.

Reading is notification feedback like any other: the route publishes a `notification_opened`
event for the notification (its `event_id` derived from the id, so a retried request counts
once), which the owning worker records in the user's notification book and the interventions
analytics. The worker is the inbox view's only writer: the route waits (briefly) until the view
shows the notification read, so the reader sees their change, but never writes the view itself,
where it could put back an inbox older than the worker's newest write.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path

from api.commands import now_ms
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.commands import await_key
from infra.producer import ProducerUnavailable

router = APIRouter(tags=["notifications"])

#: Ids are "n-" and 20 hex digits; the bound keeps "read:<id>" a valid event id (128).
NotificationId = Annotated[str, Path(min_length=1, max_length=100)]
EMPTY_INBOX: dict[str, Any] = {"unread": 0, "notifications": []}
#: How long a read waits for the worker's view to show it. The event is in Kafka either way, so
#: the answer does not depend on it: past this, a re-read shows it once the worker catches up.
READ_VISIBLE_WAIT_S = 3.0


async def _inbox(state: AppState, user_id: str) -> dict[str, Any]:
    raw = await state.redis.get(keys.user_notifications(user_id))
    return {"user_id": user_id, **(orjson.loads(raw) if raw else EMPTY_INBOX)}


@router.get("/v1/users/{user_id}/notifications", responses={403: {"description": "another user's inbox"}})
async def list_notifications(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    return OrjsonResponse(await _inbox(state, user_id))


@router.post(
    "/v1/users/{user_id}/notifications/{notification_id}/read",
    responses={403: {"description": "another user's inbox"}, 404: {"description": "no such notification"}},
)
async def mark_read(
    user_id: str, notification_id: NotificationId, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    inbox = await _inbox(state, user_id)
    found = next((n for n in inbox["notifications"] if n.get("id") == notification_id), None)
    if found is None:
        raise ApiError(404, "notification_not_found", f"no notification {notification_id!r} in this inbox")
    if not found.get("read"):
        event = {
            "event_id": f"read:{notification_id}",
            "user_id": user_id,
            "type": "notification_opened",
            "ts": now_ms(),
            "props": {"notification_id": notification_id, "via": "inbox"},
        }
        try:
            await state.producer.send_all(
                state.config.events_topic, [(user_id, event)], state.config.produce_timeout_s
            )
        except ProducerUnavailable as exc:
            raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc

        def shows_read(raw: bytes | str) -> bool | None:
            shown = orjson.loads(raw)["notifications"]
            return any(n.get("id") == notification_id and n.get("read") for n in shown) or None

        await await_key(state.redis, keys.user_notifications(user_id), shows_read, READ_VISIBLE_WAIT_S)
    return OrjsonResponse({"notification_id": notification_id, "read": True})
