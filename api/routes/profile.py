"""A user's own profile and notification settings (CONTRACT §7): read from the profile view,
changed by writing a whole profile to ``user-profiles``.

A PUT builds the new profile on the one held (settings kept by a profile PUT, the profile kept
by a settings PUT) and answers 200 once the view shows it, else 202 (api/profile_writes.py). So
a client saving its profile and then its settings sees the second build on the first.

A new email address or phone number is not written at once: it waits for its owner to confirm it
(api/routes/contact.py), and the answer lists it under ``pending_verification``.

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
from api.profile_writes import (
    PROFILE_FIELDS,
    check_profile,
    held_profile,
    profile_fields,
    shown,
    write_profile,
)
from api.responses import OrjsonResponse
from api.routes.contact import changed_contacts, start, with_pending
from models.contact import InvalidContact
from models.contact_verification import FIELDS
from models.events import MAX_VALUE_BYTES
from models.notification_settings import InvalidSettings, settings_view, validated_settings

router = APIRouter(tags=["profile"])

#: Largest PUT body: what a `user-profiles` record may be (models.events.MAX_VALUE_BYTES), so
#: whatever a producer may send, a user may PUT.
MAX_PROFILE_BYTES = MAX_VALUE_BYTES

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "written to the stream; the view shows it once the worker applies it"},
    403: {"description": "another user's profile"},
    422: {"description": "a field the engine cannot use"},
    429: {"description": "rate limited"},
}


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
    return OrjsonResponse(shown(held))


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
    # The whole profile is checked before any code goes out: a PUT refused for another field
    # sends nothing.
    check_profile(user_id, {**body, "notification_prefs": held.get("notification_prefs") or {}}, now_ms())
    try:
        changed = changed_contacts(held, body)
    except InvalidContact as exc:
        raise ApiError(422, "invalid_profile", exc.message, extra={"reason": exc.reason}) from exc
    # The profile keeps its confirmed address until the new one is confirmed.
    for channel in changed:
        body[FIELDS[channel]] = held.get(FIELDS[channel])
    started = [await start(state, user_id, channel, address) for channel, address in changed.items()]
    response = await write_profile(
        state, user_id, held, {**body, "notification_prefs": held.get("notification_prefs") or {}}
    )
    return with_pending(response, started)


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
    response = await write_profile(
        state, user_id, held, {**profile_fields(held), "notification_prefs": prefs}
    )
    written = orjson.loads(response.body)
    return OrjsonResponse(
        settings_view(written.get("notification_prefs") or {}), status_code=response.status_code
    )
