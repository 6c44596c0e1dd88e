"""Delivery receipts end to end (docs/notifications.md, "Delivery receipts"): a mail sent through
the service to a real SMTP peer with its VERP envelope sender, its bounce mailed back over SMTP to
the bounce listener; an SMS sent through a Twilio-shaped peer, its status callback POSTed, signed,
to the API. Each ends as a signed report on the real broker's outcomes topic, and a bounce that
names the mail's address dead keeps it from being mailed again (for a while). The listener's own
limits are tried with real SMTP clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiosmtplib
import httpx
import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

from api.app import create_app
from api.config import ApiConfig
from api.routes.webhooks import delivery_settings
from delivery import bounces as bounce_listener
from delivery.bounces import BounceHandler, start_bounce_listener
from delivery.config import DeliveryConfig, SmsProvider
from delivery.receipts import ReceiptIndex, lift_suppression
from infra import keys
from infra.net import free_port
from infra.settings import Settings
from infra.signing import RecordSigner
from models.contact_verification import CodeBook, CodeSealer, verification_message
from models.events import format_ts
from models.receipts import (
    MAX_DSN_BYTES,
    RECEIPT_TTL_MS,
    SUPPRESSION_TTL_MS,
    TWILIO_ROUTE,
    BadReceipt,
    BounceAddresses,
    VerpSigner,
    callback_token,
)
from tests.conftest import create_topic, wait_until
from tests.delivery.conftest import (
    MAIL_FROM,
    PUBLIC_URL,
    SECRET,
    Harness,
    Out,
    SmtpPeer,
    Tail,
    User,
    notification,
    now_ms,
    record,
    reports_of,
    save_profile,
)
from tests.delivery.test_delivery import produce, run_serve, stop_serving
from tests.delivery.test_twilio import SID, TOKEN, Twilio
from tests.models.test_receipts import _nested, dsn

pytestmark = pytest.mark.integration

BOUNCE_DOMAIN = "bounces.pulse.example.org"


class EnvelopeSmtpPeer(SmtpPeer):
    """An SMTP peer that also keeps each mail's envelope sender (MAIL FROM)."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.senders.append(envelope.mail_from)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def mail_peer() -> Iterator[EnvelopeSmtpPeer]:
    peer = EnvelopeSmtpPeer()
    peer.controller.start()
    yield peer
    peer.controller.stop()


