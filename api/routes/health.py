"""Liveness, readiness and metrics: the operator's view of one API process.

``/healthz`` touches no dependency so a restart loop never starts because Redis blinked.
``/readyz`` is what a load balancer and ``elimu up`` wait on: Redis answers, the broker answers
and the events topic exists, and at least one worker has beaten recently (without a worker the
API would accept events that nobody processes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.responses import Response

from api import metrics
from api.deps import StateDep
from api.errors import error_response
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.metrics_relay import render_live_workers
from infra.redis_conn import as_text

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> OrjsonResponse:
    return OrjsonResponse({"status": "ok"})


@router.get("/readyz", responses={503: {"description": "a dependency is not ready"}})
async def readyz(state: StateDep) -> OrjsonResponse:
    timeout = state.config.ready_probe_timeout_s
    redis, kafka, workers = await asyncio.gather(
        _probe(_redis_check(state), timeout),
        _probe(state.producer.probe(state.config.events_topic), timeout),
        _probe(_workers_check(state), timeout),
    )
    checks = {"redis": redis, "kafka": kafka, "workers": workers}
    failing = [name for name, check in checks.items() if not check["ok"]]
    if failing:
        return error_response(503, "not_ready", f"not ready: {', '.join(failing)}", {"checks": checks})
    return OrjsonResponse({"status": "ready", "checks": checks})


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(state: StateDep) -> Response:
    """This API process's metrics, then every live worker's (labelled ``worker``)."""
    body = generate_latest(metrics.REGISTRY)
    try:
        async with asyncio.timeout(state.config.ready_probe_timeout_s):
            body += await render_live_workers(state.redis, state.config.heartbeat_max_age_s)
    except (TimeoutError, RedisError, OSError):
        metrics.WORKER_METRICS_UNAVAILABLE.inc()  # the API's own metrics still answer
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _probe(check: Awaitable[dict[str, Any]], timeout: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout):
            return await check
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout}s"}
    except Exception as exc:
        return {"ok": False, "error": str(exc) or type(exc).__name__}


async def _redis_check(state: AppState) -> dict[str, Any]:
    pong = bool(await state.redis.ping())
    return {"ok": pong and state.hub.connected, "ping": pong, "live_feed": state.hub.connected}


async def _workers_check(state: AppState) -> dict[str, Any]:
    """At least one live worker, and no live worker stalled (a batch it cannot finish: the
    users of its partitions get nothing applied, however healthy the rest looks)."""
    beats = await state.redis.hgetall(keys.WORKER_HEARTBEATS)
    stalls = await state.redis.hgetall(keys.WORKER_STALLS)
    now = time.time()
    live: set[Any] = set()
    for worker, value in beats.items():
        try:
            if now - float(value) < state.config.heartbeat_max_age_s:
                live.add(worker)
        except ValueError:
            continue
    stalled = {as_text(w): orjson.loads(v) for w, v in stalls.items() if w in live}
    check: dict[str, Any] = {"ok": bool(live) and not stalled, "live": len(live), "known": len(beats)}
    if stalled:
        check["stalled"] = stalled
    return check
