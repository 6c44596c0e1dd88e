"""The delivery service under load and trouble: a batch larger than the Redis pool, a provider
that hangs (its channel only is held up, briefly), the circuit breaker, headers a mail client
can use, and push payloads within what push services take.

The peers and the harness are tests/delivery/conftest.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Iterator

import orjson
import pytest
from redis.asyncio import Redis

from delivery.config import BadSetting, DeliveryConfig, SmtpServer
from delivery.push import MAX_PAYLOAD_BYTES, WebPushChannel
from delivery.service import Breaker
from infra.net import free_port
from infra.redis_conn import connect
from infra.tracking import Links, LinkSigner
from models.delivery import DeliveryRequest, header_text
from tests.delivery.conftest import (
    SECRET,
    Harness,
    SmsPeer,
    SmtpPeer,
    User,
    notification,
    now_ms,
    record,
    save_profile,
)


async def test_a_batch_larger_than_the_redis_pool_is_sent_whole(
    harness: Harness, config: DeliveryConfig, sms_peer: SmsPeer, redis_url: str
) -> None:
    # The service's own client, as `elimu deliver` makes it (a pool of 100 connections).
    client = connect(redis_url)
    try:
        users = [User(f"u-{i}", None, f"+2547{i:08d}", channels=("SMS",)) for i in range(220)]
        for user in users:
            await save_profile(client, user)
        harness.redis = client
        service = harness.service(dataclasses.replace(config, rate_per_s={"SMS": 10_000.0}))
        records = [
            record(notification(u.uid, f"n-{u.uid}", ("SMS",)), u.uid, offset=i) for i, u in enumerate(users)
        ]
        await service.handle_batch(records)
    finally:
        await client.aclose()
    assert len(sms_peer.received) == 220
    assert len({r["to"] for r in sms_peer.received}) == 220


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never says a word (a mail server that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_a_hanging_mail_server_holds_mail_only(
    harness: Harness, config: DeliveryConfig, sms_peer: SmsPeer, redis: Redis, silent_server: int
) -> None:
    hanging = dataclasses.replace(
        config, smtp=SmtpServer.from_url(f"smtp://127.0.0.1:{silent_server}"), timeout_s=0.5
    )
    service = harness.service(hanging)
    users = [
        User(f"h-{i}", f"h{i}@example.org", f"+2547{i:08d}", channels=("EMAIL", "SMS")) for i in range(12)
    ]
    for user in users:
        await save_profile(redis, user)
    records = [
        record(notification(u.uid, f"n-{u.uid}", ("EMAIL", "SMS")), u.uid, offset=i)
        for i, u in enumerate(users)
    ]
    sms_done = asyncio.Event()

    async def watch_sms() -> None:
        while len(sms_peer.received) < len(users):
            await asyncio.sleep(0.01)
        sms_done.set()

    watcher = asyncio.create_task(watch_sms())
    batch = asyncio.create_task(service.handle_batch(records))
    # Every SMS is out while the mail is still waiting on the silent server.
    await asyncio.wait_for(sms_done.wait(), timeout=20)
    assert not batch.done()
    await asyncio.wait_for(batch, timeout=60)
    watcher.cancel()
    # The breaker opened after a few timeouts: the rest failed at once, not one timeout each.
    assert service.breakers["EMAIL"].opened_at is not None


def test_the_breaker_opens_after_repeated_failures_and_half_opens_after_cooling() -> None:
    breaker = Breaker()
    for _ in range(Breaker.THRESHOLD - 1):
        breaker.failed(100.0)
    assert not breaker.open(100.0)
    breaker.failed(100.0)
    assert breaker.open(100.0 + Breaker.COOL_S - 1)
    assert not breaker.open(100.0 + Breaker.COOL_S)  # one is let through
    breaker.failed(200.0)  # ... and fails: open again at once
    assert breaker.open(200.0)
    breaker.succeeded()
    assert not breaker.open(200.0)


async def test_list_unsubscribe_is_one_plain_header(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, redis: Redis
) -> None:
    # A long public address makes the link longer than a folded line.
    service = harness.service(dataclasses.replace(config, public_url="https://" + "a" * 60 + ".example.org"))
    user = User(
        "u-mail", "amani@example.org", None, display_name='Ünï "x" <x@evil.com>,', channels=("EMAIL",)
    )
    await save_profile(redis, user)
    await service.handle_batch([record(notification(user.uid, "n-mail", ("EMAIL",)), user.uid)])
    (mail,) = smtp_peer.messages
    (raw,) = smtp_peer.raw
    lines = [li.rstrip(b"\r") for li in raw.split(b"\n")]
    line = next(li for li in lines if li.lower().startswith(b"list-unsubscribe:"))
    assert line.startswith(b"List-Unsubscribe: <https://") and b"=?" not in line and line.endswith(b">")
    # The name is quoted: the To header names one mailbox, ours.
    assert [a.addr_spec for a in mail["To"].addresses] == ["amani@example.org"]


def test_header_text_drops_every_line_breaking_character() -> None:
    assert header_text("a\r\nb\x85c\u2028d\u2029e\x00f") == "a  b c d e f"


def test_a_push_payload_fits_what_push_services_take(tmp_path: object) -> None:
    from py_vapid import Vapid

    vapid = Vapid()
    vapid.generate_keys()

    async def forget(user_id: str, subscription_id: str) -> None:
        return None

    channel = WebPushChannel(
        vapid, "mailto:ops@example.org", Links(LinkSigner(SECRET), "https://api.example.org"), forget
    )
    request = DeliveryRequest(
        notification_id="n-1", user_id="u-1", type="gentle_reminder", channels=("PUSH",),
        subject="Hi", body="ü" * 4000, cta="Go", template="t", variant="a", deliver_at_ms=now_ms(),
    )  # fmt: skip
    payload = channel.payload(request)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert orjson.loads(payload)["body"].endswith("…")


def test_credentials_are_never_sent_in_the_clear_off_loopback() -> None:
    with pytest.raises(BadSetting):
        SmtpServer.from_url("smtp://user:secret@mail.example.org:587")
    assert SmtpServer.from_url("smtp://user:secret@mail.example.org:587?starttls=1").tls == "starttls"
    assert SmtpServer.from_url("smtps://user:secret@mail.example.org").tls == "tls"
    assert SmtpServer.from_url(f"smtp://user:secret@127.0.0.1:{free_port()}").username == "user"
