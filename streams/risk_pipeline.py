"""Risk outcomes delivered, in the at-least-once order of ``streams.pipeline``.

Labels first (acked by Kafka), then the risk state that records them as resolved (acked), so a
crash can only resend a label, which the trainer drops by its id; then `risk-scores`, the Redis
view and the `admin:at-risk` pushes. The event path and the sweep (a timer) share one lock: each
computes and persists in one go, so neither flushes a state whose labels the other has not yet
sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import orjson

from infra import keys
from infra.channels import Outgoing
from models.events import BehaviorEvent
from models.risk_state import RiskState
from streams import metrics
from streams.pipeline import Outbound, Send, send_durably, write_until_redis_answers
from streams.risk import RISK_LABELS_TOPIC, RISK_SCORES_TOPIC, RiskOutcome, RiskProcessor, resolution_message
from streams.serving import ServingWriter
from streams.tables import TableStore

AT_RISK_CHANNEL = "admin:at-risk"


class RiskPipeline:
    def __init__(
        self, processor: RiskProcessor, store: TableStore[RiskState], serving: ServingWriter, send: Send
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send
        self.lock = asyncio.Lock()

    async def on_events(self, events: Iterable[tuple[BehaviorEvent, int]]) -> RiskOutcome:
        """Apply a batch's events and persist (the caller publishes after its own state)."""
        async with self.lock:
            outcome = self.processor.on_events(events, self.store)
            await self._persist(outcome)
        metrics.RISK_SCORES.labels("event").inc(len(outcome.scores))
        return outcome

    async def sweep(self, owned: Callable[[str], bool]) -> RiskOutcome:
        async with self.lock:
            outcome = self.processor.sweep(self.store, owned)
            if outcome:
                await self._persist(outcome)
        metrics.RISK_SCORES.labels("sweep").inc(len(outcome.scores))
        metrics.RISK_SWEEP_DUE.set(self.processor.due_count)
        if outcome:
            await self.publish(outcome)
        return outcome

    async def _persist(self, outcome: RiskOutcome) -> None:
        labels: list[Outbound] = [
            (RISK_LABELS_TOPIC, r.pending.user_id.encode(), orjson.dumps(resolution_message(r)), 0)
            for r in outcome.resolutions
        ]
        await send_durably(self.send, labels)
        for r in outcome.resolutions:
            metrics.RISK_LABELS.labels(str(r.label)).inc()
        await self.store.flush(durable=True)

    async def publish(self, outcome: RiskOutcome) -> None:
        for _, document in outcome.published:
            await self.send(RISK_SCORES_TOPIC, document["user_id"].encode(), orjson.dumps(document), None)
        await write_until_redis_answers(lambda: self.write_views([d for _, d in outcome.published], outcome))

    async def write_views(self, documents: Iterable[dict[str, object]], outcome: RiskOutcome | None) -> None:
        sets: list[tuple[str, str]] = []
        board: list[str] = []
        for document in documents:
            user_id = str(document["user_id"])
            sets.append((keys.user_risk(user_id), orjson.dumps(document).decode()))
            board.extend((str(document["score"]), user_id))
        messages = [
            Outgoing(AT_RISK_CHANNEL, "risk", doc, f"risk:{doc['user_id']}:{doc['updated_at']}")
            for doc in (outcome.at_risk if outcome else ())
        ]
        await self.serving.write_documents(sets, [], messages, [(keys.RISK_SCORES, board)] if board else None)

    async def project(self, states: Iterable[RiskState]) -> None:
        """Rewrite the views of ``states`` (a rebuild after Redis was lost), in short calls."""
        chunk: list[dict[str, object]] = []
        for state in states:
            if state.last is not None:
                chunk.append(state.last)
            if len(chunk) >= 1000:
                await self.write_views(chunk, None)
                chunk = []
        await self.write_views(chunk, None)