@pytest.fixture
async def twilio_peer() -> AsyncIterator[Twilio]:
    peer = Twilio()
    app = web.Application()
    app.router.add_post(f"/2010-04-01/Accounts/{SID}/Messages.json", peer.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", peer.port).start()
    yield peer
    await runner.cleanup()


@pytest.fixture
def receipts_config(mail_peer: EnvelopeSmtpPeer, twilio_peer: Twilio) -> DeliveryConfig:
    return DeliveryConfig(
        smtp=mail_peer.server,
        mail_from=MAIL_FROM,
        sms=SmsProvider(twilio_peer.url, SID, TOKEN, "+15005550006", kind="twilio"),
        public_url=PUBLIC_URL,
        sms_status_callback=PUBLIC_URL + TWILIO_ROUTE,
        bounce_domain=BOUNCE_DOMAIN,
        timeout_s=5.0,
    )


@contextlib.asynccontextmanager
async def running_listener(harness: Harness, **limits: Any) -> AsyncIterator[int]:
    """The bounce listener, as ``elimu deliver`` starts it (``limits`` its own), on a free port."""
    bounces = BounceAddresses(VerpSigner(SECRET), BOUNCE_DOMAIN)
    port = free_port()
    server = await start_bounce_listener(
        BounceHandler(bounces, ReceiptIndex(harness.redis), harness.producer), "127.0.0.1", port, **limits
    )
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def listener(harness: Harness) -> AsyncIterator[int]:
    async with running_listener(harness) as port:
        yield port


async def is_suppressed(redis: Redis, address: str) -> bool:
    return bool(await redis.exists(keys.email_suppressed(address)))


async def bounce(port: int, recipient: str, raw: bytes) -> str:
    """Mail ``raw`` to the listener as a mail server returns a bounce: from the null sender
    (``MAIL FROM:<>``); the listener's final reply."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as smtp:
        _, reply = await smtp.sendmail("", [recipient], raw)
        return reply


def user(unique: str) -> User:
    return User(uid=f"u-{unique}", email=f"Amani.{unique}@Example.org", phone="+254711000123")


@pytest.fixture
async def who(redis: Redis, unique: str) -> User:
    """The test's user (email and phone), their profile saved where the deliverers read it."""
    person = user(unique)
    await save_profile(redis, person)
    return person


def assert_signed(out: Out) -> None:
    assert RecordSigner(SECRET).verify(out.topic, out.key, out.raw, out.headers), out


def signed_reports(records: list[Out], nid: str) -> list[dict[str, Any]]:
    mine = [r for r in records if str(r.value.get("id", "")).endswith(f":{nid}")]
    for out in mine:
        assert_signed(out)
    return reports_of(mine, nid)


async def test_a_hard_bounce_is_reported_and_the_address_is_not_mailed_again(
    harness: Harness,
    receipts_config: DeliveryConfig,
    mail_peer: EnvelopeSmtpPeer,
    listener: int,
    outcomes: Tail,
    redis: Redis,
    who: User,
    unique: str,
) -> None:
    service = harness.service(receipts_config)
    nid = f"n-{unique}"

    await service.handle_batch([record(notification(who.uid, nid, ("EMAIL",)), who.uid)])

    # Sent with its own bounce address: the token names this mail, signed with our secret.
    token = VerpSigner(SECRET).token(nid)
    bounce_address = f"bounces+{token}@{BOUNCE_DOMAIN}"
    assert mail_peer.senders == [bounce_address]
    [mail] = mail_peer.to(who.email)
    assert mail["From"].addresses[0].addr_spec == "no-reply@pulse.example.org"  # the From is unchanged
    assert [r["result"] for r in signed_reports(await outcomes.everything(), nid)] == ["sent"]

    # The listener takes mail for our bounce addresses only; what is not a DSN changes nothing.
    forged = f"bounces+{token[:-1]}{'b' if token[-1] == 'a' else 'a'}@{BOUNCE_DOMAIN}"
    for stranger in (forged, f"postmaster@{BOUNCE_DOMAIN}", f"bounces+{token}@example.org"):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await bounce(listener, stranger, dsn(("failed", "5.1.1")))
        assert refused.value.recipients[0].code == 550
    reply = await bounce(listener, bounce_address, b"Subject: Out of office\r\n\r\nBack on Monday.\r\n")
    assert "not a delivery status notification" in reply
    assert not await is_suppressed(redis, who.email)

    # The mailbox does not exist: the receiving server's DSN comes back to the bounce address
    # (null sender; an MTA that upper-cases the local part changes nothing).
    raw = dsn(("failed", "5.1.1"), final_recipient=f"rfc822; {who.email}")
    reply = await bounce(listener, bounce_address.upper(), raw)
    assert reply.endswith("OK"), reply  # answered once the report is in Kafka
    reports = signed_reports(await outcomes.everything(), nid)
    assert [(r["result"], r.get("reason")) for r in reports] == [("sent", None), ("bounced", "dsn_5.1.1")]
    assert reports[1]["id"] == f"dlv:bounced:EMAIL:{nid}"
    assert (reports[1]["type"], reports[1]["template"], reports[1]["variant"]) == (
        "streak_risk",
        "streak_risk.v2",
        "B",
    )
    assert await is_suppressed(redis, who.email.lower())
    # For 90 days (a later bounce renews it), not forever.
    assert 0 < await redis.pttl(keys.email_suppressed(who.email)) <= SUPPRESSION_TTL_MS

    # The same DSN again (a server retrying) is not a second bounce.
    await bounce(listener, bounce_address, dsn(("failed", "5.1.1")))
    assert len(signed_reports(await outcomes.everything(), nid)) == 2

    # The next mail to the dead address is not sent: failed, suppressed.
    later = f"n2-{unique}"
    await service.handle_batch([record(notification(who.uid, later, ("EMAIL",)), who.uid)])
    assert len(mail_peer.to(who.email)) == 1
    assert len(mail_peer.senders) == 1
    [report] = signed_reports(await outcomes.everything(), later)
    assert (report["result"], report.get("reason")) == ("failed", "suppressed")


async def test_a_soft_failure_is_reported_failed_and_suppresses_nothing(
    harness: Harness,
    receipts_config: DeliveryConfig,
    mail_peer: EnvelopeSmtpPeer,
    listener: int,
    outcomes: Tail,
    redis: Redis,
    who: User,
    unique: str,
) -> None:
    service = harness.service(receipts_config)
    nid = f"n-{unique}"
    await service.handle_batch([record(notification(who.uid, nid, ("EMAIL",)), who.uid)])
    [bounce_address] = mail_peer.senders
    await bounce(listener, bounce_address, dsn(("delayed", "4.4.1")))
    await bounce(listener, bounce_address, dsn(("failed", "4.4.7")))
    reports = signed_reports(await outcomes.everything(), nid)
    assert [(r["result"], r.get("reason")) for r in reports] == [("sent", None), ("failed", "dsn_4.4.7")]
    assert not await is_suppressed(redis, who.email)
    await service.handle_batch([record(notification(who.uid, f"n2-{unique}", ("EMAIL",)), who.uid)])
    assert len(mail_peer.to(who.email)) == 2


async def test_an_sms_delivery_report_from_twilio_reaches_the_outcomes_through_the_api(
    harness: Harness,
    receipts_config: DeliveryConfig,
    twilio_peer: Twilio,
    settings: Settings,
    outcomes: Tail,
    redis: Redis,
    who: User,
    unique: str,
) -> None:
    service = harness.service(receipts_config)
    nid = f"n-{unique}"

    await service.handle_batch([record(notification(who.uid, nid, ("SMS",)), who.uid)])

    # Twilio is asked to call back at the public URL.
    [sent] = twilio_peer.received
    assert sent["StatusCallback"] == "https://pulse.example.org/v1/webhooks/sms/twilio"
    sid = f"SM{len(twilio_peer.received) - 1}"  # the peer's answer

    app = create_app(settings, ApiConfig())
    app.dependency_overrides[delivery_settings] = lambda: receipts_config
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.7:8000"
        ) as api:
            # As Twilio posts it: every field signed, over the URL it was given.
            fields = {
                "MessageSid": sid, "SmsSid": sid, "AccountSid": SID, "From": "+15005550006",
                "To": "+254711000123", "MessageStatus": "delivered", "SmsStatus": "delivered",
                "ApiVersion": "2010-04-01",
            }  # fmt: skip
            data = sent["StatusCallback"] + "".join(k + fields[k] for k in sorted(fields))
            signature = base64.b64encode(
                hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
            ).decode()
            answer = await api.post(TWILIO_ROUTE, data=fields, headers={"X-Twilio-Signature": signature})
            assert (answer.status_code, answer.json()) == (200, {"outcome": "delivered"}), answer.text
    finally:
        await lifespan.__aexit__(None, None, None)

    reports = signed_reports(await outcomes.everything(), nid)
    assert [(r["result"], r["channel"]) for r in reports] == [("sent", "SMS"), ("delivered", "SMS")]
    assert reports[1]["id"] == f"dlv:delivered:SMS:{nid}"
    # The index entry lives a week at most, then a late report is only ignored.
    assert 0 < await redis.pttl(keys.delivery_receipt("SMS", sid)) <= RECEIPT_TTL_MS


