"""The delivery services' settings (CONTRACT §3): which providers, where, and how hard to push
them. Every channel is optional: one left unset is not sent (said once in the log), and its
notifications are reported ``failed`` with reason ``channel_off``, so a deployment without a
mail server still sees why nothing was mailed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from models.receipts import TWILIO_ROUTE

TlsMode = Literal["none", "starttls", "tls"]


class BadSetting(ValueError):
    """A delivery setting that cannot be used (the service refuses to start with it)."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: TlsMode
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """``smtp://[user:pass@]host:port`` (``?starttls=1`` to upgrade) or ``smtps://…``."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise BadSetting("ELIMU_SMTP is smtp://[user:pass@]host:port or smtps://…")
        starttls = parse_qs(parts.query).get("starttls", ["0"])[0] in ("1", "true", "yes")
        tls: TlsMode = "tls" if parts.scheme == "smtps" else "starttls" if starttls else "none"
        try:
            port = parts.port or (465 if tls == "tls" else 587 if starttls else 25)
        except ValueError as exc:
            raise BadSetting(f"ELIMU_SMTP: {exc}") from exc
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.username and tls == "none" and not loopback:
            raise BadSetting("ELIMU_SMTP: credentials need smtps:// or ?starttls=1 (never sent in the clear)")
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


#: The SMS APIs the service speaks (``ELIMU_SMS_PROVIDER``; delivery/sms.py).
SMS_PROVIDERS = ("africastalking", "twilio")


@dataclass(frozen=True)
class SmsProvider:
    """An HTTP SMS API: Africa's Talking's request shape by default, or Twilio's
    (docs/notifications.md). ``username``/``api_key`` are the account's (Twilio: the account
    SID and auth token)."""

    url: str
    username: str
    api_key: str
    sender_id: str | None = None
    kind: str = "africastalking"


@dataclass(frozen=True)
class DeliveryConfig:
    smtp: SmtpServer | None = None
    mail_from: str = "Elimu Pulse <no-reply@localhost>"
    sms: SmsProvider | None = None
    #: ``ELIMU_VAPID_PRIVATE_KEY``: a PEM, or None to use (or create) the one in the data dir.
    vapid_private_key: str | None = None
    #: The contact a push service may write to about our traffic (the VAPID ``sub`` claim).
    vapid_subject: str = "mailto:no-reply@localhost"
    #: Push service hosts allowed besides the browsers' (``ELIMU_PUSH_HOSTS``, comma-separated
    #: ``host`` or ``host:port``): a private push relay, or a test's (models/push.py).
    push_hosts: tuple[str, ...] = ()
    #: The API as users reach it; tracking, click-through and unsubscribe links start with it.
    public_url: str = "http://127.0.0.1:8000"
    #: Sends in flight at once per channel (each waits on a network peer); with the records read
    #: meanwhile, well inside the Redis client's pool of 100 connections.
    concurrency: int = 16
    #: Sends per second per channel: providers throttle, and a burst must not get us blocked.
    rate_per_s: dict[str, float] | None = None
    #: A network call to a provider longer than this is a transient failure.
    timeout_s: float = 10.0
    #: The URL Twilio calls back with each message's delivery status (``StatusCallback``): the
    #: API's webhook under ``ELIMU_PUBLIC_URL``, None when that is not set (nothing could reach a
    #: default loopback address). The API checks Twilio's signature against this same URL.
    sms_status_callback: str | None = None
    #: ``ELIMU_BOUNCE_DOMAIN``: mail goes out with the envelope sender ``bounces+<token>@`` it
    #: (VERP), so each bounce names its mail; None: the envelope sender is ``mail_from``'s.
    bounce_domain: str | None = None
    #: ``ELIMU_BOUNCE_LISTEN`` (host, port): this process accepts the bounces over SMTP
    #: (delivery/bounces.py); the bounce domain's MX leads there. Needs ``bounce_domain``.
    bounce_listen: tuple[str, int] | None = None

    def rate_of(self, channel: str) -> float:
        defaults = {"EMAIL": 50.0, "PUSH": 200.0, "SMS": 10.0, "STAFF": 1000.0}
        return (self.rate_per_s or {}).get(channel, defaults.get(channel, 10.0))

    @classmethod
    def from_env(cls, api_port: int, env: dict[str, str] | None = None) -> DeliveryConfig:
        e = os.environ if env is None else env
        sms = None
        if e.get("ELIMU_SMS_URL"):
            if not e.get("ELIMU_SMS_USERNAME") or not e.get("ELIMU_SMS_KEY"):
                raise BadSetting("ELIMU_SMS_URL needs ELIMU_SMS_USERNAME and ELIMU_SMS_KEY")
            kind = (e.get("ELIMU_SMS_PROVIDER") or "africastalking").strip().lower()
            if kind not in SMS_PROVIDERS:
                raise BadSetting(f"ELIMU_SMS_PROVIDER is one of {', '.join(SMS_PROVIDERS)}")
            if kind == "twilio" and not e.get("ELIMU_SMS_FROM"):
                raise BadSetting("Twilio needs ELIMU_SMS_FROM (the number or sender the messages come from)")
            sms = SmsProvider(
                url=e["ELIMU_SMS_URL"],
                username=e["ELIMU_SMS_USERNAME"],
                api_key=e["ELIMU_SMS_KEY"],
                sender_id=e.get("ELIMU_SMS_FROM") or None,
                kind=kind,
            )
        rates = {
            channel: float(e[f"ELIMU_{channel}_RATE"])
            for channel in ("EMAIL", "PUSH", "SMS")
            if e.get(f"ELIMU_{channel}_RATE")
        }
        public_url = e.get("ELIMU_PUBLIC_URL", "").strip().rstrip("/")
        bounce_domain = _domain(e["ELIMU_BOUNCE_DOMAIN"]) if e.get("ELIMU_BOUNCE_DOMAIN") else None
        bounce_listen = _host_port(e["ELIMU_BOUNCE_LISTEN"]) if e.get("ELIMU_BOUNCE_LISTEN") else None
        if bounce_listen is not None and bounce_domain is None:
            raise BadSetting(
                "ELIMU_BOUNCE_LISTEN needs ELIMU_BOUNCE_DOMAIN (the domain of the bounce addresses)"
            )
        return cls(
            smtp=SmtpServer.from_url(e["ELIMU_SMTP"]) if e.get("ELIMU_SMTP") else None,
            mail_from=e.get("ELIMU_MAIL_FROM") or cls.mail_from,
            sms=sms,
            vapid_private_key=e.get("ELIMU_VAPID_PRIVATE_KEY") or None,
            vapid_subject=e.get("ELIMU_VAPID_SUBJECT") or cls.vapid_subject,
            push_hosts=tuple(
                h.strip().lower() for h in (e.get("ELIMU_PUSH_HOSTS") or "").split(",") if h.strip()
            ),
            public_url=public_url or f"http://127.0.0.1:{api_port}",
            rate_per_s=rates or None,
            sms_status_callback=f"{public_url}{TWILIO_ROUTE}" if public_url else None,
            bounce_domain=bounce_domain,
            bounce_listen=bounce_listen,
        )


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+"
)


def _domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not _HOSTNAME.fullmatch(domain):
        raise BadSetting("ELIMU_BOUNCE_DOMAIN is a mail domain (bounces.example.org)")
    return domain


def _host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadSetting("ELIMU_BOUNCE_LISTEN is host:port (0.0.0.0:2525, [::]:25)")
    return host, int(port)
