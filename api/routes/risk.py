"""Drop-off risk for staff: ``GET /v1/at-risk`` (CONTRACT.md §7) and the model's evaluation.

Reads the serving view the workers keep (streams/risk_pipeline.py): one sorted set of every
scored user's current risk, and one document per user. The stats are counts over the whole set
by level (contract thresholds), so they do not depend on ``limit``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Query
from pydantic import Field, StrictBool

from api import commands as api_commands
from api.commands import StrictBody, get_json, now_ms
from api.cursors import MAX_CURSOR_CHARS, decode_cursor, encode_cursor
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.ids import StrictId
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys, topics
from infra.commands import (
    RESULT_TTL_S,
    RISK_RECALCULATE,
    RISK_RECALCULATE_PARTITION,
    await_result,
    partition_key,
    partition_result_id,
)
from infra.producer import ProducerUnavailable
from infra.redis_conn import RedisClient, mget
from models.digests import id_digest
from models.risk import LEVELS, evaluation
from models.risk_explain import explain
from models.risk_workflow import (
    InvalidFilter,
    ScoreRange,
    filter_scope,
    matches,
    parse_levels,
    parse_signals,
    row_of,
    score_ranges,
)

router = APIRouter(tags=["risk"])

_CRITICAL, _HIGH, _MEDIUM = (threshold for threshold, _ in LEVELS)


@router.get(
    "/v1/at-risk",
    responses={
        400: {"description": "an unknown level or signal; a cursor this list (these filters) did not return"},
        403: {},
    },
)
async def at_risk(
    state: StateDep,
    principal: PrincipalDep,
    threshold: Annotated[float, Query(ge=0, le=100)] = 60.0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
    level: Annotated[list[str] | None, Query()] = None,
    signal: Annotated[list[str] | None, Query()] = None,
) -> OrjsonResponse:
    """Students whose risk is at least ``threshold``, highest first (ties: by user id,
    descending, the index's order), ``limit`` a page; ``next_cursor`` continues the list (null
    on its last page). ``level`` (critical, high, medium, low) and ``signal`` (a feature the
    scorer names in ``signals``), each repeatable or a comma list, narrow it; a cursor continues
    only the list of the filters it came with. The counts by level cover every scored student."""
    require_admin(principal, "the at-risk list")
    try:
        levels, signals = parse_levels(level), parse_signals(signal)
    except InvalidFilter as exc:
        raise ApiError(400, "invalid_filter", str(exc), extra={"field": exc.field}) from exc
    scope = filter_scope(threshold, levels, signals)
    # A cursor from before scopes (no filters then) still continues the unfiltered list.
    after = None if cursor is None else decode_cursor(cursor, scope, unscoped_ok=not levels and not signals)
    redis = state.redis
    ranges = score_ranges(levels, threshold)
    students, last = await _scan(
        redis,
        ranges,
        after,
        limit,
        lambda doc: matches(doc, levels, signals) and float(doc["score"]) >= threshold,
        budget=limit if not signals else max(limit, SIGNAL_SCAN_BUDGET),
    )
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.RISK_SCORES)
        pipe.zcount(keys.RISK_SCORES, _CRITICAL, "+inf")
        pipe.zcount(keys.RISK_SCORES, _HIGH, f"({_CRITICAL}")
        pipe.zcount(keys.RISK_SCORES, _MEDIUM, f"({_HIGH}")
        pipe.zcount(keys.RISK_SCORES, threshold, "+inf")
        total, critical, high, medium, above = await pipe.execute()
    # The documents are read after the index: a score re-written in between could show the page
    # out of order. Order the page by what it shows (stably: ties keep the index's order); the
    # next page still continues from the index's row.
    students.sort(key=lambda s: -s["score"])
    return OrjsonResponse(
        {
            "students": students,
            "stats": {
                "total_students": total,
                "critical": critical,
                "high": high,
                "medium": medium,
                # Share of scored students at or above the requested threshold.
                "at_risk_pct": round(100.0 * above / total, 1) if total else 0.0,
            },
            "next_cursor": None if last is None else encode_cursor(last[0], last[1], scope),
        }
    )


@router.get(
    "/v1/at-risk/{user_id}", responses={403: {}, 404: {"description": "no score for this student yet"}}
)
async def at_risk_student(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """One student's current risk as the list shows it, with the signals explained in words
    (``explanations``, strongest first: ``models.risk_explain``)."""
    require_admin(principal, "a student's risk")
    raw = await state.redis.get(keys.user_risk(user_id))
    if raw is None:
        raise ApiError(404, "not_scored", f"no risk score for {user_id!r} yet")
    document = orjson.loads(raw)
    return OrjsonResponse(
        {**_student(document), "explanations": explain(document.get("contributions") or {})}
    )


Row = tuple[bytes, float]
#: Index rows one page with a ``signal`` filter reads at most: signals are in the documents, not
#: in the index, so such a page reads documents until ``limit`` match or this many were read,
#: and may hold fewer than ``limit`` students (even none) with a ``next_cursor`` to follow.
SIGNAL_SCAN_BUDGET = 2000


async def _scan(
    redis: RedisClient,
    ranges: list[ScoreRange],
    after: tuple[float, str] | None,
    limit: int,
    accept: Callable[[dict[str, Any]], bool],
    budget: int,
) -> tuple[list[dict[str, Any]], tuple[float, str] | None]:
    """The rows of ``students`` (at most ``limit`` accepted documents) of the index rows in
    ``ranges`` after ``after``, and the index row to continue after (None: nothing is left).
    At most ``budget`` index rows count toward a page: without a signal filter every row
    counts, as before filters (a row whose document moved out of the list meanwhile is left
    out, and the page is shorter); with one, rows that do not match are passed over."""
    shown: list[dict[str, Any]] = []
    counted = 0
    position = after
    for index, (high, low) in enumerate(ranges):
        if position is not None and position[0] < low:
            continue  # the cursor is below this range: it was read on earlier pages
        while True:
            take = min(limit + 1, budget - counted + 1, 500)
            inside = position is not None and (high is None or position[0] < high)
            if position is not None and inside:
                rows = await _rows_after(redis, *position, low, take)
            else:
                rows = await _range_rows(redis, high, low, take)
            documents = await mget(redis, [keys.user_risk(member.decode()) for member, _ in rows])
            for (member, score), raw in zip(rows, documents, strict=True):
                if counted == budget or (len(shown) == limit):
                    # A row beyond the page: there is more to read after the last one counted.
                    return shown, position
                counted += 1
                position = (score, member.decode())
                document = orjson.loads(raw) if raw is not None else None
                if document is not None and accept(document):
                    shown.append(_student(document))
            if len(rows) < take:
                break  # this range is read to its end
        if (len(shown) == limit or counted == budget) and await _any_below(redis, ranges[index + 1 :]):
            return shown, position
    return shown, None


async def _any_below(redis: RedisClient, ranges: list[ScoreRange]) -> bool:
    for high, low in ranges:
        if await redis.zcount(keys.RISK_SCORES, low, "+inf" if high is None else f"({high!r}"):
            return True
    return False


async def _range_rows(redis: RedisClient, high: float | None, low: float, n: int) -> list[Row]:
    top = "+inf" if high is None else f"({high!r}"
    rows = await redis.zrevrangebyscore(keys.RISK_SCORES, top, low, start=0, num=n, withscores=True)
    return cast(list[Row], rows)


# The rows after a cursor's row in the index's order (score descending, then member descending),
# read atomically: while the cursor's member still holds the cursor's score, its rank says where
# the next page starts (O(log N) and the page, whatever the ties). Otherwise: false.
# KEYS[1]: the index. ARGV: score, member, rows.
_AFTER_LUA = """
local held = redis.call('ZSCORE', KEYS[1], ARGV[2])
if held and tonumber(held) == tonumber(ARGV[1]) then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[2])
  return redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + tonumber(ARGV[3]), 'WITHSCORES')
