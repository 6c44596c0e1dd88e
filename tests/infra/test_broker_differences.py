"""What differs between the two embedded brokers, pinned (docs/operations.md, "Two brokers").

Each test states what the engine may rely on from each broker kind and fails when a broker stops
behaving as written down, so a difference is found here rather than in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kafka import KafkaAdminClient

from infra.lag import read_offsets
from scripts.kafka_dist import BrokerKind
from tests.conftest import create_topic, wait_until

pytestmark = pytest.mark.integration


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # aiokafka's stop() of a consumer that never had an assignment can end in CancelledError.
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()


async def test_transactions_only_on_apache_kafka(
    kafka_bootstrap: str, broker_kind: BrokerKind, unique: str
) -> None:
    """Exactly-once outputs need transactions: Apache Kafka hides an aborted transaction from a
    read_committed consumer; Tansu has no transaction coordinator at all."""
    topic = await create_topic(kafka_bootstrap, f"txn-{unique}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"t-{unique}")
    if broker_kind == "tansu":
        with pytest.raises(Exception):  # noqa: B017 - which error Tansu gives is not the point
            await asyncio.wait_for(producer.start(), 10)
        with contextlib.suppress(Exception):
            await producer.stop()
        return
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"after")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        while len(got) < 2:
            batch = await consumer.getmany(tp, timeout_ms=5000)
            assert batch, f"no more records after {got}"
            got += [m.value for m in batch.get(tp, []) if m.value is not None]
        assert got == [b"committed", b"after"]
    finally:
        await _stop(consumer)


async def test_end_offsets_of_batched_records(
    kafka_bootstrap: str, broker_kind: BrokerKind, unique: str
) -> None:
    """Seven records produced in one batch: Apache Kafka's ListOffsets says 7; Tansu's says 1
    (the last batch's base offset + 1). The lag reader corrects it with the fetch high watermark,
    so `elimu lag` reads 7 on both."""
    topic = await create_topic(kafka_bootstrap, f"ends-{unique}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=200)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x", partition=0) for _ in range(7)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{unique}", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        listed = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        await consumer.commit({tp: 2})
    finally:
        await _stop(consumer)
    assert listed == (7 if broker_kind == "kafka" else 1)
    snapshot = await asyncio.to_thread(read_offsets, kafka_bootstrap)
    assert snapshot.ends[(topic, 0)] == 7
    assert snapshot.committed[(f"g-{unique}", topic, 0)] == 2


async def test_a_new_clients_metadata(kafka_bootstrap: str, broker_kind: BrokerKind, unique: str) -> None:
    """A fresh client knows every topic's partitions on Tansu, none on Apache Kafka until it asks
    for that topic: code must never rely on `partitions_for_topic` without subscribing first."""
    topic = await create_topic(kafka_bootstrap, f"meta-{unique}", 3)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        known = consumer.partitions_for_topic(topic)
    finally:
        await _stop(consumer)
    assert known == (None if broker_kind == "kafka" else {0, 1, 2})


async def test_topic_configs_described(kafka_bootstrap: str, broker_kind: BrokerKind, unique: str) -> None:
    """DescribeConfigs: Apache Kafka lists a topic's retention.ms; Tansu leaves it out, so the
    engine never reads a topic's configuration back to decide anything."""
    topic = await create_topic(kafka_bootstrap, f"cfg-{unique}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    described: list[Any] = []

    async def answered() -> bool:
        # A broker that has not yet learnt of the new topic answers with an error and no
        # entries: asked again until it answers for the topic.
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        described[:] = response.resources
        return all(resource[0] == 0 for resource in response.resources)

    try:
        await wait_until(answered, timeout=15, what=f"DescribeConfigs of {topic}")
    finally:
        await admin.close()
    names = {entry[0] for resource in described for entry in resource[4]}
    assert ("retention.ms" in names) == (broker_kind == "kafka")


async def test_groups_listed(kafka_bootstrap: str, broker_kind: BrokerKind, unique: str) -> None:
    """ListGroups: Apache Kafka lists a group with its state; Tansu lists none, which is why the
    lag status works from sampled offsets alone (infra/lag_report.py) and not from group states."""
    topic = await create_topic(kafka_bootstrap, f"grp-{unique}")
    group = f"grp-{unique}"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=500)
        listed = await asyncio.to_thread(_list_groups, kafka_bootstrap)
    finally:
        await _stop(consumer)
    assert (group in listed) == (broker_kind == "kafka")


def _list_groups(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-groups")
    try:
        return {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()


async def test_record_size_limit(kafka_bootstrap: str, broker_kind: BrokerKind, unique: str) -> None:
    """Apache Kafka refuses a record over message.max.bytes (1 MiB by default) for good; the
    engine's own 256 KiB budget (streams/app.py MAX_RECORD_BYTES) stays far below it on both."""
    topic = await create_topic(kafka_bootstrap, f"size-{unique}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        if broker_kind == "kafka":
            from aiokafka.errors import MessageSizeTooLargeError

            with pytest.raises(MessageSizeTooLargeError):
                await producer.send_and_wait(topic, b"y" * (2 * 1024 * 1024))
        await producer.send_and_wait(topic, b"z" * (256 * 1024))
    finally:
        await producer.stop()
