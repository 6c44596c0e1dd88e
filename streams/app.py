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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import orjson
from aiokafka.errors import InvalidTopicError, KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError
from prometheus_client import generate_latest
from redis.exceptions import RedisError

from infra import keys
from infra.channels import ChannelLog
from infra.feed import TopicFeed
from infra.kafka import BROADCAST_TOPIC
from infra.kafka_auth import client_security, faust_credentials
from infra.metrics_relay import publish_snapshot
from infra.net import free_port
from infra.redis_conn import RedisClient, connect
from infra.settings import Settings
from infra.signing import RecordSigner
from models.career import CareerState
from models.events import JobPosting
from models.gamification import UserState
from models.growth import GrowthState
from models.leaderboard import PERIODS, bucket
from models.nudges import Celebration, celebrations_for
from models.outcome_ledger import OutcomeLedger
from models.referrals import referral_code
from models.risk_state import RiskSettings, RiskState
from models.rules import Rules
from models.time_units import DAY_MS
from streams import metrics, redis_faults
from streams.broadcast import Broadcasts
from streams.career import APPLICATIONS_TOPIC, JOB_FANOUT_TOPIC, CareerProcessor
from streams.career_pipeline import MATCH_ALERTS_TOPIC, CareerPipeline
from streams.engagement import BEHAVIOR_TOPIC, PROFILES_TOPIC, EngagementProcessor
from streams.faust_tuning import EngineApp, LeanMonitor
from streams.growth import COMMANDS_TOPIC, REFERRALS_TOPIC, GrowthProcessor
from streams.growth_pipeline import GrowthPipeline
from streams.interventions import InterventionsAnalytics
from streams.market import MARKET_TOPIC, POSTINGS_TOPIC, PULSE_TOPIC, MarketProcessor
from streams.market_pipeline import MarketPipeline, PostingsPipeline
from streams.pipeline import (
    DEAD_LETTER_TOPIC,
    ENGAGEMENT_TOPIC,
    NOTIFICATIONS_TOPIC,
    EngagementPipeline,
    deliver_refusals,
)
from streams.progress import Progress
from streams.records import DeadLetter, Record, owner_partition, split_forged
from streams.risk import (
    INTERVENTION_OUTCOMES_TOPIC,
    RISK_LABELS_TOPIC,
    RISK_SCORES_TOPIC,
    RiskProcessor,
)
from streams.risk_pipeline import RiskPipeline
from streams.risk_trainer import RiskTrainer
from streams.serving import ServingWriter
from streams.tables import RawKey, TableStore, register_codecs, state_codec
from streams.transactions import CURRENT as CURRENT_TRANSACTION
from streams.transactions import GUARANTEE_VAR, BatchTransactions, parse_guarantee, resolve_guarantee
from streams.user_context import UserDirectory

log = logging.getLogger(__name__)

APP_ID = "elimu-pulse"
STATE_CODEC = "elimu_user_state"
#: Largest batch the agent takes at once, and how long it waits to fill one. Batching is what
#: makes one state write and one Redis round trip serve many events.
MAX_BATCH = 5000
BATCH_WINDOW_S = 0.02
HEARTBEAT_S = 2.0
LEADERBOARD_PUSH_S = 1.0
MARKET_PULSE_S = 1.0
POSTINGS_EXPIRY_S = 60.0
#: Input topics of the per-user agent; records of the first two feed gamification, of the
#: last three career state (profiles feed both).
ENGAGEMENT_TOPICS = frozenset({BEHAVIOR_TOPIC, PROFILES_TOPIC})
CAREER_TOPICS = frozenset({PROFILES_TOPIC, APPLICATIONS_TOPIC, JOB_FANOUT_TOPIC})
GROWTH_TOPICS = frozenset({COMMANDS_TOPIC, REFERRALS_TOPIC})
SERVING_CHECK_S = 5.0
#: The largest record this worker produces (key + value), far below the broker's 1 MiB
#: ``message.max.bytes``: per-user state and outputs are bounded well under it by design, and
#: anything over it is a bug or an attack to dead-letter, not a send to retry forever.
MAX_RECORD_BYTES = 256 * 1024
#: Kafka refusals that no retry can fix.
PERMANENT_SEND_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, InvalidTopicError)
RISK_SWEEP_S = 1.0
RISK_PUBLISH_S = 5.0


