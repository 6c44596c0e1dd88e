"""Consumer-lag sampling: committed and end offsets read periodically, kept in Redis, turned into
the lag report (``infra.lag_report``) that ``GET /v1/ops/lag``, the ``ops:lag`` channel, the
``elimu_consumer_*`` gauges and ``elimu lag`` show.

Lag in seconds and the status both need history, so the sampler stores one snapshot of the whole
cluster (every group's committed offsets and the end offsets of those partitions) per tick in a
capped Redis list: any API process, and the CLI, can compute the report from it. Exactly one
process samples at a time: each tick it takes or renews a Redis lock (SET NX PX) and skips the
tick without it; the write itself is fenced on the lock, so a sampler that lost its lock during a
slow read cannot interleave its snapshot with the new holder's.

Offsets are read with kafka-python's admin client (synchronous, so in a thread): aiokafka's admin
OffsetFetch decoding fails against the embedded Tansu broker, kafka-python's works against it and
Apache Kafka alike. End offsets come from ListOffsets corrected by a fetch's high watermark
(Tansu's ListOffsets undercounts batched records). OffsetFetch gives no commit timestamps and
Tansu reports no group state, which is why the status rules work from sampled offsets alone (see
``infra.lag_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from infra import keys
from infra.channels import ChannelLog
from infra.kafka_auth import admin_security
from infra.lag_report import (
    DEFAULT_WINDOW_S,
    GroupPartition,
    LagReport,
    Snapshot,
    TopicPartition,
    build_report,
)
from infra.redis_conn import RedisClient
from models.channels import OPS_LAG_CHANNEL

log = logging.getLogger(__name__)

#: The websocket channel the sampler publishes each report on (admin only, CONTRACT.md §8).
#: Message type of those publishes.
OPS_LAG_TYPE = "lag"
#: Snapshots and the report expire when no sampler has written for this long.
HISTORY_TTL_S = 24 * 3600
#: How long a read waits for the fetches that give the true end offsets (see ``_high_watermarks``).
HIGH_WATERMARK_WAIT_S = 2.0
#: How long a read waits for the fetches that step committed offsets over transaction markers
#: (see ``_past_markers``); partitions not answered by then keep their plain lag this time.
MARKER_PROBE_WAIT_S = 5.0


@dataclass(frozen=True)
class LagConfig:
    #: Seconds between samples; 0 or less switches the sampler off (``ELIMU_LAG_INTERVAL``).
    interval_s: float = 5.0
    #: Status window (``ELIMU_LAG_WINDOW``): much wider than Faust's 2.8 s commit interval.
    window_s: float = DEFAULT_WINDOW_S
    #: Snapshots kept (at least enough for two windows).
    history: int = 60
    #: Budget for one read of the cluster's offsets.
    read_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LagConfig:
        e = os.environ if env is None else env
        base = cls()
        return cls(
            interval_s=float(e.get("ELIMU_LAG_INTERVAL") or base.interval_s),
            window_s=float(e.get("ELIMU_LAG_WINDOW") or base.window_s),
        )

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    @property
    def keep(self) -> int:
        if not self.enabled:
            return self.history
        return max(self.history, math.ceil(2 * self.window_s / self.interval_s) + 1)

    @property
    def lock_ttl_ms(self) -> int:
        """Three missed ticks hand sampling to another process."""
        return max(1000, int(3 * max(self.interval_s, 1.0) * 1000))

    @property
    def stale_after_s(self) -> float:
        """A stored report older than this is not served as current (its sampler is gone)."""
        return max(30.0, 3 * self.interval_s)


# ---------------------------------------------------------------------------------------------
# Reading offsets from the cluster


class OffsetReader:
    """Reads a ``Snapshot`` of the cluster. Blocking: call it in a thread. The admin client is kept
    between reads (kafka-python reconnects by itself) and rebuilt after a failure."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_ms = int(timeout_s * 1000)
        self._admin: Any = None
        # A read abandoned on timeout may still run in its thread: the next one waits for it.
        self._lock = threading.Lock()
        self._closed = False

    def read(self) -> Snapshot:
        with self._lock:
            if self._closed:
                raise RuntimeError("the offset reader is closed")
            try:
                return self._read(self._client())
            except Exception:
                self._drop_client()
                raise

    def close(self) -> None:
        """Close the client, after the read in progress if any (bounded by the read timeout):
        closing under a running read would leave it to open a new client nobody closes."""
        self._closed = True
        locked = self._lock.acquire(timeout=self.timeout_ms / 1000 + 1)
        try:
            self._drop_client()
        finally:
            if locked:
                self._lock.release()

    def _drop_client(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()

    def _client(self) -> Any:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="elimu-lag",
                request_timeout_ms=self.timeout_ms,
                bootstrap_timeout_ms=self.timeout_ms,
                **admin_security(),
            )
        return self._admin

    def _read(self, admin: Any) -> Snapshot:
        committed: dict[GroupPartition, int] = {}
        for listed in admin.list_groups():
            group = listed["group_id"]
            try:
                offsets = admin.list_group_offsets(group).get(group, {})
            except KafkaError as exc:  # one group rebalancing or just deleted: skip it this time
                log.debug("lag: offsets of group %s unavailable: %s", group, exc)
                continue
            for tp, meta in offsets.items():
                if meta.offset >= 0:
                    committed[(group, tp.topic, tp.partition)] = int(meta.offset)
        wanted = sorted({(topic, partition) for _, topic, partition in committed})
        ends = self._end_offsets(admin, wanted)
        return Snapshot(time.time(), ends, self._past_markers(committed, ends))

    def _end_offsets(self, admin: Any, wanted: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not wanted:
            return {}
        try:
            return self._list_ends(admin, wanted)
        except KafkaError:
            # One unknown partition (a deleted topic still has committed offsets) fails the whole
            # request: ask topic by topic and leave out the ones that fail.
            ends: dict[TopicPartition, int] = {}
            for topic in sorted({t for t, _ in wanted}):
                try:
                    ends.update(self._list_ends(admin, [tp for tp in wanted if tp[0] == topic]))
                except KafkaError as exc:
                    log.debug("lag: end offsets of %s unavailable: %s", topic, exc)
            return ends

    def _list_ends(self, admin: Any, wanted: list[TopicPartition]) -> dict[TopicPartition, int]:
        specs = {KafkaTopicPartition(t, p): OffsetSpec.LATEST for t, p in wanted}
        answer = admin.list_partition_offsets(specs)
        listed = {(tp.topic, tp.partition): int(o.offset) for tp, o in answer.items()}
        return self._high_watermarks(listed)

    def _high_watermarks(self, listed: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Correct ListOffsets(latest) with the high watermark of a Fetch.

        The embedded Tansu broker answers ListOffsets(latest) with the last record batch's base
        offset + 1, so every record after the first of a multi-record batch is missed (seven
        records produced in one batch show as end 1). Its Fetch responses carry the right high
        watermark. A fetch from the listed offset returns at most that last batch (or nothing, on
        a broker that listed the true end, e.g. Apache Kafka) and the high watermark; a partition
        whose fetch does not answer in time keeps the listed offset.
        """
        if not listed:
            return listed
        tps = [KafkaTopicPartition(t, p) for t, p in listed]
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="elimu-lag",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=1024,
            request_timeout_ms=max(self.timeout_ms, 1000),
            **admin_security(),
        )
        try:
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, listed[(tp.topic, tp.partition)])
            deadline = time.monotonic() + HIGH_WATERMARK_WAIT_S
            while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
                consumer.poll(timeout_ms=50)
            ends = dict(listed)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    key = (tp.topic, tp.partition)
                    ends[key] = max(ends[key], int(highwater))
            return ends
        finally:
            consumer.close()

    def _past_markers(
        self, committed: dict[GroupPartition, int], ends: Mapping[TopicPartition, int]
    ) -> dict[GroupPartition, int]:
        """Committed offsets moved over what no consumer will ever read: transaction markers and
        aborted records.

        Under exactly-once a group commits one past the last record it read, and the batch's
        commit marker comes after that record: a partition whose consumer is done would show a
        lag of 1 for good (and a STOP status). A read_committed fetch from the committed offset
        tells: its first record is the first one really waiting; none at all, with the position at
        the end, means nothing waits. Only partitions with a lag are probed, all at once.
        """
        lagging = sorted({(t, p, c) for (_, t, p), c in committed.items() if 0 <= c < ends.get((t, p), c)})
        if not lagging:
            return committed
        # Usually one committed offset per partition; several groups on one partition with
        # different offsets take a round each.
        rounds: list[dict[tuple[str, int], int]] = []
        for topic, partition, offset in lagging:
            free = next((r for r in rounds if (topic, partition) not in r), None)
            if free is None:
                free = {}
                rounds.append(free)
            free[(topic, partition)] = offset
        readable: dict[tuple[str, int, int], int] = {}
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="elimu-lag",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=1024,
            request_timeout_ms=max(self.timeout_ms, 1000),
            **admin_security(),
        )
        try:
            deadline = time.monotonic() + MARKER_PROBE_WAIT_S
            for probe in rounds:
                tps = {KafkaTopicPartition(t, p): (t, p) for t, p in probe}
                consumer.assign(list(tps))
                for tp, key in tps.items():
                    consumer.seek(tp, probe[key])
                waiting = set(tps)
                while waiting and time.monotonic() < deadline:
                    for tp, records in consumer.poll(timeout_ms=50).items():
                        if tp in waiting and records:
                            key = tps[tp]
                            readable[(*key, probe[key])] = int(records[0].offset)
                            waiting.discard(tp)
                    for tp in list(waiting):
                        key = tps[tp]
                        if consumer.position(tp) >= ends[key]:
                            readable[(*key, probe[key])] = ends[key]  # only markers and aborts
                            waiting.discard(tp)
        finally:
            consumer.close()
        return {(g, t, p): readable.get((t, p, c), c) for (g, t, p), c in committed.items()}


def read_offsets(bootstrap: str, timeout_s: float = 10.0) -> Snapshot:
    """One snapshot with a short-lived client (blocking)."""
    reader = OffsetReader(bootstrap, timeout_s)
    try:
        return reader.read()
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------
# History in Redis


def encode_snapshot(s: Snapshot) -> bytes:
    return orjson.dumps(
        {
            "ts": s.ts_s,
            "e": [[t, p, o] for (t, p), o in sorted(s.ends.items())],
            "c": [[g, t, p, o] for (g, t, p), o in sorted(s.committed.items())],
        }
    )


def decode_snapshot(raw: bytes | str) -> Snapshot:
    d = orjson.loads(raw)
    return Snapshot(
        float(d["ts"]),
        {(str(t), int(p)): int(o) for t, p, o in d["e"]},
        {(str(g), str(t), int(p)): int(o) for g, t, p, o in d["c"]},
    )


async def load_history(redis: RedisClient) -> list[Snapshot]:
    """The stored snapshots, oldest first (undecodable entries are skipped)."""
    raw: list[bytes | str] = await redis.lrange(keys.LAG_SAMPLES, 0, -1)
    history: list[Snapshot] = []
    for item in reversed(raw):
        try:
            history.append(decode_snapshot(item))
        except (ValueError, KeyError, TypeError):
            log.warning("lag: skipping an unreadable snapshot in %s", keys.LAG_SAMPLES)
    return history


async def stored_report(redis: RedisClient) -> dict[str, Any] | None:
    """The report the sampler stored last (the JSON shape of ``GET /v1/ops/lag``), if any."""
    raw = await redis.get(keys.LAG_REPORT)
    if raw is None:
        return None
    try:
        report = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return report if isinstance(report, dict) else None


async def read_lag_report(
    redis: RedisClient | None,
    bootstrap: str | None,
    now: float | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    timeout_s: float = 10.0,
) -> LagReport:
    """The report as of now: the sampler's history in Redis (when ``redis`` is given) plus a fresh
    read of the cluster (when ``bootstrap`` is given, stamped ``now`` if that is given). Nothing
    is written."""
    history = await load_history(redis) if redis is not None else []
    if bootstrap is not None:
        fresh = await asyncio.to_thread(read_offsets, bootstrap, timeout_s)
        if now is not None:
            fresh = replace(fresh, ts_s=now)
        history = [s for s in history if s.ts_s < fresh.ts_s]
        history.append(fresh)
    return build_report(history, window_s)


# ---------------------------------------------------------------------------------------------
# The sampler

# KEYS: lock. ARGV: token, ttl-ms. Take the lock, or renew it when we hold it already.
_ACQUIRE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""

# KEYS: lock, samples, report. ARGV: token, snapshot, keep, ttl-s, report-json.
# Appends the snapshot and stores the report only while the caller still holds the lock.
_COMMIT_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
return 1
"""

# KEYS: lock. ARGV: token.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

ReportHook = Callable[[LagReport], None]


class LagSampler:
    """Samples every ``config.interval_s`` while it holds the sampler lock; each tick appends a
    snapshot to the history, stores and publishes the report, and hands it to ``on_report`` (the
    API updates its gauges there). A process without the lock hands ``on_report`` the report the
    holder stored, so every API process exposes the same gauges."""

    def __init__(
        self,
        redis: RedisClient,
        bootstrap: str,
        *,
        channels: ChannelLog | None = None,
        config: LagConfig | None = None,
        on_report: ReportHook | None = None,
        reader: Callable[[], Snapshot] | None = None,
    ) -> None:
        self.redis = redis
        self.config = config or LagConfig()
        self.channels = channels
        self.on_report = on_report
        self.token = uuid.uuid4().hex
        self._offsets = OffsetReader(bootstrap, self.config.read_timeout_s)
        self._read = reader or self._offsets.read
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._commit = redis.register_script(_COMMIT_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def tick(self, now: float | None = None) -> LagReport | None:
        """One round. Returns the report this process wrote, or ``None`` when another process
        holds the lock (or took it over during the read). ``now`` stamps the snapshot instead of
        the wall clock (tests drive synthetic time with it)."""
        if not await self._acquire(keys=[keys.LAG_SAMPLER_LOCK], args=[self.token, self.config.lock_ttl_ms]):
            await self._follow()
            return None
        async with asyncio.timeout(self.config.read_timeout_s + 1):
            snapshot = await asyncio.to_thread(self._read)
        if now is not None:
            snapshot = replace(snapshot, ts_s=now)
        history = [s for s in await load_history(self.redis) if s.ts_s < snapshot.ts_s]
        history = history[-(self.config.keep - 1) :] if self.config.keep > 1 else []
        history.append(snapshot)
        report = build_report(history, self.config.window_s)
        document = report.as_dict()
        written = await self._commit(
            keys=[keys.LAG_SAMPLER_LOCK, keys.LAG_SAMPLES, keys.LAG_REPORT],
            args=[
                self.token,
                encode_snapshot(snapshot),
                self.config.keep,
                HISTORY_TTL_S,
                orjson.dumps(document),
            ],
        )
        if not written:
            log.info("lag: sampler lock lost during the read; this tick is dropped")
            return None
        if self.channels is not None:
            await self.channels.publish(OPS_LAG_CHANNEL, OPS_LAG_TYPE, document)
        self._hand_over(report)
        return report

    async def _follow(self) -> None:
        if self.on_report is None:
            return
        document = await stored_report(self.redis)
        if document is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._hand_over(LagReport.from_dict(document))

    def _hand_over(self, report: LagReport) -> None:
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:
                log.exception("lag: report hook failed")

    async def start(self) -> None:
        """Run ticks in the background (no-op when the interval is 0 or less)."""
        if self.config.enabled and self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="lag-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # The flag as well as the cancel: a cancel that lands as an awaited call completes can be
            # swallowed (asyncio.wait_for in 3.11 does), and the loop must end all the same.
            self._stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self.config.read_timeout_s + 2):
                    await task
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[keys.LAG_SAMPLER_LOCK], args=[self.token])
        # The admin client's I/O thread: closed off the event loop, it may block briefly.
        await asyncio.to_thread(self._offsets.close)

    async def _run(self) -> None:
        interval = self.config.interval_s
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker or Redis is unwell: try again next tick
                log.warning("lag: sampling failed: %s", exc or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - started))):
                    await self._stopping.wait()
