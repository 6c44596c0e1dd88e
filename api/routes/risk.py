"""Drop-off risk for staff: ``GET /v1/at-risk`` (CONTRACT.md §7) and the model's evaluation.

Reads the serving view the workers keep (streams/risk_pipeline.py): one sorted set of every
scored user's current risk, and one document per user. The stats are counts over the whole set
by level (contract thresholds), so they do not depend on ``limit``.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Query

from api.cursors import MAX_CURSOR_CHARS, decode_cursor, encode_cursor
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra import keys
from infra.redis_conn import RedisClient, mget
from models.risk import LEVELS, evaluation
from models.risk_explain import explain

router = APIRouter(tags=["risk"])

_CRITICAL, _HIGH, _MEDIUM = (threshold for threshold, _ in LEVELS)


@router.get("/v1/at-risk", responses={400: {"description": "a cursor this list did not return"}, 403: {}})
async def at_risk(
    state: StateDep,
    principal: PrincipalDep,
    threshold: Annotated[float, Query(ge=0, le=100)] = 60.0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)] = None,
) -> OrjsonResponse:
    """Students whose risk is at least ``threshold``, highest first (ties: by user id,
    descending, the index's order), ``limit`` a page; ``next_cursor`` continues the list (null
    on its last page). The counts by level cover every scored student."""
    require_admin(principal, "the at-risk list")
    redis = state.redis
    # One more than a page: whether there is a next one.
    if cursor is None:
        rows = await _first_rows(redis, threshold, limit + 1)
    else:
        rows = await _rows_after(redis, *decode_cursor(cursor), threshold, limit + 1)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.RISK_SCORES)
        pipe.zcount(keys.RISK_SCORES, _CRITICAL, "+inf")
        pipe.zcount(keys.RISK_SCORES, _HIGH, f"({_CRITICAL}")
        pipe.zcount(keys.RISK_SCORES, _MEDIUM, f"({_HIGH}")
        pipe.zcount(keys.RISK_SCORES, threshold, "+inf")
        total, critical, high, medium, above = await pipe.execute()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][1], page[-1][0].decode()) if len(rows) > limit else None
    documents = await mget(redis, [keys.user_risk(member.decode()) for member, _ in page])
    # The documents are read after the index: a score re-written in between could show the page
    # out of order, or a student under the threshold. Order and filter the page by what it shows
    # (stably: ties keep the index's order); the next page still continues from the index's row.
    shown = [_student(orjson.loads(raw)) for raw in documents if raw is not None]
    students = sorted((s for s in shown if s["score"] >= threshold), key=lambda s: -s["score"])
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
            "next_cursor": next_cursor,
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


async def _first_rows(redis: RedisClient, threshold: float, n: int) -> list[Row]:
    rows = await redis.zrevrangebyscore(keys.RISK_SCORES, "+inf", threshold, start=0, num=n, withscores=True)
    return cast(list[Row], rows)


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
