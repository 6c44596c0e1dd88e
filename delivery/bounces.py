"""The bounce listener: an SMTP server (aiosmtpd, on the service's own event loop) that takes the
delivery status notifications mail servers send back to our VERP addresses
(docs/notifications.md, "Delivery receipts").

Each mail goes out with the envelope sender ``bounces+<token>@<bounce domain>`` (delivery/email.py),
the token naming the mail and signed, so a bounce arriving days later names its mail. The bounce
domain's MX leads here (``ELIMU_BOUNCE_LISTEN``). The listener takes mail only for valid bounce
addresses (550 for any other recipient: it relays nothing and is no mailbox), at most
``MAX_DSN_BYTES`` of it (552 beyond), reads the DSN (models/receipts.py ``parse_dsn``) and
reports ``bounced`` (a permanent failure, 5.x.x), ``failed`` (another failure) or ``delivered``
against the send; a hard bounce also suppresses the address (the EMAIL channel does not mail it
again). A mail that is not a DSN (an auto-reply, spam) is accepted and dropped: refusing it would
only bounce it back to whoever forged it. While Redis or Kafka are away it answers 451, and the
sending server tries again later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import SMTP

from delivery import metrics
from delivery.receipts import ReceiptIndex, publish_receipt
from infra import topics
from infra.producer import EventProducer
from models.receipts import MAX_DSN_BYTES, BadReceipt, BounceAddresses, Final, parse_dsn

log = logging.getLogger(__name__)

#: Recipients per mail: a bounce comes back to one return path.
MAX_RECIPIENTS = 5
#: An idle SMTP session is closed after this (aiosmtpd's default is five minutes).
SESSION_TIMEOUT_S = 60.0


class BounceHandler:
    """aiosmtpd's handler: ``handle_RCPT`` and ``handle_DATA`` answer with SMTP replies."""

    def __init__(
        self,
        bounces: BounceAddresses,
        index: ReceiptIndex,
        producer: EventProducer,
        *,
        topic: str = topics.INTERVENTION_OUTCOMES,
        produce_timeout_s: float = 15.0,
    ) -> None:
        self.bounces = bounces
        self.index = index
        self.producer = producer
        self.topic = topic
        self.produce_timeout_s = produce_timeout_s

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if self.bounces.token_of(address) is None:
            metrics.RECEIPTS.labels("EMAIL", "refused").inc()
            return "550 5.1.1 No such bounce address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content or b""
        try:
            bounce = parse_dsn(raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace"))
        except BadReceipt as exc:
            metrics.RECEIPTS.labels("EMAIL", "not_dsn").inc()
            log.info("a mail to a bounce address that is not a DSN, dropped: %s", exc)
            return "250 2.0.0 OK: not a delivery status notification, dropped"
        tokens = {t for t in map(self.bounces.token_of, envelope.rcpt_tos) if t is not None}
        try:
            for token in sorted(tokens):
                metrics.RECEIPTS.labels(
                    "EMAIL", await self._report(token, bounce.result, bounce.reason)
                ).inc()
        except Exception:
            log.warning("could not record a bounce; the sender will retry", exc_info=True)
            return "451 4.3.0 Try again later"
        return "250 2.0.0 OK"

    async def _report(self, token: str, result: Final | None, reason: str | None) -> str:
        if result is None:
            return "pending"  # delayed, relayed: the server is still trying
        sent = await self.index.lookup("EMAIL", token)
        if sent is None:
            return "unknown"  # older than the index, or lost
        if result == "bounced" and sent.address:
            # First, and whatever the report's fate: a dead address must not be mailed again.
            await self.index.suppress(sent.address)
        return await publish_receipt(
            self.index, self.producer, self.topic, self.produce_timeout_s, token, sent, result, reason
        )


async def start_bounce_listener(handler: BounceHandler, host: str, port: int) -> asyncio.Server:
    """Listen for bounces on ``host:port`` (until the returned server is closed)."""
    loop = asyncio.get_running_loop()

    def session() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=MAX_DSN_BYTES,
            # A bounce of an internationalised mail may come with SMTPUTF8 (RFC 6533).
            enable_SMTPUTF8=True,
            hostname=handler.bounces.domain,
            ident="Elimu Pulse bounces",
            timeout=SESSION_TIMEOUT_S,
            loop=loop,
        )

    server = await loop.create_server(session, host, port)
    log.info("bounce listener on %s:%d for %s", host, port, handler.bounces.domain)
    return server
