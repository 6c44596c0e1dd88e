"""The whole stack on a three-master Redis Cluster (real redis-servers on loopback): the serving
view, channel history and replay, leaderboards, live pushes, the lag sampler and the admin reads
that span users all work, and the keys really are spread over the masters."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import orjson
import pytest
import redis as sync_redis
import websockets

from api.auth import issue_token
from infra import keys
from infra.channels import ChannelLog
from infra.redis_conn import connect
from models.channels import user_channel
from scripts.redis_cluster import RedisClusterService
from streams.app import APP_ID
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_end_to_end import recv_json, recv_until
from tests.integration.test_worker import (
    NOW,
    SCORED_TYPES,
    event,
    produce,
    random_events,
    wait_for_views,
)

# One broker: what differs here is Redis, and the broker differences have their own tests.
pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


async def test_the_stack_serves_everything_from_a_redis_cluster(
    fresh_kafka: str, redis_cluster_url: str, redis_cluster_service: RedisClusterService, tmp_path: Path
) -> None:
    rng = random.Random(12)
    users = [f"rc-{i}" for i in range(40)]
    events = random_events(rng, users, 400, SCORED_TYPES, days=2)
    env = stack_env(fresh_kafka, redis_cluster_url, tmp_path, ELIMU_LAG_INTERVAL="1")
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    redis = connect(redis_cluster_url)
    admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)
            await produce(fresh_kafka, "behavior-events", events + rng.sample(events, 40))
            expected = expected_views(events, NOW)
            await wait_for_views(redis, expected, worker)

            # Every master holds part of the view: the keys are spread, not on one node.
            for node in redis_cluster_service.nodes:
                client = sync_redis.Redis.from_url(node.address)
                try:
                    assert client.dbsize() > 0, node.address
                finally:
                    client.close()

            # Leaderboard reads: the all-time board ranks by the model's XP.
            r = await http.get("/v1/leaderboards/all_time?limit=100", headers=admin)
            assert r.status_code == 200
            board = {e["user_id"]: e["score"] for e in r.json()["entries"]}
            assert board == {u: v["xp"] for u, v in expected.items()}

            # Admin reads that span users (an MGET split by slot, a SCAN of every master).
            assert (await http.get("/v1/at-risk", headers=admin)).status_code == 200
            growth = await http.get("/v1/analytics/growth", headers=admin)
            assert growth.status_code == 200, growth.text

            # The lag sampler's lock, history and report (one hash tag) work on the cluster.
            async def lag_lists_the_engine() -> bool:
                r = await http.get("/v1/ops/lag", headers=admin)
                return r.status_code == 200 and APP_ID in {g["group"] for g in r.json()["groups"]}

            await wait_until(lag_lists_the_engine, timeout=30, what="the lag report lists the engine")
            assert int(await redis.llen(keys.LAG_SAMPLES)) >= 2  # type: ignore[misc]

            # Channel history: a client that saw nothing replays the user's pushes from the start,
            # then gets the next one live, through the API's pub/sub on one node.
            user = users[0]
            token = issue_token(TEST_SECRET, user)
            async with websockets.connect(url.replace("http", "ws") + f"/v1/ws?token={token}") as ws:
                channel = user_channel(user)
                last = await ChannelLog(redis).last_id(channel)
                await ws.send(orjson.dumps({"op": "subscribe", "channel": channel, "since": 0}).decode())
                assert await recv_json(ws) == {"op": "subscribed", "channel": channel, "recovered": True}
                replayed = [await recv_json(ws) for _ in range(last)]
                assert [m["id"] for m in replayed] == list(range(1, last + 1))
                assert any(m["type"] == "engagement" for m in replayed)
                live = event("rc-live", user, "career_research", minutes_ago=0)
                await produce(fresh_kafka, "behavior-events", [live])
                msg = await recv_until(
                    ws, lambda m: m.get("type") == "engagement" and "rc-live" in m["data"]["event_ids"]
                )
                assert msg["channel"] == channel and msg["id"] > replayed[-1]["id"]
            view = (await http.get(f"/v1/users/{user}", headers={"Authorization": f"Bearer {token}"})).json()
            assert view["xp"] > expected[user]["xp"]
    finally:
        await redis.aclose()
        api.stop()
        worker.stop()
