"""The growth slice, in the runner's at-least-once order (streams/runner.py): every record the
state marks as done (referral messages, milestone actions, redeemed perks for fulfilment) acked by
Kafka first, then the state's changelog, then the Redis views and pushes, and the command answers
last, so an API that sees an answer also sees the views it implies.

A crash between the acks and the changelog re-runs the batch on the old state, which sends the
same records again with the same ids; their consumers apply each once (event ids, the referral
book, ``redemption_id``). The other order would lose them: the state would say done, and a
replay would skip them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import orjson

from infra import keys, topics
from infra.channels import Outgoing
from infra.commands import RESULT_TTL_S
from models.channels import user_channel
from models.growth import GrowthState
from streams import metrics
from streams.delivery import (
    Outbound,
    Send,
    deliver_refusals,
    send_durably,
    write_until_redis_answers,
)
from streams.engagement import BatchOutcome
from streams.engagement_pipeline import NAME as ENGAGEMENT
from streams.growth import GrowthOutcome, GrowthProcessor
from streams.records import Record, owner_partition
from streams.runner import SliceBase, Upstream
from streams.serving import Serving
from streams.stores import Store


class GrowthSlice(SliceBase):
    name = "growth"
    topics = frozenset({topics.USER_COMMANDS, topics.REFERRALS})
    reads = (ENGAGEMENT,)
    agent = "engagement"

    def __init__(
        self,
        processor: GrowthProcessor,
        store: Store[GrowthState],
        serving: Serving,
        send: Send,
        partitions: int,
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send
        self.partitions = partitions

    def process(self, records: Sequence[Record], upstream: Upstream) -> GrowthOutcome | None:
        """Commands and referral messages, and the events engagement applied (challenges, goals,
        referral milestones)."""
        engagement: BatchOutcome | None = upstream.get(ENGAGEMENT)
        applied = (
            [(a.event, engagement.touched[a.event.user_id]) for a in engagement.applied] if engagement else []
        )
        if not records and not applied:
            return None
        return self.processor.process(records, applied, self.store)

    async def persist(self, outcome: GrowthOutcome) -> None:
        """Referral messages, milestone actions and redeemed perks are recorded as done in the
        state: acked by Kafka first, then the state."""
        durable: list[Outbound] = []
        for referrer, message in outcome.referral_messages:
            key = referrer.encode()
            durable.append(
                (topics.REFERRALS, key, orjson.dumps(message), owner_partition(key, self.partitions))
            )
        for action in outcome.actions:
            key = action["user_id"].encode()
            durable.append(
                (topics.BEHAVIOR_EVENTS, key, orjson.dumps(action), owner_partition(key, self.partitions))
            )
        for redemption in outcome.redemptions:
            durable.append(
                (
                    topics.NOTIFICATIONS,
                    redemption["user_id"].encode(),
                    orjson.dumps(fulfilment(redemption)),
                    None,
                )
            )
        await send_durably(self.send, durable)
        # Durably too: the engagement changelog written after this marks these events as seen, and
        # a replay would no longer bring them here.
        await self.store.flush(durable=True)

    async def deliver(self, records: Sequence[Record], outcome: GrowthOutcome) -> None:
        """Everything else: refusals, notifications, Redis views and pushes, command answers."""
        await deliver_refusals(self.send, outcome.dead_letters, outcome.misrouted)
        await write_until_redis_answers(lambda: self.write_views(outcome.touched.values(), outcome))
        if outcome.answers:
            await write_until_redis_answers(lambda: self._write_answers(outcome.answers))
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()

    async def _write_answers(self, answers: list[tuple[str, dict[str, Any]]]) -> None:
        docs = [(keys.command_result(command_id), orjson.dumps(answer)) for command_id, answer in answers]
        await self.serving.set_expiring(docs, RESULT_TTL_S)

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        states = self.store.states_of(partitions)
        await self.project(states)
        return len(states)

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
        """The rewards, referral and growth views of ``states``, in one call with the pushes, and
        the code -> user map of their referral books (so a wiped Redis gets its codes back)."""
        sets: list[tuple[str, str]] = []
        hsets: list[tuple[str, str, str]] = []
        codes: list[tuple[str, str]] = []
        for state in states:
            uid = state.user_id
            sets.append((keys.user_rewards(uid), orjson.dumps(state.ledger.to_dict()).decode()))
            sets.append((keys.user_referrals(uid), orjson.dumps(state.referrals_view()).decode()))
            sets.append((keys.user_growth(uid), orjson.dumps(state.growth_view()).decode()))
            if state.book is not None and (outcome is None or uid in outcome.changed_books):
                hsets.append((keys.REFERRAL_BOOKS, uid, orjson.dumps(state.book.to_dict()).decode()))
                if state.book.code:
                    codes.append((state.book.code, uid))
        messages = [
            Outgoing(user_channel(p.user_id), p.type, p.data, p.dedup_key)
            for p in (outcome.pushes if outcome else [])
        ]
        await self.serving.write_documents(sets, hsets, messages)
        if codes:
            await self._map_codes(codes)

    async def _map_codes(self, codes: list[tuple[str, str]]) -> None:
        """``referral_code(code) -> user``, as the API's generate route writes it: NX, so the
        first owner of a code keeps it (40-bit codes can collide; the API refuses the second
        user, who then never has a book with that code)."""
        await self.serving.set_if_absent([(keys.referral_code(code), user_id) for code, user_id in codes])


def fulfilment(redemption: dict[str, Any]) -> dict[str, Any]:
    """The ``notifications`` record asking the platform to fulfil a redeemed perk. At least once:
    the consumer applies it once per ``redemption_id`` (also its ``idempotency_key``)."""
    return {
        "type": "reward_redeemed",
        **redemption,
        "idempotency_key": f"redeem:{redemption['redemption_id']}",
    }
