"""Three Apache Kafka brokers on loopback (one KRaft quorum, replication factor 3,
min.insync.replicas 2), one of them SIGKILLed mid-stream: nothing lost, nothing doubled.

Slow (three JVMs start, a leader election, a worker riding it out): `make cluster`, not `make test`.
The figures it prints are the ones in docs/operations.md ("Three brokers").
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from infra.kafka import ensure_topics
from scripts.apache_kafka import restart_node, start_cluster, wait_serving
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import stack_env, start_worker
from tests.integration.test_exactly_once import committed_pushes, pushed_once
from tests.integration.test_worker import (
    NOW,
    SCORED_TYPES,
    produce,
    random_events,
    user_views,
    wait_for_views,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

PARTITIONS = 4


async def test_a_broker_killed_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    started = time.monotonic()
    nodes = await asyncio.to_thread(start_cluster, tmp_path / "cluster", 3, log_dir=tmp_path)
    cluster_up_s = time.monotonic() - started
    bootstrap = ",".join(n.address for n in nodes)
    worker = None
    try:
        await ensure_topics(bootstrap, PARTITIONS, replication=3)
        rng = random.Random(5)
        users = [f"c-{i}" for i in range(40)]
        events = random_events(rng, users, 4000, SCORED_TYPES, days=2)
        expected = expected_views(events, NOW)
        env = stack_env(
            bootstrap, redis_url, tmp_path, ELIMU_SESSION_TIMEOUT="10", ELIMU_REPLICATION_FACTOR="3"
        )
        await produce(bootstrap, "behavior-events", events[:2000])
        worker = start_worker(env, tmp_path / "worker.log")

        async def progressed() -> bool:
            assert worker is not None and worker.alive(), worker.tail() if worker else ""
            return len(await user_views(redis, users)) > 10

        await wait_until(progressed, timeout=180, what="the worker applied some events")
        victim = nodes[1]
        victim.proc.send_signal(signal.SIGKILL)  # mid-stream: it leads about a third of the partitions
        victim.proc.wait()
        killed_at = time.monotonic()
        await produce(bootstrap, "behavior-events", events[2000:])  # acks=all: 2 of 3 in sync suffice
        await wait_for_views(redis, expected, worker, timeout=300)
        recovered_s = time.monotonic() - killed_at

        pushes = await committed_pushes(bootstrap, expected, PARTITIONS)
        assert pushed_once(pushes, expected) == (0, 0)

        # The killed broker comes back from its log dirs and rejoins the quorum.
        nodes[1] = restart_node(victim, tmp_path / "cluster" / "node-2", tmp_path / "kafka-2.log")
        restarted = time.monotonic()
        await asyncio.to_thread(wait_serving, bootstrap, 120, 3)
        rejoined_s = time.monotonic() - restarted
        print(
            f"\nthree brokers: cluster up in {cluster_up_s:.1f} s; one broker SIGKILLed mid-stream; "
            f"all {len(events)} events applied {recovered_s:.1f} s after the kill; "
            f"{len(pushes)} pushes, none doubled, every user's pushed XP equal to the model's; "
            f"the killed broker back in the cluster {rejoined_s:.1f} s after its restart"
        )
    finally:
        if worker is not None:
            worker.stop()
        for node in nodes:
            node.stop(timeout=30)
