"""Scale-out on the embedded stack: workers share partitions and survive losing one; several API
processes serve the same channels."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis

from api.auth import issue_token
from infra import keys
from streams.app import APP_ID
from tests.brokers import stable_members
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker
from tests.integration.test_end_to_end import recv_json, recv_until
from tests.integration.test_worker import NOW, SCORED_TYPES, event, produce, random_events, wait_for_views

pytestmark = pytest.mark.integration

PROCESSED = re.compile(
    r'^elimu_events_processed_total\{agent="engagement",topic="behavior-events"\} (\S+)$', re.M
)


async def processed_by_worker(redis: Redis) -> dict[str, float]:
    snapshots: dict[bytes, bytes] = await redis.hgetall(keys.WORKER_METRICS)  # type: ignore[misc]
    return {
        w.decode(): sum(float(v) for v in PROCESSED.findall(text.decode())) for w, text in snapshots.items()
    }


async def test_two_workers_share_partitions_and_killing_one_loses_and_doubles_nothing(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    rng = random.Random(8)
    users = [f"s-{i}" for i in range(60)]
    events = random_events(rng, users, 6000, SCORED_TYPES, days=2)
    sent = events + rng.sample(events, 500)  # producer retries
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_SESSION_TIMEOUT="6")
    first = start_worker(env, tmp_path / "worker-a.log")
    second = start_worker(env, tmp_path / "worker-b.log")
    produced = 0
    try:

        async def both_members() -> bool:
            assert first.alive(), first.tail()
            assert second.alive(), second.tail()
            return await stable_members(fresh_kafka, APP_ID) == 2

        # Produce only once both workers hold partitions: on Apache Kafka the first worker to join
        # can drain everything produced before the second one is assigned anything.
        await wait_until(both_members, timeout=90, what="both workers in a stable group")

        async def both_working() -> Any:
            # Produce in slices until each worker has processed some (a later rebalance can still
            # move partitions while the first slices are consumed).
            nonlocal produced
            assert first.alive(), first.tail()
            assert second.alive(), second.tail()
            counts = await processed_by_worker(redis)
            if len(counts) == 2 and all(v > 0 for v in counts.values()):
                return counts
            if produced < len(sent) // 2:
                await produce(fresh_kafka, "behavior-events", sent[produced : produced + 250])
                produced += 250
            return None

        # Each worker processed part of the stream: the partitions are shared.
        await wait_until(both_working, timeout=90, what="both workers processing their partitions")
        second.kill()  # SIGKILL mid-stream: its partitions move to the survivor
        await produce(fresh_kafka, "behavior-events", sent[produced:])
        # XP, level and every event type's count: a lost or doubled event changes them. Not the
        # streak and badges: the engine's own daily-challenge completions (streak days) reach
        # the topic wherever the batch that completed them ended, and a killed worker moves
        # those ends; the oracle can only place them after every event. Those fields are
        # checked where events arrive in one order (test_worker.py).
        await wait_for_views(
            redis, expected_views(events, NOW), first, timeout=120, fields=("xp", "level", "counters")
        )
    finally:
        first.stop()
        second.stop()


async def test_clients_on_different_api_processes_get_the_same_channel_messages(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api_a, url_a = start_api(env, tmp_path / "api-a.log")
    api_b, url_b = start_api(env, tmp_path / "api-b.log")
    token = issue_token(TEST_SECRET, "fan")
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def ready() -> bool:
                assert worker.alive(), worker.tail()
                codes = [(await http.get(f"{u}/readyz")).status_code for u in (url_a, url_b)]
                return codes == [200, 200]

            await wait_until(ready, timeout=60, what="both APIs ready")
        clients = [
            await websockets.connect(u.replace("http", "ws") + f"/v1/ws?token={token}")
            for u in (url_a, url_b)
        ]
        try:
            for ws in clients:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": "user:fan"}).decode())
                assert (await recv_json(ws))["op"] == "subscribed"
            await produce(fresh_kafka, "behavior-events", [event("fan-1", "fan", "lesson_complete")])
            got = [await recv_until(ws, lambda m: m.get("type") == "engagement") for ws in clients]
            # One publish, fanned out through Redis to every API process: the same message and id.
            assert got[0] == got[1]
            assert got[0]["data"]["event_ids"] == ["fan-1"]
        finally:
            for ws in clients:
                await ws.close()
    finally:
        api_a.stop()
        api_b.stop()
        worker.stop()
