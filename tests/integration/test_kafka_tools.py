"""Clients that are not ours: records produced with `kcat` (librdkafka), lag read with Kafka's own
`kafka-consumer-groups` (the ConsumerGroupCommand class of the broker's jars), and `elimu lag`
on the same group agree partition by partition."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from scripts.kafka_dist import BrokerKind, distribution, write_tools
from tests.conftest import create_topic
from tests.scripts.test_cli import cli_env, elimu

pytestmark = pytest.mark.integration


def kafka_consumer_groups(bootstrap: str, group: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(topic, partition) -> (current offset, log end offset, lag) as Kafka's tool prints them."""
    tool = write_tools(distribution()) / "bin" / "kafka-consumer-groups.sh"
    done = subprocess.run(
        [str(tool), "--bootstrap-server", bootstrap, "--describe", "--group", group],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows: dict[tuple[str, int], tuple[int, int, int]] = {}
    for line in done.stdout.splitlines():
        cols = line.split()
        # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
        if len(cols) >= 6 and cols[0] == group and cols[2].isdigit():
            rows[(cols[1], int(cols[2]))] = (int(cols[3]), int(cols[4]), int(cols[5]))
    return rows


async def test_kcat_kafka_consumer_groups_and_elimu_lag_agree(
    kafka_bootstrap: str, broker_kind: BrokerKind, unique: str, redis_url: str, tmp_path: Path
) -> None:
    if broker_kind == "tansu":
        pytest.skip("Tansu lists no consumer groups, so kafka-consumer-groups has nothing to describe")
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by scripts/ensure_kafka.sh (Debian's kcat)"
    topic = await create_topic(kafka_bootstrap, f"tools-{unique}", 3)
    lines = "".join(f"k{i}:v{i}\n" for i in range(30))
    produced = subprocess.run(
        [kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-K:", "-z", "none"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr

    group = f"tools-{unique}"
    committed = {0: 1, 1: 2, 2: 3}
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in committed]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({TopicPartition(topic, p): c for p, c in committed.items()})
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 30  # kcat's 30 records, spread by key over the partitions

    theirs = kafka_consumer_groups(kafka_bootstrap, group)
    out = elimu(
        cli_env(tmp_path, ELIMU_KAFKA=kafka_bootstrap, ELIMU_REDIS=redis_url), "lag", cwd=tmp_path
    ).stdout
    ours = {
        (cols[1], int(cols[2])): (int(cols[3]), int(cols[4]), int(cols[5]))
        for cols in (line.split() for line in out.splitlines())
        if len(cols) >= 6 and cols[0] == group
    }
    want = {
        (topic, p): (c, ends[TopicPartition(topic, p)], ends[TopicPartition(topic, p)] - c)
        for p, c in committed.items()
    }
    assert theirs == want, theirs
    assert ours == want, out
