"""The lag sampler against the real embedded broker and a real Redis.

Ticks are driven by hand with synthetic timestamps (``tick(now=...)``), 5 s apart, so a 30 s
status window passes without sleeping; messages are produced with record timestamps on that same
synthetic clock, so the interpolated lag in seconds can be checked against the true age of the
first unconsumed message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from infra import keys
from infra.channels import ChannelLog
from infra.lag import (
    LagConfig,
    LagSampler,
    OffsetReader,
    load_history,
    read_lag_report,
    read_offsets,
    stored_report,
)
from infra.lag_report import GroupLag, GroupStatus, LagReport, PartitionStatus, Snapshot
from models.channels import OPS_LAG_CHANNEL
from scripts.kafka_dist import BrokerKind
from tests.conftest import create_topic

pytestmark = pytest.mark.integration

STEP_S = 5.0
CONFIG = LagConfig(interval_s=STEP_S, window_s=30.0, history=10)


@dataclass
class Cluster:
    """A unique one-partition topic, a producer on it and committers for some groups."""

    bootstrap: str
    topic: str
    producer: AIOKafkaProducer
    committers: dict[str, AIOKafkaConsumer] = field(default_factory=dict)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, 0)

    async def produce(self, n: int, start_s: float, end_s: float) -> None:
        """``n`` records with timestamps spread evenly over (start_s, end_s]."""
        for i in range(1, n + 1):
            ts = start_s + (end_s - start_s) * i / n
            await self.producer.send_and_wait(self.topic, b"{}", partition=0, timestamp_ms=int(ts * 1000))

    async def commit(self, group: str, offset: int) -> None:
        consumer = self.committers.get(group)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
            )
            await consumer.start()
            consumer.assign([self.tp])
            self.committers[group] = consumer
        await consumer.commit({self.tp: offset})


@pytest.fixture
async def cluster(kafka_bootstrap: str, unique: str) -> AsyncIterator[Cluster]:
    topic = f"lag-{unique}"
    await create_topic(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    c = Cluster(kafka_bootstrap, topic, producer)
    yield c
    await producer.stop()
    for consumer in c.committers.values():
        await consumer.stop()


@pytest.fixture
async def make_sampler(redis: Redis, kafka_bootstrap: str) -> AsyncIterator[Callable[..., LagSampler]]:
    made: list[LagSampler] = []

    def factory(**kwargs: object) -> LagSampler:
        sampler = LagSampler(redis, kafka_bootstrap, config=CONFIG, **kwargs)  # type: ignore[arg-type]
        made.append(sampler)
        return sampler

    yield factory
    for sampler in made:
        await sampler.stop()


def group(report: LagReport | None, name: str) -> GroupLag:
    assert report is not None
    found = [g for g in report.groups if g.group == name]
    assert found, f"group {name} not in report"
    return found[0]


async def test_stalled_caught_up_and_slow_groups(
    cluster: Cluster, redis: Redis, make_sampler: Callable[..., LagSampler], unique: str
) -> None:
    stuck, live, slow = f"stuck-{unique}", f"live-{unique}", f"slow-{unique}"
    reports: list[LagReport] = []
    sampler = make_sampler(channels=ChannelLog(redis), on_report=reports.append)
    t0 = time.time() - 3600  # synthetic clock, an hour back so no sample lands "in the future"

    # 20 records over the 10 s before t0; `stuck` consumed the first 10 and then stops committing.
    await cluster.produce(20, t0 - 10, t0)
    await cluster.commit(stuck, 10)
    await cluster.commit(live, 20)
    await cluster.commit(slow, 20)
    first = await sampler.tick(now=t0)
    stuck_lag = group(first, stuck)
    assert (stuck_lag.lag, stuck_lag.partitions[0].committed, stuck_lag.partitions[0].end) == (10, 10, 20)
    assert stuck_lag.status is GroupStatus.OK and not stuck_lag.complete  # no window yet
    assert stuck_lag.lag_seconds is None  # one sample: no rate to interpolate with

    end, slow_committed = 20, 20
    for i in range(1, 8):
        now = t0 + i * STEP_S
        await cluster.produce(10, now - STEP_S, now)  # 2 records/s
        end += 10
        slow_committed += 6  # consumes 6 of every 10: falls behind
        await cluster.commit(live, end)
        await cluster.commit(slow, slow_committed)
        report = await sampler.tick(now=now)

    assert report is not None and report is reports[-1]
    s = group(report, stuck)
    (p,) = s.partitions
    assert (p.topic, p.partition, p.committed, p.end, p.lag) == (cluster.topic, 0, 10, 90, 80)
    assert (p.status, s.status, p.complete) == (PartitionStatus.STALL, GroupStatus.ERR, True)
    # The record at offset 10 was produced at t0 - 5: 40 s before the last tick.
    record_age = (t0 + 35) - (t0 - 5)
    assert p.lag_seconds == pytest.approx(record_age, abs=0.5)
    live_lag = group(report, live)
    assert (live_lag.status, live_lag.lag, live_lag.lag_seconds) == (GroupStatus.OK, 0, 0.0)
    slow_lag = group(report, slow)
    assert (slow_lag.partitions[0].status, slow_lag.status) == (PartitionStatus.WARN, GroupStatus.WARN)
    assert slow_lag.lag == 90 - 62
    assert slow_lag.lag_seconds is not None and 0 < slow_lag.lag_seconds < 35

    # Producers go quiet: after a window with nothing new, the stalled group is STOP, and a group
    # that catches up is OK again.
    for i in range(8, 15):
        await cluster.commit(slow, 90)
        report = await sampler.tick(now=t0 + i * STEP_S)
    assert group(report, stuck).partitions[0].status is PartitionStatus.STOP
    assert group(report, slow).status is GroupStatus.OK

    # History is capped; the report is stored and published on ops:lag at every tick.
    assert report is not None
    assert await redis.llen(keys.LAG_SAMPLES) == CONFIG.keep
    history = await load_history(redis)
    assert [round(h.ts_s - t0) for h in history] == [i * 5 for i in range(15 - CONFIG.keep, 15)]
    assert await stored_report(redis) == report.as_dict()
    channels = ChannelLog(redis)
    assert await channels.last_id(OPS_LAG_CHANNEL) == 15
    recovered, messages = await channels.replay(OPS_LAG_CHANNEL, 14)
    assert recovered and messages[0].type == "lag" and messages[0].data == report.as_dict()


async def test_rewind(cluster: Cluster, make_sampler: Callable[..., LagSampler], unique: str) -> None:
    g = f"rewind-{unique}"
    sampler = make_sampler()
    t0 = time.time() - 3600
    await cluster.produce(100, t0 - 10, t0)
    await cluster.commit(g, 90)
    for i, committed in enumerate([90, 92, 94, 10, 12, 14, 16]):
        await cluster.produce(2, t0 + (i - 1) * STEP_S, t0 + i * STEP_S)
        await cluster.commit(g, committed)
        report = await sampler.tick(now=t0 + i * STEP_S)
    rewound = group(report, g)
    assert (rewound.partitions[0].status, rewound.status) == (PartitionStatus.REWIND, GroupStatus.ERR)


async def test_one_sampler_at_a_time(
    cluster: Cluster, redis: Redis, make_sampler: Callable[..., LagSampler], unique: str
) -> None:
    g = f"lock-{unique}"
    await cluster.produce(5, time.time() - 5, time.time())
    await cluster.commit(g, 3)
    followed: list[LagReport] = []
    leader = make_sampler()
    follower = make_sampler(on_report=followed.append)

    assert await leader.tick() is not None
    assert await follower.tick() is None  # skipped: the leader holds the lock
    assert group(followed[-1], g).lag == 2  # ...but it exports the leader's report
    assert await redis.llen(keys.LAG_SAMPLES) == 1
    assert 0 < await redis.pttl(keys.LAG_SAMPLER_LOCK) <= CONFIG.lock_ttl_ms

    await leader.tick()  # renews its own lock
    assert await redis.llen(keys.LAG_SAMPLES) == 2

    await leader.stop()  # releases the lock: the follower takes over at once
    assert await follower.tick() is not None
    assert await redis.get(keys.LAG_SAMPLER_LOCK) == follower.token.encode()


async def test_a_sampler_that_loses_its_lock_during_the_read_writes_nothing(
    redis: Redis, redis_url: str, kafka_bootstrap: str, make_sampler: Callable[..., LagSampler]
) -> None:
    import redis as sync_redis

    reader = OffsetReader(kafka_bootstrap)

    def slow_read() -> Snapshot:
        # Meanwhile the lock expired and another process took it.
        client = sync_redis.Redis.from_url(redis_url)
        client.set(keys.LAG_SAMPLER_LOCK, "someone-else")
        client.close()
        return reader.read()

    sampler = make_sampler(reader=slow_read)
    try:
        assert await sampler.tick() is None
    finally:
        reader.close()
    assert await redis.llen(keys.LAG_SAMPLES) == 0
    assert await redis.get(keys.LAG_REPORT) is None
    assert await redis.get(keys.LAG_SAMPLER_LOCK) == b"someone-else"


async def test_read_lag_report_adds_a_fresh_read_to_the_history_without_writing(
    cluster: Cluster, redis: Redis, make_sampler: Callable[..., LagSampler], unique: str
) -> None:
    g = f"fresh-{unique}"
    t0 = time.time() - 60
    await cluster.produce(10, t0 - 10, t0)
    await cluster.commit(g, 4)
    await make_sampler().tick(now=t0)
    await cluster.produce(10, t0, t0 + 10)

    report = await read_lag_report(redis, cluster.bootstrap, now=t0 + 10)
    (p,) = group(report, g).partitions
    assert (p.committed, p.end, p.lag) == (4, 20, 16)
    # Two samples (end 10 at t0, 20 at t0+10): offset 4 was reached 6 s before t0.
    assert p.lag_seconds == pytest.approx(16.0)
    assert await redis.llen(keys.LAG_SAMPLES) == 1  # nothing written

    offline = await read_lag_report(None, cluster.bootstrap)  # no Redis: one fresh sample only
    assert group(offline, g).lag == 16


async def test_snapshots_survive_the_trip_through_redis(
    redis: Redis, make_sampler: Callable[..., LagSampler]
) -> None:
    snap = Snapshot(12.5, {("t", 0): 10, ("t", 1): 3}, {("g", "t", 0): 7, ("h", "t", 1): 3})
    sampler = make_sampler(reader=lambda: snap)
    await sampler.tick()
    (stored,) = await load_history(redis)
    assert stored == snap
    raw = await redis.get(keys.LAG_REPORT)
    assert raw is not None and orjson.loads(raw)["updated_at"] == "1970-01-01T00:00:12.500Z"


async def test_end_offsets_count_every_record_of_a_batch(cluster: Cluster, unique: str) -> None:
    """Tansu answers ListOffsets(latest) with the last batch's base offset + 1; the reader corrects
    it with a fetch's high watermark (seven records in one batch are end 7, not 1)."""
    g = f"batch-{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, linger_ms=100)
    await producer.start()
    try:
        for _ in range(7):
            await producer.send(cluster.topic, b"{}", partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    await cluster.commit(g, 3)
    report = await read_lag_report(None, cluster.bootstrap)
    (p,) = group(report, g).partitions
    assert (p.committed, p.end, p.lag) == (3, 7, 4)


async def test_a_transaction_marker_is_not_lag(
    kafka_bootstrap: str, broker_kind: BrokerKind, unique: str
) -> None:
    """Under exactly-once a group commits one past its last record; the commit marker after it
    must not read as a message waiting (lag 1 and a STOP status for good)."""
    if broker_kind == "tansu":
        pytest.skip("Tansu has no transactions, so no markers")
    topic = await create_topic(kafka_bootstrap, f"marker-{unique}")
    group = f"eos-{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"lag-{unique}")
    await producer.start()
    try:
        async with producer.transaction():
            for _ in range(3):
                await producer.send(topic, b"x", partition=0)
            await producer.send_offsets_to_transaction({TopicPartition(topic, 0): 3}, group)
        # An aborted transaction after it: its records and marker are not lag either.
        await producer.begin_transaction()
        await producer.send(topic, b"never", partition=0)
        await producer.abort_transaction()
    finally:
        await producer.stop()
    snapshot = await asyncio.to_thread(read_offsets, kafka_bootstrap)
    assert snapshot.ends[(topic, 0)] == 6  # 3 records, a commit marker, 1 aborted, an abort marker
    assert snapshot.committed[(group, topic, 0)] == 6
