"""The delivery service against real protocol peers on loopback: an SMTP server, an SMS API in
Africa's Talking's shape and a Web Push service that checks VAPID and decrypts like a browser.

Most tests call ``DeliveryService.handle_batch`` on records built here (the service as
``elimu deliver`` builds it, retries without waiting); the last runs ``delivery.main.serve`` on
records of a topic of the real broker, as in production. Tests marked xfail show bugs (their
reasons name the code).
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from delivery.config import DeliveryConfig, SmtpServer
from delivery.main import serve
from infra import keys, topics
from infra.net import free_port
from infra.settings import Settings
from infra.signing import RecordSigner
from infra.tracking import ROUTES, Kind, Link, LinkSigner
from models.delivery import MAX_SEND_DELAY_MS
from tests.conftest import create_topic, wait_until
from tests.delivery.conftest import (
    PUBLIC_URL,
    SECRET,
    SMS_USERNAME,
    Browser,
    Harness,
    Out,
    PushPeer,
    SmsPeer,
    SmtpPeer,
    Tail,
    User,
    letters_of,
    notification,
    now_ms,
    record,
    reports_of,
    save_profile,
    save_subscription,
)

pytestmark = pytest.mark.integration


def user(unique: str, **overrides: Any) -> User:
    fields: dict[str, Any] = {
        "uid": f"u-{unique}",
        "email": f"amani.{unique}@example.org",
        "phone": "+254711" + str(int(unique, 16) % 1_000_000).zfill(6),
    }
    fields.update(overrides)
    return User(**fields)


async def subscribed(redis: Redis, push_peer: PushPeer, who: User) -> Browser:
    browser = push_peer.browser()
    await save_subscription(redis, who.uid, browser.subscription)
    return browser


def link_of(url: str, kind: Kind) -> Link:
    """The verified tracking link behind ``url`` (a ``kind`` route under the public URL)."""
    assert url.startswith(PUBLIC_URL + ROUTES[kind]), url
    token = unquote(url[len(PUBLIC_URL + ROUTES[kind]) :])
    return LinkSigner(SECRET).verify(token, now_ms())


def results(reports: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """channel -> (result, reason) of one report per channel."""
    by_channel = {r["channel"]: (r["result"], r.get("reason")) for r in reports}
    assert len(by_channel) == len(reports), reports
    return by_channel


def assert_signed(out: Out) -> None:
    assert RecordSigner(SECRET).verify(out.topic, out.key, out.raw, out.headers), out


# ---------------------------------------------------------------------------------------------
# One notification, every channel


async def test_a_notification_reaches_mail_push_and_sms_and_each_send_is_reported(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    push_peer: PushPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    browser = await subscribed(harness.redis, push_peer, who)
    nid = f"n-{unique}"
    value = notification(who.uid, nid)
    service = harness.service(config)

    await service.handle_batch([record(value, who.uid)])

    # The mail: multipart text and HTML, addressed, with a one-click unsubscribe (RFC 8058).
    assert who.email is not None
    [mail] = smtp_peer.to(who.email)
    assert mail["Subject"] == value["subject"]
    [to] = mail["To"].addresses
    assert (to.addr_spec, to.display_name) == (who.email, who.display_name)
    assert mail["From"].addresses[0].addr_spec == "no-reply@pulse.example.org"
    assert mail["X-Elimu-Notification"] == nid
    assert mail["Message-ID"]
    assert mail.get_content_type() == "multipart/alternative"
    unsubscribe = re.fullmatch(r"<(https?://[^>]+/v1/t/unsubscribe/[^>]+)>", str(mail["List-Unsubscribe"]))
    assert unsubscribe is not None, mail["List-Unsubscribe"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text_part, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    # Line ends as on the wire (CRLF) become the notification's own.
    text, page = text_part.get_content().replace("\r\n", "\n"), html_part.get_content()
    assert value["body"] in text
    assert unsubscribe.group(1) in text
    pixel = re.search(r'<img src="([^"]+)" width="1" height="1"', page)
    assert pixel is not None, page
    hrefs = [html.unescape(h) for h in re.findall(r'<a href="([^"]+)"', page)]
    clicks = [h for h in hrefs if "/v1/t/click/" in h]
    assert len(clicks) == 1, hrefs
    assert clicks[0] in text  # the text part carries the same link, written out
    mail_links: list[tuple[str, Kind]] = [
        (html.unescape(pixel.group(1)), "open"),
        (clicks[0], "click"),
        (unsubscribe.group(1), "unsubscribe"),
    ]
    for url, kind in mail_links:
        link = link_of(url, kind)
        assert (link.kind, link.notification_id, link.user_id, link.channel) == (kind, nid, who.uid, "EMAIL")
        assert (link.template, link.variant) == (value["template"], value["variant"])
    assert "Habari Amani" in page and "<p>It takes five minutes.</p>" in page

    # The push: decrypted by the browser's keys, signed with the service's VAPID key.
    assert push_peer.errors == []
    [payload] = push_peer.payloads(browser)
    assert (payload["title"], payload["body"]) == (value["subject"], value["body"])
    assert (payload["notification_id"], payload["type"], payload["cta"]) == (nid, "streak_risk", value["cta"])
    push_link = link_of(payload["url"], "click")
    assert (push_link.notification_id, push_link.user_id, push_link.channel) == (nid, who.uid, "PUSH")

    # The SMS: the body and the call to action, in the provider's form.
    assert sms_peer.errors == []
    assert who.phone is not None
    [sms] = sms_peer.to(who.phone)
    assert sms["username"] == SMS_USERNAME
    assert value["body"] in sms["message"] and sms["message"].endswith(value["cta"])
    assert "from" not in sms

    # The reports: one per send, signed for the analytics agent; nothing dead-lettered.
    written = await outcomes.everything()
    reports = reports_of(written, nid)
    assert results(reports) == {"EMAIL": ("sent", None), "SMS": ("sent", None), "PUSH": ("delivered", None)}
    for report in reports:
        assert report["kind"] == "delivery"
        assert report["id"] == f"dlv:{report['result']}:{report['channel']}:{nid}"
        assert (report["type"], report["template"], report["variant"]) == (
            "streak_risk",
            "streak_risk.v2",
            "B",
        )
    for out in written:
        if str(out.value.get("id", "")).endswith(nid):
            assert out.key == b""
            assert_signed(out)
    assert letters_of(await dead_letters.everything(), who.uid) == []


async def test_a_redelivered_notification_is_sent_once_and_reported_again(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    push_peer: PushPeer,
    outcomes: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    browser = await subscribed(harness.redis, push_peer, who)
    nid = f"n-{unique}"
    rec = record(notification(who.uid, nid), who.uid, offset=7)
    first = harness.service(config, owner="deliver-a")

    await first.handle_batch([rec])
    await first.handle_batch([rec])  # the commit was lost: the same process gets it again
    # A rebalance: another process (another ledger owner) gets the uncommitted batch.
    await harness.service(config, owner="deliver-b").handle_batch([dataclasses.replace(rec)])

    assert who.email is not None and who.phone is not None
    assert len(smtp_peer.to(who.email)) == 1
    assert len(sms_peer.to(who.phone)) == 1
    assert len(push_peer.payloads(browser)) == 1
    assert sum(push_peer.requests.values()) == 1
    # Each handling reports the same outcomes (same ids: the analytics count them once).
    reports = reports_of(await outcomes.everything(), nid)
    assert len(reports) == 9
    ids = {r["id"] for r in reports}
    assert ids == {f"dlv:sent:EMAIL:{nid}", f"dlv:sent:SMS:{nid}", f"dlv:delivered:PUSH:{nid}"}
    assert all("reason" not in r for r in reports)


async def test_two_copies_of_a_notification_in_one_batch_send_once(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    value = notification(who.uid, f"n-{unique}", ["EMAIL", "SMS"])

    await harness.service(config).handle_batch(
        [record(value, who.uid, offset=1), record(value, who.uid, offset=2)]
    )

    assert who.email is not None and who.phone is not None
    assert (len(smtp_peer.to(who.email)), len(sms_peer.to(who.phone))) == (1, 1)


# ---------------------------------------------------------------------------------------------
# Records that are not sent


async def test_unsigned_and_forged_records_send_nothing_and_are_dead_lettered(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    push_peer: PushPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    browser = await subscribed(harness.redis, push_peer, who)
    value = notification(who.uid, f"n-{unique}")
    raw = orjson.dumps(value)
    # Signed for another topic (a referral, say): the signature binds the topic.
    replayed = record(raw, who.uid, topic=topics.REFERRALS)
    forged = [
        record(raw, who.uid, offset=1, secret=None),
        record(raw, who.uid, offset=2, secret="not-the-engine-secret-0123456789abcdef"),
        dataclasses.replace(replayed, topic=topics.NOTIFICATIONS, offset=3),
        # Signed, then altered: another user's address book is not the attacker's to choose.
        dataclasses.replace(record(raw, who.uid, offset=4), value=raw.replace(b"Habari", b"Click ")),
    ]

    await harness.service(config).handle_batch(forged)

    assert smtp_peer.messages == [] and sms_peer.requests == 0 and push_peer.payloads(browser) == []
    letters = letters_of(await dead_letters.everything(), who.uid)
    assert sorted((d["offset"], d["reason"]) for d in letters) == [(o, "bad_signature") for o in (1, 2, 3, 4)]
    assert all(d["topic"] == topics.NOTIFICATIONS for d in letters)
    assert reports_of(await outcomes.everything(), f"n-{unique}") == []


async def test_a_value_that_is_not_json_is_dead_lettered_not_json(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, dead_letters: Tail, unique: str
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    raw = b'{"notification_id": "n-' + unique.encode() + b'", "channels": ["EMAIL"'

    await harness.service(config).handle_batch([record(raw, who.uid, offset=5)])

    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert (letter["reason"], letter["offset"], letter["raw"]) == ("not_json", 5, raw.decode())
    assert smtp_peer.messages == []


async def test_a_notification_older_than_the_send_limit_is_not_sent(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"
    stale = notification(who.uid, nid, ["EMAIL", "SMS"], deliver_at_ms=now_ms() - MAX_SEND_DELAY_MS - 60_000)
    # Just inside the limit: still worth sending.
    fresh = notification(who.uid, f"{nid}-b", ["EMAIL"], deliver_at_ms=now_ms() - MAX_SEND_DELAY_MS + 60_000)

    await harness.service(config).handle_batch(
        [record(stale, who.uid, offset=1), record(fresh, who.uid, offset=2)]
    )

    assert who.email is not None
    assert [m["X-Elimu-Notification"] for m in smtp_peer.to(who.email)] == [f"{nid}-b"]
    assert sms_peer.requests == 0
    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert (letter["reason"], letter["offset"]) == ("too_late", 1)
    assert reports_of(await outcomes.everything(), nid) == []


async def test_a_user_who_turned_email_off_since_gets_no_mail(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    outcomes: Tail,
    unique: str,
) -> None:
    who = user(unique, channels=("IN_APP", "SMS"))  # EMAIL removed after the worker chose it
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch(
        [record(notification(who.uid, nid, ["EMAIL", "SMS"]), who.uid)]
    )

    assert smtp_peer.messages == [] and smtp_peer.rcpt_attempts == {}
    assert who.phone is not None and len(sms_peer.to(who.phone)) == 1
    # Suppressed is not a send: no EMAIL report at all.
    assert results(reports_of(await outcomes.everything(), nid)) == {"SMS": ("sent", None)}


async def test_a_user_who_reset_their_channels_to_the_default_since_gets_no_mail(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, outcomes: Tail, unique: str
) -> None:
    who = user(unique)
    view = who.view()
    # PUT notification-settings without channels: "a field left out takes its default".
    view["notification_prefs"] = {"job_alerts": True, "digest": "off", "opt_out": []}
    await harness.redis.set(keys.user_profile(who.uid), orjson.dumps(view))
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["EMAIL"]), who.uid)])

    assert smtp_peer.messages == []
    assert reports_of(await outcomes.everything(), nid) == []


# ---------------------------------------------------------------------------------------------
# Mail failures


async def test_a_mailbox_the_server_refuses_bounces(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    assert who.email is not None
    smtp_peer.refuse.add(who.email)
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["EMAIL"]), who.uid)])

    assert smtp_peer.messages == []
    assert smtp_peer.rcpt_attempts[who.email] == 1  # permanent: not retried
    assert results(reports_of(await outcomes.everything(), nid)) == {
        "EMAIL": ("bounced", "recipient_refused")
    }
    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert letter["reason"] == "send_bounced"
    assert letter["message"].startswith("EMAIL:")


async def test_a_greylisting_server_gets_the_mail_after_retries(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, outcomes: Tail, unique: str
) -> None:
    who = user(unique)
    assert who.email is not None
    smtp_peer.tempfail[who.email] = 2
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["EMAIL"]), who.uid)])

    assert smtp_peer.rcpt_attempts[who.email] == 3
    [mail] = smtp_peer.to(who.email)
    assert mail["X-Elimu-Notification"] == nid
    assert results(reports_of(await outcomes.everything(), nid)) == {"EMAIL": ("sent", None)}
    # Backed off between the attempts (the pace's own waits are a fraction of that).
    assert [s for s in harness.sleeps if s >= 0.5] == [0.5, 1.0]


async def test_a_mail_server_that_is_not_listening_fails_after_the_retries(
    harness: Harness, config: DeliveryConfig, outcomes: Tail, dead_letters: Tail, unique: str
) -> None:
    down = dataclasses.replace(config, smtp=SmtpServer.from_url(f"smtp://127.0.0.1:{free_port()}"))
    who = user(unique)
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(down).handle_batch([record(notification(who.uid, nid, ["EMAIL"]), who.uid)])

    [report] = reports_of(await outcomes.everything(), nid)
    assert (report["channel"], report["result"]) == ("EMAIL", "failed")
    assert "retries_exhausted" in report["reason"]
    assert report["reason"].startswith("smtp_unreachable")
    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert letter["reason"] == "send_failed"


async def test_a_profile_without_an_email_address_fails_no_address(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique, email=None)
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["EMAIL"]), who.uid)])

    assert smtp_peer.messages == [] and smtp_peer.rcpt_attempts == {}
    assert results(reports_of(await outcomes.everything(), nid)) == {"EMAIL": ("failed", "no_address")}
    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert letter["reason"] == "send_failed"


async def test_a_channel_left_unconfigured_is_reported_channel_off(
    harness: Harness,
    config: DeliveryConfig,
    sms_peer: SmsPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    no_mail = dataclasses.replace(config, smtp=None)
    who = user(unique)
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(no_mail).handle_batch(
        [record(notification(who.uid, nid, ["EMAIL", "SMS"]), who.uid)]
    )

    assert results(reports_of(await outcomes.everything(), nid)) == {
        "EMAIL": ("failed", "channel_off"),
        "SMS": ("sent", None),
    }
    assert who.phone is not None and len(sms_peer.to(who.phone)) == 1
    assert letters_of(await dead_letters.everything(), who.uid) == []


# ---------------------------------------------------------------------------------------------
# SMS and push failures


async def test_a_number_the_sms_provider_refuses_bounces(
    harness: Harness,
    config: DeliveryConfig,
    sms_peer: SmsPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    assert who.phone is not None
    sms_peer.status_for[who.phone] = 403  # InvalidPhoneNumber
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["SMS"]), who.uid)])

    assert sms_peer.requests == 1 and sms_peer.received == []
    assert results(reports_of(await outcomes.everything(), nid)) == {"SMS": ("bounced", "sms_status_403")}
    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert letter["reason"] == "send_bounced"


async def test_an_sms_provider_error_is_retried_until_it_sends(
    harness: Harness, config: DeliveryConfig, sms_peer: SmsPeer, outcomes: Tail, unique: str
) -> None:
    sms_peer.fail_http = 1
    who = user(unique)
    await save_profile(harness.redis, who)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["SMS"]), who.uid)])

    assert sms_peer.requests == 2
    assert who.phone is not None and len(sms_peer.to(who.phone)) == 1
    assert sms_peer.errors == []
    assert results(reports_of(await outcomes.everything(), nid)) == {"SMS": ("sent", None)}


async def test_a_push_subscription_the_service_says_is_gone_is_removed_and_bounces(
    harness: Harness,
    config: DeliveryConfig,
    push_peer: PushPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    browser = await subscribed(harness.redis, push_peer, who)
    push_peer.gone.add(browser.name)
    nid = f"n-{unique}"
    subscriptions = keys.user_push_subscriptions(who.uid)
    assert await harness.redis.hexists(subscriptions, browser.subscription.id)

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["PUSH"]), who.uid)])

    assert push_peer.errors == []  # signed and encrypted properly: the 410 is about the browser
    assert push_peer.requests[browser.name] == 1
    assert not await harness.redis.hexists(subscriptions, browser.subscription.id)
    assert results(reports_of(await outcomes.everything(), nid)) == {"PUSH": ("bounced", "subscription_gone")}
    [letter] = letters_of(await dead_letters.everything(), who.uid)
    assert letter["reason"] == "send_bounced"


async def test_push_reaches_the_live_browser_when_another_is_gone(
    harness: Harness, config: DeliveryConfig, push_peer: PushPeer, outcomes: Tail, unique: str
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    old = await subscribed(harness.redis, push_peer, who)
    new = await subscribed(harness.redis, push_peer, who)
    push_peer.gone.add(old.name)
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["PUSH"]), who.uid)])

    assert [p["notification_id"] for p in push_peer.payloads(new)] == [nid]
    stored = await harness.redis.hkeys(keys.user_push_subscriptions(who.uid))
    assert stored == [new.subscription.id.encode()]
    assert results(reports_of(await outcomes.everything(), nid)) == {"PUSH": ("delivered", None)}


async def test_push_counts_as_delivered_when_one_stored_subscription_is_unusable(
    harness: Harness, config: DeliveryConfig, push_peer: PushPeer, outcomes: Tail, unique: str
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    live = await subscribed(harness.redis, push_peer, who)
    # Stored before the API checked keys, or by hand: read back without re-validation.
    broken = {"endpoint": f"{push_peer.origin}/push/broken", "keys": {"p256dh": "AAAA", "auth": "BBBB"}}
    await harness.redis.hset(keys.user_push_subscriptions(who.uid), "broken", orjson.dumps(broken))
    nid = f"n-{unique}"

    await harness.service(config).handle_batch([record(notification(who.uid, nid, ["PUSH"]), who.uid)])

    await wait_until(lambda: _pushed(push_peer, live), what="the live browser's push")
    assert results(reports_of(await outcomes.everything(), nid)) == {"PUSH": ("delivered", None)}


async def _pushed(push_peer: PushPeer, browser: Browser) -> bool:
    return len(push_peer.payloads(browser)) == 1


# ---------------------------------------------------------------------------------------------
# The consumer loop on the real broker


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes, str | None]]) -> None:
    """(key, value, secret) records, signed with ``secret`` for ``topic`` as the engine signs
    its records (None: unsigned)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, secret in records:
            signer = None if secret is None else RecordSigner(secret, frozenset({topic}))
            headers = [] if signer is None else signer.headers(topic, key.encode(), value)
            await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def run_serve(
    settings: Settings, config: DeliveryConfig, topic: str, group: str
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, config, stop, topic=topic, group=group))
    return stop, task


