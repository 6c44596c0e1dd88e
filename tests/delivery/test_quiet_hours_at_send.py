"""Quiet hours checked again when a notification is sent (delivery/deferred.py): a backlog must
not ring a phone at night. Against the real Redis, broker and SMTP/SMS peers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from redis.asyncio import Redis

from delivery.config import DeliveryConfig
from delivery.deferred import Parked
from infra import keys
from models.delivery import MAX_SEND_DELAY_MS
from tests.delivery.conftest import (
    Harness,
    SmsPeer,
    SmtpPeer,
    Tail,
    User,
    notification,
    now_ms,
    record,
    reports_of,
)

pytestmark = pytest.mark.integration


def window_around(at_ms: int) -> list[str]:
    """Quiet hours from an hour before ``at_ms`` to an hour after, on the user's clock
    (``User.view``: Nairobi)."""
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC).astimezone(ZoneInfo("Africa/Nairobi"))
    return [(at - timedelta(hours=1)).strftime("%H:%M"), (at + timedelta(hours=1)).strftime("%H:%M")]


async def quiet_user(redis: Redis, unique: str, at_ms: int) -> User:
    who = User(
        f"u-{unique}", f"amani.{unique}@example.org", "+254711000333", channels=("IN_APP", "EMAIL", "SMS")
    )
    view = who.view()
    view["notification_prefs"]["quiet_hours"] = window_around(at_ms)
    await redis.set(keys.user_profile(who.uid), orjson.dumps(view))
    return who


async def test_a_send_due_in_quiet_hours_waits_for_their_end_then_goes_once(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    outcomes: Tail,
    unique: str,
) -> None:
    clock = [now_ms()]
    who = await quiet_user(harness.redis, unique, clock[0])
    parked = Parked(harness.redis, f"{keys.DELIVERY_PARKED}:{unique}")
    service = harness.service(config, parked=parked, clock_ms=lambda: clock[0])
    nid = f"n-{unique}"
    rec = record(notification(who.uid, nid, ("IN_APP", "EMAIL", "SMS"), deliver_at_ms=clock[0]), who.uid)

    await service.handle_batch([rec])
    await service.handle_batch([rec])  # redelivered: parked once
    assert smtp_peer.to(str(who.email)) == [] and sms_peer.to(str(who.phone)) == []
    assert await harness.redis.zcard(parked.key) == 1
    assert await service.handle_parked() == 0  # not due yet

    clock[0] += 61 * 60 * 1000  # past the window's end
    assert await service.handle_parked() == 1
    assert len(smtp_peer.to(str(who.email))) == 1 and len(sms_peer.to(str(who.phone))) == 1
    assert await harness.redis.zcard(parked.key) == 0
    assert await service.handle_parked() == 0
    written = await outcomes.everything()
    assert sorted((r["channel"], r["result"]) for r in reports_of(written, nid)) == [
        ("EMAIL", "sent"),
        ("SMS", "sent"),
    ]


async def test_a_parked_record_is_sent_when_quiet_hours_end_even_past_the_staleness_bound(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, unique: str
) -> None:
    """Due at 18:00, 4.5 h of backlog, quiet from 22:00 to 07:00: it wakes 13 h after its time.
    The wait was the user's wish: it is sent, not dead-lettered too_late."""
    clock = [now_ms()]
    who = await quiet_user(harness.redis, unique, clock[0])
    parked = Parked(harness.redis, f"{keys.DELIVERY_PARKED}:{unique}")
    service = harness.service(config, parked=parked, clock_ms=lambda: clock[0])
    due = clock[0] - 4 * 3_600_000  # 4 h behind already
    await service.handle_batch(
        [record(notification(who.uid, f"n-{unique}", ("EMAIL",), deliver_at_ms=due), who.uid)]
    )
    assert smtp_peer.to(str(who.email)) == [] and await harness.redis.zcard(parked.key) == 1
    clock[0] += MAX_SEND_DELAY_MS  # the window ends long after: 16 h past its time
    await quiet_user(harness.redis, unique, clock[0] - 3 * 3_600_000)  # no longer quiet now
    assert await service.handle_parked() == 1
    assert len(smtp_peer.to(str(who.email))) == 1


async def test_a_record_parked_again_while_handled_stays_parked(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, unique: str
) -> None:
    """The user's quiet hours moved while the record waited: it waits for the new end, it is
    not removed with the lease."""
    clock = [now_ms()]
    who = await quiet_user(harness.redis, unique, clock[0])
    parked = Parked(harness.redis, f"{keys.DELIVERY_PARKED}:{unique}")
    service = harness.service(config, parked=parked, clock_ms=lambda: clock[0])
    await service.handle_batch([record(notification(who.uid, f"n-{unique}", ("EMAIL",)), who.uid)])
    clock[0] += 61 * 60 * 1000
    await quiet_user(harness.redis, unique, clock[0])  # a new window around the new now
    assert await service.handle_parked() == 1
    assert smtp_peer.to(str(who.email)) == []
    assert await harness.redis.zcard(parked.key) == 1  # parked again, for the new end
    clock[0] += 61 * 60 * 1000
    assert await service.handle_parked() == 1 and len(smtp_peer.to(str(who.email))) == 1


async def test_a_verification_code_is_never_held_back(
    harness: Harness, config: DeliveryConfig, sms_peer: SmsPeer, unique: str
) -> None:
    from models.contact_verification import CodeBook, CodeSealer, verification_message
    from models.events import format_ts
    from tests.delivery.conftest import SECRET

    clock = [now_ms()]
    who = await quiet_user(harness.redis, unique, clock[0])
    parked = Parked(harness.redis, f"{keys.DELIVERY_PARKED}:{unique}")
    service = harness.service(config, parked=parked, clock_ms=lambda: clock[0])
    pending, code = CodeBook("test-secret").new(who.uid, "SMS", "+254711000444", clock[0])
    value = verification_message(
        who.uid,
        pending,
        CodeSealer(SECRET).seal(who.uid, pending.id, code),
        format_ts(clock[0]),
        link_hint=False,
    )
    await service.handle_batch([record(value, who.uid)])
    assert len(sms_peer.to("+254711000444")) == 1 and await harness.redis.zcard(parked.key) == 0