async def test_the_listener_refuses_oversized_mail_and_crowds_of_recipients(
    listener: int, unique: str
) -> None:
    bounces = BounceAddresses(VerpSigner(SECRET), BOUNCE_DOMAIN)
    address = bounces.for_mail(f"n-{unique}")[1]
    huge = dsn(("failed", "5.1.1")) + (b"x" * 76 + b"\r\n") * (MAX_DSN_BYTES // 78 + 1)
    # A server that declares the size is refused at once; one that does not, after the data.
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
        await bounce(listener, address, huge)
    assert declared.value.code == 552
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener, timeout=10) as smtp:
        await smtp.mail("")
        await smtp.rcpt(address)
        with pytest.raises(aiosmtplib.SMTPDataError) as undeclared:
            await smtp.data(huge)
    assert undeclared.value.code == 552
    many = [bounces.for_mail(f"n-{unique}-{i}")[1] for i in range(8)]
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener, timeout=10) as smtp:
        errors, _ = await smtp.sendmail("", many, dsn(("failed", "5.1.1")))
    assert sorted(r.code for r in errors.values()) == [452, 452, 452]  # five taken, the rest refused


async def test_elimu_deliver_listens_for_bounces_when_configured(
    settings: Settings,
    receipts_config: DeliveryConfig,
    mail_peer: EnvelopeSmtpPeer,
    outcomes: Tail,
    redis: Redis,
    kafka_bootstrap: str,
    who: User,
    unique: str,
) -> None:
    port = free_port()
    config = dataclasses.replace(receipts_config, bounce_listen=("127.0.0.1", port))
    topic = await create_topic(kafka_bootstrap, f"notifications-{unique}")
    nid = f"n-{unique}"
    await produce(
        kafka_bootstrap, topic, [(who.uid, orjson.dumps(notification(who.uid, nid, ("EMAIL",))), SECRET)]
    )
    stop, task = await run_serve(settings, config, topic, f"deliver-{unique}")
    try:
        await wait_until(lambda: _mailed(mail_peer, who.email or ""), what="the mail")
        [sender] = mail_peer.senders
        assert sender.startswith("bounces+") and sender.endswith(f"@{BOUNCE_DOMAIN}")
        dead = dsn(("failed", "5.1.1"), final_recipient=f"rfc822;{who.email}")
        assert (await bounce(port, sender, dead)).endswith("OK")
        await outcomes.wait_for(lambda rs: len(reports_of(rs, nid)) == 2, "the sent and bounced reports")
    finally:
        await stop_serving(stop, task)
    assert [r["result"] for r in signed_reports(outcomes.records, nid)] == ["sent", "bounced"]
    assert await is_suppressed(redis, who.email)
    with pytest.raises(OSError):  # stopped with the service
        await bounce(port, sender, dsn(("failed", "5.1.1")))


