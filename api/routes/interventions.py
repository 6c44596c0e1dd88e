"""Interventions for staff (admin only): campaigns and the funnel analytics (CONTRACT.md §7).

Campaign definitions live in the compacted `elimu-broadcast` topic under `campaign:<id>`: every
worker reads them all and evaluates them for the users it owns, in stream time
(streams/broadcast.py, models/nudges.py). The API writes a definition there, then mirrors it into
Redis for these reads (so an admin reads their own write at once). Every change of an existing
campaign (edit, status, delete, manual send) reads, produces and mirrors under the campaign's
lock (infra/campaign_view.py), so two API processes cannot each write a definition missing the
other's change; concurrent edits by two admins: the last write wins. Workers mirror the
definitions too, never over a later one, which is what brings them back after Redis is wiped
(streams/interventions.py). A delete is a tombstone on the topic and a deleted marker in the
mirror (models/campaigns/changes.py).

Routes: create, list, read, edit (PUT), delete, duplicate, activate, pause, and send now (to one
student, a filtered set or the campaign's own audience: models/campaigns/sends.py). Each campaign
is shown with its next run and its execution log: counts per outcome, the funnel of its
notifications (sent, opened, clicked, converted) and its recent runs (`CampaignRun.to_dict`), the
analytics agent's Redis view, re-projected from its ledger table after a wipe.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from api.commands import now_ms
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.campaign_view import (
    CampaignBusy,
    campaign_lock,
    mirror_campaigns,
    mirror_deleted_campaign,
    read_campaign,
    read_campaigns,
)
from infra.producer import ProducerUnavailable
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.campaigns.changes import MAX_DEFINITION_BYTES, deleted_marker, duplicate, edit
from models.campaigns.errors import CampaignConflict, InvalidCampaign
from models.campaigns.execution import CampaignRun
from models.campaigns.parsing import check_templates, parse_campaign
from models.campaigns.records import Campaign
from models.campaigns.sends import TooManySends, add_send, parse_send
from models.campaigns.status import public_campaign, public_send, with_status
from models.interventions import InterventionStats
from models.interventions.templates import TEMPLATES

router = APIRouter(tags=["interventions"])

CampaignId = Annotated[str, Path(min_length=1, max_length=128)]
#: How long a change waits for another request's change of the same campaign (then 409).
LOCK_WAIT_S = 5.0
#: The largest campaign or send body read (a campaign's longest filter is about 60 KB).
MAX_BODY_BYTES = 256 * 1024
_ADMIN: dict[int | str, dict[str, Any]] = {403: {"description": "not an admin"}}
_ONE: dict[int | str, dict[str, Any]] = {**_ADMIN, 404: {"description": "no such campaign"}}
_CHANGE: dict[int | str, dict[str, Any]] = {
    **_ONE,
    409: {"description": "a conflict with the campaign's state"},
    422: {"description": "an invalid body; `field` names the culprit"},
    503: {"description": "the broker did not acknowledge"},
}


def _new_id() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def _invalid(exc: InvalidCampaign) -> ApiError:
    if isinstance(exc, CampaignConflict):
        code = "send_conflict" if exc.field == "send_id" else "invalid_transition"
        return ApiError(409, code, str(exc), extra={"field": exc.field})
    return ApiError(422, "invalid_campaign", str(exc), extra={"field": exc.field})


async def _body(request: Request, required: bool = True) -> Any:
    """The request's JSON (the body limit is the app's); an empty optional body is {}."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"a campaign body is at most {MAX_BODY_BYTES} bytes")
    if not raw.strip() and not required:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not JSON: {exc}") from exc


