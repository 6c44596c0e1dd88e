"""A user's own profile and notification settings (CONTRACT §7): read from the profile view,
changed by writing a whole profile to ``user-profiles``.

The workers are the view's only writer (streams/career_pipeline.py), as for every view: a PUT
builds the new profile on the one the view holds (settings kept by a profile PUT, the profile
kept by a settings PUT), stamps it with ``updated_at``, produces it keyed by the user, and waits
briefly until the view shows that version. So a client saving its profile and then its settings
sees the second build on the first. Past the wait the answer is 202 with what was written: it is
in Kafka and the view shows it once the worker catches up.

Two PUTs of one user racing each other (two tabs) are last-writer-wins on the whole profile, as
``user-profiles`` is. The checks are the worker's own (``validate_profile``), so nothing the API
accepts is dead-lettered downstream.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request

from api.bodies import read_json_object
from api.commands import now_ms, rate_limit
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.commands import await_key
from infra.producer import ProducerUnavailable
from models.career import checked_prefs
from models.events import MAX_VALUE_BYTES, InvalidEvent, format_ts, validate_profile
from models.notification_settings import InvalidSettings, settings_view, validated_settings

router = APIRouter(tags=["profile"])

#: The fields a profile PUT sets: those of ``user-profiles`` (CONTRACT §4) and the contact.
PROFILE_FIELDS = (
    "display_name",
    "timezone",
    "location",
    "skills",
    "experience_years",
    "education",
    "interests",
    "salary_expectation",
    "currency",
    "email",
    "phone",
)
#: How long the API's own last write of a profile is kept beside the worker's view: far past
#: any worker lag a PUT could still build on.
WRITTEN_TTL_MS = 15 * 60 * 1000
#: How long a PUT waits for the worker's view to show it (see the module docstring).
APPLIED_WAIT_S = 3.0
#: Largest PUT body: what a `user-profiles` record may be (models.events.MAX_VALUE_BYTES), so
#: whatever a producer may send, a user may PUT.
MAX_PROFILE_BYTES = MAX_VALUE_BYTES

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "written to the stream; the view shows it once the worker applies it"},
    403: {"description": "another user's profile"},
    422: {"description": "a field the engine cannot use"},
    429: {"description": "rate limited"},
}


async def held_profile(state: AppState, user_id: str) -> dict[str, Any] | None:
    """The newer of the worker's view and the API's own last write (kept while the worker may
    not have applied it): a PUT answered 202 and the next PUT must build on the first, not on a
    view that does not show it yet, or the first would be written back away."""
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_profile(user_id))
        pipe.get(keys.user_profile_written(user_id))
        raw_view, raw_written = await pipe.execute()
    held = [dict(orjson.loads(raw)) for raw in (raw_view, raw_written) if raw is not None]
    return max(held, key=lambda doc: int(doc.get("updated_at") or 0), default=None)


async def _profile_body(request: Request) -> dict[str, Any]:
    return await read_json_object(request, MAX_PROFILE_BYTES, "profile")


@router.get(
    "/v1/users/{user_id}/profile", responses={403: _RESPONSES[403], 404: {"description": "no profile yet"}}
)
async def get_profile(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    held = await held_profile(state, user_id)
    if held is None:
        raise ApiError(404, "profile_not_found", f"no profile for user {user_id!r} yet")
    return OrjsonResponse(_shown(held))


@router.put("/v1/users/{user_id}/profile", responses=_RESPONSES)
async def put_profile(
    user_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    body = await _profile_body(request)
    if body.pop("user_id", user_id) != user_id:
        raise ApiError(422, "invalid_profile", "user_id in the body is not the user of the path")
    unknown = sorted(set(body) - set(PROFILE_FIELDS))
    if unknown:
        hint = " (notification settings have their own route)" if "notification_prefs" in unknown else ""
        raise ApiError(422, "invalid_profile", f"{unknown[0]}: not a profile field{hint}")
    await rate_limit(state, principal)
    held = await held_profile(state, user_id) or {}
    return await write_profile(
        state, user_id, held, {**body, "notification_prefs": held.get("notification_prefs") or {}}
    )


@router.get("/v1/users/{user_id}/notification-settings", responses={403: _RESPONSES[403]})
async def get_settings(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    held = await held_profile(state, user_id) or {}
    return OrjsonResponse(settings_view(held.get("notification_prefs") or {}))


@router.put("/v1/users/{user_id}/notification-settings", responses=_RESPONSES)
async def put_settings(
    user_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    body = await _profile_body(request)
    try:
        prefs = validated_settings(body)
    except InvalidSettings as exc:
        raise ApiError(422, "invalid_settings", str(exc), extra={"field": exc.field}) from exc
    await rate_limit(state, principal)
    held = await held_profile(state, user_id) or {}
    profile = {name: held.get(name) for name in PROFILE_FIELDS if held.get(name) is not None}
    response = await write_profile(state, user_id, held, {**profile, "notification_prefs": prefs})
    shown = orjson.loads(response.body)
    return OrjsonResponse(
        settings_view(shown.get("notification_prefs") or {}), status_code=response.status_code
    )


async def write_profile(
    state: AppState, user_id: str, held: dict[str, Any], fields: dict[str, Any]
) -> OrjsonResponse:
    """Produce ``fields`` as the user's whole profile, stamped newer than ``held``, and answer
    with the view once it shows it (200), else with what was written (202)."""
    stamp = max(now_ms(), int(held.get("updated_at") or 0) + 1)
    record = {**fields, "user_id": user_id, "updated_at": format_ts(stamp)}
    try:
        profile = validate_profile(record, stamp)
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_profile", exc.message, extra={"reason": exc.reason}) from exc
    # Sent as normalised (the address's domain lower-cased, the number in E.164), which is what
    # the view will show.
    record.update(email=profile.email, phone=profile.phone)
    try:
        await state.producer.send_all(
            state.config.profiles_topic, [(user_id, record)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    # Checked by the same rules as the worker's; kept in the view's shape (times in epoch ms).
    written = {**record, "notification_prefs": checked_prefs(profile.notification_prefs), "updated_at": stamp}
    await state.redis.set(keys.user_profile_written(user_id), orjson.dumps(written), px=WRITTEN_TTL_MS)

    def applied(raw: bytes | str) -> dict[str, Any] | None:
        view = dict(orjson.loads(raw))
        return view if int(view.get("updated_at") or 0) >= stamp else None

    view = await await_key(state.redis, keys.user_profile(user_id), applied, APPLIED_WAIT_S)
    if view is None:
        return OrjsonResponse(record, status_code=202)
    return OrjsonResponse(_shown(view))


def _shown(view: dict[str, Any]) -> dict[str, Any]:
    """The view with ``updated_at`` as RFC 3339, the way every other time is shown."""
    stamp = view.get("updated_at")
    return {**view, "updated_at": None if stamp is None else format_ts(int(stamp))}
