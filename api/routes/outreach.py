"""The outreach queue (admin): critical-risk students whose case a person should take up
(models/outreach.py). The delivery service creates the tasks; officers list, assign and resolve
them here, and every change is pushed on ``admin:outreach`` (the dashboard shows it live)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field, StrictStr

from api.commands import StrictBody, now_ms
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra import outreach_store
from models.outreach import MAX_ASSIGNEE_LEN, MAX_NOTE_LEN, OutreachError, OutreachTask, assign, resolve

router = APIRouter(tags=["outreach"])

TaskId = Annotated[str, Path(min_length=1, max_length=128)]
_ERRORS = {
    "not_found": 404,
    "already_resolved": 409,
    "busy": 409,
    "invalid_assignee": 422,
    "invalid_note": 422,
}


class AssignBody(StrictBody):
    #: Who takes the case; the caller when left out.
    assignee: Annotated[StrictStr | None, Field(min_length=1, max_length=MAX_ASSIGNEE_LEN)] = None


class ResolveBody(StrictBody):
    note: Annotated[StrictStr, Field(max_length=MAX_NOTE_LEN)] = ""


@router.get("/v1/admin/outreach", responses={403: {"description": "not an admin"}})
async def list_outreach(
    state: StateDep,
    principal: PrincipalDep,
    status: Literal["active", "open", "assigned", "resolved"] = "active",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        str | None, Query(max_length=300, description="the next_before of the previous page")
    ] = None,
) -> OrjsonResponse:
    """Tasks newest first; ``active`` is open and assigned together."""
    require_admin(principal)
    try:
        cursor = outreach_store.parse_cursor(before) if before else None
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    tasks = await outreach_store.listing(state.redis, status, limit, cursor)
    following = outreach_store.cursor_of(tasks[-1], status) if len(tasks) == limit else None
    return OrjsonResponse({"tasks": [t.public() for t in tasks], "next_before": following})


async def _change(
    state: StateDep, task_id: str, change: Callable[[OutreachTask], OutreachTask]
) -> OrjsonResponse:
    try:
        task = await outreach_store.update(state.redis, state.channels, task_id, change)
    except OutreachError as exc:
        raise ApiError(_ERRORS.get(exc.code, 409), exc.code, str(exc)) from exc
    return OrjsonResponse(task.public())


@router.post(
    "/v1/admin/outreach/{task_id}/assign",
    responses={404: {"description": "no such task"}, 409: {"description": "resolved"}},
)
async def assign_task(
    task_id: TaskId, body: AssignBody, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_admin(principal)
    who = body.assignee or principal.sub

    def change(task: OutreachTask) -> OutreachTask:
        return assign(task, who, principal.sub, now_ms())

    return await _change(state, task_id, change)


@router.post(
    "/v1/admin/outreach/{task_id}/resolve",
    responses={404: {"description": "no such task"}, 409: {"description": "resolved"}},
)
async def resolve_task(
    task_id: TaskId, body: ResolveBody, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_admin(principal)

    def change(task: OutreachTask) -> OutreachTask:
        return resolve(task, body.note, principal.sub, now_ms())

    return await _change(state, task_id, change)
