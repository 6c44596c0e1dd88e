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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka.errors import InvalidTopicError, KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError
from prometheus_client import generate_latest
from redis.exceptions import RedisError

from infra import gc_tuning, keys, topics
from infra.channels import ChannelLog
from infra.feed import TopicFeed
from infra.kafka_auth import client_security, faust_credentials
from infra.metrics_relay import publish_snapshot
from infra.net import free_port
from infra.redis_conn import RedisClient, connect
from infra.settings import Settings
from infra.signing import RecordSigner
from infra.topics import TOPOLOGY
from models.leaderboard import PERIODS, bucket
from models.risk_state import RiskSettings
from models.rules import Rules
from models.time_units import DAY_MS
from streams import metrics, redis_faults
from streams.broadcast import Broadcasts
from streams.delivery import deliver_refusals
from streams.engine import STATE_TABLES, Ports, StateTable, build_engine, only_slices
from streams.erasure import RedisEraser
from streams.faust_tuning import BatchHandler, EngineApp, LeanMonitor
from streams.progress import Progress
from streams.records import DeadLetter, Record, split_forged
from streams.risk_trainer import RiskTrainer
from streams.runner import BatchRunner
from streams.serving import ServingWriter
from streams.tables import DictCodec, RawKey, TableStore, register_codecs, state_codec
from streams.transactions import CURRENT as CURRENT_TRANSACTION
from streams.transactions import GUARANTEE_VAR, BatchTransactions, parse_guarantee, resolve_guarantee

log = logging.getLogger(__name__)

APP_ID = "elimu-pulse"


def app_id(settings: Settings) -> str:
    """The Faust application id (consumer group, changelog topic names): a worker running only
    some slices (``ELIMU_SLICES``) is an application of its own."""
    return APP_ID if settings.slices is None else f"{APP_ID}-only-{'-'.join(settings.slices)}"


#: Most records one fetch returns, and so one batch of the runners. Batching is what makes one
#: state write and one Redis round trip serve many events; a batch is whatever the fetch holds,
#: so at a low rate it is small and its latency short.
MAX_BATCH = 5000
HEARTBEAT_S = 2.0
LEADERBOARD_PUSH_S = 1.0
MARKET_PULSE_S = 1.0
POSTINGS_EXPIRY_S = 60.0
SERVING_CHECK_S = 5.0
#: The largest record this worker produces (key + value), far below the broker's 1 MiB
#: ``message.max.bytes``: per-user state and outputs are bounded well under it by design, and
#: anything over it is a bug or an attack to dead-letter, not a send to retry forever.
MAX_RECORD_BYTES = 256 * 1024
#: Kafka refusals that no retry can fix.
PERMANENT_SEND_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, InvalidTopicError)
RISK_SWEEP_S = 1.0
RISK_PUBLISH_S = 5.0


#: Each state table's changelog codec and the Faust value type that selects it, by codec name
#: (registered with Faust when the worker builds its app, not on import).
CODECS: dict[str, tuple[DictCodec, type]] = {t.codec: state_codec(t.codec, t.from_dict) for t in STATE_TABLES}


