"""`infra.feed`: a broadcast topic read whole, outside any consumer group (real broker)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from infra.feed import TopicFeed, read_range
from infra.signing import RecordSigner
from tests.conftest import create_topic

# How the workers read the broadcast depends on the broker (ListOffsets, fetch waits): both kinds.
pytestmark = pytest.mark.integration


def forbidden(key: bytes | None, offset: int) -> None:
    raise AssertionError(f"record {key!r} at {offset} refused")


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
    signer = RecordSigner("s", frozenset())  # this topic is not signed: every record passes
    feed = TopicFeed(
        kafka_bootstrap, topic, lambda k, v, o: seen.append((k, v, o)), signer=signer, on_forged=forbidden
    )
    # A worker's agent may ask before its start-up task has started the feed.
    waiting = asyncio.create_task(feed.caught_up(timeout=20))
    await asyncio.sleep(0)  # let it start waiting: ordering, not synchronisation
    assert not waiting.done()
    await feed.start()
    try:
        assert await waiting is True
        assert seen == [(b"k0", b"v0", 0), (b"k1", b"v1", 1), (b"k2", b"v2", 2)]
        assert await read_range(kafka_bootstrap, TopicPartition(topic, 0), 1, 3, signer) == [
            (1, b"v1"),
            (2, b"v2"),
        ]
        assert await read_range(kafka_bootstrap, TopicPartition(topic, 0), 3, 3, signer) == []
    finally:
        await feed.stop()


async def test_caught_up_gives_up_when_the_feed_never_starts(kafka_bootstrap: str) -> None:
    feed = TopicFeed(
        kafka_bootstrap, "never-started", lambda k, v, o: None, signer=RecordSigner("s"), on_forged=forbidden
    )
    assert await feed.caught_up(timeout=0.05) is False


async def test_records_without_the_engine_signature_are_refused_and_signed_ones_pass(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = await create_topic(kafka_bootstrap, f"feed-signed-{unique}")
    signer = RecordSigner("secret", frozenset({topic}))
    forger = RecordSigner("not-the-secret", frozenset({topic}))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"unsigned", key=b"k0", partition=0)
        await producer.send_and_wait(
            topic, b"forged", key=b"k1", partition=0, headers=forger.headers(topic, b"k1", b"forged")
        )
        # A valid signature for another key: the signature binds the key too.
        await producer.send_and_wait(
            topic, b"moved", key=b"k2", partition=0, headers=signer.headers(topic, b"k9", b"moved")
        )
        await producer.send_and_wait(
            topic, b"good", key=b"k3", partition=0, headers=signer.headers(topic, b"k3", b"good")
        )
    finally:
        await producer.stop()
    seen: list[tuple[bytes | None, bytes | None, int]] = []
    refused: list[tuple[bytes | None, int]] = []
    feed = TopicFeed(
        kafka_bootstrap,
        topic,
        lambda k, v, o: seen.append((k, v, o)),
        signer=signer,
        on_forged=lambda k, o: refused.append((k, o)),
    )
    await feed.start()
    try:
        assert await feed.caught_up(timeout=20) is True
        assert seen == [(b"k3", b"good", 3)]
        assert refused == [(b"k0", 0), (b"k1", 1), (b"k2", 2)]
        assert await read_range(kafka_bootstrap, TopicPartition(topic, 0), 0, 4, signer) == [(3, b"good")]
    finally:
        await feed.stop()
