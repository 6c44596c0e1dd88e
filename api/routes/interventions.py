"""Interventions for staff (admin only): campaigns and the funnel analytics (CONTRACT.md §7).

Campaign definitions live in the compacted `elimu-broadcast` topic under `campaign:<id>`: every
worker reads them all and evaluates them for the users it owns, in stream time
(streams/broadcast.py, models/nudges.py). The API writes a definition there, then mirrors it into
Redis for these reads (so an admin reads their own write at once); concurrent edits of one
campaign by two admins: the last write wins. Workers mirror the definitions too, never over a
later one, which is what brings them back after Redis is wiped (streams/interventions.py).
Execution logs (counts per outcome) and analytics are the analytics agent's Redis views,
re-projected from its ledger table after a wipe.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request

from api.commands import now_ms
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.campaign_view import mirror_campaigns
from infra.producer import ProducerUnavailable
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.campaigns.errors import InvalidCampaign
from models.campaigns.execution import CampaignRun
from models.campaigns.parsing import parse_campaign
from models.campaigns.records import Campaign
from models.campaigns.status import public_campaign, with_status
from models.interventions import InterventionStats

router = APIRouter(tags=["interventions"])

CampaignId = Annotated[str, Path(min_length=1, max_length=128)]


async def _save(state: AppState, campaign: Campaign) -> None:
    try:
        await state.producer.send_all(
            BROADCAST_TOPIC, [(f"campaign:{campaign.id}", campaign.to_dict())], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    # Mirrored at once so the admin reads their change, as the workers mirror it: never over a
    # newer definition (another admin's edit that overtook this one).
    await mirror_campaigns(state.redis, [campaign])


async def _load(state: AppState, campaign_id: str) -> Campaign:
    raw = await state.redis.hget(keys.CAMPAIGNS, campaign_id)
    if raw is None:
        raise ApiError(404, "campaign_not_found", f"no campaign {campaign_id!r}")
    return Campaign.from_dict(orjson.loads(raw))


async def _view(state: AppState, campaign: Campaign) -> dict[str, Any]:
    raw_run = await state.redis.hget(keys.CAMPAIGN_RUNS, campaign.id)
    run = orjson.loads(raw_run) if raw_run else CampaignRun(campaign.id).to_dict()
    return {**public_campaign(campaign, now_ms()), "executions": run}


@router.post("/v1/campaigns", status_code=201, responses={403: {"description": "not an admin"}})
async def create_campaign(request: Request, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not JSON: {exc}") from exc
    campaign_id = (
        body.get("id") if isinstance(body, dict) and body.get("id") else f"c-{uuid.uuid4().hex[:12]}"
    )
    if not isinstance(campaign_id, str):
        raise ApiError(422, "invalid_campaign", "id: must be a string", extra={"field": "id"})
    if await state.redis.hexists(keys.CAMPAIGNS, campaign_id):
        raise ApiError(409, "campaign_exists", f"campaign {campaign_id!r} exists; change its status instead")
    try:
        campaign = parse_campaign(body, campaign_id, now_ms())
    except InvalidCampaign as exc:
        raise ApiError(422, "invalid_campaign", str(exc), extra={"field": exc.field}) from exc
    await _save(state, campaign)
    return OrjsonResponse(await _view(state, campaign), status_code=201)


@router.get("/v1/campaigns", responses={403: {"description": "not an admin"}})
async def list_campaigns(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    rows = await state.redis.hvals(keys.CAMPAIGNS)
    campaigns = sorted(
        (Campaign.from_dict(orjson.loads(r)) for r in rows), key=lambda c: (c.created_ms, c.id)
    )
    return OrjsonResponse({"campaigns": [await _view(state, c) for c in campaigns]})


@router.get("/v1/campaigns/{campaign_id}", responses={403: {"description": "not an admin"}, 404: {}})
async def get_campaign(campaign_id: CampaignId, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    return OrjsonResponse(await _view(state, await _load(state, campaign_id)))


async def _set_status(state: AppState, campaign_id: str, status: str) -> OrjsonResponse:
    campaign = await _load(state, campaign_id)
    try:
        changed = with_status(campaign, status, now_ms())
    except InvalidCampaign as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from exc
    if changed != campaign:
        await _save(state, changed)
    return OrjsonResponse(await _view(state, changed))


@router.post("/v1/campaigns/{campaign_id}/activate", responses={403: {}, 404: {}, 409: {}})
async def activate_campaign(
    campaign_id: CampaignId, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_admin(principal, "campaigns")
    return await _set_status(state, campaign_id, "active")


@router.post("/v1/campaigns/{campaign_id}/pause", responses={403: {}, 404: {}, 409: {}})
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
