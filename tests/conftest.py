"""Shared fixtures: real brokers (Apache Kafka and Tansu) and a real Redis, each on a free port.

Brokers and Redis are session-scoped because starting them is not free; tests isolate themselves
by using unique topic names, consumer groups, user ids or Redis databases. An integration test
that asks for a broker (``kafka_bootstrap``, ``fresh_kafka``) runs once on each kind
(``broker_kind``); any other test that asks for one runs on Tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from infra.kafka import ensure_topics
from infra.redis_conn import RedisClient, connect
from scripts.apache_kafka import start_kafka
from scripts.embedded import start_redis, start_tansu
from scripts.kafka_dist import BROKER_KINDS, BrokerKind
from scripts.redis_cluster import RedisClusterService, start_redis_cluster
from scripts.service import Service
from tests.brokers import reset_kafka


def brokers_under_test() -> tuple[BrokerKind, ...]:
    """The brokers integration tests run on: both unless ``ELIMU_TEST_BROKERS`` names fewer
    (e.g. ``tansu`` on a machine without Java, where the Apache Kafka runs would error)."""
    wanted = os.environ.get("ELIMU_TEST_BROKERS", ",".join(BROKER_KINDS)).split(",")
    kinds = tuple(k for k in BROKER_KINDS if k in {w.strip() for w in wanted})
    if not kinds:
        raise pytest.UsageError(f"ELIMU_TEST_BROKERS names none of {BROKER_KINDS}")
    return kinds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every integration test (the engine's processes on a broker) runs once per broker kind; one
    # whose subject is not the broker (``one_broker``) runs on the first, Apache Kafka, the
    # production broker. A test that only uses a broker as a place to put records (the API's, the
    # CLI's) runs on the last, Tansu: it starts in milliseconds, and it evens out the two test
    # processes, one per broker kind (pytest_collection_modifyitems). The brokers themselves are
    # session-scoped (below), so the parameter only chooses which running broker a test gets.
    if "broker_kind" in metafunc.fixturenames:
        kinds = brokers_under_test()
        marker = metafunc.definition.get_closest_marker
        if marker("integration") is None:
            kinds = kinds[-1:]
        elif marker("one_broker") is not None:
            kinds = kinds[:1]
        metafunc.parametrize("broker_kind", kinds, scope="function")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group marks into groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test` runs on two processes (pytest-xdist, --dist loadgroup), one per broker kind: every
    # test on Apache Kafka goes to one process, one after the other, and every test on Tansu to the
    # other; tests without a broker go to whichever is free. Two Apache Kafka JVMs (or two engine
    # stacks on one broker) at once overloaded two cores; one JVM beside Tansu does not.
    for item in items:
        group = _broker_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def _broker_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    for name in ("broker_kind", "stack"):  # tests/hostile's stack is parametrized by broker kind
        if params.get(name) in BROKER_KINDS:
            return str(params[name])
    fixtures = getattr(item, "fixturenames", ())
    if "apache_kafka_service" in fixtures or item.get_closest_marker("apache_kafka") is not None:
        return "kafka"
    if "tansu_service" in fixtures:
        return "tansu"
    return None


@pytest.fixture(scope="session")
def tansu_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_tansu(log_path=tmp_path_factory.mktemp("tansu") / "kafka.log")
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def apache_kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("apache-kafka")
    svc = start_kafka(root / "kafka", log_path=root / "kafka.log")
    yield svc
    svc.stop(timeout=30)


@pytest.fixture
def kafka_service(broker_kind: BrokerKind, request: pytest.FixtureRequest) -> Service:
    service: Service = request.getfixturevalue(
        "apache_kafka_service" if broker_kind == "kafka" else "tansu_service"
    )
    return service


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield svc
    svc.stop()


@pytest.fixture
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


@pytest.fixture(scope="session")
def redis_cluster_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterService]:
    root = tmp_path_factory.mktemp("redis-cluster")
    svc = start_redis_cluster(root, masters=3, log_dir=root)
    yield svc
    svc.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster_service: RedisClusterService) -> Iterator[str]:
    """A ``redis+cluster://`` URL of a three-master cluster, every master flushed."""
    import redis

    for node in redis_cluster_service.nodes:
        client = redis.Redis.from_url(node.address)
        client.flushall()
        client.close()
    yield redis_cluster_service.address


@pytest.fixture(params=["single", "cluster"])
async def either_redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    """A client on a flushed single Redis, then on a flushed Redis Cluster: for the contract
    tests of code that must behave the same on both (channels, serving writes)."""
    url: str = request.getfixturevalue("redis_url" if request.param == "single" else "redis_cluster_url")
    client = connect(url)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def max_memory(redis: RedisClient, limit: int) -> AsyncIterator[None]:
    """Redis's ``maxmemory`` at ``limit`` (on every node of a cluster) for the block."""
    if isinstance(redis, RedisCluster):
        nodes: Any = RedisCluster.ALL_NODES
        held = await redis.config_get("maxmemory", target_nodes=nodes)
        await redis.config_set("maxmemory", limit, target_nodes=nodes)
        try:
            yield
        finally:
            await redis.config_set("maxmemory", _one_value(held) or 0, target_nodes=nodes)
        return
    config = await redis.config_get("maxmemory")
    await redis.config_set("maxmemory", limit)
    try:
        yield
    finally:
        await redis.config_set("maxmemory", config["maxmemory"] or 0)


def _one_value(held: Any) -> Any:
    # A cluster answers per node ({node: {"maxmemory": v}}) or merged ({"maxmemory": v}).
    if "maxmemory" in held:
        return held["maxmemory"]
    return next(iter(held.values()))["maxmemory"]


@pytest.fixture
def fresh_kafka(broker_kind: BrokerKind, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker with nothing but the engine's topics, for a test that runs the engine itself.

    Tansu starts in milliseconds, so each such test gets its own. Apache Kafka takes seconds, so
    the session's broker is emptied instead: every consumer group left (or timed out), every
    topic deleted, the engine's topics created again (brokers.reset_kafka)."""
    if broker_kind == "kafka":
        svc: Service = request.getfixturevalue("apache_kafka_service")
        reset_kafka(svc.address)
        yield svc.address
        return
    svc = start_tansu(log_path=tmp_path / "kafka.log")
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
