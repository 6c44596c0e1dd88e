"""``GET /v1/ops/lag``: admin only, the report's shape, the sampler the app runs, and its gauges."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from infra import keys
from infra.channels import ChannelLog
from infra.lag import LagSampler, stored_report
from infra.lag_report import parse_ts
from models.channels import OPS_LAG_CHANNEL
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import wait_until

PARTITION_KEYS = {"topic", "partition", "committed", "end", "lag", "lag_seconds", "status", "complete"}
GROUP_KEYS = {"group", "status", "lag", "lag_seconds", "complete", "partitions"}


async def lagging_group(
    bootstrap: str, topic: str, group: str, produced: int = 5, committed: int = 3
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(produced):
            await producer.send_and_wait(topic, b"{}", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: committed})
    finally:
        await consumer.stop()


def find_group(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((g for g in body["groups"] if g["group"] == name), None)


@pytest.fixture
def no_background_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's sampler exists but does not run by itself: the test ticks it."""
    monkeypatch.setenv("ELIMU_LAG_INTERVAL", "0")


async def test_lag_needs_a_token_and_the_admin_role(
    no_background_sampling: None, client: httpx.AsyncClient
) -> None:
    response = await client.get("/v1/ops/lag")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(
        await client.get("/v1/ops/lag", headers={"Authorization": "Bearer nope"}), 401, "unauthorized"
    )
    assert_error(await client.get("/v1/ops/lag", headers=bearer("u-1")), 403, "forbidden")


async def test_report_shape_served_from_the_samplers_last_tick(
    no_background_sampling: None,
    client: httpx.AsyncClient,
    redis: Redis,
    created_topic: str,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    group = f"ops-{unique}"
    await lagging_group(kafka_bootstrap, created_topic, group)
    sampler = client.app.app.state.lag_sampler  # type: ignore[attr-defined]
    assert isinstance(sampler, LagSampler)
    await sampler.tick()

    response = await client.get("/v1/ops/lag", headers=bearer("boss", "admin"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"groups", "updated_at"}
    assert body == await stored_report(redis)  # what the sampler stored, as it stored it
    assert abs(time.time() - parse_ts(body["updated_at"])) < 60
    mine = find_group(body, group)
    assert mine is not None and set(mine) == GROUP_KEYS
    assert (mine["status"], mine["lag"], mine["complete"]) == ("OK", 2, False)  # one sample: no window yet
    (p,) = mine["partitions"]
    assert set(p) == PARTITION_KEYS
    assert (p["topic"], p["partition"], p["committed"], p["end"], p["lag"]) == (created_topic, 0, 3, 5, 2)
    assert p["status"] == "OK" and p["lag_seconds"] is None  # one sample: no rate yet

    # The sampler's report hook set the gauges of this process.
    metrics = (await client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.labels.get("group") == group
    }
    labels = (("group", group), ("partition", "0"), ("topic", created_topic))
    assert samples[("elimu_consumer_lag", labels)] == 2
    assert ("elimu_consumer_lag_seconds", labels) in samples  # NaN while unknown
    assert samples[("elimu_consumer_group_status", (("group", group),))] == 0


async def test_without_a_stored_report_the_route_reads_the_broker(
    no_background_sampling: None,
    client: httpx.AsyncClient,
    redis: Redis,
    created_topic: str,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    group = f"fresh-{unique}"
    await lagging_group(kafka_bootstrap, created_topic, group, produced=4, committed=1)
    response = await client.get("/v1/ops/lag", headers=bearer("boss", "admin"))
    assert response.status_code == 200
    mine = find_group(response.json(), group)
    assert mine is not None and mine["lag"] == 3
    assert await redis.get(keys.LAG_REPORT) is None  # reading is not sampling


async def test_a_stale_report_is_replaced_by_a_fresh_read(
    no_background_sampling: None,
    client: httpx.AsyncClient,
    redis: Redis,
    created_topic: str,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    group = f"stale-{unique}"
    await redis.set(keys.LAG_REPORT, orjson.dumps({"groups": [], "updated_at": "2020-01-01T00:00:00.000Z"}))
    await lagging_group(kafka_bootstrap, created_topic, group)
    body = (await client.get("/v1/ops/lag", headers=bearer("boss", "admin"))).json()
    assert find_group(body, group) is not None
    assert body["updated_at"] > "2020-01-01T00:00:00.000Z"


async def test_the_app_samples_in_the_background_and_publishes_on_ops_lag(
    make_client: Callable[..., Any],
    redis: Redis,
    created_topic: str,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    group = f"bg-{unique}"
    await lagging_group(kafka_bootstrap, created_topic, group)
    client: httpx.AsyncClient = await make_client()  # default interval: first tick at startup

    async def sampled() -> bool:
        report = await stored_report(redis)
        return report is not None and find_group(report, group) is not None

    await wait_until(sampled, timeout=15, what="the app's sampler stored a report")
    assert await ChannelLog(redis).last_id(OPS_LAG_CHANNEL) >= 1
    body = (await client.get("/v1/ops/lag", headers=bearer("boss", "admin"))).json()
    assert find_group(body, group) is not None