def _redis_tolerant(tick: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The timer ``tick``, with a Redis failure reported by kind (streams/redis_faults.py) and
    the tick skipped: the next tick tries again, whatever the kind, so none is retried here."""

    @functools.wraps(tick)
    async def guarded() -> None:
        try:
            await tick()
        except (RedisError, OSError) as exc:
            redis_faults.report(exc, f"timer {tick.__name__}")

    return guarded


def _headers(message: Any) -> tuple[tuple[str, bytes], ...]:
    raw = message.headers
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, Mapping) else raw
    return tuple((str(name), bytes(value or b"")) for name, value in items)


def _batch_handler(
    name: str,
    runner: BatchRunner,
    gate: Callable[[Sequence[Record]], Awaitable[list[Record]]],
    progress: Progress,
    txns: BatchTransactions,
) -> BatchHandler:
    """The consumer's handler of one agent's fetched batches (streams/faust_tuning.py): turn Faust
    messages into ``Record``s, drop forged ones (``gate``) and run the rest through ``runner``
    (each batch's time in flight watched by ``progress``), each batch in its own transaction with
    its offsets under exactly-once (streams/transactions.py)."""

    async def handler(messages: Sequence[Any]) -> None:
        token = progress.begin(name)
        try:
            records = [
                Record(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000), _headers(m))
                for m in messages
            ]
            async with txns.batch(name, records):
                trusted = await gate(records)
                if trusted:
                    await runner.run(trusted)
            progress.end(token)
        except Exception:
            # Returning would ack the batch for the next commit although its effects may not have
            # reached the changelog. Dying unacked makes the next worker process it again (dedup
            # keeps that idempotent).
            log.critical("batch failed; exiting without acking it", exc_info=True)
            os._exit(70)

    return handler


class Worker:
    """Holds the app and everything its agent and timers share."""

    def __init__(self, settings: Settings, rules: Rules) -> None:
        self.settings = settings
        self.rules = rules
        self.signer = RecordSigner(settings.secret())
        self.progress = Progress()
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.web_port = int(os.environ.get("ELIMU_WORKER_PORT") or free_port())
        self.datadir = settings.data_dir / "faust" / str(self.web_port)
        self.datadir.mkdir(parents=True, exist_ok=True)
        security = client_security()
        guarantee = resolve_guarantee(
            settings.kafka_bootstrap, parse_guarantee(os.environ.get(GUARANTEE_VAR)), security
        )
        self.txns = BatchTransactions(
            settings.kafka_bootstrap,
            app_id(settings),
            os.environ.get("ELIMU_WORKER_NAME") or self.worker_id,
            guarantee,
            security,
        )
        self.app = self._build_app()
        self.redis: RedisClient = connect(settings.redis_url)
        self.channels = ChannelLog(self.redis)
        self.serving = ServingWriter(self.redis, self.channels, rules)
        self.serving_epoch: bytes | str | None = None
        self.projected: set[int] = set()
        self._wire()

    def _build_app(self) -> EngineApp:
        s = self.settings
        register_codecs(*(codec for codec, _ in CODECS.values()))
        # elimu:// = aiokafka with the batch-draining consumer (streams/faust_tuning.py).
        brokers = [f"elimu://{hp}" for hp in s.kafka_bootstrap.split(",")]
        return EngineApp(
            app_id(s),
            read_committed=self.txns.exactly_once,
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
            broker_max_poll_records=MAX_BATCH,
            Monitor=LeanMonitor,
            cython_optimizations=True,
            # No linger: the records a batch hands over in one go still ride together (the
            # producer's sender runs only when the batch awaits), and every ack the batch waits
            # for (streams.delivery.send_durably, the persist waves) comes back without a linger
            # on top. Measured: 50 ms cost a third of the throughput (3.6k vs 5.6k events/s);
            # 5 ms -> 0 cut produce -> websocket p50 at 2,000 events/s by ~15% with events/s
            # unchanged (docs/benchmarks.md).
            producer_linger=0.0,
            producer_max_batch_size=256 * 1024,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 4),
            broker_credentials=faust_credentials(),
        )

    def _wire(self) -> None:
        app = self.app
        n = self.settings.partitions

        def raw(*names: str) -> Any:
            return app.topic(*names, key_serializer="raw", value_serializer="raw")

        # Declared so Faust creates them as the topology says when missing (infra/topics.py).
        self.declared = [
            app.topic(t.name, partitions=t.partitions(n), compacting=t.compacted, config=t.config or None)
            for t in TOPOLOGY
        ]
        s = self.settings
        self.risk_settings = RiskSettings(
            horizon_ms=int(s.risk_horizon_days * DAY_MS),
            grace_ms=int(s.risk_grace_minutes * 60_000),
            rescore_ms=int(s.risk_rescore_minutes * 60_000),
            checkpoint_s=s.risk_checkpoint_s,
        )
        ports = Ports(
            self._send,
            self.serving,
            n,
            self._partitions_for,
            s.secret().encode(),
            self.redis,
            eraser=RedisEraser(self.redis),
        )
        engine = build_engine(
            self.rules, self.risk_settings, s.dedup_window_days * DAY_MS, ports, self._store
        )
        self.engine = engine
        self.engagement, self.career, self.growth = engine.engagement, engine.career, engine.growth
        self.risk, self.market, self.analytics = engine.risk, engine.market, engine.analytics
        self.broadcasts = Broadcasts(self.risk.processor)
        self.risk.processor.follow(self.broadcasts)
        self.broadcast_feed = TopicFeed(
            s.kafka_bootstrap,
            topics.BROADCAST,
            self.broadcasts.on_record,
            signer=self.signer,
            on_forged=self._forged_broadcast,
        )
        self.trainer = RiskTrainer(
            self.risk_settings,
            self.broadcasts,
            self._send,
            s.kafka_bootstrap,
            self.redis,
            self.broadcast_feed.caught_up,
            signer=self.signer,
        )

        # The agents, each one runner over its slices (streams/engine.py).
        agents = engine.agents(("risk-trainer", [self.trainer]))
        if s.slices is not None:
            agents = only_slices(agents, s.slices)
        self.slices = [s for _, slices in agents for s in slices]
        for name, slices in agents:
            runner = BatchRunner(slices)
            handle = _batch_handler(name, runner, self._trusted, self.progress, self.txns)
            app.subscribe(raw(*sorted(runner.topics)), handle)

        app.on_partitions_revoked.connect(self._forget_revoked)  # type: ignore[arg-type]
        app.task(self._on_start)
        # Faust treats an exception escaping a timer as a crash of the whole worker, so a Redis
        # outage must not escape: the agent holds its offsets while Redis is away, and the timers
        # simply try again on their next tick.
        app.timer(HEARTBEAT_S)(_redis_tolerant(self._heartbeat))
        app.timer(LEADERBOARD_PUSH_S)(_redis_tolerant(self._push_leaderboards))
        app.timer(SERVING_CHECK_S)(_redis_tolerant(self._check_serving))
        app.timer(MARKET_PULSE_S)(_redis_tolerant(self._publish_market))
        app.timer(POSTINGS_EXPIRY_S)(self._expire_postings)
        app.timer(RISK_SWEEP_S)(_redis_tolerant(self._sweep_risk))
        app.timer(RISK_PUBLISH_S)(_redis_tolerant(self.trainer.publish_due))

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4")

    def _store(self, table: StateTable) -> TableStore[Any]:
        """The Faust table behind ``table``, under a store that writes its changelog in bulk."""
        n = 1 if table.single_partition else self.settings.partitions
        codec, value_type = CODECS[table.codec]
        per_user = table.partition_of is None and not table.single_partition
        # use_partitioner: changelog partition = murmur2(key), the function that owns input
        # records, so a user's state recovers on the partition that receives their events.
        faust_table = self.app.Table(
            table.name, partitions=n, key_type=RawKey, value_type=value_type, use_partitioner=per_user
        )
        partition_of = table.partition_of or ((lambda key: 0) if table.single_partition else None)
        store: TableStore[Any] = TableStore(faust_table, self._send, n, codec, partition_of)
        return store

    async def _trusted(self, records: Sequence[Record]) -> list[Record]:
        """The records the slices may see: one forged on an internal topic is dead-lettered
        (``bad_signature``) and the rest of its batch goes on."""
        trusted, forged = split_forged(list(records), self.signer)
        if forged:
            await deliver_refusals(self._send, forged)
        return trusted

    @staticmethod
    def _forged_broadcast(key: bytes | None, offset: int) -> None:
        # Every worker reads the whole broadcast, so each would dead-letter the same record:
        # counted and logged here instead, on every worker that refused it.
        metrics.DEAD_LETTERS.labels(topics.BROADCAST, "bad_signature").inc()
        log.error("broadcast record %r at offset %d refused: no valid engine signature", key, offset)

    async def _forget_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """Drop caches of state this worker may no longer own; they are rebuilt from the tables
        if the partitions come back (the candidate indexes, the market book)."""
        revoked = {(tp.topic, tp.partition) for tp in (args[0] if args else ())}
        for s in self.slices:
            s.revoked(revoked)

    async def _expire_postings(self) -> None:
        """Drop postings whose deadline passed from the matching index and the ``open-postings``
        table, and closed old ones from ``jobs`` (tombstoned in the changelogs, so a recovering
        worker does not load them again)."""
        if not self._table_ready():
            return
        now = int(time.time() * 1000)
        await self.career.expire_postings(now)
        if self._owns_market():
            await self.market.expire(now)

    async def _sweep_risk(self) -> None:
        """Re-score the users due by stream time; put newly owned partitions' users on the agenda."""
        if not self._table_ready():
            return
        await self.risk.sweep_partitions(self._active_partitions(), self.broadcasts.take_campaigns_changed())

    def _owns_market(self) -> bool:
        return any(tp.topic == topics.MARKET for tp in self.app.assignor.assigned_actives())

    def _table_ready(self) -> bool:
        return not (
            self.app.in_recovery or self.app.rebalancing or not self.app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        )

    async def _publish_market(self) -> None:
        if not self._owns_market() or not self._table_ready():
            return
        await self.market.publish_pulse(int(time.time() * 1000))

    def _partitions_for(self, topic: str) -> int:
        return self.app.consumer.topic_partitions(topic) or self.settings.partitions

    async def _send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> Any:
        """Hand a record to the producer, retrying while Kafka refuses it for a passing reason.

        Raising here would end the batch early, and Faust acks a ``take_events`` batch however
        its body exits: records whose state or output never reached the producer would be
        committed. Waiting holds the offsets back until Kafka takes the record. A record that can
        never be sent (over the byte budget, or refused by Kafka for good) is dead-lettered
        instead, so one record cannot stall every user of the worker.
        """
        size = len(key or b"") + len(value or b"")
        if size > MAX_RECORD_BYTES:
            await self._refuse_output(
                topic, key, value, partition, "too_large", f"{size} bytes > {MAX_RECORD_BYTES}"
            )
            return None
        headers = self.signer.headers(topic, key, value) or None
        producer = CURRENT_TRANSACTION.get()
        if producer is not None:
            # Inside a batch's transaction: a failure fails the batch, which aborts the transaction
            # and exits; the successor redoes the batch from the committed offsets.
            return await producer.send(
                topic, value, key=key, partition=partition, headers=list(headers or ())
            )
        delay = 0.1
        while True:
            try:
                return await self.app.producer.send(topic, key, value, partition, None, headers)
            except (ProducerSendError, KafkaError) as exc:
                cause = exc.__cause__ if isinstance(exc, ProducerSendError) else exc
                if isinstance(cause, PERMANENT_SEND_ERRORS):
                    await self._refuse_output(topic, key, value, partition, "send_refused", repr(cause))
                    return None
                self.progress.note(f"send to {topic} failed: {exc!r}")
                log.warning("send to %s failed (%s); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _refuse_output(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, reason: str, why: str
    ) -> None:
        """Dead-letter a record this worker produced but cannot send (bounded like any dead
        letter), loudly: for a changelog topic it means that user's latest state change lives
        only in this worker's memory."""
        log.error(
            "record for %s (key %r) not sent: %s (%s); dead-lettered", topic, (key or b"")[:64], reason, why
        )
        if topic == topics.DEAD_LETTER:
            metrics.DEAD_LETTERS.labels(topic, reason).inc()
            return  # a dead letter is bounded by construction; never loop on one
        letter = DeadLetter(
            Record(topic, -1 if partition is None else partition, -1, key, value, 0), reason, why
        )
        await deliver_refusals(self._send, [letter])

    async def _on_start(self) -> None:
        for topic in (
            topics.BEHAVIOR_EVENTS,
            topics.USER_PROFILES,
            topics.APPLICATION_STATUS,
            topics.USER_COMMANDS,
        ):
            actual = self.app.consumer.topic_partitions(topic)
            if actual is not None and actual != self.settings.partitions:
                # State is partitioned by murmur2(user_id) % partitions; a mismatch would
                # re-route records forever or split users across changelog partitions.
                raise RuntimeError(
                    f"topic {topic!r} has {actual} partitions but ELIMU_PARTITIONS={self.settings.partitions}"
                )
        await self.serving.start()
        await self.broadcast_feed.start()
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        metrics.USERS_IN_STATE.set(len(self.engine.users))
        await self.redis.hset(keys.WORKER_HEARTBEATS, self.worker_id, int(time.time()))
        await self._report_stall()
        await publish_snapshot(self.redis, self.worker_id, metrics.REGISTRY)

    async def _report_stall(self) -> None:
        """A batch in flight too long turns /readyz red (``keys.WORKER_STALLS``), sets
        ``elimu_worker_stalled_seconds`` and logs why. The heartbeat is a timer, not the agent,
        so it keeps beating while the agent is stuck."""
        stall = self.progress.stall()
        metrics.WORKER_STALLED.set(0 if stall is None else stall.seconds)
        if stall is None:
            await self.redis.hdel(keys.WORKER_STALLS, self.worker_id)
            return
        log.error("no progress for %.0fs in agent %s: %s", stall.seconds, stall.agent, stall.reason)
        await self.redis.hset(keys.WORKER_STALLS, self.worker_id, orjson.dumps(stall.to_dict()))

    async def _push_leaderboards(self) -> None:
        now = int(time.time() * 1000)
        await self.serving.push_leaderboards({p: bucket(p, now) for p in PERIODS})

    def _active_partitions(self) -> set[int]:
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topics.BEHAVIOR_EVENTS
        }

    async def _check_serving(self) -> None:
        """Re-project state into Redis when Redis lost it or this worker gained partitions.

        The epoch key marks a Redis that has been filled; a wiped Redis has none, so the first
        worker to notice sets a new one and every worker re-projects what it owns.
        """
        if not self._table_ready():
            return  # the table is not whole yet; projecting now would publish partial state
        await self.redis.set(keys.SERVING_EPOCH, uuid.uuid4().hex, nx=True)
        epoch = await self.redis.get(keys.SERVING_EPOCH)
        active = self._active_partitions()
        if epoch != self.serving_epoch:
            self.serving_epoch, self.projected = epoch, set()
            self.market.views_lost()  # the pulse views are gone too
        # What the admin routes read: campaigns (every worker), analytics and run logs (the owner).
        owns_ledger = any(
            tp.topic == topics.INTERVENTION_OUTCOMES for tp in self.app.assignor.assigned_actives()
        )
        await self.analytics.reproject(epoch, owns_ledger, self.broadcasts)
        todo = active - self.projected
        if not todo:
            self.projected &= active
            return
        count = 0
        for s in self.slices:
            count = max(count, await s.rebuild(todo))
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

    gc_tuning.tune()
    # uvloop: measured +20% events/s for the same worker.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust_worker = FaustWorker(worker.app, loglevel=level, quiet=True)
    # Faust's progress spinner sets the root logger to DEBUG so it can spin on every record:
    # every aiokafka debug call then builds a LogRecord (measured: ~6% of a busy worker's CPU).
    faust_worker.spinner = None
    faust_worker.execute_from_commandline()
