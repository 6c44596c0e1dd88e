"""Growth records end to end, in the at-least-once order of ``streams.pipeline``: state to the
changelog, then messages to Kafka, then the Redis views and pushes, and the command answers
last, so an API that sees an answer also sees the views it implies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from infra import keys
from infra.channels import Outgoing
from infra.commands import RESULT_TTL_S
from models.growth import GrowthState
from streams import metrics
from streams.engagement import BEHAVIOR_TOPIC, BatchOutcome
from streams.growth import REFERRALS_TOPIC, GrowthOutcome, GrowthProcessor
from streams.pipeline import (
    NOTIFICATIONS_TOPIC,
    Outbound,
    Send,
    deliver_refusals,
    send_durably,
    write_until_redis_answers,
)
from streams.records import Record, owner_partition
from streams.serving import ServingWriter
from streams.tables import TableStore


class GrowthPipeline:
    agent = "engagement"

    def __init__(
        self,
        processor: GrowthProcessor,
        store: TableStore[GrowthState],
        serving: ServingWriter,
        send: Send,
        partitions: int,
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send
        self.partitions = partitions

    async def handle(self, records: Sequence[Record], engagement: BatchOutcome | None) -> GrowthOutcome:
        outcome = await self.persist(records, engagement)
        await self.publish(records, outcome)
        return outcome

    async def persist(self, records: Sequence[Record], engagement: BatchOutcome | None) -> GrowthOutcome:
        """Apply, then make the state and what it records as done durable in Kafka."""
        applied = (
            [(a.event, engagement.touched[a.event.user_id]) for a in engagement.applied] if engagement else []
        )
        outcome = self.processor.process(records, applied, self.store)
        # Referral messages and milestone actions are recorded as done in the state: in Kafka first.
        durable: list[Outbound] = []
        for referrer, message in outcome.referral_messages:
            key = referrer.encode()
            durable.append(
                (REFERRALS_TOPIC, key, orjson.dumps(message), owner_partition(key, self.partitions))
            )
        for action in outcome.actions:
            key = action["user_id"].encode()
            durable.append((BEHAVIOR_TOPIC, key, orjson.dumps(action), owner_partition(key, self.partitions)))
        await send_durably(self.send, durable)
        # Durably too: the engagement changelog written after this marks these events as seen, and
        # a replay would no longer bring them here (streams.app runs growth before it).
        await self.store.flush(durable=True)
        return outcome

    async def publish(self, records: Sequence[Record], outcome: GrowthOutcome) -> None:
        """Everything else: refusals, notifications, Redis views and pushes, command answers."""
        await deliver_refusals(self.send, outcome.dead_letters, outcome.misrouted)
        for redemption in outcome.redemptions:
            note = {"type": "reward_redeemed", **redemption}
            await self.send(NOTIFICATIONS_TOPIC, redemption["user_id"].encode(), orjson.dumps(note), None)
        await write_until_redis_answers(lambda: self.write_views(outcome.touched.values(), outcome))
        if outcome.answers:
            await write_until_redis_answers(lambda: self._write_answers(outcome.answers))
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()

    async def _write_answers(self, answers: list[tuple[str, dict[str, Any]]]) -> None:
        async with self.serving.redis.pipeline(transaction=False) as pipe:
            for command_id, answer in answers:
                pipe.set(keys.command_result(command_id), orjson.dumps(answer), ex=RESULT_TTL_S)
            await pipe.execute()

    async def project(self, states: Iterable[GrowthState]) -> None:
        """Rewrite the views of ``states`` (a rebuild after Redis was lost), in short calls."""
        chunk: list[GrowthState] = []
        for state in states:
            chunk.append(state)
            if len(chunk) >= 500:
                await self.write_views(chunk, None)
                chunk = []
        await self.write_views(chunk, None)

    async def write_views(self, states: Iterable[GrowthState], outcome: GrowthOutcome | None) -> None:
        """The rewards, referral and growth views of ``states``, in one call with the pushes."""
        sets: list[tuple[str, str]] = []
        hsets: list[tuple[str, str, str]] = []
        for state in states:
            uid = state.user_id
            sets.append((keys.user_rewards(uid), orjson.dumps(state.ledger.to_dict()).decode()))
            sets.append((keys.user_referrals(uid), orjson.dumps(state.referrals_view()).decode()))
            sets.append((keys.user_growth(uid), orjson.dumps(state.growth_view()).decode()))
            if state.book is not None and (outcome is None or uid in outcome.changed_books):
                hsets.append((keys.REFERRAL_BOOKS, uid, orjson.dumps(state.book.to_dict()).decode()))
        messages = [
            Outgoing(f"user:{p.user_id}", p.type, p.data, p.dedup_key)
            for p in (outcome.pushes if outcome else [])
        ]
        await self.serving.write_documents(sets, hsets, messages)
