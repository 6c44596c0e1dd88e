"""Double opt-in of a user's email address and phone number (api/routes/contact.py), on the real
Redis and broker: a new address waits for its code, the code travels as a signed
`notifications` record to that address, and only a confirmed address reaches the profile.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from api import profile_writes
from infra import keys
from infra.tracking import Links, LinkSigner
from models.contact_verification import (
    MAX_ATTEMPTS,
    SEND_LIMITS,
    VERIFICATION_TYPE,
    CodeSealer,
    pending_id_of,
)
from models.delivery import DeliveryRequest, parse_notification
from models.events import InvalidEvent
from tests.api.conftest import SECRET, bearer, end_offset, read_topic
from tests.api.test_profile_routes import HELD, seed
from tests.conftest import create_topic

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"


def now_ms() -> int:
    return int(time.time() * 1000)


def profile_path(user_id: str) -> str:
    return f"/v1/users/{user_id}/profile"


def verify_path(user_id: str) -> str:
    return f"/v1/users/{user_id}/contact-verification"


@pytest.fixture(autouse=True)
def short_applied_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_writes, "APPLIED_WAIT_S", 0.2)  # no worker applies it here


@pytest.fixture
async def topics_(kafka_bootstrap: str, unique: str) -> dict[str, str]:
    names = {name: f"{name}-{unique}" for name in ("profiles", "notifications")}
    for topic in names.values():
        await create_topic(kafka_bootstrap, topic)
    return names


@pytest.fixture
async def client(make_client: Callable[..., Any], topics_: dict[str, str]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client(
        profiles_topic=topics_["profiles"], notifications_topic=topics_["notifications"]
    )
    result.headers["user-agent"] = BROWSER
    return result


def code_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """The code a record carries, unsealed as the deliverer unseals it (never in clear)."""
    value = orjson.loads(record.value)
    assert re.search(r"\b\d{6}\b", value["body"]) is None and "{code}" in value["body"]
    code = CodeSealer(SECRET).unseal(
        value["user_id"], pending_id_of(value["notification_id"]), value["code_sealed"]
    )
    assert code is not None, record.value
    return code


async def test_a_new_email_waits_for_its_code_which_goes_to_that_address(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str, redis: Redis
) -> None:
    await seed(redis, HELD, now_ms() - 60_000)
    response = await client.put(
        profile_path("u-1"),
        json={"display_name": "Amina", "email": "New@Mail.Example.org"},
        headers=bearer("u-1"),
    )
    assert response.status_code == 202, response.text
    (pending,) = response.json()["pending_verification"]
    assert (pending["channel"], pending["address"], pending["attempts_left"]) == (
        "EMAIL",
        "New@mail.example.org",
        MAX_ATTEMPTS,
    )
    # The profile keeps the confirmed address meanwhile: nothing is sent to the new one but the code.
    (written,) = await read_topic(kafka_bootstrap, topics_["profiles"], 1)
    assert orjson.loads(written.value)["email"] == "amina@example.com"
    (sent,) = await read_topic(kafka_bootstrap, topics_["notifications"], 1)
    assert sent.key == b"u-1"
    # (Signed like every `notifications` record: the delivery tests send one through the service.)
    request = parse_notification(sent.value)
    assert (request.type, request.channels, request.to) == (
        VERIFICATION_TYPE,
        ("EMAIL",),
        "New@mail.example.org",
    )
    assert request.verification and len(code_of(sent)) == 6
    # The code itself is kept only as a MAC.
    stored = await redis.hgetall(keys.contact_pending("u-1", "EMAIL"))
    assert code_of(sent).encode() not in b"".join(stored.values())
    listed = await client.get(verify_path("u-1"), headers=bearer("u-1"))
    assert [p["address"] for p in listed.json()["pending"]] == ["New@mail.example.org"]


async def test_the_right_code_writes_the_address_and_a_wrong_one_counts_down(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str, redis: Redis
) -> None:
    await seed(redis, HELD, now_ms() - 60_000)
    await client.put(
        profile_path("u-1"),
        json={"phone": "+254 711 000 222", "email": "amina@example.com", "skills": ["go"]},
        headers=bearer("u-1"),
    )
    (sent,) = await read_topic(kafka_bootstrap, topics_["notifications"], 1)
    code = code_of(sent)
    wrong = "000000" if code != "000000" else "111111"
    response = await client.post(
        verify_path("u-1"), json={"channel": "SMS", "code": wrong}, headers=bearer("u-1")
    )
    assert response.status_code == 422 and response.json()["error"]["attempts_left"] == MAX_ATTEMPTS - 1
    # Another user cannot confirm it, even with the right code.
    other = await client.post(
        verify_path("u-1"), json={"channel": "SMS", "code": code}, headers=bearer("u-2")
    )
    assert other.status_code == 403
    spaced = f"{code[:3]} {code[3:]}"  # as a person types it
    response = await client.post(
        verify_path("u-1"), json={"channel": "sms", "code": spaced}, headers=bearer("u-1")
    )
    assert response.status_code in (200, 202), response.text
    _, confirmed = await read_topic(kafka_bootstrap, topics_["profiles"], 2)
    record = orjson.loads(confirmed.value)
    assert record["phone"] == "+254711000222" and record["email"] == "amina@example.com"
    # Built on the PUT's profile (not yet in the worker's view), the rest of it kept.
    assert record["skills"] == ["go"] and "display_name" not in record
    assert (await client.get(verify_path("u-1"), headers=bearer("u-1"))).json() == {"pending": []}
    again = await client.post(
        verify_path("u-1"), json={"channel": "SMS", "code": code}, headers=bearer("u-1")
    )
    assert again.status_code == 404  # used once


async def test_too_many_wrong_codes_end_the_pending_address(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str
) -> None:
    await client.put(profile_path("u-3"), json={"email": "guess@example.net"}, headers=bearer("u-3"))
    (sent,) = await read_topic(kafka_bootstrap, topics_["notifications"], 1)
    code = code_of(sent)
    wrong = "000000" if code != "000000" else "111111"
    statuses = []
    for _ in range(MAX_ATTEMPTS):
        body = {"channel": "EMAIL", "code": wrong}
        statuses.append((await client.post(verify_path("u-3"), json=body, headers=bearer("u-3"))).status_code)
    assert statuses == [422] * (MAX_ATTEMPTS - 1) + [410]
    late = await client.post(
        verify_path("u-3"), json={"channel": "EMAIL", "code": code}, headers=bearer("u-3")
    )
    assert late.status_code == 404  # the right code, too late: a new one must be asked for
    # Only the first profile (with no email) was ever written.
    assert await end_offset(kafka_bootstrap, topics_["profiles"]) == 1


async def test_the_mailed_link_confirms_on_post_only_and_a_replaced_link_is_dead(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str, redis: Redis
) -> None:
    await seed(redis, HELD, now_ms() - 60_000)
    await client.put(profile_path("u-1"), json={"email": "first@example.org"}, headers=bearer("u-1"))
    (first,) = await read_topic(kafka_bootstrap, topics_["notifications"], 1)
    links = Links(LinkSigner(SECRET), "http://api.test")
    old_url = links.url("verify", parse_notification(first.value), "EMAIL", now_ms())
    resent = await client.post(
        f"{verify_path('u-1')}/resend", json={"channel": "EMAIL"}, headers=bearer("u-1")
    )
    assert resent.status_code == 202
    _, second = await read_topic(kafka_bootstrap, topics_["notifications"], 2)
    assert parse_notification(second.value).notification_id != parse_notification(first.value).notification_id
    assert (await client.post(old_url.removeprefix("http://api.test"))).status_code == 404

    url = links.url("verify", parse_notification(second.value), "EMAIL", now_ms()).removeprefix(
        "http://api.test"
    )
    page = await client.get(url)  # what a mail scanner does: it must not confirm
    assert page.status_code == 200 and "first@example.org" in page.text and 'method="post"' in page.text
    assert await redis.exists(keys.contact_pending("u-1", "EMAIL"))
    await redis.set(keys.email_suppressed("first@example.org"), "1")  # an old bounce
    confirmed = await client.post(url)
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert not await redis.exists(keys.email_suppressed("first@example.org"))  # it works: lifted
    _, record = await read_topic(kafka_bootstrap, topics_["profiles"], 2)
    assert orjson.loads(record.value)["email"] == "first@example.org"
    assert (await client.post(url)).status_code == 404  # used


async def test_a_repeated_put_sends_no_second_code_and_removal_needs_none(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str, redis: Redis
) -> None:
    await seed(redis, HELD, now_ms() - 60_000)
    for name in ("A", "B"):
        body = {"display_name": name, "email": "same@example.org", "phone": None}
        response = await client.put(profile_path("u-1"), json=body, headers=bearer("u-1"))
        assert (
            response.status_code == 202 and response.json()["pending_verification"][0]["channel"] == "EMAIL"
        )
        # Removing the number takes effect at once: no one is reached by it any more.
        assert response.json()["phone"] is None and response.json()["email"] == "amina@example.com"
    assert await end_offset(kafka_bootstrap, topics_["notifications"]) == 1


async def test_codes_to_one_address_are_paced_whoever_asks_however_spelled(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str
) -> None:
    """Many accounts naming one stranger's mailbox, each spelling it another way, cannot mail
    them a stream of codes: 10 a day reach it, in all."""
    limit = SEND_LIMITS["address"][0]
    spellings = [
        f"V.ictim+{i}@Gmail.com" if i % 2 else f"victim+{i}@googlemail.com" for i in range(limit + 2)
    ]
    answers = []
    for i, address in enumerate(spellings):
        user = f"spam-{i}"
        response = await client.put(profile_path(user), json={"email": address}, headers=bearer(user))
        answers.append(response.status_code)
    assert answers == [202] * limit + [429, 429]
    assert await end_offset(kafka_bootstrap, topics_["notifications"]) == limit


async def test_a_refused_resend_leaves_the_code_already_sent_working(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str
) -> None:
    await client.put(profile_path("u-5"), json={"phone": "+254 711 555 000"}, headers=bearer("u-5"))
    (sent,) = await read_topic(kafka_bootstrap, topics_["notifications"], 1)
    own = SEND_LIMITS["user-address"][0]
    answers = [
        (
            await client.post(f"{verify_path('u-5')}/resend", json={"channel": "SMS"}, headers=bearer("u-5"))
        ).status_code
        for _ in range(own)
    ]
    assert answers == [202] * (own - 1) + [429]  # the owner's own allowance for that number
    *_, last = await read_topic(kafka_bootstrap, topics_["notifications"], own)
    # The refused resend changed nothing: the newest code sent still confirms.
    body = {"channel": "SMS", "code": code_of(last)}
    assert (await client.post(verify_path("u-5"), json=body, headers=bearer("u-5"))).status_code in (200, 202)
    assert code_of(sent) != "" and sent.offset == 0


async def test_confirming_a_request_replaced_meanwhile_removes_nothing(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str, redis: Redis
) -> None:
    """The mailed link of an older request: 404, and the newer one still waits for its code."""
    await client.put(profile_path("u-6"), json={"email": "six@example.org"}, headers=bearer("u-6"))
    (first,) = await read_topic(kafka_bootstrap, topics_["notifications"], 1)
    links = Links(LinkSigner(SECRET), "http://api.test")
    old_link = links.url("verify", parse_notification(first.value), "EMAIL", now_ms())
    await client.post(f"{verify_path('u-6')}/resend", json={"channel": "EMAIL"}, headers=bearer("u-6"))
    assert (await client.post(old_link.removeprefix("http://api.test"))).status_code == 404
    assert await redis.exists(keys.contact_pending("u-6", "EMAIL"))


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "FAX", "code": "123456"},
        {"channel": "EMAIL", "code": 123456},
        {"channel": "EMAIL"},
        {"code": "123456"},
    ],
)
async def test_malformed_confirmations_are_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post(verify_path("u-1"), json=body, headers=bearer("u-1"))
    assert response.status_code == 422


async def test_a_verification_request_parses_only_with_one_checked_address() -> None:
    base = {
        "notification_id": "verify:x",
        "user_id": "u-1",
        "type": VERIFICATION_TYPE,
        "body": "code 123456",
        "deliver_at": "2026-12-07T10:00:00Z",
        "code_sealed": "sealed",
    }
    ok: DeliveryRequest = parse_notification(
        orjson.dumps({**base, "channels": ["SMS"], "to": "+254 700 000 001"})
    )
    assert ok.to == "+254700000001"
    for bad in (
        {"channels": ["EMAIL", "SMS"], "to": "a@b.co"},
        {"channels": ["PUSH"], "to": "a@b.co"},
        {"channels": ["EMAIL"], "to": "a@b.co, c@d.co"},
        {"channels": ["EMAIL"]},
        {"channels": ["EMAIL"], "to": "a@b.co", "code_sealed": None},  # no code, nothing to send
    ):
        with pytest.raises(InvalidEvent):
            parse_notification(orjson.dumps({**base, **bad}))
    # Any other type never carries an address of its own.
    other = parse_notification(
        orjson.dumps({**base, "type": "gentle_reminder", "channels": ["EMAIL"], "to": "x@y.co"})
    )
    assert other.to == ""


async def test_a_put_refused_for_another_field_sends_no_code(
    client: httpx.AsyncClient, topics_: dict[str, str], kafka_bootstrap: str
) -> None:
    body = {"email": "fine@example.org", "timezone": "Mars/Olympus_Mons"}
    response = await client.put(profile_path("u-4"), json=body, headers=bearer("u-4"))
    assert response.status_code == 422, response.text
    assert await end_offset(kafka_bootstrap, topics_["notifications"]) == 0
    assert (await client.get(verify_path("u-4"), headers=bearer("u-4"))).json() == {"pending": []}