end
return false
"""


async def _rows_after(redis: RedisClient, score: float, member: str, threshold: float, n: int) -> list[Row]:
    """Up to ``n`` rows at or above ``threshold`` after the row (score, member) (keyset paging:
    rows re-scored between two pages do not shift the next one by an offset)."""
    if score < threshold:
        return []
    script = redis.register_script(_AFTER_LUA)
    flat = await script(keys=[keys.RISK_SCORES], args=[repr(score), member, n])
    if flat is not None:
        pairs = [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]
        return list(itertools.takewhile(lambda row: row[1] >= threshold, pairs))
    # The cursor's member was re-scored or removed since: the rows tied with its old score that
    # sort below it, then those under that score, read in one transaction (a consistent view).
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrevrangebyscore(keys.RISK_SCORES, score, score)
        pipe.zrevrangebyscore(keys.RISK_SCORES, f"({score!r}", threshold, start=0, num=n, withscores=True)
        tied, below = await pipe.execute()
    after = member.encode()
    return [(m, score) for m in cast(list[bytes], tied) if m < after][:n] + cast(list[Row], below)[:n]


def _student(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": document["user_id"],
        "score": document["score"],
        "level": document["level"],
        "signals": document.get("signals", []),
        "recommended_interventions": document.get("recommended_interventions", []),
        "updated_at": document.get("updated_at"),
        "weekly_risk": document.get("weekly_risk"),
        "monthly_risk": document.get("monthly_risk"),
        "confidence": document.get("confidence"),
        # The staff workflow (models/risk_workflow.py): display_name, last_intervention,
        # interventions (over the last 28 days), trend (4 ISO weeks, oldest first).
        **row_of(document),
    }


@router.get("/v1/ops/risk-model", responses={403: {"description": "not an admin"}})
async def risk_model(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """The trainer's prequential evaluation: exact ROC AUC of the online model and of the
    recency-only baseline on the same resolved labels, Brier score, calibration bins."""
    require_admin(principal, "the risk model's evaluation")
    raw = await state.redis.get(keys.RISK_EVALUATION)
    if raw:
        return OrjsonResponse(orjson.loads(raw))
    # Before the trainer's first report: the same shape, nothing evaluated yet.
    return OrjsonResponse({**evaluation([], []), "labels_learnt": 0, "pending_deferred": 0})


# ---------------------------------------------------------------------------------------------
# Recalculate (docs/risk.md "Recalculate"): the API asks, the worker that owns a user scores.

#: Single-user recalculations per admin: a token bucket like the other command routes.
RECALC_RATE_PER_S = 2.0
RECALC_BURST = 20
#: "all" re-looks at every user (the sweep's budget for minutes at scale): once per
#: RECALC_ALL_EVERY_S for the whole deployment, whoever asks.
RECALC_ALL_EVERY_S = 300.0
RECALC_ALL_SCOPE = "risk-recalc-all"


class RecalculateBody(StrictBody):
    """``{"user_id": "u-42"}`` or ``{"all": true}``, with an optional ``request_id`` that makes a
    retry the same request (no second command, the same answer)."""

    user_id: StrictId | None = None
    all_users: Annotated[StrictBool | None, Field(alias="all")] = None
    request_id: StrictId | None = None


def _command_id(principal: str, request_id: str | None) -> str:
    # A digest: bounded whatever the ids, and two admins' request ids never share an answer.
    key = uuid.uuid4().hex if request_id is None else id_digest(f"{principal}\x1f{request_id}")
    return f"risk-recalc-{key}"


def _status_path(command_id: str) -> str:
    return f"/v1/admin/risk/recalculate/{command_id}"


@router.post(
    "/v1/admin/risk/recalculate",
    status_code=202,
    responses={
        200: {"description": "one user, re-scored: the worker's answer"},
        202: {"description": "asked; poll the returned URL (GET) for the answer"},
        403: {"description": "not an admin"},
        404: {"description": "no such user"},
        409: {"description": "the request_id was used for another request, or nothing to score"},
        422: {"description": "invalid body: exactly one of user_id, all"},
        429: {"description": "rate limited (all: once per 5 minutes)"},
    },
)
async def recalculate(body: RecalculateBody, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Re-score one student (``user_id``) or every student (``all``) now, without waiting for
    the sweep. The worker that owns each user does it (the API never scores nor writes the risk
    view): a command on ``user-commands``, answered under ``command_id``."""
    require_admin(principal, "risk recalculation")
    if (body.user_id is None) == (body.all_users is not True):
        raise ApiError(422, "validation_error", 'give exactly one of "user_id" or "all": true')
    redis = state.redis
    command_id = _command_id(principal.sub, body.request_id)
    partitions = state.settings.partitions
    asked = {
        "kind": "user" if body.user_id is not None else "all",
        "user_id": body.user_id,
        "partitions": 1 if body.user_id is not None else partitions,
        "by": principal.sub,
        "at_ms": now_ms(),
    }
    stored = await redis.get(keys.risk_recalculation(command_id))
    if stored is not None:  # a retry of the same request_id: the same command, not another
        first = orjson.loads(stored)
        if (first.get("kind"), first.get("user_id")) != (asked["kind"], asked["user_id"]):
            raise ApiError(409, "request_conflict", "this request_id was used for another recalculation")
        return await _answer(state, command_id, first, wait_s=0.0)
    if body.user_id is not None:
        await _limit(state, "risk-recalc", principal.sub, RECALC_RATE_PER_S, RECALC_BURST)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.user_state(body.user_id))
            pipe.exists(keys.user_risk(body.user_id))
            if not any(await pipe.execute()):
                raise ApiError(404, "user_not_found", f"no user {body.user_id!r}", extra={"field": "user_id"})
        records: list[tuple[str, dict[str, Any]]] = [
            (body.user_id, _command(command_id, RISK_RECALCULATE, user_id=body.user_id))
        ]
    else:
        await _limit(state, RECALC_ALL_SCOPE, "all", 1.0 / RECALC_ALL_EVERY_S, 1)
        records = [
            (
                partition_key(p, partitions),
                _command(partition_result_id(command_id, p), RISK_RECALCULATE_PARTITION, partition=p),
            )
            for p in range(partitions)
        ]
    if not await redis.set(
        keys.risk_recalculation(command_id), orjson.dumps(asked), ex=RESULT_TTL_S, nx=True
    ):
        raise ApiError(409, "request_conflict", "this request_id is being used by a concurrent request")
    try:
        await state.producer.send_all(topics.USER_COMMANDS, records, state.config.produce_timeout_s)
    except ProducerUnavailable as exc:
        # Nothing may have been asked: forget the request, so a retry asks again.
        await redis.delete(keys.risk_recalculation(command_id))
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    # One user: wait a few seconds for the worker (most answers come in well under a second).
    # Every user: the partitions answer as their workers read the commands; poll.
    wait_s = api_commands.COMMAND_TIMEOUT_S if body.user_id is not None else 0.0
    return await _answer(state, command_id, asked, wait_s=wait_s)