async def _publish(state: AppState, campaign_id: str, document: dict[str, Any] | None) -> None:
    try:
        await state.producer.send_all(
            BROADCAST_TOPIC, [(f"campaign:{campaign_id}", document)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc


async def _save(state: AppState, campaign: Campaign) -> None:
    document = campaign.to_dict()
    size = len(orjson.dumps(document))
    if size > MAX_DEFINITION_BYTES:
        raise ApiError(
            413,
            "payload_too_large",
            f"the campaign's definition would be {size} bytes; at most {MAX_DEFINITION_BYTES}",
        )
    await _publish(state, campaign.id, document)
    # Mirrored at once so the admin reads their change, as the workers mirror it: never over a
    # newer definition (another admin's edit that overtook this one).
    await mirror_campaigns(state.redis, [campaign])


def _lock(state: AppState, campaign_id: str) -> contextlib.AbstractAsyncContextManager[None]:
    # Held past the produce's own timeout, so a slow broker cannot let a second change in.
    hold_ms = int(state.config.produce_timeout_s * 1000) + 10_000
    return campaign_lock(state.redis, campaign_id, hold_ms, LOCK_WAIT_S)


def _busy(exc: CampaignBusy) -> ApiError:
    return ApiError(409, "campaign_busy", str(exc), headers={"Retry-After": "1"})


async def _load(state: AppState, campaign_id: str) -> Campaign:
    campaign, _ = await read_campaign(state.redis, campaign_id)
    if campaign is None:
        raise ApiError(404, "campaign_not_found", f"no campaign {campaign_id!r}")
    return campaign


async def _template_types(state: AppState) -> dict[str, str]:
    """Template id -> its intervention type: the built-in ones and the admins' not deleted."""
    types = {template_id: t.type for template_id, t in TEMPLATES.items()}
    for raw in await state.redis.hvals(keys.TEMPLATES):
        doc = orjson.loads(raw)
        if not doc.get("deleted") and isinstance(doc.get("id"), str) and isinstance(doc.get("type"), str):
            types.setdefault(doc["id"], doc["type"])
    return types


async def _check_templates(state: AppState, campaign: Campaign) -> None:
    if not campaign.template_ids():
        return
    try:
        check_templates(campaign, await _template_types(state))
    except InvalidCampaign as exc:
        raise _invalid(exc) from exc


async def _runs(state: AppState, campaign_ids: list[str]) -> list[dict[str, Any]]:
    raws = await state.redis.hmget(keys.CAMPAIGN_RUNS, campaign_ids) if campaign_ids else []
    return [
        orjson.loads(raw) if raw else CampaignRun(cid).to_dict()
        for cid, raw in zip(campaign_ids, raws, strict=True)
    ]


async def _view(state: AppState, campaign: Campaign) -> dict[str, Any]:
    (run,) = await _runs(state, [campaign.id])
    return {**public_campaign(campaign, now_ms()), "executions": run}


@router.post("/v1/campaigns", status_code=201, responses={**_CHANGE, 409: {"description": "the id is taken"}})
async def create_campaign(request: Request, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    body = await _body(request)
    campaign_id = body.get("id") if isinstance(body, dict) and body.get("id") else _new_id()
    if not isinstance(campaign_id, str):
        raise ApiError(422, "invalid_campaign", "id: must be a string", extra={"field": "id"})
    try:
        campaign = parse_campaign(body, campaign_id, now_ms())
    except InvalidCampaign as exc:
        raise _invalid(exc) from exc
    await _check_templates(state, campaign)
    try:
        async with _lock(state, campaign_id):
            existing, taken = await read_campaign(state.redis, campaign_id)
            if taken:
                why = (
                    "exists; PUT to change it" if existing is not None else "was deleted; ids are not reused"
                )
                raise ApiError(409, "campaign_exists", f"campaign {campaign_id!r} {why}")
            await _save(state, campaign)
    except CampaignBusy as exc:
        raise _busy(exc) from exc
    return OrjsonResponse(await _view(state, campaign), status_code=201)


@router.get("/v1/campaigns", responses=_ADMIN)
async def list_campaigns(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Every campaign (oldest first) with its next run and execution log."""
    require_admin(principal, "campaigns")
    campaigns = await read_campaigns(state.redis)
    runs = await _runs(state, [c.id for c in campaigns])
    now = now_ms()
    return OrjsonResponse(
        {
            "campaigns": [
                {**public_campaign(c, now), "executions": run} for c, run in zip(campaigns, runs, strict=True)
            ]
        }
    )


@router.get("/v1/campaigns/{campaign_id}", responses=_ONE)
async def get_campaign(campaign_id: CampaignId, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    return OrjsonResponse(await _view(state, await _load(state, campaign_id)))


@router.put("/v1/campaigns/{campaign_id}", responses=_CHANGE)
async def edit_campaign(
    campaign_id: CampaignId, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    """Replace the definition (the body of a create; "status" optional): models/campaigns/changes.py."""
    require_admin(principal, "campaigns")
    body = await _body(request)
    try:
        async with _lock(state, campaign_id):
            old = await _load(state, campaign_id)
            try:
                edited = edit(old, body, now_ms())
            except InvalidCampaign as exc:
                raise _invalid(exc) from exc
            await _check_templates(state, edited)
            await _save(state, edited)
    except CampaignBusy as exc:
        raise _busy(exc) from exc
    return OrjsonResponse(await _view(state, edited))


@router.delete("/v1/campaigns/{campaign_id}", status_code=204, responses=_CHANGE)
async def delete_campaign(campaign_id: CampaignId, state: StateDep, principal: PrincipalDep) -> Response:
    """Delete it everywhere (a tombstone every worker applies); again for a deleted one: 204."""
    require_admin(principal, "campaigns")
    try:
        async with _lock(state, campaign_id):
            old, taken = await read_campaign(state.redis, campaign_id)
            if old is None and not taken:
                raise ApiError(404, "campaign_not_found", f"no campaign {campaign_id!r}")
            if old is not None:
                marker = deleted_marker(old, now_ms())
                await _publish(state, campaign_id, None)
                await mirror_deleted_campaign(state.redis, campaign_id, marker["updated_ms"])
    except CampaignBusy as exc:
        raise _busy(exc) from exc
    return Response(status_code=204)


@router.post("/v1/campaigns/{campaign_id}/duplicate", status_code=201, responses=_CHANGE)
async def duplicate_campaign(
    campaign_id: CampaignId, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    """A draft copy under a new id: body {"id"?, "name"?} (both optional)."""
    require_admin(principal, "campaigns")
    body = await _body(request, required=False)
    if not isinstance(body, dict):
        raise ApiError(
            422, "invalid_campaign", "duplicate: the body must be an object", extra={"field": "duplicate"}
        )
    unknown = sorted(set(body) - {"id", "name"})
    if unknown:
        raise ApiError(
            422,
            "invalid_campaign",
            f"{unknown[0]} does not apply to a copy; allowed: id, name",
            extra={"field": unknown[0]},
        )
    original = await _load(state, campaign_id)
    new_id = body.get("id") or _new_id()
    try:
        copy = duplicate(original, new_id, body.get("name"), now_ms())
    except InvalidCampaign as exc:
        raise _invalid(exc) from exc
    await _check_templates(state, copy)
    try:
        async with _lock(state, copy.id):
            if (await read_campaign(state.redis, copy.id))[1]:
                raise ApiError(
                    409, "campaign_exists", f"campaign {copy.id!r} exists or was deleted; choose another id"
                )
            await _save(state, copy)
    except CampaignBusy as exc:
        raise _busy(exc) from exc
    return OrjsonResponse(await _view(state, copy), status_code=201)


@router.post(
    "/v1/campaigns/{campaign_id}/send",
    status_code=202,
    responses={
        **_CHANGE,
        404: {"description": "no such campaign or user"},
        429: {"description": "too many sends"},
    },
)
async def send_campaign(
    campaign_id: CampaignId, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    """Send the campaign now: body {"user_id"} (one student), {"filter": {target}} (a filtered
    set) or {} (its own audience), with an optional "send_id" that makes a retry the same send
    (models/campaigns/sends.py). 202: the workers that own the users send it."""
    require_admin(principal, "campaigns")
    body = await _body(request, required=False)
    try:
        send, named = parse_send(body, f"{uuid.uuid4().hex[:12]}", now_ms())
    except InvalidCampaign as exc:
        raise _invalid(exc) from exc
    await _load(state, campaign_id)  # an unknown campaign is a 404 before anything else
    if send.user_id is not None:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.user_state(send.user_id))
            pipe.exists(keys.user_risk(send.user_id))
            if not any(await pipe.execute()):
                raise ApiError(404, "user_not_found", f"no user {send.user_id!r}", extra={"field": "user_id"})
    try:
        async with _lock(state, campaign_id):
            campaign = await _load(state, campaign_id)
            try:
                changed, standing, repeated = add_send(campaign, send, named, now_ms())
            except InvalidCampaign as exc:
                raise _invalid(exc) from exc
            except TooManySends as exc:
                retry_s = max(1, exc.retry_after_ms // 1000)
                raise ApiError(
                    429, "too_many_sends", str(exc), headers={"Retry-After": str(retry_s)}
                ) from exc
            if not repeated:
                await _save(state, changed)
    except CampaignBusy as exc:
        raise _busy(exc) from exc
    return OrjsonResponse(
        {"campaign_id": campaign_id, "send": public_send(standing), "duplicate": repeated}, status_code=202
    )


async def _set_status(state: AppState, campaign_id: str, status: str) -> OrjsonResponse:
    try:
        async with _lock(state, campaign_id):
            campaign = await _load(state, campaign_id)
            try:
                changed = with_status(campaign, status, now_ms())
            except InvalidCampaign as exc:
                raise ApiError(409, "invalid_transition", str(exc)) from exc
            if changed != campaign:
                await _save(state, changed)
    except CampaignBusy as exc:
        raise _busy(exc) from exc
    return OrjsonResponse(await _view(state, changed))


@router.post("/v1/campaigns/{campaign_id}/activate", responses={**_ONE, 409: {}})
async def activate_campaign(
    campaign_id: CampaignId, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    return await _set_status(state, campaign_id, "active")


@router.post("/v1/campaigns/{campaign_id}/pause", responses={**_ONE, 409: {}})
async def pause_campaign(campaign_id: CampaignId, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    return await _set_status(state, campaign_id, "paused")


@router.get("/v1/analytics/interventions", responses={403: {"description": "not an admin"}})
async def interventions_analytics(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Sent, opened, clicked and converted, with rates, by type, channel and template variant."""
    require_admin(principal, "intervention analytics")
    raw = await state.redis.get(keys.INTERVENTION_ANALYTICS)
    # Before the first report: the same shape, all zeros.
    return OrjsonResponse(orjson.loads(raw) if raw else InterventionStats().view())
