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
An SMS or mail the provider accepted is indexed under the id its later receipt will name
(delivery/receipts.py), so a delivery report or a bounce days later is reported against it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from delivery import metrics
from delivery.channels import Channel, Recipient, SendFailed, Sent
from delivery.deferred import Parked
from delivery.ledger import Ledger
from delivery.pace import Pace
from delivery.receipts import ReceiptIndex
from infra import keys, topics
from infra.producer import EventProducer
from infra.redis_conn import RedisClient
from infra.signing import RecordSigner
from models.contact_verification import CODE_PLACEHOLDER, CodeSealer, pending_id_of
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
from models.receipts import RECEIPT_CHANNELS, SentMessage
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
        parked: Parked | None = None,
        codes: CodeSealer | None = None,
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
        #: Where sends wait out the user's quiet hours (None: they are never held back).
        self.parked = parked
        #: Unseals contact-verification codes (None: verifications are dead-lettered).
        self.codes = codes
        self._off_logged: set[str] = set()
        self.receipts = ReceiptIndex(redis)

    async def handle_batch(self, records: Sequence[Record], *, parked: bool = False) -> None:
        """Send everything ``records`` asks for; returns when every send is done or given up,
        and its outcome and any dead letter are in Kafka (the caller commits after).

        ``parked``: records quiet hours held back (``handle_parked``). They were fresh enough
        when parked, and the wait was the user's own wish, not a backlog: they are not judged
        stale again (a notification parked at 22:00 is sent at 07:00, past ``MAX_SEND_DELAY_MS``)."""
        outcomes: list[tuple[str, dict[str, Any]]] = []
        dead: list[DeadLetter] = []
        await asyncio.gather(*(self._handle(rec, outcomes, dead, not parked) for rec in records))
        if outcomes:
            await self.producer.send_all(topics.INTERVENTION_OUTCOMES, outcomes, self.produce_timeout_s)
        if dead:
            letters = [((d.kafka_key() or b"").decode("utf-8", "replace"), d.as_dict()) for d in dead]
            await self.producer.send_all(topics.DEAD_LETTER, letters, self.produce_timeout_s)
            for d in dead:
                metrics.DEAD_LETTERS.labels(d.record.topic, d.reason).inc()

    async def _handle(
        self,
        rec: Record,
        outcomes: list[tuple[str, dict[str, Any]]],
        dead: list[DeadLetter],
        check_late: bool = True,
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
        if check_late and too_late(request, self.clock_ms()):
            # A message to the student is stale by now; a staff task is still worth doing.
            stale = [c for c in sends if c != STAFF_CHANNEL]
            if stale:
                dead.append(DeadLetter(rec, "too_late", "the notification is too old to be worth sending"))
            for channel in stale:
                metrics.DELIVERIES.labels(channel, "failed", "too_late").inc()
            sends = tuple(c for c in sends if c == STAFF_CHANNEL)
            if not sends:
                return
        if request.verification:
            unsealed = self._with_code(request)
            if unsealed is None:
                dead.append(DeadLetter(rec, "bad_code", "a verification whose code does not unseal"))
                return
            request = unsealed
            # The pending address is the recipient: the profile has no such address yet.
            recipient = Recipient.verifying(request.user_id, request.channels[0], request.to)
        else:
            async with self._reading:
                recipient = await self._recipient(request.user_id, "PUSH" in sends)
            sends = await self._park_if_quiet(rec, recipient, sends)
        await asyncio.gather(*(self._send(rec, request, recipient, c, outcomes, dead) for c in sends))

    def _with_code(self, request: DeliveryRequest) -> DeliveryRequest | None:
        """A verification with its code written into its text (it travels sealed)."""
        if self.codes is None:
            return None
        code = self.codes.unseal(request.user_id, pending_id_of(request.notification_id), request.code_sealed)
        if code is None:
            return None
        return replace(
            request,
            subject=request.subject.replace(CODE_PLACEHOLDER, code),
            body=request.body.replace(CODE_PLACEHOLDER, code),
            code_sealed="",
        )

    async def _park_if_quiet(
        self, rec: Record, recipient: Recipient, sends: tuple[str, ...]
    ) -> tuple[str, ...]:
        """The sends to make now: the user's channels wait while they are in their quiet hours
        (delivery/deferred.py), a staff task does not. A contact verification never waits: the
        user asked for it a moment ago."""
        until = recipient.quiet_until(self.clock_ms())
        user_sends = [c for c in sends if c != STAFF_CHANNEL]
        if until is None or not user_sends or self.parked is None:
            return sends
        if not await self.parked.park(rec, until):
            log.warning("the quiet-hours set is full: sending %s now", rec.key)
            return sends
        for channel in user_sends:
            metrics.PARKED.labels(channel).inc()
        return tuple(c for c in sends if c == STAFF_CHANNEL)

    async def handle_parked(self) -> int:
        """Send what quiet hours held back and is due now; the number of records taken."""
        if self.parked is None:
            return 0
        taken = await self.parked.take_due(self.clock_ms())
        if taken.members:
            await self.handle_batch(taken.records, parked=True)
            await self.parked.done(taken)
        return len(taken.members)

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
            if not request.verification:  # not an intervention: nothing for the funnel or A/B
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
                    result, reason, provider_id = await self._attempts(sender, request, recipient)
            except TimeoutError:
                result, reason, provider_id = "failed", "deadline", None
            await self.ledger.done(nid, channel, result if reason is None else f"{result}:{reason}")
        if provider_id and reason is None and channel in RECEIPT_CHANNELS and not request.verification:
            await self._remember(provider_id, request, recipient, channel)
        report(result, reason)
        if result in ("failed", "bounced"):
            dead.append(DeadLetter(rec, f"send_{result}", f"{channel}: {reason}"))

    async def _remember(
        self, provider_id: str, request: DeliveryRequest, recipient: Recipient, channel: str
    ) -> None:
        """Index a send under its provider's id, for the receipt that names it later
        (delivery/receipts.py). Best effort: a send that happened is never undone or repeated
        for the sake of its receipt; without the entry, the receipt is only ignored."""
        sent = SentMessage(
            request.notification_id, channel, request.type, request.template, request.variant,
            request.user_id, address=(recipient.email or "") if channel == "EMAIL" else "",
        )  # fmt: skip
        try:
            await self.receipts.remember(provider_id, sent)
        except Exception:
            log.warning(
                "could not index %s send of %s for its receipt",
                channel,
                request.notification_id,
                exc_info=True,
            )
            metrics.RECEIPTS.labels(channel, "not_indexed").inc()

    async def _attempts(
        self, sender: Channel, request: DeliveryRequest, recipient: Recipient
    ) -> tuple[str, str | None, str | None]:
        """(result, reason, provider id): ``sent``/``delivered``, None and the provider's id of
        the message (if it gave one), or the failure after the last try."""
        channel = sender.name
        breaker = self.breakers[channel]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if breaker.open(time.monotonic()):
                # The provider failed every recent send: fail fast rather than queue behind it.
                metrics.ATTEMPTS.labels(channel, "breaker_open").inc()
                return "failed", "provider_down:retries_exhausted", None
            await self.paces[channel].take(self.sleep)
            started = time.perf_counter()
            try:
                sent: Sent = await sender.send(request, recipient)
            except SendFailed as exc:
                metrics.ATTEMPTS.labels(channel, "permanent" if exc.permanent else "transient").inc()
                if not exc.permanent:
                    breaker.failed(time.monotonic())
                if exc.permanent or attempt == MAX_ATTEMPTS:
                    why = exc.reason if exc.permanent else f"{exc.reason}:retries_exhausted"
                    return exc.result, why, None
                await self.sleep(backoff_s(attempt))
                continue
            except Exception as exc:  # a bug in a channel: report it, never stop the service
                log.exception("%s send of %s failed unexpectedly", channel, request.notification_id)
                return "failed", f"error:{type(exc).__name__}", None
            breaker.succeeded()
            metrics.ATTEMPTS.labels(channel, "ok").inc()
            metrics.SEND_SECONDS.labels(channel).observe(time.perf_counter() - started)
            return sent.result, None, sent.provider_id
        raise AssertionError("unreachable")  # pragma: no cover
