"""Notification templates as data (admin): the built-in ones (read-only) and the admins' own,
with each variant's funnel and whether the A/B test has a winner (models/interventions).

An admin's template travels like a campaign: written to the compacted `elimu-broadcast` topic
under `template:<id>` (every worker reads it: streams/broadcast.py) and mirrored into Redis for
these reads, never over a newer definition (infra/campaign_view.py). A delete is a tombstone on
the topic and a deleted marker in the mirror. A template a campaign names cannot be deleted.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from api.bodies import read_json_object
from api.commands import now_ms
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.campaign_view import mirror_templates
from infra.producer import ProducerUnavailable
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.campaigns.records import stored_template_ids
from models.interventions.significance import winner
from models.interventions.template_admin import InvalidTemplate, check_template_id, parse_template
from models.interventions.templates import TEMPLATES, Template

router = APIRouter(tags=["templates"])

TemplateId = Annotated[str, Path(min_length=1, max_length=64)]
#: A template's JSON at its largest: five variants of the longest texts, escaped, and a margin.
MAX_TEMPLATE_BYTES = 256 * 1024
_ADMIN: dict[int | str, dict[str, Any]] = {403: {"description": "not an admin"}}


async def _custom(state: AppState) -> dict[str, Template]:
    rows = await state.redis.hvals(keys.TEMPLATES)
    out: dict[str, Template] = {}
    for raw in rows:
        doc = orjson.loads(raw)
        if not doc.get("deleted"):
            template = Template.from_dict(doc)
            out[template.id] = template
    return out


async def _analytics(state: AppState) -> dict[str, Any]:
    raw = await state.redis.get(keys.INTERVENTION_ANALYTICS)
    return dict(orjson.loads(raw)) if raw else {}


def _view(template: Template, analytics: dict[str, Any]) -> dict[str, Any]:
    """The template with each variant's funnel (sent, opened, clicked, converted, rates) and
    delivery results, and the A/B verdict."""
    funnel = (analytics.get("by_template") or {}).get(template.id) or {}
    deliveries = (analytics.get("deliveries_by_template") or {}).get(template.id) or {}
    counts = {
        v.id: {
            **(funnel.get(v.id) or {}),
            "unsubscribed": (deliveries.get(v.id) or {}).get("unsubscribed", 0),
        }
        for v in template.variants
    }
    doc = template.to_dict()
    for variant in doc["variants"]:
        variant["stats"] = {
            **(funnel.get(variant["id"]) or {}),
            "deliveries": deliveries.get(variant["id"]) or {},
        }
    doc["ab_test"] = winner(counts)
    return doc


async def _publish(
    state: AppState, template_id: str, document: dict[str, Any] | None, updated_ms: int
) -> None:
    try:
        await state.producer.send_all(
            BROADCAST_TOPIC, [(f"template:{template_id}", document)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    mirrored = (
        document if document is not None else {"id": template_id, "deleted": True, "updated_ms": updated_ms}
    )
    await mirror_templates(state.redis, [(template_id, mirrored, updated_ms)])


def _parsed(body: dict[str, Any], template_id: str) -> Template:
    try:
        return parse_template({k: v for k, v in body.items() if k != "id"}, template_id, now_ms())
    except InvalidTemplate as exc:
        raise ApiError(422, "invalid_template", str(exc), extra={"field": exc.field}) from exc


@router.get("/v1/admin/templates", responses=_ADMIN)
async def list_templates(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "templates")
    analytics = await _analytics(state)
    custom = await _custom(state)
    every = [*TEMPLATES.values(), *sorted(custom.values(), key=lambda t: t.id)]
    return OrjsonResponse({"templates": [_view(t, analytics) for t in every]})


@router.get(
    "/v1/admin/templates/{template_id}", responses={**_ADMIN, 404: {"description": "no such template"}}
)
async def get_template(template_id: TemplateId, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "templates")
    template = TEMPLATES.get(template_id) or (await _custom(state)).get(template_id)
    if template is None:
        raise ApiError(404, "template_not_found", f"no template {template_id!r}")
    return OrjsonResponse(_view(template, await _analytics(state)))


@router.post("/v1/admin/templates", status_code=201, responses={**_ADMIN, 409: {}, 422: {}})
async def create_template(request: Request, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal, "templates")
    body = await read_json_object(request, MAX_TEMPLATE_BYTES, "template")
    template_id = body["id"] if "id" in body else f"t-{uuid.uuid4().hex[:12]}"
    try:
        check_template_id(template_id)
    except InvalidTemplate as exc:
        raise ApiError(422, "invalid_template", str(exc), extra={"field": exc.field}) from exc
    if template_id in await _custom(state):
        raise ApiError(409, "template_exists", f"template {template_id!r} exists; PUT to change it")
    template = _parsed(body, template_id)
    await _publish(state, template.id, template.to_dict(), template.updated_ms)
    return OrjsonResponse(_view(template, {}), status_code=201)


@router.put("/v1/admin/templates/{template_id}", responses={**_ADMIN, 404: {}, 409: {}, 422: {}})
async def replace_template(
    template_id: TemplateId, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_admin(principal, "templates")
    if template_id in TEMPLATES:
        raise ApiError(
            409, "builtin_template", "built-in templates are read-only: create one and make it the default"
        )
    if template_id not in await _custom(state):
        raise ApiError(404, "template_not_found", f"no template {template_id!r}")
    body = await read_json_object(request, MAX_TEMPLATE_BYTES, "template")
    if body.get("id", template_id) != template_id:
        raise ApiError(422, "invalid_template", "id: the body's id is not the path's", extra={"field": "id"})
    template = _parsed(body, template_id)
    await _publish(state, template.id, template.to_dict(), template.updated_ms)
    return OrjsonResponse(_view(template, await _analytics(state)))


@router.delete("/v1/admin/templates/{template_id}", status_code=204, responses={**_ADMIN, 404: {}, 409: {}})
async def delete_template(template_id: TemplateId, state: StateDep, principal: PrincipalDep) -> Response:
    require_admin(principal, "templates")
    if template_id in TEMPLATES:
        raise ApiError(409, "builtin_template", "built-in templates cannot be deleted")
    if template_id not in await _custom(state):
        raise ApiError(404, "template_not_found", f"no template {template_id!r}")
    users = [
        doc["id"]
        for doc in map(orjson.loads, await state.redis.hvals(keys.CAMPAIGNS))
        if not doc.get("deleted") and template_id in stored_template_ids(doc)  # drip steps' too
    ]
    if users:
        raise ApiError(409, "template_in_use", f"campaigns use it: {', '.join(sorted(users)[:10])}")
    await _publish(state, template_id, None, now_ms())
    return Response(status_code=204)