async def _mailed(peer: EnvelopeSmtpPeer, address: str) -> bool:
    return len(peer.to(address)) == 1


async def test_only_a_dsn_naming_the_mails_address_dead_suppresses_it(
    harness: Harness,
    receipts_config: DeliveryConfig,
    mail_peer: EnvelopeSmtpPeer,
    listener: int,
    outcomes: Tail,
    redis: Redis,
    who: User,
    unique: str,
) -> None:
    service = harness.service(receipts_config)
    elsewhere = "rfc822; x@elsewhere.example"
    cases = [
        # A policy refusal (spam filter, DMARC, reputation) of this very address: bounced, but
        # the address is fine.
        ("policy", dsn(("failed", "5.7.1"), final_recipient=f"rfc822; {who.email}"), "dsn_5.7.1"),
        ("full", dsn(("failed", "5.2.2"), final_recipient=f"rfc822; {who.email}"), "dsn_5.2.2"),
        # A dead-address code, about some other address (a forwarder's, a forged DSN's).
        ("other", dsn(("failed", "5.1.1"), final_recipient=elsewhere, original_recipient=None), "dsn_5.1.1"),
    ]  # fmt: skip
    for name, raw, reason in cases:
        nid = f"n-{name}-{unique}"
        await service.handle_batch([record(notification(who.uid, nid, ("EMAIL",)), who.uid)])
        assert (await bounce(listener, mail_peer.senders[-1], raw)).endswith("OK")
        reports = signed_reports(await outcomes.everything(), nid)
        assert [(r["result"], r.get("reason")) for r in reports] == [("sent", None), ("bounced", reason)]
        assert not await is_suppressed(redis, who.email), name
    assert len(mail_peer.to(who.email)) == len(cases)  # each went out: nothing suppressed
    assert not await redis.exists(keys.email_suppressed("x@elsewhere.example"))


async def test_a_suppressed_address_still_gets_its_verification_and_is_lifted_by_a_confirmation(
    harness: Harness,
    receipts_config: DeliveryConfig,
    mail_peer: EnvelopeSmtpPeer,
    outcomes: Tail,
    redis: Redis,
    who: User,
    unique: str,
) -> None:
    service = harness.service(receipts_config)
    await ReceiptIndex(redis).suppress(who.email.upper())  # any case: the same address
    nudge = f"n-{unique}"
    await service.handle_batch([record(notification(who.uid, nudge, ("EMAIL",)), who.uid)])
    [report] = signed_reports(await outcomes.everything(), nudge)
    assert (report["result"], report.get("reason")) == ("failed", "suppressed")
    assert mail_peer.messages == []

    # The user asks to (re)confirm the address: its code goes out, suppressed or not.
    pending, code = CodeBook(SECRET).new(who.uid, "EMAIL", who.email, now_ms())
    sealed = CodeSealer(SECRET).seal(who.uid, pending.id, code)
    value = verification_message(who.uid, pending, sealed, format_ts(now_ms()), link_hint=True)
    await service.handle_batch([record(value, who.uid)])
    [mail] = mail_peer.messages  # to the address (its domain lower-cased by the verification)
    assert mail["To"].addresses[0].addr_spec.lower() == who.email.lower()
    assert code in str(mail.get_body(("plain",)))

    # Confirmed: the suppression is lifted, and the next nudge is mailed.
    assert await lift_suppression(redis, f" {who.email} ")
    assert not await lift_suppression(redis, who.email)  # nothing left to lift
    later = f"n2-{unique}"
    await service.handle_batch([record(notification(who.uid, later, ("EMAIL",)), who.uid)])
    assert len(mail_peer.to(who.email)) == 1 and len(mail_peer.messages) == 2
    assert [r["result"] for r in signed_reports(await outcomes.everything(), later)] == ["sent"]