@router.get(
    "/v1/admin/risk/recalculate/{command_id}",
    responses={
        200: {"description": "answered"},
        202: {"description": "not answered yet"},
        403: {"description": "not an admin"},
        404: {"description": "no such recalculation (or older than a day)"},
    },
)
async def recalculation(command_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Where a recalculation stands: the worker's answer for one user; for ``all``, how many
    partitions answered and how many users they queued for the sweep."""
    require_admin(principal, "risk recalculation")
    stored = await state.redis.get(keys.risk_recalculation(command_id))
    if stored is None:
        raise ApiError(404, "unknown_command", "no such recalculation")
    return await _answer(state, command_id, orjson.loads(stored), wait_s=0.0)


def _command(command_id: str, type_: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": command_id, "type": type_, "ts": now_ms(), **fields}


async def _limit(state: AppState, scope: str, who: str, rate_per_s: float, burst: int) -> None:
    await RateLimiter(state.redis, scope, rate_per_s, burst).require(
        who, "too many recalculations; slow down"
    )


#: A worker's refusal of one user's recalculation, as an HTTP status.
_REFUSALS = {"unknown_user": 404, "no_activity": 409, "misrouted": 503}


async def _answer(state: AppState, command_id: str, asked: dict[str, Any], wait_s: float) -> OrjsonResponse:
    base = {"command_id": command_id, "kind": asked.get("kind"), "poll": _status_path(command_id)}
    if asked.get("kind") == "user":
        answer = (
            await await_result(state.redis, command_id, wait_s)
            if wait_s > 0
            else await get_json(state.redis, keys.command_result(command_id))
        )
        if answer is None:
            return OrjsonResponse({**base, "status": "pending"}, status_code=202)
        if not answer.get("ok"):
            code = str(answer.get("code") or "refused")
            raise ApiError(_REFUSALS.get(code, 409), code, str(answer.get("message") or code))
        return OrjsonResponse({**base, "status": "done", "result": answer})
    partitions = int(asked.get("partitions") or 0)
    raw = await mget(
        state.redis, [keys.command_result(partition_result_id(command_id, p)) for p in range(partitions)]
    )
    answers = [orjson.loads(r) for r in raw if r is not None]
    body = {
        **base,
        "status": "queued" if len(answers) == partitions else "pending",
        "partitions": partitions,
        "answered": len(answers),
        "queued": sum(int(a.get("queued") or 0) for a in answers),
    }
    return OrjsonResponse(body, status_code=200 if len(answers) == partitions else 202)
