"""Faust components swapped in through Faust's own plug points, for throughput.

Measured on this machine (docs/benchmarks.md): the stock pipeline caps a bare agent at ~7k
events/s, and the time goes to per-message bookkeeping, not to fetching:

* ``Consumer._drain_messages`` wraps *every* message in ``wait_first(callback(msg),
  suspend_flow.wait())``: four tasks created and three cancelled per message (~24% of CPU).
  ``BatchDrainConsumer`` runs the identical per-message loop body inside one ``wait_first`` per
  fetched batch, so a rebalance (``suspend_flow``) still interrupts delivery, at batch
  granularity. Offsets, gap tracking and read-offset bookkeeping are unchanged.
* Topics with a batch handler (``EngineApp.batch_handlers``: the worker's batch runners) skip
  Faust's conductor, channels and streams altogether: each fetched batch's records of those
  topics go to their handler at once, and are acked for Faust's commit when it returns
  (``BatchDrainConsumer._hand_over``). Measured: the per-message path (conductor, stream queue,
  ``take_events``, acks per event) cost ~50 µs a message.
* The default ``Monitor`` keeps per-event dictionaries for the web stats page we do not serve;
  ``LeanMonitor`` keeps only what Faust itself reads (``stream_inbound_time`` for its
  stalled-stream check).

The transport is registered as the ``elimu://`` broker scheme through the ``faust.transports``
entry point (see pyproject.toml), Faust's documented driver plug-in hook.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from time import monotonic
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.sensors.monitor import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode import Service

from infra.kafka_auth import client_security
from streams.metrics import INPUT_OFFSET_GAPS

log = logging.getLogger(__name__)

#: How long a fetch may wait on the broker for data. Faust hard-codes 1500 ms. Apache Kafka
#: answers a waiting fetch as soon as data arrives, but the embedded broker (Tansu) waits the full
#: time, which measured as p50 380 ms produce→consume at 1500 ms and 15 ms at 50 ms. 50 ms costs
#: at most 20 idle fetches a second per broker connection.
FETCH_MAX_WAIT_MS = 50


#: How long recovery may spend asking for true end offsets (see ``_highwaters``).
HIGH_WATERMARK_WAIT_S = 5.0


#: Takes one fetched batch's messages of its topics (Faust ``Message``s, in offset order per
#: partition) and returns once they are processed: they are acked for the next commit then.
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


class EngineApp(faust.App):
    """The worker's Faust app, knowing whether its batches commit in transactions
    (streams/transactions.py): its consumer must then read only committed records. Its
    ``batch_handlers`` take their topics' records a fetched batch at a time (``subscribe``)."""

    def __init__(self, *args: Any, read_committed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_committed = read_committed
        self.batch_handlers: dict[str, BatchHandler] = {}

    def subscribe(self, topic: Any, handler: BatchHandler) -> None:
        """Consume ``topic`` (a Faust topic of one or more names) through ``handler``."""
        for name in topic.topics:
            if name in self.batch_handlers:
                raise ValueError(f"topic {name!r} already has a batch handler")
            self.batch_handlers[name] = handler
        self.topics.add(topic)  # the conductor subscribes the consumer to it


def _reads_committed(app: Any) -> bool:
    return bool(getattr(app, "read_committed", False))


class FastFetchConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_consumer(self, loop: Any) -> Any:
        consumer = super()._create_consumer(loop)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher, so set before start.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        if _reads_committed(self.app):
            # Under exactly-once a batch's state and outputs exist only once its transaction
            # commits: table recovery and the internal topics must not see an aborted batch.
            consumer._isolation_level = "read_committed"
        return consumer

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        if _reads_committed(self.app):
            # Under exactly-once every batch's transaction commits its own offsets. Faust's plain
            # OffsetCommit of the same offsets, sent on its own timer, could land after a later
            # batch's transaction and move the group back: a crash would then redo a batch
            # whose outputs are already committed.
            return True
        return bool(await super()._commit(offsets))

    async def seek_to_committed(self) -> Mapping[Any, int]:
        return cast(Mapping[Any, int], await self.call_thread(self._seek_to_committed_or_reset))

    async def _seek_to_committed_or_reset(self) -> Mapping[Any, int]:
        """Seek every assigned partition back to where a fresh consumer would start.

        aiokafka's ``seek_to_committed`` seeks only partitions whose committed offset is above 0
        and leaves the others at their current position. Faust seeks back after a rebalance and
        when a fetched batch was cut short (flow stopped, generation changed), relying on this to
        re-deliver records it already took from the fetcher; with nothing committed yet those
        records were silently skipped (measured: a SIGKILLed worker's successor lost stretches
        of input). Uncommitted partitions now restart by the reset policy, as on a fresh start.
        """
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
        at_zero = [tp for tp, offset in committed.items() if offset == 0]
        for tp in at_zero:
            consumer.seek(tp, 0)
        uncommitted = [tp for tp, offset in committed.items() if offset is None or offset < 0]
        if uncommitted:
            if self.app.conf.consumer_auto_offset_reset == "latest":
                await consumer.seek_to_end(*uncommitted)
            else:
                await consumer.seek_to_beginning(*uncommitted)
        return cast(Mapping[Any, int], committed)

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        """End offsets for table recovery, corrected by a fetch's high watermark.

        The embedded broker (Tansu) answers ListOffsets(latest) with the last record batch's
        base offset + 1, so a changelog written in multi-record batches looked shorter than it
        is and recovery stopped early, losing state. A fetch response carries the true high
        watermark; on Apache Kafka the two agree and this costs one short fetch per recovery.
        """
        listed = dict(await super()._highwaters(partitions))
        if not listed or self.consumer.in_transaction:
            return listed
        if _reads_committed(self.app):
            return await self._readable_ends(listed)
        bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in self.app.conf.broker)
        probe = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=1024,
            client_id="elimu-highwater",
            **client_security(),
        )
        await probe.start()
        try:
            tps = [TopicPartition(tp.topic, tp.partition) for tp in listed]
            probe.assign(tps)
            for tp in tps:
                probe.seek(tp, max(0, listed[tp] - 1))
            deadline = monotonic() + HIGH_WATERMARK_WAIT_S
            while monotonic() < deadline and any(probe.highwater(tp) is None for tp in tps):
                await probe.getmany(timeout_ms=50)
            for tp in tps:
                highwater = probe.highwater(tp)
                if highwater is not None and highwater > listed[tp]:
                    listed[tp] = highwater
            return listed
        finally:
            await probe.stop()

    async def _readable_ends(self, stable: dict[Any, int]) -> dict[Any, int]:
        """One past the last record a read_committed reader can see, per partition.

        Faust's recovery waits until it has read the record at ``end - 1``. Under exactly-once
        the last offsets of a changelog are transaction markers (and maybe aborted records),
        never delivered, so the listed end (the last stable offset) would keep recovery waiting
        for good. A read_committed fetch of the partition's tail finds the last readable record;
        the window doubles until one is found or the partition's start is reached (then nothing
        is readable: end 0).
        """
        bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in self.app.conf.broker)
        probe = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=10,
            client_id="elimu-readable-end",
            **client_security(),
        )
        await probe.start()
        try:
            ends: dict[Any, int] = {}
            for tp, stable_end in stable.items():
                ends[tp] = await _last_readable(probe, TopicPartition(tp.topic, tp.partition), stable_end) + 1
            return ends
        finally:
            await probe.stop()


