"""EMAIL over SMTP (aiosmtplib): a multipart text and HTML mail with signed tracking links and a
one-click unsubscribe (RFC 8058).

A few connections are kept open and reused (a TLS handshake per mail would cost more than the
mail); a connection that fails is dropped and the next send opens a fresh one. SMTP replies are
sorted the way mail servers mean them: 5xx is permanent (a refused recipient is a bounce), 4xx
and a lost connection are transient.

With a bounce domain each mail's envelope sender is its own VERP address, so a bounce that comes
back days later names the mail (delivery/bounces.py); an address a bounce declared dead is not
mailed again for 90 days (failed, ``suppressed``), except a contact verification to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid, parseaddr

import aiosmtplib

from delivery.channels import Recipient, SendFailed, Sent
from delivery.config import SmtpServer
from infra.tracking import Links
from models.contact import safe_display_name
from models.delivery import DeliveryRequest, header_text
from models.mail import MailLinks, render_mail
from models.receipts import BounceAddresses

log = logging.getLogger(__name__)

_ATOM_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
_POLICY = SMTP.clone(max_line_length=998)


def _flatten(message: EmailMessage) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, policy=_POLICY).flatten(message)
    return out.getvalue()


#: Connections kept open to the mail server.
POOL_SIZE = 4


class EmailChannel:
    name = "EMAIL"

    def __init__(
        self,
        server: SmtpServer,
        mail_from: str,
        links: Links,
        timeout_s: float = 10.0,
        *,
        bounces: BounceAddresses | None = None,
        suppressed: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.server = server
        self.mail_from = mail_from
        #: The envelope sender: the address of ``mail_from``, unless ``bounces`` gives each mail
        #: its own (VERP), so its bounce names it (delivery/bounces.py).
        self.sender = parseaddr(mail_from)[1] or "no-reply@localhost"
        self.bounces = bounces
        #: Whether an address is one a hard bounce declared dead (delivery/receipts.py).
        self.suppressed = suppressed
        self.links = links
        self.timeout_s = timeout_s
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(POOL_SIZE)

    def message(self, request: DeliveryRequest, recipient: Recipient, now_ms: int) -> EmailMessage:
        assert recipient.email is not None
        nid = request.notification_id
        if request.verification:
            # Transactional: the link confirms the address; nothing is tracked, and there is
            # nothing to unsubscribe from (the address gets no other mail until confirmed).
            links = MailLinks(click=self.links.url("verify", request, self.name, now_ms))
        else:
            links = MailLinks(
                click=self.links.url("click", request, self.name, now_ms),
                open_pixel=self.links.url("open", request, self.name, now_ms),
                unsubscribe=self.links.url("unsubscribe", request, self.name, now_ms),
                trap=self.links.url("trap", request, self.name, now_ms),
            )
        body = render_mail(request, links)
        # Lines up to 998 (RFC 5322), so a long List-Unsubscribe URL stays one plain header that
        # mail clients recognise, not RFC 2047 encoded words.
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = self.mail_from
        # An Address quotes whatever the name holds: it can never add a mailbox.
        local, _, domain = recipient.email.rpartition("@")
        msg["To"] = Address(
            display_name=header_text(safe_display_name(recipient.display_name) or ""),
            username=local,
            domain=domain,
        )
        msg["Subject"] = body.subject
        domain = self.mail_from.rpartition("@")[2].rstrip(">").strip() or "localhost"
        # Only what a msg-id may hold (RFC 5322 dot-atom text): ids are printable, not atoms.
        msg["Message-ID"] = make_msgid(idstring=_ATOM_UNSAFE.sub("", nid)[:40] or None, domain=domain)
        # The id lets a mail server's logs, and our tests, tie a mail to its notification.
        msg["X-Elimu-Notification"] = nid
        if links.unsubscribe:
            # RFC 8058: mail clients show an unsubscribe button that POSTs here, no page to visit.
            msg["List-Unsubscribe"] = f"<{links.unsubscribe}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(body.text)
        msg.add_alternative(body.html, subtype="html")
        return msg

    async def send(self, request: DeliveryRequest, recipient: Recipient) -> Sent:
        if not recipient.email:
            raise SendFailed("no_address", "the profile has no email address", permanent=True)
        if (
            self.suppressed is not None
            and not request.verification  # its owner asks to (re)confirm it: if dead, it bounces
            and await self.suppressed(recipient.email)
        ):
            # A bounce said it is dead: mailing it again only hurts our sending reputation.
            raise SendFailed("suppressed", "the address bounced for good before", permanent=True)
        message = self.message(request, recipient, int(time.time() * 1000))
        # The receipt id of a mail is its VERP token: without a bounce domain nothing names it.
        token, sender = (
            self.bounces.for_mail(request.notification_id) if self.bounces else (None, self.sender)
        )
        async with self._slots:
            client = await self._connection()
            try:
                # Flattened here, under our policy: aiosmtplib's own would fold long headers.
                errors, _ = await client.sendmail(sender, [recipient.email], _flatten(message))
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._release(client)
                codes = [r.code for r in exc.recipients]
                permanent = all(code >= 500 for code in codes)
                raise SendFailed(
                    "recipient_refused", f"the server refused the recipient ({codes})",
                    permanent=permanent, result="bounced" if permanent else "failed",
                ) from exc  # fmt: skip
            except aiosmtplib.SMTPResponseException as exc:
                await self._discard(client)
                raise SendFailed(
                    f"smtp_{exc.code // 100}xx", f"the server answered {exc.code} {exc.message[:120]}",
                    permanent=exc.code >= 500,
                ) from exc  # fmt: skip
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._discard(client)
                raise SendFailed(
                    "smtp_unreachable", f"the mail server: {exc}"[:200], permanent=False
                ) from exc
            self._release(client)
        if errors:  # a single recipient: refused ones raise above; kept for the server's word
            raise SendFailed("recipient_refused", str(errors)[:200], permanent=True, result="bounced")
        return Sent(provider_id=token)

    async def _connection(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        s = self.server
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.tls == "tls",
            # "none" still upgrades when the server offers STARTTLS (None: opportunistic).
            start_tls=True if s.tls == "starttls" else None if s.tls == "none" else False,
            timeout=self.timeout_s,
        )
        try:
            await client.connect()
            if s.username:
                await client.login(s.username, s.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self._discard(client)
            raise SendFailed("smtp_auth", "the mail server refused our login", permanent=True) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._discard(client)
            raise SendFailed("smtp_unreachable", f"the mail server: {exc}"[:200], permanent=False) from exc
        return client

    def _release(self, client: aiosmtplib.SMTP) -> None:
        self._idle.put_nowait(client)

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(Exception):
            client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await client.quit()
