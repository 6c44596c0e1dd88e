"""Shared fixtures: the real embedded broker (Tansu) and a real Redis, each on a free port.

They are session-scoped because starting them is cheap but not free; tests isolate
themselves by using unique topic names, consumer groups, user ids or Redis databases.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from infra.kafka import ensure_topics
from scripts.embedded import Service, start_broker, start_redis


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_broker(log_path=tmp_path_factory.mktemp("kafka") / "kafka.log")
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: Service) -> str:
    return kafka_service.address


@pytest.fixture
def redis_url(redis_service: Service) -> Iterator[str]:
    """A Redis URL on a freshly flushed database."""
    import redis

    url = redis_service.address
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def fresh_kafka(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own (Tansu starts in milliseconds), with the engine's topics."""
    svc = start_broker(log_path=tmp_path / "kafka.log")
    asyncio.run(ensure_topics(svc.address, 4))
    yield svc.address
    svc.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client on the freshly flushed test database."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


async def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> str:
    """Create ``topic`` on the test broker (tests use fresh names, so it never exists yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll an async predicate until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {what or predicate!r} (last={last!r})")
