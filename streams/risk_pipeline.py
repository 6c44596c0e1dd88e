"""The risk slice: scores, labels and nudges from the events engagement applied, in the runner's
at-least-once order (streams/runner.py).

Everything the state records as done goes first and is acked by Kafka: resolved labels (for
the trainer), delivered notifications (`notifications`, for the channel adapters) and the
analytics reports. Then the state itself (acked), so a crash can only resend one of those, which
its receiver drops by id (label id, notification id, report id). Then `risk-scores`, the Redis
views (risk, inbox) and the pushes (`admin:at-risk`, the user's in-app notifications).

The event path and the sweep (a timer) share one lock: each computes and persists under it (the
runner holds the slice's ``lock`` from ``process`` to the end of ``persist``), so neither flushes
a state whose labels the other has not yet sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Sequence
from collections.abc import Set as AbstractSet

import orjson

from infra import keys, topics
from infra.channels import Outgoing
from infra.commands import RESULT_TTL_S, RISK_COMMANDS, RISK_RECALCULATE, RISK_RECALCULATE_PARTITION
from models.career_notices import MatchNews, Notice, StatusNews, match_notices, status_notice
from models.channels import AT_RISK_CHANNEL, user_channel
from models.events import MAX_ID_LEN, InvalidEvent, check_id, format_ts
from models.interventions import Notification
from models.nudges import Celebration, celebrations_for
from models.risk_state import RiskState
from streams import metrics
from streams.career import CareerOutcome
from streams.career_pipeline import CareerSlice
from streams.delivery import Outbound, Send, deliver_refusals, send_durably, write_until_redis_answers
from streams.engagement import Applied, BatchOutcome
from streams.engagement_pipeline import NAME as ENGAGEMENT
from streams.records import Record, apply_guarded
from streams.risk import RiskOutcome, RiskProcessor, resolution_message
from streams.runner import SliceBase, Upstream
from streams.serving import Serving
from streams.stores import Store
from streams.user_context import BoardStanding, PeerActivity

#: A command id: "risk-recalc:…" and a uuid, or an admin's request id (api/routes/risk.py).
MAX_COMMAND_ID_BYTES = 2 * MAX_ID_LEN


class RiskSlice(SliceBase):
    name = "risk"
    #: Recalculation commands (infra.commands.RISK_COMMANDS); the growth slice takes the rest.
    topics = frozenset({topics.USER_COMMANDS})
    reads = (ENGAGEMENT, CareerSlice.name)

    def __init__(
        self,
        processor: RiskProcessor,
        store: Store[RiskState],
        serving: Serving,
        send: Send,
        streak_milestones: Collection[int],
        peers: PeerActivity | None = None,
        standings: BoardStanding | None = None,
    ) -> None:
        self.processor = processor
        self.store = store
        self.serving = serving
        self.send = send
        self.streak_milestones = streak_milestones
        self.peers = peers
        self.standings = standings
        #: Held by the runner from ``process`` to the end of ``persist``, and by the sweep.
        self.exclusive = asyncio.Lock()
        self.lock = self.exclusive
        #: Partitions whose users are on the sweep's agenda.
        self.scheduled: set[int] = set()

    def process(self, records: Sequence[Record], upstream: Upstream) -> RiskOutcome | None:
        """Score the users engagement applied events for, celebrate what they achieved, and tell
        users the news of their applications and matches (the career slice's outcome)."""
        engagement: BatchOutcome | None = upstream.get(ENGAGEMENT)
        notices = career_notices(upstream.get(CareerSlice.name))
        applied = engagement.applied if engagement is not None else []
        commands = [r for r in records if r.topic == topics.USER_COMMANDS]
        if not applied and not notices and not commands:
            return None
        outcome = self._events(applied, notices) if applied or notices else RiskOutcome()
        for rec in commands:
            apply_guarded(rec, lambda r: self._command(r, outcome), outcome.dead_letters)
        return outcome if outcome else None

    def _command(self, rec: Record, outcome: RiskOutcome) -> None:
        """A recalculation (infra.commands.RISK_COMMANDS); other commands are growth's."""
        try:
            cmd = orjson.loads(rec.value or b"")
        except orjson.JSONDecodeError:
            return  # growth dead-letters what is not JSON: one dead letter per record
        if not isinstance(cmd, dict) or cmd.get("type") not in RISK_COMMANDS:
            return
        command_id = cmd.get("command_id")
        if not isinstance(command_id, str) or not command_id or not command_id.isprintable():
            raise InvalidEvent("missing_field", "command_id is required")
        if len(command_id.encode("utf-8", "surrogatepass")) > MAX_COMMAND_ID_BYTES:
            raise InvalidEvent("id_too_long", f"command_id is longer than {MAX_COMMAND_ID_BYTES} bytes")
        if cmd["type"] == RISK_RECALCULATE:
            user_id = cmd.get("user_id")
            if not isinstance(user_id, str):
                raise InvalidEvent("missing_field", "user_id is required")
            check_id(user_id, "user_id")
            if self.processor.partition_of(user_id) != rec.partition:
                # Sent with another partitioner or partition count: this worker does not own the
                # user's state, so it cannot score them. Said, not dropped: the API reports it.
                answer = {
                    "ok": False,
                    "code": "misrouted",
                    "message": "the command reached another partition",
                }
            else:
                answer = self.processor.recalculate(user_id, self.store, outcome)
            outcome.answers.append((command_id, answer))
            return
        assert cmd["type"] == RISK_RECALCULATE_PARTITION  # RISK_COMMANDS has two types
        partition = cmd.get("partition")
        if isinstance(partition, bool) or not isinstance(partition, int) or partition != rec.partition:
            raise InvalidEvent("bad_partition", "partition must be the partition the command is on")
        queued = self.processor.queue_recalculation(self.store.states_of({partition}))
        answer = {
            "ok": True,
            "partition": partition,
            "queued": queued,
            "as_of_ms": self.processor.watermarks.get(partition),
        }
        outcome.answers.append((command_id, answer))

    def _events(self, applied: Sequence[Applied], notices: dict[str, list[Notice]]) -> RiskOutcome:
        achieved: dict[str, list[Celebration]] = {}
        for a in applied:
            found = celebrations_for(a.event.user_id, a.effects, self.streak_milestones)
            if found:
                achieved.setdefault(a.event.user_id, []).extend(found)
        events = [(a.event, a.effects.xp_gained) for a in applied]
        return self.processor.on_events(events, self.store, achieved, notices)

    async def persist(self, outcome: RiskOutcome) -> None:
        await self._persist(outcome)
        metrics.RISK_SCORES.labels("event").inc(len(outcome.scores))

    async def deliver(self, records: Sequence[Record], outcome: RiskOutcome) -> None:
        await deliver_refusals(self.send, outcome.dead_letters)
        await self.publish(outcome)
        if outcome.answers:
            # Last: an API that sees the answer sees the view it implies.
            docs = [(keys.command_result(cid), orjson.dumps(answer)) for cid, answer in outcome.answers]
            await write_until_redis_answers(lambda: self.serving.set_expiring(docs, RESULT_TTL_S))

    async def sweep_partitions(self, active: set[int], campaigns_changed: bool) -> RiskOutcome:
        """Re-score the users of ``active`` partitions that are due by stream time. Newly owned
        partitions' users join the agenda first; a campaign change moves everyone's next look."""
        owned_partition = self.processor.partition_of

        def owned(user_id: str) -> bool:
            return owned_partition(user_id) in active

        if active != self.scheduled or campaigns_changed:
            self.processor.forget(owned)
            joining = active if campaigns_changed else active - self.scheduled
            self.processor.schedule(self.store.states_of(joining))
            self.scheduled = set(active)
            self.processor.adopt_watermark(self.store.states_of(active))
        if self.peers is not None and active:
            self.peers.refresh(self.store.states_of(active), self.processor.stream_time(active))
        if self.standings is not None and active:
            self.standings.refresh(active, self.processor.stream_time(active))
        return await self.sweep(owned)

    async def sweep(self, owned: Callable[[str], bool]) -> RiskOutcome:
        async with self.exclusive:
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
            (topics.RISK_LABELS, r.pending.user_id.encode(), orjson.dumps(resolution_message(r)), 0)
            for r in outcome.resolutions
        ]
        durable.extend(
            (topics.NOTIFICATIONS, n.user_id.encode(), orjson.dumps(notification_message(n)), None)
            for n in outcome.delivered
        )
        durable.extend(
            (topics.INTERVENTION_OUTCOMES, None, orjson.dumps(report), 0) for report in outcome.feedback
        )
        await send_durably(self.send, durable)
        for n in outcome.delivered:
            metrics.NOTIFICATIONS_SENT.labels(n.type, n.primary_channel).inc()
        for r in outcome.resolutions:
            metrics.RISK_LABELS.labels(str(r.label)).inc()
        await self.store.flush(durable=True)

    async def publish(self, outcome: RiskOutcome) -> None:
        for _, document in outcome.published:
            await self.send(topics.RISK_SCORES, document["user_id"].encode(), orjson.dumps(document), None)
        documents = [d for _, d in outcome.published] + outcome.refreshed
        await write_until_redis_answers(lambda: self.write_views(documents, outcome))
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

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        states = self.store.states_of(partitions)
        await self.project(states)
        return len(states)

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


def career_notices(career: CareerOutcome | None) -> dict[str, list[Notice]]:
    """Each user's career news of the batch: changed application statuses and new matches."""
    if career is None:
        return {}
    out: dict[str, list[Notice]] = {}
    for update in career.status_updates:
        if not update.change.changed:
            continue
        app, event = update.application, update.event
        news = StatusNews(
            app.user_id,
            app.application_id,
            app.status,
            event.ts_ms,
            update.job_title,
            update.company,
            event.note,
        )
        notice = status_notice(news)
        if notice is not None:
            out.setdefault(app.user_id, []).append(notice)
    matches: dict[str, list[MatchNews]] = {}
    for alert in career.alerts:
        m = alert.match
        matches.setdefault(alert.user_id, []).append(
            MatchNews(
                alert.user_id,
                m.job_id,
                m.title,
                m.company,
                m.match_score,
                m.is_perfect,
                alert.at_ms,
                alert.location,
                m.deadline_ms,
            )
        )
    for user_id, found in matches.items():
        out.setdefault(user_id, []).extend(match_notices(found))
    return {user: notices for user, notices in out.items() if notices}


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
        **({"html": n.html} if n.html else {}),
    }
