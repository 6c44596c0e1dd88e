"""Readiness reflects Redis, the broker (and the events topic) and live worker heartbeats;
``/metrics`` exposes the API's own series."""

from __future__ import annotations

import time

import httpx
import orjson
from redis.asyncio import Redis

from api import metrics
from infra import keys
from tests.api.conftest import bearer


async def test_not_ready_without_a_live_worker(
    client: httpx.AsyncClient, created_topic: str, redis: Redis
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    checks = error["checks"]
    assert checks["redis"]["ok"] is True
    assert checks["kafka"]["ok"] is True
    assert checks["workers"] == {"ok": False, "live": 0, "known": 0}

    await redis.hset(keys.WORKER_HEARTBEATS, "w-old", int(time.time()) - 60)
    assert (await client.get("/readyz")).status_code == 503

    await redis.hset(keys.WORKER_HEARTBEATS, "w-1", int(time.time()))
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"
    assert response.json()["checks"]["workers"] == {"ok": True, "live": 1, "known": 2}


async def test_not_ready_while_a_live_worker_reports_a_stall(
    client: httpx.AsyncClient, created_topic: str, redis: Redis
) -> None:
    await redis.hset(keys.WORKER_HEARTBEATS, mapping={"w-1": int(time.time()), "w-2": int(time.time())})
    stall = {"agent": "engagement", "seconds": 42.0, "reason": "send to x failed"}
    await redis.hset(keys.WORKER_STALLS, "w-2", orjson.dumps(stall))
    response = await client.get("/readyz")
    assert response.status_code == 503
    workers = response.json()["error"]["checks"]["workers"]
    assert workers["ok"] is False and workers["stalled"] == {"w-2": stall}
    # A stall left behind by a worker that is gone does not count: its heartbeat is stale.
    await redis.hset(keys.WORKER_HEARTBEATS, "w-2", int(time.time()) - 60)
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text


async def test_not_ready_when_the_events_topic_is_missing(client: httpx.AsyncClient, redis: Redis) -> None:
    await redis.hset(keys.WORKER_HEARTBEATS, "w-1", int(time.time()))
    response = await client.get("/readyz")
    assert response.status_code == 503
    kafka = response.json()["error"]["checks"]["kafka"]
    assert kafka["ok"] is False and kafka["topic_exists"] is False and kafka["brokers"] >= 1


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    labels = {"route": "/v1/users/{user_id}", "method": "GET", "status": "403"}
    before = metrics.REGISTRY.get_sample_value("elimu_api_http_requests_total", labels) or 0.0
    for user in ("u-2", "u-3"):
        await client.get(f"/v1/users/{user}", headers=bearer("u-1"))
    await client.get("/v1/does-not-exist")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metrics.REGISTRY.get_sample_value("elimu_api_http_requests_total", labels) == before + 2
    assert 'route="unmatched"' in text
    assert "/v1/users/u-2" not in text
    assert "elimu_api_http_request_duration_seconds_bucket" in text
    assert "elimu_api_ws_connections" in text
