"""One real stack per hostile module and broker kind: a broker (the session's Apache Kafka,
emptied, or a Tansu of its own), its own Redis, a worker and an API.

Module-scoped because a worker's group join and the API's start cost seconds and every test of a
module attacks the same running engine, which is the point: what one attack leaves behind must
not break the next. Tests isolate themselves by user ids of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka import ensure_topics
from infra.net import free_port
from scripts.embedded import start_redis, start_tansu
from tests.brokers import reset_kafka
from tests.conftest import brokers_under_test
from tests.hostile.kit import PARTITIONS, Stack, wait_ready
from tests.integration.processes import stack_env, start_api, start_worker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``one_broker`` module's stack is built on the first broker kind only."""
    first = brokers_under_test()[0]
    skipped = [
        item
        for item in items
        if item.get_closest_marker("one_broker") is not None
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("stack", first) != first  # type: ignore[attr-defined]
    ]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item not in skipped]


@pytest.fixture(scope="module", params=brokers_under_test())
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("hostile")
    if request.param == "kafka":
        # The session's Apache Kafka, emptied (a JVM per module would cost seconds each).
        broker = request.getfixturevalue("apache_kafka_service")
        reset_kafka(broker.address, PARTITIONS)
        own_broker = None
    else:
        broker = own_broker = start_tansu(log_path=root / "kafka.log")
        asyncio.run(ensure_topics(broker.address, PARTITIONS))
    redis = start_redis(root / "redis", log_path=root / "redis.log")
    worker = api = None
    try:
        worker_port = free_port()
        env = stack_env(
            broker.address,
            redis.address,
            root / "data",
            # A single-member group joins in ~3 s instead of ~15 s on Tansu.
            ELIMU_SESSION_TIMEOUT="6",
            ELIMU_WORKER_PORT=str(worker_port),
            # The per-user event bucket (10/s, burst 1,000) would refuse the second of two
            # 1,000-event posts; these tests attack the worker behind it, so it refills at once.
            ELIMU_API_RATE="100000",
        )
        worker = start_worker(env, root / "worker.log")
        api, url = start_api(env, root / "api.log")
        s = Stack(broker.address, redis.address, url, worker, api, worker_port, root)
        wait_ready(s)
        yield s
    finally:
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        redis.stop()
        if own_broker is not None:
            own_broker.stop()
