"""``POST /v1/events``: behaviour events from clients into the ``behavior-events`` topic.

The batch is all or nothing: every item is validated with the same rules the workers apply
(``models.events.validate_behavior``) before anything is produced, so a client never has to work
out which half of a batch went through. Items are produced as the client sent them (the workers
re-validate and normalise), keyed by ``user_id`` so one user's events stay ordered.

A user posts only for themselves, only the event types ``models.ingest_policy`` lists, and only
within its time window (a day back, five minutes ahead); an admin token is a trusted producer and
may post any type for anyone, at any past time. The rate limit counts events, not requests: a
batch of n costs n tokens of the principal's bucket (users and admins have buckets of their own
sizes), and the largest batch a principal may post is its burst. Tokens are taken before the
items are validated, so a refused batch costs what it asked for: validating is the expensive part.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request

from api import metrics
from api.auth import Principal
from api.deps import PrincipalDep, StateDep
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra.producer import ProducerUnavailable
from models.events import InvalidEvent, validate_behavior
from models.ingest_policy import check_user_event

router = APIRouter(tags=["ingest"])

_EXAMPLE = {
    "event_id": "e-1",
    "user_id": "u-42",
    "type": "lesson_complete",
    "ts": "2026-11-22T08:15:00Z",
    "props": {"lesson_id": "L12", "duration_s": 1800, "score": 87},
}


@router.post(
    "/v1/events",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": ["object", "array"]}, "example": _EXAMPLE}},
        }
    },
    responses={
        202: {"description": "all events accepted: {'accepted': n}"},
        403: {"description": "an event names another user"},
        413: {"description": "body or batch too large"},
        422: {
            "description": "per-item errors (`items`: index, reason, message); nothing was produced. "
            "Users: `type_not_allowed` for a type only trusted producers post, `ts_too_old` for an "
            "event more than 24 hours old"
        },
        429: {"description": "rate limited: the principal's events per second; see Retry-After"},
    },
)
async def post_events(request: Request, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    limiter = state.admin_events_rate if principal.is_admin else state.events_rate
    items = _parse_body(await request.body(), limiter.max_cost(state.config.max_batch))
    # An empty batch still costs one token: requests are not free either.
    decision = await limiter.take(principal.sub, max(1, len(items)))
    if not decision.allowed:
        metrics.EVENTS_REJECTED.labels("rate_limited").inc(len(items))
        raise ApiError(
            429,
            "rate_limited",
            f"too many events: at most {limiter.rate_per_s:g} per second (burst {limiter.burst}) "
            "for you; slow down",
            headers={"Retry-After": limiter.retry_after_header(decision)},
        )
    _check_ownership(principal, items)
    _validate(items, trusted=principal.is_admin)
    records = [(item["user_id"], item) for item in items]
    try:
        await state.producer.send_all(state.config.events_topic, records, state.config.produce_timeout_s)
    except ProducerUnavailable as exc:
        metrics.EVENTS_REJECTED.labels("unavailable").inc(len(items))
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    metrics.EVENTS_ACCEPTED.inc(len(items))
    return OrjsonResponse({"accepted": len(items)}, status_code=202)


def _parse_body(body: bytes, max_batch: int) -> list[Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not JSON: {exc}") from exc
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise ApiError(400, "bad_request", "body must be an event object or an array of events")
    if len(payload) > max_batch:
        raise ApiError(413, "too_many_events", f"at most {max_batch} events per request, got {len(payload)}")
    return payload


def _check_ownership(principal: Principal, items: list[Any]) -> None:
    """Only admins may post on behalf of others (replays, imports)."""
    if principal.is_admin:
        return
    for index, item in enumerate(items):
        if (
            isinstance(item, dict)
            and isinstance(item.get("user_id"), str)
            and item["user_id"] != principal.sub
        ):
            metrics.EVENTS_REJECTED.labels("forbidden").inc(len(items))
            raise ApiError(403, "forbidden", f"event {index} is for another user; you may only post your own")


def _validate(items: list[Any], *, trusted: bool) -> None:
    """Per-item checks; ``trusted`` (an admin) skips what only binds users (models.ingest_policy)."""
    now_ms = int(time.time() * 1000)
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            event = validate_behavior(item, now_ms)
            if not trusted:
                check_user_event(event.type, event.ts_ms, now_ms)
        except InvalidEvent as exc:
            errors.append({"index": index, "reason": exc.reason, "message": str(exc)})
            metrics.EVENTS_REJECTED.labels(exc.reason).inc()
    if errors:
        # The valid items of a refused batch are refused too: the batch is all or nothing.
        metrics.EVENTS_REJECTED.labels("batch_refused").inc(len(items) - len(errors))
        raise ApiError(
            422,
            "invalid_events",
            f"{len(errors)} of {len(items)} events are invalid; none were accepted",
            extra={"items": errors},
        )
