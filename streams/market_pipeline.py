"""The postings and market slices: forward valid postings to the market, keep the book, fan each
posting out to every user partition, publish the pulse."""

from __future__ import annotations

import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import orjson

from infra import keys, topics
from infra.channels import Outgoing
from models.channels import MARKET_CHANNEL
from models.events import JobPosting
from streams import metrics
from streams.delivery import Send, deliver_refusals, send_durably
from streams.market import ForwardOutcome, MarketOutcome, MarketProcessor, validate_postings
from streams.records import Record
from streams.runner import SliceBase, Upstream
from streams.serving import Serving
from streams.stores import Store


class PostingsSlice(SliceBase):
    """``job-postings`` → validated, canonical postings on the single-partition market topic."""

    name = agent = "postings"
    topics = frozenset({topics.JOB_POSTINGS})

    def __init__(self, send: Send) -> None:
        self.send = send

    def process(self, records: Sequence[Record], upstream: Upstream) -> ForwardOutcome | None:
        return validate_postings(records, int(time.time() * 1000)) if records else None

    async def deliver(self, records: Sequence[Record], outcome: ForwardOutcome) -> None:
        await deliver_refusals(self.send, outcome.dead_letters)
        for key, value in outcome.forwards:
            await self.send(topics.MARKET, key, value, 0)
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()


class MarketSlice(SliceBase):
    name = agent = "market"
    topics = frozenset({topics.MARKET})

    def __init__(
        self,
        processor: MarketProcessor,
        jobs: Store[JobPosting],
        serving: Serving,
        send: Send,
        fanout_partitions: int,
    ) -> None:
        self.processor = processor
        self.jobs = jobs
        self.serving = serving
        self.send = send
        self.fanout_partitions = fanout_partitions

    def process(self, records: Sequence[Record], upstream: Upstream) -> MarketOutcome | None:
        return self.processor.process(records, self.jobs) if records else None

    async def persist(self, outcome: MarketOutcome) -> None:
        # The jobs table records a posting as seen: its copies must be in Kafka before it is.
        await send_durably(
            self.send,
            [
                (topics.JOB_FANOUT, posting.job_id.encode(), orjson.dumps(posting.to_dict()), partition)
                for posting in outcome.changed
                for partition in range(self.fanout_partitions)
            ],
        )
        await self.jobs.flush()

    async def deliver(self, records: Sequence[Record], outcome: MarketOutcome) -> None:
        await deliver_refusals(self.send, outcome.dead_letters)
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        if any(topic == topics.MARKET for topic, _ in partitions):
            self.processor.unload()  # the book is loaded from the table again if it comes back

    def views_lost(self) -> None:
        """Redis was wiped: the next pulse is published even if the book has not changed."""
        self.processor.dirty = True

    async def expire(self, now_ms: int) -> None:
        """Drop closed postings from the book and tombstone them in ``jobs``."""
        if self.processor.expire(self.jobs, now_ms):
            await self.jobs.flush()

    async def publish_pulse(self, now_ms: int) -> bool:
        """Publish the pulse if the book changed: every scope into Redis, the whole market on
        the ``market`` channel and topic. Called on a one-second timer, so the channel carries
        at most one pulse a second however fast postings arrive. The book is loaded from the
        ``jobs`` table first if this worker just took the market over."""
        processor = self.processor
        if not processor.loaded:
            processor.load(self.jobs)
        if not processor.dirty:
            return False
        # Cleared first so a batch landing while this awaits marks the book dirty again.
        processor.dirty = False
        try:
            book = processor.book
            book.evict(now_ms)
            pulses = {keys.market_scope(loc, ind): book.pulse(now_ms, loc, ind) for loc, ind in book.scopes()}
            overall = pulses[keys.market_scope(None, None)] = book.pulse(now_ms)
            await self.serving.replace_hash(
                keys.MARKET_PULSE, {k: orjson.dumps(v) for k, v in pulses.items()}
            )
            await self.serving.write_documents([], [], [Outgoing(MARKET_CHANNEL, "market_pulse", overall)])
            await self.send(topics.MARKET_PULSE, b"all", orjson.dumps(overall), None)
        except BaseException:
            processor.dirty = True  # try again on the next tick
            raise
        metrics.MARKET_PULSES.inc()
        return True
