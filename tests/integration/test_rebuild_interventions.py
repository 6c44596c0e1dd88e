"""Everything the admin routes read comes back from Kafka after Redis is wiped (real broker,
worker, Redis and API): a campaign's definition (`elimu-broadcast`), its execution log and the
interventions analytics (the `intervention-analytics` table)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.auth import issue_token
from infra import keys
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_careers import send

pytestmark = pytest.mark.integration

USERS = [f"camp-{i}" for i in range(3)]


def counts_at_least(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """Every count of ``before`` is in ``after``, at least as large (counts only grow)."""
    for key, value in before.items():
        if isinstance(value, dict):
            if not counts_at_least(after.get(key) or {}, value):
                return False
        elif isinstance(value, int) and not isinstance(value, bool) and after.get(key, -1) < value:
            return False
    return True


async def test_a_campaign_its_run_log_and_the_analytics_come_back_after_flushall(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}
    redis = Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)
            now = int(time.time() * 1000)
            send(
                fresh_kafka,
                "behavior-events",
                [
                    {"event_id": f"{u}-1", "user_id": u, "type": "lesson_complete", "ts": now - 60_000}
                    for u in USERS
                ],
                "user_id",
            )
            at = now + 3000
            body = {
                "id": "wipe-proof",
                "name": "Everyone, once",
                "schedule": {"kind": "one_time", "at": at},
                "target": {"kind": "all"},
                "intervention": "gentle_reminder",
                "status": "active",
            }
            created = await http.post("/v1/campaigns", json=body, headers=admin)
            assert created.status_code == 201, created.text
            # Stream time passes the campaign's instant when an event newer than it arrives, on each
            # partition (each keeps its own clock): every user logs in after it.
            ticks = [{"event_id": f"tick-{u}", "user_id": u, "type": "login", "ts": at + 1000} for u in USERS]
            send(fresh_kafka, "behavior-events", ticks, "user_id")

            async def campaign_done() -> Any:
                assert worker.alive(), worker.tail()
                r = await http.get("/v1/campaigns/wipe-proof", headers=admin)
                counts = r.json()["executions"]["counts"]
                delivered = counts.get("sent", 0) + counts.get("deferred", 0)
                suppressed = sum(v for k, v in counts.items() if k.startswith("suppressed:"))
                complete = counts.get("evaluated") == len(USERS) and delivered + suppressed == len(USERS)
                return r.json() if complete else None

            before = await wait_until(campaign_done, timeout=90, what="campaign evaluated for every user")

            sent = before["executions"]["counts"].get("sent", 0)

            async def analytics_counted() -> Any:
                doc = (await http.get("/v1/analytics/interventions", headers=admin)).json()
                return doc if doc["totals"]["sent"] >= sent else None

            analytics_before = await wait_until(analytics_counted, timeout=30, what="analytics written")

            stored = await redis.hget(keys.CAMPAIGNS, "wipe-proof")
            # The API mirrored the campaign when it was created, and will not again: only the
            # worker's re-projection can bring it back.
            await redis.flushall()

            async def campaign_back() -> Any:
                assert worker.alive(), worker.tail()
                r = await http.get("/v1/campaigns/wipe-proof", headers=admin)
                if r.status_code != 200 or r.json()["executions"]["counts"] != before["executions"]["counts"]:
                    return None
                return r.json()

            after = await wait_until(campaign_back, timeout=30, what="campaign and run log re-projected")
            # The same definition (the status and next run shown are derived from the clock:
            # "completed", none, by now).
            assert await redis.hget(keys.CAMPAIGNS, "wipe-proof") == stored
            assert {**after, "status": None, "next_run": None} == {**before, "status": None, "next_run": None}
            listed = (await http.get("/v1/campaigns", headers=admin)).json()["campaigns"]
            assert [c["id"] for c in listed] == ["wipe-proof"]

            async def analytics_back() -> Any:
                doc = (await http.get("/v1/analytics/interventions", headers=admin)).json()
                return doc if await redis.exists(keys.INTERVENTION_ANALYTICS) else None

            analytics_after = await wait_until(analytics_back, timeout=30, what="analytics re-projected")
            assert counts_at_least(analytics_after, analytics_before), (analytics_before, analytics_after)
            assert await redis.hexists(keys.CAMPAIGN_RUNS, "wipe-proof")
    finally:
        await redis.aclose()
        api.stop()
        worker.stop()