USER_STATE_CODEC, UserStateValue = state_codec(STATE_CODEC, UserState.from_dict)
CAREER_CODEC, CareerStateValue = state_codec("elimu_career_state", CareerState.from_dict)
POSTING_CODEC, PostingValue = state_codec("elimu_job_posting", JobPosting.from_dict)
GROWTH_CODEC, GrowthStateValue = state_codec("elimu_growth_state", GrowthState.from_dict)
RISK_CODEC, RiskStateValue = state_codec("elimu_risk_state", RiskState.from_dict)
LEDGER_CODEC, LedgerValue = state_codec("elimu_outcome_ledger", OutcomeLedger.from_dict)
STATE_CODECS = (USER_STATE_CODEC, CAREER_CODEC, POSTING_CODEC, GROWTH_CODEC, RISK_CODEC, LEDGER_CODEC)
#: Kept under its old name: the user-state table's key type.
UserIdKey = RawKey


class PostingCopies:
    """Each fan-out partition's copy of the open postings, in the ``open-postings`` table under
    ``"<partition>:<job_id>"`` and logged to that partition, so it recovers with the partition."""

    def __init__(self, store: TableStore[JobPosting]) -> None:
        self.store = store

    def put(self, partition: int, posting: JobPosting) -> None:
        self.store.put(f"{partition}:{posting.job_id}", posting)

    def delete(self, partition: int, job_id: str) -> None:
        self.store.delete(f"{partition}:{job_id}")

    def items(self) -> list[tuple[int, JobPosting]]:
        return [(int(k.split(":", 1)[0]), v) for k, v in self.store.items()]

    def expire(self, now_ms: int) -> int:
        """Drop postings whose deadline has passed (tombstoned in the changelog)."""
        expired = [k for k, v in self.store.items() if v.deadline_ms is not None and v.deadline_ms < now_ms]
        for key in expired:
            self.store.delete(key)
        return len(expired)

    async def flush(self) -> None:
        await self.store.flush()


async def _nothing() -> None:
    return None


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