async def _last_readable(probe: AIOKafkaConsumer, tp: TopicPartition, stable_end: int) -> int:
    """The offset of the last committed record below ``stable_end``; -1 if there is none."""
    probe.assign([tp])
    start = (await probe.beginning_offsets([tp]))[tp]
    window = 64
    while True:
        low = max(start, stable_end - window)
        probe.seek(tp, low)
        last = -1
        while await probe.position(tp) < stable_end:
            batch = await probe.getmany(tp, timeout_ms=1000)
            records = [m for m in batch.get(tp, []) if m.offset < stable_end]
            if records:
                last = records[-1].offset
            elif not batch and await probe.position(tp) < stable_end:
                break  # nothing more arrives (e.g. an open transaction ahead): keep what we have
        if last >= 0 or low <= start:
            return last
        window *= 8


class BatchDrainConsumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return FastFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        """Faust's ``_wait_next_records`` with a snapshot of the active partitions.

        Faust passes its *live* set of active partitions to the fetch, which runs later, and
        filters the fetched records against the same live set afterwards. Recovery empties and
        refills that set (pause changelogs, resume streams) while a fetch may be pending; an
        empty set means "all partitions" to aiokafka, so records of paused stream partitions
        were taken from the fetcher (advancing its position) and then dropped by the filter.
        A frozen copy makes what is fetched and what is kept the same set.
        """
        if not self.flow_active:
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
        try:
            self.not_waiting_next_records.set()
            active: frozenset[Any] | None = (
                None if self.app.client_only else frozenset(self._get_active_partitions())
            )
            if active is not None and not active:
                await self.sleep(1)  # as Faust does when nothing is active (e.g. during recovery)
                return {}, active
            records = await self._getmany(active_partitions=active, timeout=timeout)  # type: ignore[arg-type]
            return records, active
        finally:
            self.not_waiting_next_records.set()

    async def _deliver(self, batch: AsyncIterator[Any]) -> None:
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        generation = self.app.consumer_generation_id
        #: Messages for batch handlers, and the last offset taken per partition: their read
        #: offsets move only when they are handed over (``_hand_over``).
        direct: dict[BatchHandler, list[Any]] = {}
        taken: dict[Any, int] = {}
        since_yield = 0
        async for tp, message in batch:
            offset = message.offset
            r_offset = taken.get(tp)
            if r_offset is None:
                r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    INPUT_OFFSET_GAPS.labels(message.topic).inc()
                    log.info("offset gap on %s: read %s, then %s", tp, r_offset, offset)
                    await self._add_gap(tp, r_offset + 1, offset)
                handler = handlers.get(message.topic)
                if handler is not None:
                    direct.setdefault(handler, []).append(message)
                    taken[tp] = offset
                    continue
                since_yield += 1
                if since_yield > 100:  # let timers and the web server run during a large batch
                    await asyncio.sleep(0)
                    since_yield = 0
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)
        if not direct:
            return
        if not self.flow_active or self.app.consumer_generation_id != generation:
            # A rebalance began while this fetch was read (``_add_gap`` yields): its revocation
            # may already have waited for what was in flight. Nothing of these was tracked or
            # read, and the seek after the rebalance fetches them again.
            return
        await self._hand_over(direct)

    async def _hand_over(self, direct: dict[BatchHandler, list[Any]]) -> None:
        """Run each handler on its messages, acking each handler's messages for the next commit as
        soon as it returns.

        Tracked, read and started with no await in between, and shielded: once taken, a batch
        runs to its end even if a rebalance cancels this fetch loop (``suspend_flow``), so the
        rebalance's ``wait_empty`` sees every tracked message acked, and a batch's state is never
        left half applied in memory. The next fetch waits for every handler: one slow agent holds
        up the others (as a full stream buffer did not), which keeps a partition's batches
        strictly one after another across rebalances.
        """
        set_read_offset = self._read_offset.__setitem__
        inbound = self.app.monitor.stream_inbound_time
        now = monotonic()
        for messages in direct.values():
            for message in messages:
                self.track_message(message)
                set_read_offset(message.tp, message.offset)
                # Faust's stalled-stream check reads when each partition last had input taken.
                inbound[message.tp] = now
        running: set[asyncio.Future[Any]] = self.__dict__.setdefault("_running", set())
        task = asyncio.ensure_future(
            asyncio.gather(*(self._run_handler(handler, messages) for handler, messages in direct.items()))
        )
        running.add(task)  # held: a shielded task outlives the cancelled wait on it
        task.add_done_callback(running.discard)
        await asyncio.shield(task)

    async def _run_handler(self, handler: BatchHandler, messages: list[Any]) -> None:
        await handler(messages)  # a failing handler exits the process (streams/app.py)
        for message in messages:
            self.ack(message)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in the worker
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                batch = cast(AsyncIterator[Any], getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(aiokafka_driver.Transport):
    Consumer = BatchDrainConsumer


class LeanMonitor(Monitor):
    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.messages_received_total += 1

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass
