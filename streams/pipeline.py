"""One batch end to end: apply to state, then deliver every consequence.

The order matters for at-least-once: every consequence (dead letters, re-routed records,
output topic messages, the Redis view and pushes) is handed to the producer or written
before the batch returns, and Faust commits offsets only after the batch returns and the
producer is flushed. A crash anywhere re-delivers the batch; dedup by ``event_id`` makes
that harmless.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from infra import topics
from streams import metrics, redis_faults
from streams.engagement import BatchOutcome, EngagementProcessor, StateStore
from streams.records import DeadLetter, Record
from streams.serving import ServingWriter, engagement_message

log = logging.getLogger(__name__)

DEAD_LETTER_TOPIC = topics.DEAD_LETTER
ENGAGEMENT_TOPIC = topics.ENGAGEMENT_UPDATES
#: Interventions and alerts for channel adapters (email/SMS/push senders), CONTRACT.md §5.
NOTIFICATIONS_TOPIC = topics.NOTIFICATIONS

#: ``send(topic, key, value, partition)``: hand a message to the producer. Awaiting it must
#: not wait for the broker's ack (Faust flushes the producer before committing offsets).
Send = Callable[[str, bytes | None, bytes | None, int | None], Awaitable[Any]]


#: (topic, key, value, partition) of a message to hand to the producer.
Outbound = tuple[str, bytes | None, bytes, int | None]


async def send_durably(send: Send, messages: Sequence[Outbound]) -> None:
    """Send ``messages`` and wait until Kafka has them, before the caller writes its state.

    For consequences the state records as done (an action awarded, a referral message sent, a
    posting fanned out): were the state's changelog record to reach Kafka and not the message, a
    replay would find the work done and never send it. Waiting for the acks first means a crash
    can only leave the message without the state, and the replay sends it again, which the
    receivers dedup (event ids, referral and posting idempotence).
    """
    await await_delivery(
        [await send(topic, key, value, partition) for topic, key, value, partition in messages]
    )


async def await_delivery(sent: Sequence[Any]) -> None:
    """Wait until Kafka has acked every record whose ``send`` returned a delivery future."""
    awaitables = [f for f in sent if inspect.isawaitable(f)]
    if awaitables:
        await asyncio.gather(*awaitables)


async def write_until_redis_answers(write: Callable[[], Awaitable[Any]]) -> None:
    """Run a Redis write of the serving view, retrying with backoff while a retry can help.

    Redis away, slow, failing over or out of memory (infra/redis_errors.py): retried with
    backoff (0.1 s doubling to 5 s) until it answers. Failing the batch would make the worker
    exit (``streams.app``) and, were it not to, Faust would ack the batch anyway; blocking here
    holds the offsets back while Redis cannot take writes (lag grows, /readyz says so), and the
    state is already safe in the changelog. Every write is idempotent, so a retry is harmless.

    An error no retry can fix (WRONGTYPE, any other error reply) is reported (an error log with
    what Redis said, ``elimu_serving_failures_total{action="skipped"}``) and the write skipped,
    so the batch goes on: looping would stall every user for one bad key, and the view is
    rebuildable from the tables.
    """
    delay = 0.1
    while True:
        try:
            await write()
            return
        except (RedisError, OSError) as exc:
            if not redis_faults.report(exc, delay=delay):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def deliver_refusals(
    send: Send, dead_letters: Sequence[DeadLetter], misrouted: Sequence[tuple[Record, bytes, int]] = ()
) -> None:
    """Dead letters to ``dead-letter`` (counted by topic and reason), and records found on a
    partition their owner does not live on back to the owner's partition (counted by topic)."""
    for dl in dead_letters:
        # The Kafka key is bounded like the excerpt: a refused record's key may be the attack.
        await send(DEAD_LETTER_TOPIC, dl.kafka_key(), orjson.dumps(dl.as_dict()), None)
        metrics.DEAD_LETTERS.labels(dl.record.topic, dl.reason).inc()
    for rec, key, owner in misrouted:
        await send(rec.topic, key, rec.value or b"", owner)
        metrics.MISROUTED.labels(rec.topic).inc()


class BufferedStore(StateStore, Protocol):
    async def flush(self) -> None:
        """Hand the batch's state changes to the changelog producer."""


class EngagementPipeline:
    agent = "engagement"

    def __init__(
        self, processor: EngagementProcessor, store: BufferedStore, serving: ServingWriter, send: Send
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send

    async def handle(self, records: Sequence[Record]) -> BatchOutcome:
        return await self.deliver(records, self.process(records))

    def process(self, records: Sequence[Record]) -> BatchOutcome:
        """Apply the batch to state in memory; nothing leaves the process until ``deliver``. (A
        caller may write state derived from the outcome first: see ``streams.app``.)"""
        outcome = self.processor.process(records, self.store)
        outcome.started = time.perf_counter()
        return outcome

    async def deliver(self, records: Sequence[Record], outcome: BatchOutcome) -> BatchOutcome:
        started = outcome.started
        # The changelog first: it is the source of truth, and what must be in the producer before
        # these records' offsets can be committed.
        await self.store.flush()
        await deliver_refusals(self.send, outcome.dead_letters, outcome.misrouted)
        # One engagement message per user per batch, for the output topic and the user's channel.
        updates = {
            user_id: engagement_message(outcome.touched[user_id], applied, self.processor.rules)
            for user_id, applied in outcome.applied_by_user().items()
        }
        for user_id, msg in updates.items():
            await self.send(ENGAGEMENT_TOPIC, user_id.encode(), orjson.dumps(msg), None)
        await self._write_serving(outcome, updates)
        self._observe(records, outcome, started)
        return outcome

    async def _write_serving(self, outcome: BatchOutcome, updates: dict[str, dict[str, Any]]) -> None:
        await write_until_redis_answers(lambda: self.serving.write(outcome, updates))

    def _observe(self, records: Sequence[Record], outcome: BatchOutcome, started: float) -> None:
        done = time.time()
        counts: dict[str, int] = {}
        latency = metrics.PROCESSING_LATENCY.labels(self.agent)
        for rec in records:
            counts[rec.topic] = counts.get(rec.topic, 0) + 1
            latency.observe(max(0.0, done - rec.timestamp_ms / 1000))
        for topic, n in counts.items():
            metrics.EVENTS_PROCESSED.labels(self.agent, topic).inc(n)
        if outcome.duplicates:
            metrics.EVENTS_DUPLICATE.labels(self.agent).inc(outcome.duplicates)
        metrics.BATCH_SIZE.labels(self.agent).observe(len(records))
        metrics.BATCH_DURATION.labels(self.agent).observe(time.perf_counter() - started)
