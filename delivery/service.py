"""The delivery service: consumes `notifications` in its own consumer group and sends each
notification on its EMAIL, PUSH and SMS channels (docs/notifications.md).

Per batch of records: every send runs concurrently (bounded), each paced by its channel's rate,
retried with backoff on a transient failure up to ``MAX_ATTEMPTS``, then the batch's offsets are
committed. So a slow or dead provider delays its own sends by a bounded time and never holds a
partition forever; a crash before the commit redelivers the batch, and the ledger (Redis) skips
what was already sent. Only committed records are read (``read_committed``): a notification of a
worker transaction that aborted is never sent.

Every record must carry the engine's signature (infra/signing.py): anyone able to write to the
broker could otherwise mail or text any user anything. A record that is unsigned, malformed,
too old to be worth sending, or whose send failed for good goes to `dead-letter` with a reason.
Each send's result goes back to the engine as a signed report on `elimu-intervention-outcomes`
(models/delivery.py ``delivery_report``), counted by the interventions analytics and weighed by
the A/B choice; opens and clicks come back through the tracking links (api/routes/tracking.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from delivery import metrics
from delivery.channels import Channel, Recipient, SendFailed, Sent
from delivery.ledger import Ledger
from delivery.pace import Pace
from infra import keys, topics
from infra.producer import EventProducer
from infra.redis_conn import RedisClient
from infra.signing import RecordSigner
from models.delivery import (
    MAX_ATTEMPTS,
    DeliveryRequest,
    backoff_s,
    delivery_report,
    parse_notification,
    too_late,
)
from models.events import InvalidEvent
from models.interventions.policy import STAFF_CHANNEL
from models.push import PushSubscription, stored_subscription
from streams.records import DeadLetter, Record

log = logging.getLogger(__name__)

#: The consumer group of every delivery service process (scale out by starting more).
GROUP = "elimu-deliver"
#: Every attempt at one send, backoff included, ends within this (then: failed, dead-lettered).
SEND_DEADLINE_S = 45.0


class Breaker:
    """A channel's circuit breaker: after ``THRESHOLD`` transient failures in a row, sends fail at
    once for ``COOL_S`` (then one is let through to try again). A provider that is down then
    costs a batch seconds, not its every send's timeouts one after another."""

    THRESHOLD = 5
    COOL_S = 30.0

    def __init__(self) -> None:
        self.failures = 0
        self.opened_at: float | None = None

    def open(self, now: float) -> bool:
        if self.opened_at is None:
            return False
        if now - self.opened_at >= self.COOL_S:
            self.opened_at = None  # half open: the next send tries the provider again
            self.failures = self.THRESHOLD - 1
            return False
        return True

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.THRESHOLD:
            self.opened_at = now

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeliveryService:
    def __init__(
        self,
        *,
        redis: RedisClient,
        producer: EventProducer,
        signer: RecordSigner,
        channels: Mapping[str, Channel],
        ledger: Ledger,
        rates: Mapping[str, float],
        concurrency: int = 32,
        produce_timeout_s: float = 15.0,
        clock_ms: Callable[[], int] = _now_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.redis = redis
        self.producer = producer
        self.signer = signer
        self.channels = dict(channels)
        self.ledger = ledger
        self.paces = {name: Pace(rates.get(name, 10.0)) for name in self.channels}
        # Each channel has its own sends in flight, so a hanging mail server holds mail only,
        # never SMS or push; records are read (Redis) a bounded number at a time, well inside
        # the client's connection pool.
        self._slots = {name: asyncio.Semaphore(concurrency) for name in self.channels}
        self._reading = asyncio.Semaphore(concurrency)
        self.breakers = {name: Breaker() for name in self.channels}
        self.produce_timeout_s = produce_timeout_s
        self.clock_ms = clock_ms
        self.sleep = sleep
        self._off_logged: set[str] = set()

    async def handle_batch(self, records: Sequence[Record]) -> None:
        """Send everything ``records`` asks for; returns when every send is done or given up,
        and its outcome and any dead letter are in Kafka (the caller commits after)."""
        outcomes: list[tuple[str, dict[str, Any]]] = []
        dead: list[DeadLetter] = []
        await asyncio.gather(*(self._handle(rec, outcomes, dead) for rec in records))
        if outcomes:
            await self.producer.send_all(topics.INTERVENTION_OUTCOMES, outcomes, self.produce_timeout_s)
        if dead:
            letters = [((d.kafka_key() or b"").decode("utf-8", "replace"), d.as_dict()) for d in dead]
            await self.producer.send_all(topics.DEAD_LETTER, letters, self.produce_timeout_s)
            for d in dead:
                metrics.DEAD_LETTERS.labels(d.record.topic, d.reason).inc()

    async def _handle(
        self, rec: Record, outcomes: list[tuple[str, dict[str, Any]]], dead: list[DeadLetter]
    ) -> None:
        if not self.signer.verify(rec.topic, rec.key, rec.value, rec.headers):
            dead.append(DeadLetter(rec, "bad_signature", "a notification without the engine's signature"))
            return
        try:
            request = parse_notification(rec.value or b"")
        except InvalidEvent as exc:
            dead.append(DeadLetter(rec, exc.reason, exc.message))
            return
        sends = request.sends()
        if not sends:
            return
        if too_late(request, self.clock_ms()):
            # A message to the student is stale by now; a staff task is still worth doing.
            stale = [c for c in sends if c != STAFF_CHANNEL]
            if stale:
                dead.append(DeadLetter(rec, "too_late", "the notification is too old to be worth sending"))
            for channel in stale:
                metrics.DELIVERIES.labels(channel, "failed", "too_late").inc()
            sends = tuple(c for c in sends if c == STAFF_CHANNEL)
            if not sends:
                return
        async with self._reading:
            recipient = await self._recipient(request.user_id, "PUSH" in sends)
        await asyncio.gather(*(self._send(rec, request, recipient, c, outcomes, dead) for c in sends))

    async def _recipient(self, user_id: str, with_push: bool) -> Recipient:
        raw = await self.redis.get(keys.user_profile(user_id))
        push: tuple[PushSubscription, ...] = ()
        if with_push:
            stored = await self.redis.hgetall(keys.user_push_subscriptions(user_id))
            push = tuple(s for s in map(stored_subscription, stored.values()) if s is not None)
        return Recipient.from_view(user_id, None if raw is None else orjson.loads(raw), push)

    async def _send(
        self,
        rec: Record,
        request: DeliveryRequest,
        recipient: Recipient,
        channel: str,
        outcomes: list[tuple[str, dict[str, Any]]],
        dead: list[DeadLetter],
    ) -> None:
        nid = request.notification_id

        def report(result: str, reason: str | None = None, *, count: bool = True) -> None:
            # Keyless, like the workers' reports: the topic has one partition and one reader.
            report_ = delivery_report(
                nid, channel, result,
                type=request.type, template=request.template, variant=request.variant, reason=reason,
            )  # fmt: skip
            outcomes.append(("", report_))
            if count:
                metrics.DELIVERIES.labels(channel, result, reason or "").inc()

        sender = self.channels.get(channel)
        if sender is None:
            if channel not in self._off_logged:
                self._off_logged.add(channel)
                log.warning(
                    "%s is not configured: its notifications are not sent (docs/notifications.md)", channel
                )
            report("failed", "channel_off")
            return
        # The worker chose the channels from the settings at the time; the user may have turned
        # this one off (or unsubscribed) since, and that is the word that counts.
        if not recipient.allows(channel, request.type):
            metrics.SUPPRESSED.labels(channel).inc()  # not a send, so not a delivery result
            return
        async with self._slots[channel]:
            state, previous = await self.ledger.claim(nid, channel)
            if state == "done":
                # Sent (or given up) before: the outcome is reported again, in case the process
                # that sent it died before its report reached Kafka (its id makes it count once).
                metrics.DUPLICATES.labels(channel).inc()
                done_result, _, done_reason = (previous or "sent").partition(":")
                report(done_result, done_reason or None, count=False)
                return
            try:
                # One deadline for every attempt: the claim's lease outlasts it (ledger.py), so
                # no other deliverer takes over a send still in progress.
                async with asyncio.timeout(SEND_DEADLINE_S):
                    result, reason = await self._attempts(sender, request, recipient)
            except TimeoutError:
                result, reason = "failed", "deadline"
            await self.ledger.done(nid, channel, result if reason is None else f"{result}:{reason}")
        report(result, reason)
        if result in ("failed", "bounced"):
            dead.append(DeadLetter(rec, f"send_{result}", f"{channel}: {reason}"))

    async def _attempts(
        self, sender: Channel, request: DeliveryRequest, recipient: Recipient
    ) -> tuple[str, str | None]:
        """(result, reason): ``sent``/``delivered`` and None, or the failure after the last try."""
        channel = sender.name
        breaker = self.breakers[channel]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if breaker.open(time.monotonic()):
                # The provider failed every recent send: fail fast rather than queue behind it.
                metrics.ATTEMPTS.labels(channel, "breaker_open").inc()
                return "failed", "provider_down:retries_exhausted"
            await self.paces[channel].take(self.sleep)
            started = time.perf_counter()
            try:
                sent: Sent = await sender.send(request, recipient)
            except SendFailed as exc:
                metrics.ATTEMPTS.labels(channel, "permanent" if exc.permanent else "transient").inc()
                if not exc.permanent:
                    breaker.failed(time.monotonic())
                if exc.permanent or attempt == MAX_ATTEMPTS:
                    return exc.result, exc.reason if exc.permanent else f"{exc.reason}:retries_exhausted"
                await self.sleep(backoff_s(attempt))
                continue
            except Exception as exc:  # a bug in a channel: report it, never stop the service
                log.exception("%s send of %s failed unexpectedly", channel, request.notification_id)
                return "failed", f"error:{type(exc).__name__}"
            breaker.succeeded()
            metrics.ATTEMPTS.labels(channel, "ok").inc()
            metrics.SEND_SECONDS.labels(channel).observe(time.perf_counter() - started)
            return sent.result, None
        raise AssertionError("unreachable")  # pragma: no cover