async def stop_serving(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 15)


async def test_serve_delivers_what_the_topic_holds_once_and_refuses_what_the_engine_did_not_sign(
    settings: Settings,
    config: DeliveryConfig,
    redis: Redis,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    push_peer: PushPeer,
    outcomes: Tail,
    dead_letters: Tail,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    topic = await create_topic(kafka_bootstrap, f"notifications-{unique}", partitions=2)
    who, other = user(unique), user(unique[::-1])
    victim = user(unique, uid=f"v-{unique}", email=f"victim.{unique}@example.org")
    for u in (who, other, victim):
        await save_profile(redis, u)
    browser = await subscribed(redis, push_peer, who)
    nid, nid2, forged_nid = f"n-{unique}", f"n-{unique}-2", f"n-{unique}-forged"
    forged = orjson.dumps(notification(victim.uid, forged_nid, ["EMAIL", "SMS"]))
    await produce(
        kafka_bootstrap,
        topic,
        [
            (who.uid, orjson.dumps(notification(who.uid, nid)), SECRET),
            (other.uid, orjson.dumps(notification(other.uid, nid2, ["IN_APP", "EMAIL"])), SECRET),
            (who.uid, b"{not json", SECRET),
            # Anyone able to write to the broker: unsigned, or signed with a guessed secret.
            (victim.uid, forged, None),
            (victim.uid, forged, "not-the-engine-secret-0123456789abcdef"),
        ],
    )
    assert who.email is not None and who.phone is not None and other.email is not None

    async def everything_sent() -> bool:
        return (
            len(smtp_peer.to(who.email or "")) == 1
            and len(smtp_peer.to(other.email or "")) == 1
            and len(sms_peer.to(who.phone or "")) == 1
            and len(push_peer.payloads(browser)) == 1
        )

    stop, task = await run_serve(settings, config, topic, f"deliver-{unique}")
    try:
        await wait_until(everything_sent, what="the mails, the SMS and the push")
        await outcomes.wait_for(
            lambda rs: len(reports_of(rs, nid)) == 3 and len(reports_of(rs, nid2)) == 1, "reports"
        )
        await dead_letters.wait_for(
            lambda rs: len(letters_of(rs, who.uid)) == 1 and len(letters_of(rs, victim.uid)) == 2,
            "the dead letters",
        )
    finally:
        await stop_serving(stop, task)
    assert results(reports_of(outcomes.records, nid)) == {
        "EMAIL": ("sent", None), "SMS": ("sent", None), "PUSH": ("delivered", None),
    }  # fmt: skip
    assert results(reports_of(outcomes.records, nid2)) == {"EMAIL": ("sent", None)}
    for out in outcomes.records:
        assert_signed(out)
    [letter] = letters_of(dead_letters.records, who.uid)
    assert (letter["topic"], letter["reason"]) == (topic, "not_json")
    assert [d["reason"] for d in letters_of(dead_letters.records, victim.uid)] == ["bad_signature"] * 2
    assert victim.email is not None and smtp_peer.to(victim.email) == []
    assert reports_of(outcomes.records, forged_nid) == []

    # Another group reads the topic again from the start (a reset, a lost commit): the ledger
    # sends nothing twice, and the outcomes are reported again under the same ids.
    stop, task = await run_serve(settings, config, topic, f"deliver-{unique}-again")
    try:
        await outcomes.wait_for(lambda rs: len(reports_of(rs, nid)) == 6, "the reports again")
    finally:
        await stop_serving(stop, task)
    assert (len(smtp_peer.messages), len(sms_peer.received), sum(push_peer.requests.values())) == (2, 1, 1)
    assert {r["id"] for r in reports_of(outcomes.records, nid)} == {
        f"dlv:sent:EMAIL:{nid}", f"dlv:sent:SMS:{nid}", f"dlv:delivered:PUSH:{nid}",
    }  # fmt: skip
    assert reports_of(outcomes.records, forged_nid) == []
    assert push_peer.errors == [] and sms_peer.errors == []