def _batch_agent(
    name: str, handle: Callable[[list[Record]], Awaitable[Any]], progress: Progress, txns: BatchTransactions
) -> Callable[[Any], Awaitable[None]]:
    """An agent body: take batches, turn Faust events into ``Record``s, hand them to ``handle``
    (each batch's time in flight watched by ``progress``), each batch in its own transaction
    with its offsets under exactly-once (streams/transactions.py)."""

    async def agent(stream: faust.StreamT[Any]) -> None:
        async for events in stream.take_events(MAX_BATCH, within=BATCH_WINDOW_S):  # type: ignore[attr-defined]
            records = [
                Record(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    int(e.message.timestamp * 1000),
                    _headers(e.message),
                )
                for e in events
            ]
            token = progress.begin(name)
            try:
                async with txns.batch(name, records):
                    await handle(records)
                progress.end(token)
            except Exception:
                # Faust would ack this batch on the way out and restart the agent, committing
                # records whose effects may not have reached the changelog. Dying unacked makes
                # the next worker process them again (dedup keeps that idempotent).
                log.critical("batch failed; exiting without acking it", exc_info=True)
                os._exit(70)

    return agent


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
            APP_ID,
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
        #: Partitions whose users are on the risk sweep's agenda.
        self.risk_scheduled: set[int] = set()
        self._wire()

    def _build_app(self) -> faust.App:
        s = self.settings
        register_codecs(*STATE_CODECS)
        # elimu:// = aiokafka with the batch-draining consumer (streams/faust_tuning.py).
        brokers = [f"elimu://{hp}" for hp in s.kafka_bootstrap.split(",")]
        return EngineApp(
            APP_ID,
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
            stream_buffer_maxsize=16384,
            broker_max_poll_records=2000,
            Monitor=LeanMonitor,
            cython_optimizations=True,
            # A short linger: records of one batch still ride together, and the acks a batch waits
            # for (streams.pipeline.send_durably, growth state) come back fast. Measured: 50 ms
            # cost a third of the throughput once batches waited for acks (3.6k vs 5.6k events/s).
            producer_linger=0.005,
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

        per_user = raw(
            BEHAVIOR_TOPIC,
            PROFILES_TOPIC,
            APPLICATIONS_TOPIC,
            JOB_FANOUT_TOPIC,
            COMMANDS_TOPIC,
            REFERRALS_TOPIC,
        )
        # Declared so Faust creates them with our partition count when missing.
        self.declared = [
            app.topic(BEHAVIOR_TOPIC, partitions=n),
            app.topic(PROFILES_TOPIC, partitions=n, compacting=True),
            app.topic(APPLICATIONS_TOPIC, partitions=n),
            app.topic(JOB_FANOUT_TOPIC, partitions=n),
            app.topic(COMMANDS_TOPIC, partitions=n),
            app.topic(REFERRALS_TOPIC, partitions=n),
            app.topic(NOTIFICATIONS_TOPIC, partitions=n),
            app.topic(POSTINGS_TOPIC, partitions=n),
            app.topic(MARKET_TOPIC, partitions=1),
            app.topic(DEAD_LETTER_TOPIC, partitions=1),
            app.topic(ENGAGEMENT_TOPIC, partitions=n),
            app.topic(MATCH_ALERTS_TOPIC, partitions=n),
            app.topic(PULSE_TOPIC, partitions=1),
            app.topic(RISK_SCORES_TOPIC, partitions=n),
            app.topic(RISK_LABELS_TOPIC, partitions=1),
            app.topic(INTERVENTION_OUTCOMES_TOPIC, partitions=1),
            app.topic(BROADCAST_TOPIC, partitions=1, compacting=True),
        ]
        # Changelog partition = murmur2(key) for the per-user tables: the function that owns input
        # records, so a user's state recovers on the partition that receives their events.
        self.table = app.Table(
            "user-state", partitions=n, key_type=UserIdKey, value_type=UserStateValue, use_partitioner=True
        )
        career_table = app.Table(
            "career-state", partitions=n, key_type=RawKey, value_type=CareerStateValue, use_partitioner=True
        )
        growth_table = app.Table(
            "growth-state", partitions=n, key_type=RawKey, value_type=GrowthStateValue, use_partitioner=True
        )
        risk_table = app.Table(
            "risk-state", partitions=n, key_type=RawKey, value_type=RiskStateValue, use_partitioner=True
        )
        ledger_table = app.Table(
            "intervention-analytics", partitions=1, key_type=RawKey, value_type=LedgerValue
        )
        postings_table = app.Table("open-postings", partitions=n, key_type=RawKey, value_type=PostingValue)
        jobs_table = app.Table("jobs", partitions=1, key_type=RawKey, value_type=PostingValue)

        processor = EngagementProcessor(
            self.rules, self._partitions_for, self.settings.dedup_window_days * DAY_MS
        )
        self.user_store = TableStore(self.table, self._send, n, USER_STATE_CODEC)
        self.pipeline = EngagementPipeline(processor, self.user_store, self.serving, self._send)
        self.posting_copies = PostingCopies(
            TableStore(postings_table, self._send, n, POSTING_CODEC, lambda key: int(key.split(":", 1)[0]))
        )
        self.career = CareerPipeline(
            CareerProcessor(self._partitions_for, self.posting_copies),
            TableStore(career_table, self._send, n, CAREER_CODEC),
            self.posting_copies,
            self.serving,
            self._send,
            n,
        )
        self.market = MarketPipeline(
            MarketProcessor(),
            TableStore(jobs_table, self._send, 1, POSTING_CODEC, lambda key: 0),
            self.serving,
            self._send,
            n,
        )
        self.growth = GrowthPipeline(
            # The worker derives each user's referral code itself (the API's function and secret), so
            # a forged code is refused and the code -> user map is rebuilt from the table after a wipe.
            GrowthProcessor(
                self.rules,
                self._partitions_for,
                code_of=functools.partial(referral_code, self.settings.secret().encode()),
            ),
            TableStore(growth_table, self._send, n, GROWTH_CODEC),
            self.serving,
            self._send,
            n,
        )
        postings = PostingsPipeline(self._send)
        s = self.settings
        self.risk_settings = RiskSettings(
            horizon_ms=int(s.risk_horizon_days * DAY_MS),
            grace_ms=int(s.risk_grace_minutes * 60_000),
            rescore_ms=int(s.risk_rescore_minutes * 60_000),
            checkpoint_s=s.risk_checkpoint_s,
        )
        directory = UserDirectory(self.rules, self.user_store.get, self.career.store.get)
        self.risk = RiskPipeline(
            RiskProcessor(
                self.risk_settings,
                directory.streak_of,
                directory,
                partition_of=lambda user_id: owner_partition(user_id.encode(), n),
            ),
            TableStore(risk_table, self._send, n, RISK_CODEC),
            self.serving,
            self._send,
        )
        self.broadcasts = Broadcasts(self.risk.processor)
        self.risk.processor.follow(self.broadcasts)
        self.broadcast_feed = TopicFeed(
            s.kafka_bootstrap,
            BROADCAST_TOPIC,
            self.broadcasts.on_record,
            signer=self.signer,
            on_forged=self._forged_broadcast,
        )
        self.analytics = InterventionsAnalytics(
            TableStore(ledger_table, self._send, 1, LEDGER_CODEC, lambda key: 0), self.serving, self._send
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

        async def per_user_batch(records: list[Record]) -> None:
            engagement = [r for r in records if r.topic in ENGAGEMENT_TOPICS]
            career = [r for r in records if r.topic in CAREER_TOPICS]
            growth = [r for r in records if r.topic in GROWTH_TOPICS]
            applied = self.pipeline.process(engagement) if engagement else None
            if career:
                await self.career.handle(career)
            # Growth and risk state are persisted before the engagement changelog: once that marks
            # this batch's events as seen, a replay would no longer bring them here.
            grow = growth or (applied is not None and applied.applied)
            events = [(a.event, a.effects.xp_gained) for a in applied.applied] if applied else []
            achieved: dict[str, list[Celebration]] = {}
            for a in applied.applied if applied else ():
                found = celebrations_for(a.event.user_id, a.effects, self.rules.streak_milestones)
                if found:
                    achieved.setdefault(a.event.user_id, []).extend(found)
            grown, risked = await asyncio.gather(
                self.growth.persist(growth, applied) if grow else _nothing(),
                self.risk.on_events(events, achieved) if events else _nothing(),
            )
            if applied is not None:
                await self.pipeline.deliver(engagement, applied)
            if grown is not None:
                await self.growth.publish(growth, grown)
            if risked is not None:
                await self.risk.publish(risked)

        agents: list[tuple[Any, str, Callable[[list[Record]], Awaitable[Any]]]] = [
            (per_user, "engagement", per_user_batch),
            (raw(POSTINGS_TOPIC), "postings", postings.handle),
            (raw(MARKET_TOPIC), "market", self.market.handle),
            (raw(RISK_LABELS_TOPIC), "risk-trainer", self.trainer.handle),
            (raw(INTERVENTION_OUTCOMES_TOPIC), "interventions", self.analytics.handle),
        ]
        for channel, name, handle in agents:
            app.agent(channel, name=name)(_batch_agent(name, self._trusted(handle), self.progress, self.txns))

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

    def _trusted(
        self, handle: Callable[[list[Record]], Awaitable[Any]]
    ) -> Callable[[list[Record]], Awaitable[None]]:
        """``handle`` behind the signature check: a record forged on an internal topic is
        dead-lettered (``bad_signature``) and the rest of its batch goes on."""

        async def gated(records: list[Record]) -> None:
            records, forged = split_forged(records, self.signer)
            if forged:
                await deliver_refusals(self._send, forged)
            if records:
                await handle(records)

        return gated

    @staticmethod
    def _forged_broadcast(key: bytes | None, offset: int) -> None:
        # Every worker reads the whole broadcast, so each would dead-letter the same record:
        # counted and logged here instead, on every worker that refused it.
        metrics.DEAD_LETTERS.labels(BROADCAST_TOPIC, "bad_signature").inc()
        log.error("broadcast record %r at offset %d refused: no valid engine signature", key, offset)

    async def _forget_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """Drop caches of state this worker may no longer own; they are rebuilt from the tables
        if the partitions come back (the candidate indexes, the market book)."""
        revoked: set[Any] = args[0] if args else set()
        for tp in revoked:
            if tp.topic == JOB_FANOUT_TOPIC:
                self.career.processor.forget_partition(tp.partition)
            elif tp.topic == MARKET_TOPIC:
                self.market.processor.unload()
            elif tp.topic == RISK_LABELS_TOPIC:
                self.trainer.forget()

    async def _expire_postings(self) -> None:
        """Drop postings whose deadline passed from the matching index and the ``open-postings``
        table, and closed old ones from ``jobs`` (tombstoned in the changelogs, so a recovering
        worker does not load them again)."""
        if not self._table_ready():
            return
        now = int(time.time() * 1000)
        self.career.processor.postings.evict(now)
        if self.posting_copies.expire(now):
            await self.posting_copies.flush()
        if self._owns_market() and self.market.processor.expire(self.market.jobs, now):
            await self.market.jobs.flush()

    async def _sweep_risk(self) -> None:
        """Re-score the users due by stream time; put newly owned partitions' users on the agenda."""
        if not self._table_ready():
            return
        active = self._active_partitions()
        n = self.settings.partitions
        store = self.risk.store

        def owned(user_id: str) -> bool:
            return owner_partition(user_id.encode(), n) in active

        changed = self.broadcasts.take_campaigns_changed()
        if active != self.risk_scheduled or changed:
            # New partitions' users join the agenda; a campaign change moves everyone's next look.
            self.risk.processor.forget(owned)
            self.risk.processor.schedule(store.states_of(active if changed else active - self.risk_scheduled))
            self.risk_scheduled = active
            self.risk.processor.adopt_watermark(store.states_of(active))
        await self.risk.sweep(owned)

    def _owns_market(self) -> bool:
        return any(tp.topic == MARKET_TOPIC for tp in self.app.assignor.assigned_actives())

    def _table_ready(self) -> bool:
        return not (
            self.app.in_recovery or self.app.rebalancing or not self.app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        )

    async def _publish_market(self) -> None:
        if not self._owns_market() or not self._table_ready():
            return
        market = self.market
        if not market.processor.loaded:
            market.processor.load(market.jobs)
        await market.publish_pulse(int(time.time() * 1000))

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
        if topic == DEAD_LETTER_TOPIC:
            metrics.DEAD_LETTERS.labels(topic, reason).inc()
            return  # a dead letter is bounded by construction; never loop on one
        letter = DeadLetter(
            Record(topic, -1 if partition is None else partition, -1, key, value, 0), reason, why
        )
        await deliver_refusals(self._send, [letter])

    async def _on_start(self) -> None:
        for topic in (BEHAVIOR_TOPIC, PROFILES_TOPIC, APPLICATIONS_TOPIC, COMMANDS_TOPIC):
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
        metrics.USERS_IN_STATE.set(len(self.table))
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
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == BEHAVIOR_TOPIC}

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
            self.market.processor.dirty = True  # the pulse views are gone too
        # What the admin routes read: campaigns (every worker), analytics and run logs (the owner).
        owns_ledger = any(
            tp.topic == INTERVENTION_OUTCOMES_TOPIC for tp in self.app.assignor.assigned_actives()
        )
        await self.analytics.reproject(epoch, owns_ledger, self.broadcasts)
        todo = active - self.projected
        if not todo:
            self.projected &= active
            return
        count = await self.serving.project(self.user_store.states_of(todo))
        await self.career.project(self.career.store.states_of(todo))
        await self.growth.project(self.growth.store.states_of(todo))
        await self.risk.project(self.risk.store.states_of(todo))
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
