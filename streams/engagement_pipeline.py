"""The engagement slice: behaviour and profile records to XP, levels, streaks, badges and
leaderboards; one ``engagement-updates`` message, one Redis view and one push per user per batch.

Its changelog marks a batch's events as seen, so it persists last (streams/runner.py): growth and
risk read the events it applied and persist before it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import orjson

from infra import topics
from models.gamification import UserState
from streams import metrics
from streams.delivery import Send, deliver_refusals, write_until_redis_answers
from streams.engagement import BatchOutcome, EngagementProcessor
from streams.records import Record
from streams.runner import SliceBase, Upstream
from streams.serving import Serving, engagement_message
from streams.stores import Store

NAME = "engagement"


class EngagementSlice(SliceBase):
    name = NAME
    topics = frozenset({topics.BEHAVIOR_EVENTS, topics.USER_PROFILES})

    def __init__(
        self, processor: EngagementProcessor, store: Store[UserState], serving: Serving, send: Send
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send

    def process(self, records: Sequence[Record], upstream: Upstream) -> BatchOutcome | None:
        if not records:
            return None
        started = time.perf_counter()
        outcome = self.processor.process(records, self.store)
        outcome.started = started
        return outcome

    async def persist(self, outcome: BatchOutcome) -> None:
        # Handed to the producer, not awaited: the batch's commit waits for it (Faust flushes the
        # producer first, or the batch's transaction holds it), and nothing persists after it.
        await self.store.flush()

    async def deliver(self, records: Sequence[Record], outcome: BatchOutcome) -> None:
        await deliver_refusals(self.send, outcome.dead_letters, outcome.misrouted)
        # One engagement message per user per batch, for the output topic and the user's channel.
        updates = {
            user_id: engagement_message(outcome.touched[user_id], applied, self.processor.rules)
            for user_id, applied in outcome.applied_by_user().items()
        }
        for user_id, msg in updates.items():
            await self.send(topics.ENGAGEMENT_UPDATES, user_id.encode(), orjson.dumps(msg), None)
        await write_until_redis_answers(lambda: self.serving.write(outcome, updates))
        self._observe(records, outcome)

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        return await self.serving.project(self.store.states_of(partitions))

    def _observe(self, records: Sequence[Record], outcome: BatchOutcome) -> None:
        done = time.time()
        counts: dict[str, int] = {}
        latency = metrics.PROCESSING_LATENCY.labels(NAME)
        for rec in records:
            counts[rec.topic] = counts.get(rec.topic, 0) + 1
            latency.observe(max(0.0, done - rec.timestamp_ms / 1000))
        for topic, n in counts.items():
            metrics.EVENTS_PROCESSED.labels(NAME, topic).inc(n)
        if outcome.duplicates:
            metrics.EVENTS_DUPLICATE.labels(NAME).inc(outcome.duplicates)
        metrics.BATCH_SIZE.labels(NAME).observe(len(records))
        metrics.BATCH_DURATION.labels(NAME).observe(time.perf_counter() - outcome.started)
