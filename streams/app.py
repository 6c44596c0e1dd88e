"""The Faust application: topics, the state table, the agent and the worker's timers.

Agents stay thin: they turn Faust events into ``Record``s and hand batches to the
pipeline. Everything Faust-specific lives here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.serializers import codecs
from faust.types import TableT
from prometheus_client import generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra import keys
from infra.channels import ChannelLog
from infra.metrics_relay import publish_snapshot
from infra.net import free_port
from infra.settings import Settings
from models.gamification import UserState
from models.leaderboard import PERIODS, bucket
from models.rules import Rules
from streams import metrics
from streams.engagement import BEHAVIOR_TOPIC, PROFILES_TOPIC, EngagementProcessor
from streams.faust_tuning import LeanMonitor
from streams.pipeline import DEAD_LETTER_TOPIC, ENGAGEMENT_TOPIC, EngagementPipeline, Send
from streams.records import Record, owner_partition
from streams.serving import ServingWriter

log = logging.getLogger(__name__)

APP_ID = "elimu-pulse"
STATE_CODEC = "elimu_user_state"
#: Largest batch the agent takes at once, and how long it waits to fill one. Batching is what
#: makes one state write and one Redis round trip serve many events.
MAX_BATCH = 5000
BATCH_WINDOW_S = 0.02
HEARTBEAT_S = 2.0
LEADERBOARD_PUSH_S = 1.0
SERVING_CHECK_S = 5.0


class UserStateCodec(codecs.Codec):
    """Changelog encoding of a ``UserState``: compact JSON via orjson."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj.to_dict())

    def _loads(self, s: bytes) -> Any:
        return UserState.from_dict(orjson.loads(s))


codecs.register(STATE_CODEC, UserStateCodec())


class _Options:
    def __init__(self, serializer: str) -> None:
        self.serializer = serializer


class UserIdKey:
    """Table key type: the user id as raw UTF-8, so the changelog key is the input key byte for
    byte and Kafka's partitioner places both on the same partition. (Faust picks a table's
    codec from its key/value types' ``_options.serializer``; a plain ``str`` would mean JSON.)"""

    _options = _Options("raw")

    @staticmethod
    def from_data(value: Any, preferred_type: Any = None) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)


class UserStateValue:
    """Table value type: a ``UserState`` through ``UserStateCodec``."""

    _options = _Options(STATE_CODEC)

    @staticmethod
    def from_data(value: Any, preferred_type: Any = None) -> UserState:
        return value if isinstance(value, UserState) else UserState.from_dict(value)


class TableStore:
    """``StateStore`` over a Faust table, writing its changelog in bulk.

    ``table[key] = value`` costs ~75 µs in Faust (a FutureMessage, the ProducerBuffer, a
    pure-Python partitioner, sensors) and must be called inside the event whose partition it
    logs to. Here a batch's writes go to the table's store directly and their changelog records
    straight to the producer, on the partition that owns the key (the same one the input
    record came from). Faust flushes the producer before it commits offsets, so a committed
    offset never runs ahead of its state.
    """

    def __init__(self, table: TableT[str, UserState], send: Send, partitions: int) -> None:
        self.table = table
        self.send = send
        self.partitions = partitions
        self.codec = UserStateCodec()
        self.pending: dict[str, UserState] = {}

    def get(self, key: str) -> UserState | None:
        value: UserState | None = self.table.data.get(key)
        return value

    def put(self, key: str, state: UserState) -> None:
        self.table.data[key] = state
        self.pending[key] = state

    async def flush(self) -> None:
        topic = self.table.changelog_topic.get_topic_name()
        pending, self.pending = self.pending, {}
        for key, state in pending.items():
            raw_key = key.encode()
            value = self.codec._dumps(state)  # the codec's own encoding, without Faust's wrapping
            await self.send(topic, raw_key, value, owner_partition(raw_key, self.partitions))


