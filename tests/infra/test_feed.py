"""`infra.feed`: a broadcast topic read whole, outside any consumer group (real broker)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer, TopicPartition

from infra.feed import TopicFeed, read_range
from tests.conftest import create_topic


async def test_caught_up_called_before_start_waits_for_it_and_sees_every_record(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = await create_topic(kafka_bootstrap, f"feed-{unique}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=0)
    finally:
        await producer.stop()
    seen: list[tuple[bytes | None, bytes | None, int]] = []
    feed = TopicFeed(kafka_bootstrap, topic, lambda k, v, o: seen.append((k, v, o)))
    # A worker's agent may ask before its start-up task has started the feed.
    waiting = asyncio.create_task(feed.caught_up(timeout=20))
    await asyncio.sleep(0)  # let it start waiting: ordering, not synchronisation
    assert not waiting.done()
    await feed.start()
    try:
        assert await waiting is True
        assert seen == [(b"k0", b"v0", 0), (b"k1", b"v1", 1), (b"k2", b"v2", 2)]
        assert await read_range(kafka_bootstrap, TopicPartition(topic, 0), 1, 3) == [(1, b"v1"), (2, b"v2")]
        assert await read_range(kafka_bootstrap, TopicPartition(topic, 0), 3, 3) == []
    finally:
        await feed.stop()


async def test_caught_up_gives_up_when_the_feed_never_starts(kafka_bootstrap: str) -> None:
    feed = TopicFeed(kafka_bootstrap, "never-started", lambda k, v, o: None)
    assert await feed.caught_up(timeout=0.05) is False
