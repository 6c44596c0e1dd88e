"""Today's challenge and goals (docs/growth.md): reads from the growth view, judged against the
reader's clock (today in the user's time zone, expired goals); new goals are commands."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter
from pydantic import Field, StrictFloat, StrictInt, StrictStr

from api.commands import (
    StrictBody,
    UserIdQuery,
    get_json,
    now_ms,
    pending,
    rate_limit,
    refused,
    server_command_id,
    subject_of,
    submit,
)
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.routes.users import streak_today
from infra import keys
from models.challenges import (
    ChallengeProgress,
    Goal,
    challenge_for,
    expire_goals,
    new_goal,
    public_challenge,
    public_goal,
)
from models.events import InvalidEvent, parse_ts
from models.streaks import local_day

router = APIRouter(tags=["goals"])


class GoalBody(StrictBody):
    kind: StrictStr
    target: StrictInt | StrictFloat
    deadline: StrictStr | StrictInt | StrictFloat
    params: dict[str, Any] | None = None
    #: The client's idempotency key: a retried POST with the same one answers the same goal
    #: instead of creating a second. Without one, every POST is a new goal.
    request_id: Annotated[
        StrictStr | None, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ] = None


# ---------------------------------------------------------------------------------------------
# Daily challenge and goals


def _local_date(view: dict[str, Any] | None, now_ms: int) -> date:
    tz = (view or {}).get("timezone") or "UTC"
    try:
        return date.fromordinal(local_day(now_ms, tz))
    except ValueError:  # a zone this host does not know: UTC rather than a 500
        return date.fromordinal(local_day(now_ms, "UTC"))


def _streak_before_today(view: dict[str, Any] | None, today: date, now_ms: int) -> int | None:
    """The streak as public_challenge wants it: as of today, not counting today's practice."""
    if view is None or not isinstance(view.get("streak"), dict):
        return None
    streak = streak_today(view, now_ms)
    current = int(streak["current"])
    return current - 1 if current > 0 and streak.get("last_active_day") == today.isoformat() else current


@router.get("/v1/challenges/today", responses={403: {"description": "another user's data"}})
async def challenge_today(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = subject_of(principal, user_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_state(subject))
        pipe.get(keys.user_growth(subject))
        raw_view, raw_growth = await pipe.execute()
    view = None if raw_view is None else orjson.loads(raw_view)
    growth = None if raw_growth is None else orjson.loads(raw_growth)
    now = now_ms()
    today = _local_date(view, now)
    challenge = challenge_for(today)
    # The worker keeps a few days of progress by local date; "challenge" is only the newest.
    growth = growth or {}
    raw_progress = (growth.get("challenges") or {}).get(challenge.id) or growth.get("challenge")
    progress = None if raw_progress is None else ChallengeProgress.from_dict(raw_progress)
    if progress is not None and progress.challenge_id != challenge.id:
        progress = None  # yesterday's progress: nothing done on today's challenge yet
    body = public_challenge(challenge, progress, _streak_before_today(view, today, now))
    return OrjsonResponse({"user_id": subject, **body})


@router.post(
    "/v1/users/{user_id}/goals",
    status_code=201,
    responses={
        202: {"description": "no answer yet"},
        403: {"description": "another user's goals"},
        409: {"description": "too many active goals"},
        422: {"description": "invalid goal"},
        429: {"description": "rate limited"},
    },
)
async def create_goal(
    user_id: str, body: GoalBody, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    await rate_limit(state, principal)
    now = now_ms()
    try:
        deadline_ms = parse_ts(body.deadline)
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_goal", f"deadline: {exc.message}") from exc
    try:
        # A throwaway id: the worker names the goal. Validating here turns bad input into a 422
        # without a round trip; the worker validates again against its own clock.
        checked = new_goal("probe", body.kind, body.target, deadline_ms, now, body.params)
    except ValueError as exc:
        raise ApiError(422, "invalid_goal", str(exc)) from exc
    # The worker names the goal after the command id's last part: the request id when given.
    keyed = body.request_id is not None
    command_id = f"{user_id}:goal:{body.request_id}" if keyed else server_command_id(user_id)
    fields = {
        "kind": checked.kind,
        "target": checked.target,
        "deadline_ms": deadline_ms,
        "params": checked.params,
    }
    answer = await submit(state, command_id, "goal_create", user_id, fields, reuse_answer=keyed)
    if answer is None:
        return pending(command_id)
    if not answer.get("ok"):
        raise refused(answer, {"too_many_goals": 409, "invalid_goal": 422})
    return OrjsonResponse(answer.get("goal"), status_code=201)


@router.get("/v1/users/{user_id}/goals", responses={403: {"description": "another user's goals"}})
async def list_goals(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    growth = await get_json(state.redis, keys.user_growth(user_id))
    goals = [Goal.from_dict(g) for g in ((growth or {}).get("goals") or {}).values()]
    # The worker records expiry lazily; mark it on this copy so a passed deadline shows now.
    expire_goals(goals, now_ms())
    goals.sort(key=lambda g: (g.created_at_ms, g.goal_id))
    return OrjsonResponse([public_goal(g) for g in goals])