def _redis_tolerant(tick: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    @functools.wraps(tick)
    async def guarded() -> None:
        try:
            await tick()
        except (RedisError, OSError) as exc:
            metrics.SERVING_ERRORS.inc()
            log.warning("%s skipped: Redis unavailable (%s)", tick.__name__, exc)

    return guarded


class Worker:
    """Holds the app and everything its agent and timers share."""

    def __init__(self, settings: Settings, rules: Rules) -> None:
        self.settings = settings
        self.rules = rules
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.web_port = int(os.environ.get("ELIMU_WORKER_PORT") or free_port())
        self.datadir = settings.data_dir / "faust" / str(self.web_port)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.app = self._build_app()
        self.redis: Redis = Redis.from_url(settings.redis_url)
        self.channels = ChannelLog(self.redis)
        self.serving = ServingWriter(self.redis, self.channels, rules)
        self.serving_epoch: bytes | str | None = None
        self.projected: set[int] = set()
        self._wire()

    def _build_app(self) -> faust.App:
        s = self.settings
        # elimu:// = aiokafka with the batch-draining consumer (streams/faust_tuning.py).
        brokers = [f"elimu://{hp}" for hp in s.kafka_bootstrap.split(",")]
        return faust.App(
            APP_ID,
            broker=brokers,
            store="memory://",
            datadir=str(self.datadir),
            topic_partitions=s.partitions,
            topic_replication_factor=int(os.environ.get("ELIMU_REPLICATION_FACTOR") or 1),
            key_serializer="raw",
            value_serializer="raw",
            producer_acks=-1,
            web_host="127.0.0.1"
            if not os.environ.get("ELIMU_WORKER_HOST")
            else os.environ["ELIMU_WORKER_HOST"],
            web_port=self.web_port,
            web_enabled=True,
            # Standby replicas double changelog reads for a memory store; recovery from the
            # changelog is the failover path instead.
            table_standby_replicas=0,
            stream_buffer_maxsize=16384,
            broker_max_poll_records=2000,
            Monitor=LeanMonitor,
            cython_optimizations=True,
            # Changelog, output and dead-letter records ride in fewer produce requests; commits
            # still wait for them (the producer is flushed before every offset commit).
            producer_linger=0.05,
            producer_max_batch_size=256 * 1024,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 4),
        )

    def _wire(self) -> None:
        app = self.app
        n = self.settings.partitions
        inputs = app.topic(BEHAVIOR_TOPIC, PROFILES_TOPIC, key_serializer="raw", value_serializer="raw")
        # Declared so Faust creates them with our partition count when missing.
        self.declared = [
            app.topic(BEHAVIOR_TOPIC, partitions=n),
            app.topic(PROFILES_TOPIC, partitions=n, compacting=True),
            app.topic(DEAD_LETTER_TOPIC, partitions=1),
            app.topic(ENGAGEMENT_TOPIC, partitions=n),
        ]
        self.table = app.Table(
            "user-state",
            partitions=n,
            key_type=UserIdKey,
            value_type=UserStateValue,
            # Changelog partition = murmur2(user_id): the same function that owns input records.
            use_partitioner=True,
        )
        processor = EngagementProcessor(
            self.rules, self._partitions_for, self.settings.dedup_window_days * 86_400_000
        )
        store = TableStore(self.table, self._send, n)
        self.pipeline = EngagementPipeline(processor, store, self.serving, self._send)

        @app.agent(inputs, name="engagement")
        async def engagement(stream: faust.StreamT[Any]) -> None:
            async for events in stream.take_events(MAX_BATCH, within=BATCH_WINDOW_S):  # type: ignore[attr-defined]
                records = [
                    Record(
                        e.message.topic,
                        e.message.partition,
                        e.message.offset,
                        e.message.key,
                        e.message.value,
                        int(e.message.timestamp * 1000),
                    )
                    for e in events
                ]
                try:
                    await self.pipeline.handle(records)
                except Exception:
                    # Faust would ack this batch on the way out and restart the agent, committing
                    # records whose effects may not have reached the changelog. Dying unacked
                    # makes the next worker process them again (dedup keeps that idempotent).
                    log.critical("batch failed; exiting without acking it", exc_info=True)
                    os._exit(70)

        app.task(self._on_start)
        # Faust treats an exception escaping a timer as a crash of the whole worker, so a Redis
        # outage must not escape: the agent holds its offsets while Redis is away, and the timers
        # simply try again on their next tick.
        app.timer(HEARTBEAT_S)(_redis_tolerant(self._heartbeat))
        app.timer(LEADERBOARD_PUSH_S)(_redis_tolerant(self._push_leaderboards))
        app.timer(SERVING_CHECK_S)(_redis_tolerant(self._check_serving))

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4")

    def _partitions_for(self, topic: str) -> int:
        return self.app.consumer.topic_partitions(topic) or self.settings.partitions

    async def _send(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        """Hand a record to the producer, retrying while Kafka refuses it.

        Raising here would end the batch early, and Faust acks a ``take_events`` batch however
        its body exits: records whose state or output never reached the producer would be
        committed. Waiting holds the offsets back until Kafka takes the record.
        """
        delay = 0.1
        while True:
            try:
                return await self.app.producer.send(topic, key, value, partition, None, None)
            except (ProducerSendError, KafkaError) as exc:
                log.warning("send to %s failed (%s); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_start(self) -> None:
        for topic in (BEHAVIOR_TOPIC, PROFILES_TOPIC):
            actual = self.app.consumer.topic_partitions(topic)
            if actual is not None and actual != self.settings.partitions:
                # State is partitioned by murmur2(user_id) % partitions; a mismatch would
                # re-route records forever or split users across changelog partitions.
                raise RuntimeError(
                    f"topic {topic!r} has {actual} partitions but ELIMU_PARTITIONS={self.settings.partitions}"
                )
        await self.serving.start()
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        metrics.USERS_IN_STATE.set(len(self.table))
        await self.redis.hset(keys.WORKER_HEARTBEATS, self.worker_id, int(time.time()))
        await publish_snapshot(self.redis, self.worker_id, metrics.REGISTRY)

    async def _push_leaderboards(self) -> None:
        now = int(time.time() * 1000)
        await self.serving.push_leaderboards({p: bucket(p, now) for p in PERIODS})

    def _active_partitions(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == BEHAVIOR_TOPIC}

    async def _check_serving(self) -> None:
        """Re-project state into Redis when Redis lost it or this worker gained partitions.

        The epoch key marks a Redis that has been filled; a wiped Redis has none, so the first
        worker to notice sets a new one and every worker re-projects what it owns.
        """
        if self.app.in_recovery or self.app.rebalancing or not self.app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return  # the table is not whole yet; projecting now would publish partial state
        await self.redis.set(keys.SERVING_EPOCH, uuid.uuid4().hex, nx=True)
        epoch = await self.redis.get(keys.SERVING_EPOCH)
        active = self._active_partitions()
        if epoch != self.serving_epoch:
            self.serving_epoch, self.projected = epoch, set()
        todo = active - self.projected
        if not todo:
            self.projected &= active
            return
        n = self.settings.partitions
        states = [
            s for k, s in list(self.table.items()) if owner_partition(k.encode(), n) in todo and s is not None
        ]
        count = await self.serving.project(states)
        self.projected = active
        metrics.SERVING_REBUILDS.inc()
        log.info("projected %d users of partitions %s into Redis", count, sorted(todo))


def run_worker(settings: Settings) -> None:
    """Run one worker until it is stopped (SIGINT/SIGTERM)."""
    rules = Rules.from_toml(settings.rules_path.read_text())
    worker = Worker(settings, rules)
    level = os.environ.get("ELIMU_LOG_LEVEL", "warn")
    import uvloop
    from faust.worker import Worker as FaustWorker

    # uvloop: measured +20% events/s for the same worker.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust_worker = FaustWorker(worker.app, loglevel=level, quiet=True)
    # Faust's progress spinner sets the root logger to DEBUG so it can spin on every record:
    # every aiokafka debug call then builds a LogRecord (measured: ~6% of a busy worker's CPU).
    faust_worker.spinner = None
    faust_worker.execute_from_commandline()
