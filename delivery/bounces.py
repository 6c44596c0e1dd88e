"""The bounce listener: an SMTP server (aiosmtpd, on the service's own event loop) that takes the
delivery status notifications mail servers send back to our VERP addresses
(docs/notifications.md, "Delivery receipts").

Each mail goes out with the envelope sender ``bounces+<token>@<bounce domain>`` (delivery/email.py),
the token naming the mail and signed, so a bounce arriving days later names its mail. The bounce
domain's MX leads here (``ELIMU_BOUNCE_LISTEN``). The listener takes mail only for valid bounce
addresses (550 for any other recipient: it relays nothing and is no mailbox), at most
``MAX_DSN_BYTES`` of it (552 beyond), reads the DSN (models/receipts.py ``parse_dsn``) and
reports ``bounced`` (a permanent failure, 5.x.x), ``failed`` (another failure) or ``delivered``
against the send; a DSN that names the very address the mail went to with a dead-address code
(5.1.1, 5.1.2, 5.1.10) also suppresses it for 90 days. A mail that is not a DSN (an auto-reply,
spam) is accepted and dropped: refusing it would only bounce it back to whoever forged it. While
Redis or Kafka are away it answers 451, and the sending server tries again later.

It shares the deliverer's event loop, so nothing in it may hold the loop: a DSN is read in a
worker thread under ``PARSE_TIMEOUT_S`` (at most ``MAX_PARSES`` at once), and one too complex
(nested, too many parts) or too slow to read is refused (554); at most ``MAX_SESSIONS`` sessions
are open at once (421 to the next), and each lives ``SESSION_LIFETIME_S`` at most, busy or not.
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
from models.receipts import MAX_DSN_BYTES, BadReceipt, Bounce, BounceAddresses, DsnTooComplex, parse_dsn

log = logging.getLogger(__name__)

#: Recipients per mail: a bounce comes back to one return path.
MAX_RECIPIENTS = 5
#: An idle SMTP session is closed after this (aiosmtpd's default is five minutes).
SESSION_TIMEOUT_S = 60.0
#: Any session is closed after this, however busy (a NOOP resets the idle timer, not this).
SESSION_LIFETIME_S = 120.0
#: Sessions open at once, in all; a connection beyond them is answered 421 and closed.
MAX_SESSIONS = 64
#: Reading one DSN (in a worker thread): beyond this it is refused. The thread cannot be stopped,
#: but the structure limits (models/receipts.py) keep any parse short; this is the backstop.
PARSE_TIMEOUT_S = 2.0
#: DSNs read at once (worker threads taken from the loop's default executor).
MAX_PARSES = 2


class Busy(Exception):
    """Every parsing slot stayed taken for ``PARSE_TIMEOUT_S``: the sender should retry."""


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
        self._parsing = asyncio.Semaphore(MAX_PARSES)

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
        raw = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace")
        try:
            bounce = await self._parse(raw)
        except Busy:
            metrics.RECEIPTS.labels("EMAIL", "busy").inc()
            return "451 4.3.2 Busy, try again later"
        except (DsnTooComplex, TimeoutError) as exc:
            metrics.RECEIPTS.labels("EMAIL", "refused").inc()
            why = str(exc) or f"not read within {PARSE_TIMEOUT_S:.0f}s"
            log.info("a mail to a bounce address too complex to read, refused: %s", why)
            return "554 5.6.0 Not a delivery status notification we can read"
        except BadReceipt as exc:
            metrics.RECEIPTS.labels("EMAIL", "not_dsn").inc()
            log.info("a mail to a bounce address that is not a DSN, dropped: %s", exc)
            return "250 2.0.0 OK: not a delivery status notification, dropped"
        except Exception:  # parse_dsn raises nothing else; whatever it is, the mail is refused
            metrics.RECEIPTS.labels("EMAIL", "refused").inc()
            log.warning("reading a mail to a bounce address failed, refused", exc_info=True)
            return "554 5.6.0 Not a delivery status notification we can read"
        tokens = {t for t in map(self.bounces.token_of, envelope.rcpt_tos) if t is not None}
        try:
            for token in sorted(tokens):
                metrics.RECEIPTS.labels("EMAIL", await self._report(token, bounce)).inc()
        except Exception:
            log.warning("could not record a bounce; the sender will retry", exc_info=True)
            return "451 4.3.0 Try again later"
        return "250 2.0.0 OK"

    async def _parse(self, raw: bytes) -> Bounce:
        """``parse_dsn`` in a worker thread: TimeoutError when it takes over ``PARSE_TIMEOUT_S``,
        Busy when no slot frees in that time. A thread that overruns keeps its slot until it
        ends, so overrunning parses can never pile up more than ``MAX_PARSES`` threads."""
        try:
            async with asyncio.timeout(PARSE_TIMEOUT_S):
                await self._parsing.acquire()
        except TimeoutError:
            raise Busy from None
        try:
            parse = asyncio.ensure_future(asyncio.to_thread(parse_dsn, raw))
        except BaseException:
            self._parsing.release()
            raise
        parse.add_done_callback(lambda _: self._parsing.release())
        return await asyncio.wait_for(asyncio.shield(parse), PARSE_TIMEOUT_S)

    async def _report(self, token: str, bounce: Bounce) -> str:
        if bounce.result is None:
            return "pending"  # delayed, relayed: the server is still trying
        sent = await self.index.lookup("EMAIL", token)
        if sent is None:
            return "unknown"  # older than the index, or lost
        if bounce.result == "bounced" and bounce.suppresses(sent.address):
            # First, and whatever the report's fate: a dead address must not be mailed again.
            await self.index.suppress(sent.address)
        return await publish_receipt(
            self.index, self.producer, self.topic, self.produce_timeout_s, token, sent,
            bounce.result, bounce.reason,
        )  # fmt: skip


class BounceSession(SMTP):
    """One SMTP session, counted against its listener's ``max_sessions`` and closed after
    ``lifetime_s`` whatever it does."""

    def __init__(self, listener: Sessions, handler: BounceHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._listener = listener
        self._counted = False
        self._lifetime: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._counted or self._lifetime is not None:  # STARTTLS: the same session goes on
            super().connection_made(transport)
            return
        if self._listener.open >= self._listener.limit:
            metrics.RECEIPTS.labels("EMAIL", "busy").inc()
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._listener.open += 1
        self._counted = True
        self._lifetime = self.loop.call_later(self._listener.lifetime_s, self._expire, transport)
        super().connection_made(transport)

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        log.info("a bounce session outlived %.0fs, closed", self._listener.lifetime_s)
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if not self._counted:
            return  # refused before it began: aiosmtpd never saw it
        self._counted = False
        self._listener.open -= 1
        if self._lifetime is not None:
            self._lifetime.cancel()
        super().connection_lost(error)


class Sessions:
    """The listener's open sessions, against its limits."""

    def __init__(self, limit: int, lifetime_s: float) -> None:
        self.limit = limit
        self.lifetime_s = lifetime_s
        self.open = 0


async def start_bounce_listener(
    handler: BounceHandler,
    host: str,
    port: int,
    *,
    max_sessions: int = MAX_SESSIONS,
    session_lifetime_s: float = SESSION_LIFETIME_S,
) -> asyncio.Server:
    """Listen for bounces on ``host:port`` (until the returned server is closed)."""
    loop = asyncio.get_running_loop()
    sessions = Sessions(max_sessions, session_lifetime_s)

    def session() -> SMTP:
        return BounceSession(
            sessions,
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
    log.info(
        "bounce listener on %s:%d for %s (at most %d sessions, %.0fs each)",
        host, port, handler.bounces.domain, max_sessions, session_lifetime_s,
    )  # fmt: skip
    return server
