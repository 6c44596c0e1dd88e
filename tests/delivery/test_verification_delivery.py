"""A contact verification through the delivery service, against the real SMTP and SMS peers: the
code goes to the address waiting for it (not the profile's), whatever the user's channel
settings, with no tracking and nothing to unsubscribe from, and it is no intervention (no
report for the analytics).
"""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

import orjson
import pytest

from delivery.config import DeliveryConfig
from infra.tracking import ROUTES, LinkSigner
from models.contact_verification import CodeBook, CodeSealer, pending_id_of, verification_message
from models.events import format_ts
from tests.delivery.conftest import (
    PUBLIC_URL,
    SECRET,
    Harness,
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
)

pytestmark = pytest.mark.integration


async def test_a_code_reaches_the_pending_address_only_and_is_not_an_intervention(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    # In-app only so far, with an old address and number on the profile.
    who = User(f"u-{unique}", f"old.{unique}@example.org", "+254700000001", channels=("IN_APP",))
    await save_profile(harness.redis, who)
    book = CodeBook(SECRET)
    new_mail, code_mail = book.new(who.uid, "EMAIL", f"new.{unique}@example.org", now_ms())
    new_phone, code_sms = book.new(who.uid, "SMS", "+254700000002", now_ms())
    stamp = format_ts(now_ms())
    sealer = CodeSealer(SECRET)
    mail_value = verification_message(
        who.uid, new_mail, sealer.seal(who.uid, new_mail.id, code_mail), stamp, link_hint=True
    )
    sms_value = verification_message(
        who.uid, new_phone, sealer.seal(who.uid, new_phone.id, code_sms), stamp, link_hint=False
    )
    # A nudge after them: its report shows the batch's reports were written.
    nudge = notification(who.uid, f"n-{unique}", ("EMAIL",))
    service = harness.service(config)

    await service.handle_batch(
        [record(mail_value, who.uid), record(sms_value, who.uid, offset=1), record(nudge, who.uid, offset=2)]
    )

    [mail] = smtp_peer.to(new_mail.address)
    assert smtp_peer.to(str(who.email)) == []  # the nudge: email is not among the user's channels
    assert mail["List-Unsubscribe"] is None  # nothing to leave: the address gets nothing else yet
    text_part, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, page = text_part.get_content(), html_part.get_content()
    assert code_mail in text and "<img" not in page  # no open pixel
    hrefs = [html.unescape(h) for h in re.findall(r'<a href="([^"]+)"', page)]
    assert len(hrefs) == 1 and hrefs[0].startswith(PUBLIC_URL + ROUTES["verify"]), hrefs
    link = LinkSigner(SECRET).verify(unquote(hrefs[0][len(PUBLIC_URL + ROUTES["verify"]) :]), now_ms())
    assert (link.kind, link.user_id, link.channel) == ("verify", who.uid, "EMAIL")
    assert pending_id_of(link.notification_id) == new_mail.id

    [sms] = sms_peer.to(new_phone.address)
    assert code_sms in sms["message"] and sms_peer.to(str(who.phone)) == []
    # The record on Kafka never held the code in clear: only the deliverer unsealed it.
    assert code_sms not in orjson.dumps(sms_value).decode() and "{code}" in str(sms_value["body"])

    written = await outcomes.everything()
    assert reports_of(written, nudge["notification_id"]) == []  # suppressed, not sent: no report
    for value in (mail_value, sms_value):
        assert reports_of(written, str(value["notification_id"])) == []
    # Other tests share the topic: only this user's dead letters are this test's.
    assert letters_of(await dead_letters.everything(), who.uid) == []


async def test_a_verification_whose_code_does_not_unseal_is_dead_lettered(
    harness: Harness, config: DeliveryConfig, sms_peer: SmsPeer, dead_letters: Tail, unique: str
) -> None:
    """Sealed for another request (or tampered): nothing is sent, the reason says why."""
    uid = f"u-{unique}"
    book, sealer = CodeBook(SECRET), CodeSealer(SECRET)
    one, code = book.new(uid, "SMS", "+254700000011", now_ms())
    other, _ = book.new(uid, "SMS", "+254700000011", now_ms())
    value = verification_message(
        uid, one, sealer.seal(uid, other.id, code), format_ts(now_ms()), link_hint=False
    )
    await harness.service(config).handle_batch([record(value, uid)])
    await dead_letters.wait_for(lambda got: bool(letters_of(got, uid)), "the dead letter")
    assert [letter["reason"] for letter in letters_of(await dead_letters.everything(), uid)] == ["bad_code"]
    assert sms_peer.to("+254700000011") == []


async def test_a_forged_verification_is_dead_lettered_and_sends_nothing(
    harness: Harness, config: DeliveryConfig, smtp_peer: SmtpPeer, dead_letters: Tail, unique: str
) -> None:
    """Anyone able to write to the broker could otherwise mail any address anything."""
    pending, code = CodeBook(SECRET).new(f"u-{unique}", "EMAIL", f"victim.{unique}@example.org", now_ms())
    sealed = CodeSealer(SECRET).seal(f"u-{unique}", pending.id, code)
    value = verification_message(f"u-{unique}", pending, sealed, format_ts(now_ms()), link_hint=True)
    service = harness.service(config)
    await service.handle_batch([record(value, f"u-{unique}", secret="a-forger-s-own-secret-0123456789")])
    uid = f"u-{unique}"
    await dead_letters.wait_for(lambda got: bool(letters_of(got, uid)), "the forged record's dead letter")
    assert [letter["reason"] for letter in letters_of(await dead_letters.everything(), uid)] == [
        "bad_signature"
    ]
    assert smtp_peer.to(pending.address) == []
