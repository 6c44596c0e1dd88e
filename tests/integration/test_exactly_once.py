"""Every effect once, as a read_committed consumer of the outputs sees it, across a rebalance and
a worker SIGKILLed mid-batch.

On Apache Kafka each batch's changelog records, outputs and input offsets commit in one
transaction (streams/transactions.py), so the pushes on `engagement-updates` add up to exactly
each user's XP, no event id is pushed twice and each bad record is dead-lettered once. On Tansu
(no transactions) the engine is at-least-once: state is still exact (dedup by event id), but a
batch redone after the kill may push again; the test asserts that nothing is lost there.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from infra import keys
from infra.topics import DEAD_LETTER, ENGAGEMENT_UPDATES
from scripts.kafka_dist import BrokerKind
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import stack_env, start_worker
from tests.integration.test_worker import (
    NOW,
    SCORED_TYPES,
    produce,
    random_events,
    user_views,
    wait_for_views,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 4  # fresh_kafka's topics


def pushed_once(pushes: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(event ids pushed more than once, users whose pushes add up to more XP than the model's).
    Derived events' ids ("challenge:<day>") are per user, so (user, id) pairs are counted."""
    pushed_xp: Counter[str] = Counter()
    for push in pushes:
        pushed_xp[push["user_id"]] += push["xp_gained"]
    listed = Counter((push["user_id"], i) for push in pushes for i in push["event_ids"])
    twice = sum(1 for n in listed.values() if n > 1)
    over = sum(1 for u, view in expected.items() if pushed_xp[u] > view["xp"])
    lost = [u for u, view in expected.items() if pushed_xp[u] < view["xp"]]
    assert not lost, f"pushes add up to less XP than the state for {lost[:5]}"
    return twice, over


async def read_committed(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Every committed record of ``topic``, as a read_committed consumer sees it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # the last stable offsets, for read_committed
        out: list[dict[str, Any]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            out += [orjson.loads(m.value) for msgs in batch.values() for m in msgs if m.value]
        return out
    finally:
        await consumer.stop()


async def committed_pushes(
    bootstrap: str, expected: dict[str, dict[str, Any]], partitions: int
) -> list[dict[str, Any]]:
    """The committed pushes once they cover every user's XP. A batch writes its views to Redis
    before its transaction commits, so views equal to the model do not yet mean the last
    batch's pushes are readable."""

    async def all_pushed() -> list[dict[str, Any]] | None:
        pushes = await read_committed(bootstrap, ENGAGEMENT_UPDATES, partitions)
        xp: Counter[str] = Counter()
        for push in pushes:
            xp[push["user_id"]] += push["xp_gained"]
        return pushes if all(xp[u] >= view["xp"] for u, view in expected.items()) else None

    pushes: list[dict[str, Any]] = await wait_until(
        all_pushed, timeout=60, interval=0.5, what="every user's XP pushed and committed"
    )
    return pushes


async def test_each_effect_once_across_a_rebalance_and_a_sigkill_mid_batch(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path, broker_kind: BrokerKind
) -> None:
    rng = random.Random(11)
    users = [f"x-{i}" for i in range(30)]
    events = random_events(rng, users, 2400, SCORED_TYPES, days=2)
    bad = [f'{{"broken": {i}'.encode() for i in range(20)]  # each not JSON, each distinct
    expected = expected_views(events, NOW)
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_SESSION_TIMEOUT="6")

    await produce(fresh_kafka, "behavior-events", [*events[:1000], *bad[:10]])
    a = start_worker(env, tmp_path / "worker-a.log")
    b = None
    try:

        async def a_progressed() -> bool:
            assert a.alive(), a.tail()
            return len(await user_views(redis, users)) > 5

        await wait_until(a_progressed, timeout=90, what="worker A applied some events")
        b = start_worker(env, tmp_path / "worker-b.log")  # joins: the group rebalances

        async def both_beating() -> bool:
            assert b is not None and b.alive(), b.tail() if b else ""
            return await redis.hlen(keys.WORKER_HEARTBEATS) >= 2

        await wait_until(both_beating, timeout=90, what="worker B joined")
        await produce(fresh_kafka, "behavior-events", events[1000:1800])
        a.kill()  # SIGKILL while A works through what just arrived: its open transaction aborts
        await produce(fresh_kafka, "behavior-events", [*events[1800:], *bad[10:]])
        await wait_for_views(redis, expected, b, timeout=180)

        # Wait for what a read_committed reader can see to cover every bad record as well.
        async def all_dead_lettered() -> list[dict[str, Any]] | None:
            dead = await read_committed(fresh_kafka, DEAD_LETTER, 1)
            dead = [d for d in dead if d["topic"] == "behavior-events"]
            return dead if len({d["raw_sha256"] for d in dead}) == len(bad) else None

        pushes = await committed_pushes(fresh_kafka, expected, PARTITIONS)
        twice, overcounted = pushed_once(pushes, expected)
        dead = await wait_until(all_dead_lettered, timeout=60, interval=0.5, what="each bad record")
        dead_per_record = Counter(d["raw_sha256"] for d in dead)
        print(  # the counts for the record (pytest -s)
            f"\n[{broker_kind}] pushes {len(pushes)}, ids pushed twice {twice}, users whose pushes "
            f"overcount XP {overcounted}, dead letters {len(dead)} for {len(bad)} bad records"
        )
        assert len(dead_per_record) == len(bad)
        if broker_kind == "kafka":
            assert (twice, overcounted) == (0, 0)
            assert len(dead) == len(bad)
    finally:
        a.stop()
        if b is not None:
            b.stop()
