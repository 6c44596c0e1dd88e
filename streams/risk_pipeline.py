"""Risk and nudge outcomes delivered, in the at-least-once order of ``streams.pipeline``.

Everything the state records as done goes first and is acked by Kafka: resolved labels (for
the trainer), delivered notifications (`notifications`, for the channel adapters) and the
analytics reports. Then the state itself (acked), so a crash can only resend one of those, which
its receiver drops by id (label id, notification id, report id). Then `risk-scores`, the Redis
views (risk, inbox) and the pushes (`admin:at-risk`, the user's in-app notifications).

The event path and the sweep (a timer) share one lock: each
computes and persists in one go, so neither flushes a state whose labels the other has not yet
sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

import orjson

from infra import keys
from infra.channels import Outgoing
from models.channels import AT_RISK_CHANNEL, user_channel
from models.events import BehaviorEvent, format_ts
from models.interventions import Notification
from models.nudges import Celebration
from models.risk_state import RiskState
from streams import metrics
from streams.pipeline import NOTIFICATIONS_TOPIC, Outbound, Send, send_durably, write_until_redis_answers
from streams.risk import (
    INTERVENTION_OUTCOMES_TOPIC,
    RISK_LABELS_TOPIC,
    RISK_SCORES_TOPIC,
    RiskOutcome,
    RiskProcessor,
    resolution_message,
)
from streams.serving import ServingWriter
from streams.tables import TableStore


class RiskPipeline:
    def __init__(
        self, processor: RiskProcessor, store: TableStore[RiskState], serving: ServingWriter, send: Send
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send
        self.lock = asyncio.Lock()

    async def on_events(
        self,
        events: Iterable[tuple[BehaviorEvent, int]],
        celebrations: Mapping[str, Sequence[Celebration]] | None = None,
    ) -> RiskOutcome:
        """Apply a batch's events and persist (the caller publishes after its own state)."""
        async with self.lock:
            outcome = self.processor.on_events(events, self.store, celebrations)
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
        durable: list[Outbound] = [
            (RISK_LABELS_TOPIC, r.pending.user_id.encode(), orjson.dumps(resolution_message(r)), 0)
            for r in outcome.resolutions
        ]
        durable.extend(
            (NOTIFICATIONS_TOPIC, n.user_id.encode(), orjson.dumps(notification_message(n)), None)
            for n in outcome.delivered
        )
        durable.extend(
            (INTERVENTION_OUTCOMES_TOPIC, None, orjson.dumps(report), 0) for report in outcome.feedback
        )
        await send_durably(self.send, durable)
        for n in outcome.delivered:
            metrics.NOTIFICATIONS_SENT.labels(n.type, n.primary_channel).inc()
        for r in outcome.resolutions:
            metrics.RISK_LABELS.labels(str(r.label)).inc()
        await self.store.flush(durable=True)

    async def publish(self, outcome: RiskOutcome) -> None:
        for _, document in outcome.published:
            await self.send(RISK_SCORES_TOPIC, document["user_id"].encode(), orjson.dumps(document), None)
        await write_until_redis_answers(lambda: self.write_views([d for _, d in outcome.published], outcome))
        if outcome.inbox_changed or outcome.delivered:
            await write_until_redis_answers(lambda: self.write_inboxes(outcome))

    async def write_inboxes(self, outcome: RiskOutcome) -> None:
        """The changed users' inbox views, and a push on `user:{id}` per in-app notification."""
        sets = [
            (keys.user_notifications(uid), orjson.dumps(inbox_view(outcome.touched[uid])).decode())
            for uid in outcome.inbox_changed
            if uid in outcome.touched
        ]
        pushes = [
            Outgoing(user_channel(n.user_id), "notification", n.public(), f"notification:{n.id}")
            for n in outcome.delivered
            if "IN_APP" in n.channels
        ]
        await self.serving.write_documents(sets, [], pushes)

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
        inboxes: list[tuple[str, str]] = []
        for state in states:
            if state.last is not None:
                chunk.append(state.last)
            if state.notifications.inbox:
                inboxes.append(
                    (keys.user_notifications(state.user_id), orjson.dumps(inbox_view(state)).decode())
                )
            if len(chunk) >= 1000 or len(inboxes) >= 1000:
                await self.write_views(chunk, None)
                await self.serving.write_documents(inboxes, [], [])
                chunk, inboxes = [], []
        await self.write_views(chunk, None)
        await self.serving.write_documents(inboxes, [], [])


def inbox_view(state: RiskState) -> dict[str, object]:
    book = state.notifications
    return {"user_id": state.user_id, "unread": book.unread(), "notifications": book.public()}


def notification_message(n: Notification) -> dict[str, object]:
    """A `notifications` record for the channel adapters: everything needed to send it."""
    return {
        "notification_id": n.id,
        "user_id": n.user_id,
        "type": n.type,
        "channels": list(n.channels) or ["STAFF"],
        "subject": n.subject,
        "body": n.body,
        "cta": n.cta,
        "template": n.template,
        "variant": n.variant,
        "source": n.source,
        "urgency": n.urgency,
        "created_at": format_ts(n.created_ms),
        "deliver_at": format_ts(n.deliver_at_ms),
        "idempotency_key": n.key,
    }
