"""Drop-off risk for staff: ``GET /v1/at-risk`` (CONTRACT.md §7) and the model's evaluation.

Reads the serving view the workers keep (streams/risk_pipeline.py): one sorted set of every
scored user's current risk, and one document per user. The stats are counts over the whole set
by level (contract thresholds), so they do not depend on ``limit``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from api.deps import PrincipalDep, StateDep, require_admin
from api.responses import OrjsonResponse
from infra import keys
from infra.redis_conn import mget
from models.risk import LEVELS, evaluation

router = APIRouter(tags=["risk"])

_CRITICAL, _HIGH, _MEDIUM = (threshold for threshold, _ in LEVELS)


@router.get("/v1/at-risk", responses={403: {"description": "not an admin"}})
async def at_risk(
    state: StateDep,
    principal: PrincipalDep,
    threshold: Annotated[float, Query(ge=0, le=100)] = 60.0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> OrjsonResponse:
    """Students whose risk is at least ``threshold``, highest first, with counts by level."""
    require_admin(principal, "the at-risk list")
    redis = state.redis
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrangebyscore(keys.RISK_SCORES, "+inf", threshold, start=0, num=limit)
        pipe.zcard(keys.RISK_SCORES)
        pipe.zcount(keys.RISK_SCORES, _CRITICAL, "+inf")
        pipe.zcount(keys.RISK_SCORES, _HIGH, f"({_CRITICAL}")
        pipe.zcount(keys.RISK_SCORES, _MEDIUM, f"({_HIGH}")
        pipe.zcount(keys.RISK_SCORES, threshold, "+inf")
        members, total, critical, high, medium, above = await pipe.execute()
    documents = await mget(redis, [keys.user_risk(m.decode()) for m in members])
    # The documents are read after the index: a score re-written in between would show the list
    # out of order, or a student under the threshold. Order and filter by what is shown.
    shown = [_student(orjson.loads(raw)) for raw in documents if raw is not None]
    students = sorted(
        (s for s in shown if s["score"] >= threshold), key=lambda s: (-s["score"], s["user_id"])
    )
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
        }
    )


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