async def _connects(port: int) -> bool:
    """Whether the listener greets a new connection (220), not refusing it."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
    try:
        await client.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        assert exc.code == 421, exc
        return False
    client.close()
    return True


async def test_the_listener_takes_a_bounded_number_of_sessions_each_for_a_bounded_time(
    harness: Harness,
) -> None:
    async with running_listener(harness, max_sessions=2, session_lifetime_s=60) as port:
        first, second = (aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) for _ in range(2))
        await first.connect()
        await second.connect()
        third = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as busy:
            await third.connect()
        assert busy.value.code == 421
        await first.quit()
        await wait_until(lambda: _connects(port), what="a session freed by a QUIT")
        await second.noop()  # the others never noticed
        await second.quit()

    # A client that keeps its session busy (NOOPs reset the idle timer) is still cut off.
    async with (
        running_listener(harness, max_sessions=1, session_lifetime_s=0.5) as port,
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as busy_client,
    ):

        async def cut_off() -> bool:
            try:
                await busy_client.noop()
            except aiosmtplib.SMTPServerDisconnected:
                return True
            return False

        await wait_until(cut_off, interval=0.05, what="the session closed at its lifetime")
        await wait_until(lambda: _connects(port), what="its place taken by a new session")


async def test_a_dsn_is_read_off_the_event_loop_and_refused_when_it_takes_too_long(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def stuck(raw: bytes) -> None:
        started.set()
        release.wait(5)
        finished.set()
        raise BadReceipt("too late anyway")

    monkeypatch.setattr(bounce_listener, "parse_dsn", stuck)
    monkeypatch.setattr(bounce_listener, "PARSE_TIMEOUT_S", 1.0)
    address = BounceAddresses(VerpSigner(SECRET), BOUNCE_DOMAIN).for_mail(f"n-{unique}")[1]
    try:
        async with running_listener(harness) as port:
            sending = asyncio.create_task(bounce(port, address, dsn(("failed", "5.1.1"))))
            await wait_until(lambda: asyncio.sleep(0, started.is_set()), what="the parse under way")
            # Meanwhile the loop serves everyone else.
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as other:
                await other.noop()
            assert not finished.is_set()
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await sending
            assert refused.value.code == 554  # it overran its time: refused, not taken
    finally:
        release.set()


async def test_a_dsn_nested_too_deep_is_refused_and_an_auto_reply_dropped(
    listener: int, outcomes: Tail, unique: str
) -> None:
    address = BounceAddresses(VerpSigner(SECRET), BOUNCE_DOMAIN).for_mail(f"n-{unique}")[1]
    for raw in (_nested(6), _nested(400), _nested(400, newline=b"\r")):
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await bounce(listener, address, raw)
        assert refused.value.code == 554
    assert "dropped" in await bounce(listener, address, b"Subject: Away\r\n\r\nBack Monday.\r\n")


async def test_the_africastalking_callback_url_is_logged_as_a_fingerprint(
    settings: Settings,
    receipts_config: DeliveryConfig,
    kafka_bootstrap: str,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    at = SmsProvider("https://api.sandbox.africastalking.com/version1/messaging", "sandbox", "k")
    config = dataclasses.replace(receipts_config, sms=at, sms_status_callback=None)
    topic = await create_topic(kafka_bootstrap, f"notifications-{unique}")
    caplog.set_level(logging.INFO, logger="delivery.main")
    stop, task = await run_serve(settings, config, topic, f"deliver-{unique}")
    try:
        await wait_until(
            lambda: asyncio.sleep(0, any("delivery service" in r.getMessage() for r in caplog.records)),
            what="the service up",
        )
    finally:
        await stop_serving(stop, task)
    token = callback_token(settings.secret())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in logged and token[:7] not in logged
    assert f"/v1/webhooks/sms/africastalking/{token[:6]}…" in logged
    assert "elimu sms-callback-url" in logged
