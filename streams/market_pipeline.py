"""Postings end to end: forward valid ones to the market, keep the book, fan out, publish the pulse."""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson

from infra import keys
from infra.channels import Outgoing
from models.channels import MARKET_CHANNEL
from models.events import JobPosting
from streams import metrics
from streams.career import JOB_FANOUT_TOPIC
from streams.market import MARKET_TOPIC, PULSE_TOPIC, MarketOutcome, MarketProcessor, validate_postings
from streams.pipeline import Send, deliver_refusals, send_durably
from streams.records import Record
from streams.serving import ServingWriter
from streams.tables import TableStore


class PostingsPipeline:
    """``job-postings`` → validated, canonical postings on the single-partition market topic."""

    agent = "postings"

    def __init__(self, send: Send) -> None:
        self.send = send

    async def handle(self, records: Sequence[Record]) -> None:
        outcome = validate_postings(records, int(time.time() * 1000))
        await deliver_refusals(self.send, outcome.dead_letters)
        for key, value in outcome.forwards:
            await self.send(MARKET_TOPIC, key, value, 0)
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()


class MarketPipeline:
    agent = "market"

    def __init__(
        self,
        processor: MarketProcessor,
        jobs: TableStore[JobPosting],
        serving: ServingWriter,
        send: Send,
        fanout_partitions: int,
    ) -> None:
        self.processor = processor
        self.jobs = jobs
        self.serving = serving
        self.send = send
        self.fanout_partitions = fanout_partitions

    async def handle(self, records: Sequence[Record]) -> MarketOutcome:
        outcome = self.processor.process(records, self.jobs)
        # The jobs table records a posting as seen: its copies must be in Kafka before it is.
        await send_durably(
            self.send,
            [
                (JOB_FANOUT_TOPIC, posting.job_id.encode(), orjson.dumps(posting.to_dict()), partition)
                for posting in outcome.changed
                for partition in range(self.fanout_partitions)
            ],
        )
        await self.jobs.flush()
        await deliver_refusals(self.send, outcome.dead_letters)
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()
        return outcome

    async def publish_pulse(self, now_ms: int) -> bool:
        """Publish the pulse if the book changed: every scope into Redis, the whole market on
        the ``market`` channel and topic. Called on a one-second timer, so the channel carries
        at most one pulse a second however fast postings arrive."""
        processor = self.processor
        if not processor.loaded or not processor.dirty:
            return False
        # Cleared first so a batch landing while this awaits marks the book dirty again.
        processor.dirty = False
        try:
            book = processor.book
            book.evict(now_ms)
            pulses = {keys.market_scope(loc, ind): book.pulse(now_ms, loc, ind) for loc, ind in book.scopes()}
            overall = pulses[keys.market_scope(None, None)] = book.pulse(now_ms)
            async with self.serving.redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.MARKET_PULSE)
                pipe.hset(keys.MARKET_PULSE, mapping={k: orjson.dumps(v) for k, v in pulses.items()})
                await pipe.execute()
            await self.serving.write_documents([], [], [Outgoing(MARKET_CHANNEL, "market_pulse", overall)])
            await self.send(PULSE_TOPIC, b"all", orjson.dumps(overall), None)
        except BaseException:
            processor.dirty = True  # try again on the next tick
            raise
        metrics.MARKET_PULSES.inc()
        return True
