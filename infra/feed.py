"""Follow a one-partition broadcast topic from its start, outside any consumer group.

A consumer group hands each partition to one member; a broadcast (the latest risk model, the
campaign definitions) must reach every worker, so each process reads the whole topic on its own.
The topics are compacted and keyed, so "the whole topic" is about one record per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from infra.kafka_auth import client_security
from infra.signing import RecordSigner

log = logging.getLogger(__name__)

#: Called with (key, value, offset) for each record, in offset order; must not raise for bad input
#: (log and skip it): one bad record must not stop the feed.
OnRecord = Callable[[bytes | None, bytes | None, int], None]
#: Called with (key, offset) for each record refused for want of the engine's signature.
OnForged = Callable[[bytes | None, int], None]


class TopicFeed:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_record: OnRecord,
        *,
        signer: RecordSigner,
        on_forged: OnForged,
        poll_ms: int = 200,
    ) -> None:
        self.bootstrap = bootstrap
        self.tp = TopicPartition(topic, 0)
        self.on_record = on_record
        self.signer = signer
        self.on_forged = on_forged
        self.poll_ms = poll_ms
        self.position = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self._started = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **client_security(),
        )
        await consumer.start()
        consumer.assign([self.tp])
        await consumer.seek_to_beginning(self.tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(), name=f"feed:{self.tp.topic}")
        self._started.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(self.tp, timeout_ms=self.poll_ms)
            except KafkaError as exc:
                log.warning("feed %s: fetch failed (%s); retrying", self.tp.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for record in batches.get(self.tp, ()):
                if self.signer.verify(record.topic, record.key, record.value, record.headers):
                    self.on_record(record.key, record.value, record.offset)
                else:
                    self.on_forged(record.key, record.offset)
            self.position = await self._consumer.position(self.tp)
            self._progress.set()
            self._progress.clear()

    async def caught_up(self, timeout: float = 30.0) -> bool:
        """Wait until every record that existed when called has been handed to `on_record`.

        May be called before `start` has run (an agent can get its first batch before the
        worker's start-up task starts the feed): it waits for the start first."""
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._started.wait(), timeout)
        except TimeoutError:
            return False
        assert self._consumer is not None
        end = (await self._consumer.end_offsets([self.tp]))[self.tp]
        while self.position < end:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        return True


async def read_range(
    bootstrap: str, tp: TopicPartition, start: int, end: int, signer: RecordSigner
) -> list[tuple[int, bytes | None]]:
    """(offset, value) of the records of `tp` in [start, end) that carry the engine's signature
    (a forged one is left out): a tail to replay on restore."""
    if start >= end:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client_security()
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[tuple[int, bytes | None]] = []
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=500)
            out.extend(
                (r.offset, r.value)
                for r in batches.get(tp, ())
                if r.offset < end and signer.verify(r.topic, r.key, r.value, r.headers)
            )
        return out
    finally:
        await consumer.stop()
