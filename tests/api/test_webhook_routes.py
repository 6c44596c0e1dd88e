"""The SMS delivery report webhooks (api/routes/webhooks.py) on the real Redis and broker: sends
indexed as the delivery service indexes them (delivery/receipts.py), reports posted as Africa's
Talking and Twilio post them, and what the routes publish read back from a per-test topic."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.delivery_settings import delivery_config
from api.routes import webhooks
from api.routes.webhooks import delivery_settings
from delivery.config import DeliveryConfig, SmsProvider
from delivery.receipts import ReceiptIndex
from infra import keys
from infra.producer import ProducerUnavailable
from models.receipts import MAX_CALLBACK_BYTES, TWILIO_ROUTE, SentMessage, callback_token
from tests.api.conftest import SECRET, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import create_topic

PUBLIC_URL = "https://pulse.example.org"
CALLBACK = PUBLIC_URL + TWILIO_ROUTE
TWILIO_SID, TWILIO_TOKEN = "AC0123456789abcdef", "twilio-auth-token-0123456789"
AT_PATH = f"/v1/webhooks/sms/africastalking/{callback_token(SECRET)}"


def twilio_settings() -> DeliveryConfig:
    provider = SmsProvider(
        f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
        TWILIO_SID, TWILIO_TOKEN, "+15005550006", kind="twilio",
    )  # fmt: skip
    return DeliveryConfig(sms=provider, public_url=PUBLIC_URL, sms_status_callback=CALLBACK)


def signed(fields: dict[str, str], url: str = CALLBACK, token: str = TWILIO_TOKEN) -> dict[str, str]:
    """The X-Twilio-Signature header, computed here as Twilio documents it."""
    data = url + "".join(name + fields[name] for name in sorted(fields))
    mac = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return {"X-Twilio-Signature": base64.b64encode(mac).decode()}


def sms(nid: str) -> SentMessage:
    return SentMessage(nid, "SMS", "streak_risk", "streak_risk.v2", "B", "u-1")


@pytest.fixture
async def outcomes_topic(kafka_bootstrap: str, unique: str) -> str:
    return await create_topic(kafka_bootstrap, f"outcomes-{unique}")


@pytest.fixture
async def hooks(make_client: Callable[..., Any], outcomes_topic: str) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await make_client(outcomes_topic=outcomes_topic)
    client.app.app.dependency_overrides[delivery_settings] = twilio_settings  # type: ignore[attr-defined]
    return client


@pytest.fixture
def index(redis: Redis) -> ReceiptIndex:
    return ReceiptIndex(redis)


# ---------------------------------------------------------------------------------------------
# Africa's Talking


async def test_an_africastalking_success_is_reported_delivered_once(
    hooks: httpx.AsyncClient, index: ReceiptIndex, kafka_bootstrap: str, outcomes_topic: str
) -> None:
    await index.remember("ATXid_1", sms("n-1"))
    report = {"id": "ATXid_1", "status": "Success", "phoneNumber": "+254711000001", "retryCount": "0"}
    answers = [(await hooks.post(AT_PATH, data=report)) for _ in range(3)]  # AT retries its callbacks
    assert [(a.status_code, a.json()["outcome"]) for a in answers] == [
        (200, "delivered"),
        (200, "duplicate"),
        (200, "duplicate"),
    ]
    [record] = await read_topic(kafka_bootstrap, outcomes_topic, 1)
    assert record.key == b""
    assert orjson.loads(record.value) == {
        "id": "dlv:delivered:SMS:n-1", "kind": "delivery", "result": "delivered", "channel": "SMS",
        "type": "streak_risk", "template": "streak_risk.v2", "variant": "B",
    }  # fmt: skip
    assert await end_offset(kafka_bootstrap, outcomes_topic) == 1


async def test_the_first_final_word_counts_and_a_later_other_one_does_not(
    hooks: httpx.AsyncClient, index: ReceiptIndex, redis: Redis, kafka_bootstrap: str, outcomes_topic: str
) -> None:
    await index.remember("ATXid_2", sms("n-2"))
    bounce = await hooks.post(
        AT_PATH, data={"id": "ATXid_2", "status": "Failed", "failureReason": "UnknownSubscriber"}
    )
    late = await hooks.post(AT_PATH, data={"id": "ATXid_2", "status": "Success"})
    assert (bounce.json()["outcome"], late.json()["outcome"]) == ("bounced", "duplicate")
    [record] = await read_topic(kafka_bootstrap, outcomes_topic, 1)
    value = orjson.loads(record.value)
    assert (value["id"], value["reason"]) == ("dlv:bounced:SMS:n-2", "dlr_UnknownSubscriber")
    assert await end_offset(kafka_bootstrap, outcomes_topic) == 1
    assert await redis.hget(keys.delivery_receipt("SMS", "ATXid_2"), "final") == b"bounced"


async def test_africastalking_reports_that_say_nothing_or_are_not_ours_publish_nothing(
    hooks: httpx.AsyncClient, index: ReceiptIndex, redis: Redis, kafka_bootstrap: str, outcomes_topic: str
) -> None:
    await index.remember("ATXid_3", sms("n-3"))
    success = {"id": "ATXid_3", "status": "Success"}
    wrong = callback_token("another-secret-entirely-0123456789")
    assert_error(await hooks.post(f"/v1/webhooks/sms/africastalking/{wrong}", data=success), 404, "not_found")
    assert_error(
        await hooks.post(f"/v1/webhooks/sms/africastalking/{'x' * 200}", data=success),
        422,
        "validation_error",
    )
    pending = await hooks.post(AT_PATH, data={"id": "ATXid_3", "status": "Submitted"})
    assert (pending.status_code, pending.json()) == (200, {"outcome": "pending"})
    unknown = await hooks.post(AT_PATH, data={"id": "ATXid_404", "status": "Success"})
    assert (unknown.status_code, unknown.json()) == (200, {"outcome": "unknown"})
    assert_error(await hooks.post(AT_PATH, data={"status": "Success"}), 400, "bad_receipt")
    assert_error(await hooks.post(AT_PATH, json=success), 400, "bad_receipt")
    oversized = b"id=ATXid_3&status=Success&pad=" + b"x" * MAX_CALLBACK_BYTES
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_error(await hooks.post(AT_PATH, content=oversized, headers=form), 413, "payload_too_large")
    assert await end_offset(kafka_bootstrap, outcomes_topic) == 0
    # Nothing above marked the send: its real report still counts.
    assert await redis.hget(keys.delivery_receipt("SMS", "ATXid_3"), "final") is None
    assert (await hooks.post(AT_PATH, data=success)).json()["outcome"] == "delivered"


async def test_a_report_kafka_did_not_take_is_not_marked_and_counts_when_retried(
    hooks: httpx.AsyncClient, index: ReceiptIndex, kafka_bootstrap: str, outcomes_topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await index.remember("ATXid_4", sms("n-4"))
    producer = hooks.app.state.producer  # type: ignore[attr-defined]
    real = producer.send_all

    async def down(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("the broker is away")

    monkeypatch.setattr(producer, "send_all", down)
    report = {"id": "ATXid_4", "status": "Success"}
    failed = await hooks.post(AT_PATH, data=report)
    assert_error(failed, 503, "unavailable")
    assert failed.headers["retry-after"] == "1"
    monkeypatch.setattr(producer, "send_all", real)
    assert (await hooks.post(AT_PATH, data=report)).json()["outcome"] == "delivered"
    [record] = await read_topic(kafka_bootstrap, outcomes_topic, 1)
    assert orjson.loads(record.value)["id"] == "dlv:delivered:SMS:n-4"


async def test_each_source_is_rate_limited(
    hooks: httpx.AsyncClient, index: ReceiptIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "RATE_PER_S", 0.01)
    monkeypatch.setattr(webhooks, "RATE_BURST", 2)
    report = {"id": "ATXid_5", "status": "Sent"}
    assert [(await hooks.post(AT_PATH, data=report)).status_code for _ in range(2)] == [200, 200]
    limited = await hooks.post(AT_PATH, data=report)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1


# ---------------------------------------------------------------------------------------------
# Twilio


async def test_a_signed_twilio_report_is_reported(
    hooks: httpx.AsyncClient, index: ReceiptIndex, kafka_bootstrap: str, outcomes_topic: str
) -> None:
    await index.remember("SM0001", sms("n-5"))
    await index.remember("SM0002", sms("n-6"))
    delivered = {
        "MessageSid": "SM0001",
        "MessageStatus": "delivered",
        "AccountSid": TWILIO_SID,
        "ErrorCode": "",
    }
    undelivered = {"MessageSid": "SM0002", "MessageStatus": "undelivered", "ErrorCode": "30005"}
    sent = {"MessageSid": "SM0002", "MessageStatus": "sent"}
    for fields, outcome in ((sent, "pending"), (delivered, "delivered"), (undelivered, "bounced")):
        answer = await hooks.post(TWILIO_ROUTE, data=fields, headers=signed(fields))
        assert (answer.status_code, answer.json()) == (200, {"outcome": outcome}), answer.text
    records = await read_topic(kafka_bootstrap, outcomes_topic, 2)
    values = [orjson.loads(r.value) for r in records]
    assert [(v["id"], v.get("reason")) for v in values] == [
        ("dlv:delivered:SMS:n-5", None),
        ("dlv:bounced:SMS:n-6", "sms_error_30005"),
    ]


async def test_unsigned_tampered_or_host_signed_twilio_reports_are_refused(
    hooks: httpx.AsyncClient, index: ReceiptIndex, kafka_bootstrap: str, outcomes_topic: str
) -> None:
    await index.remember("SM0003", sms("n-7"))
    fields = {"MessageSid": "SM0003", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    tampered = {**fields, "MessageStatus": "delivered"}
    as_called = "http://api.test" + TWILIO_ROUTE  # what the request's Host says: not what Twilio signed
    for data, headers in (
        (fields, {}),
        (tampered, signed(fields)),
        (fields, signed(fields, url=as_called)),
        (fields, signed(fields, token="someone-elses-token")),
        (fields, {"X-Twilio-Signature": "not base64 at all"}),
    ):
        answer = await hooks.post(TWILIO_ROUTE, data=data, headers=headers)
        assert_error(answer, 403, "forbidden")
    assert await end_offset(kafka_bootstrap, outcomes_topic) == 0
    answer = await hooks.post(TWILIO_ROUTE, data=fields, headers=signed(fields))
    assert answer.json() == {"outcome": "bounced"}


async def test_the_twilio_route_is_off_without_a_twilio_account_or_public_url(
    hooks: httpx.AsyncClient,
) -> None:
    fields = {"MessageSid": "SM0004", "MessageStatus": "delivered"}
    app = hooks.app.app  # type: ignore[attr-defined]
    for settings in (DeliveryConfig(), DeliveryConfig(sms=twilio_settings().sms)):
        app.dependency_overrides[delivery_settings] = lambda settings=settings: settings
        assert_error(await hooks.post(TWILIO_ROUTE, data=fields, headers=signed(fields)), 404, "not_found")


async def test_the_api_reads_the_twilio_settings_as_the_deliverer_does(
    make_client: Callable[..., Any], index: ReceiptIndex, outcomes_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "ELIMU_SMS_PROVIDER": "twilio", "ELIMU_SMS_URL": "https://api.twilio.com/x",
        "ELIMU_SMS_USERNAME": TWILIO_SID, "ELIMU_SMS_KEY": TWILIO_TOKEN, "ELIMU_SMS_FROM": "+15005550006",
        "ELIMU_PUBLIC_URL": PUBLIC_URL + "/",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    delivery_config.cache_clear()
    try:
        client: httpx.AsyncClient = await make_client(outcomes_topic=outcomes_topic)
        await index.remember("SM0005", sms("n-8"))
        fields = {"MessageSid": "SM0005", "MessageStatus": "delivered"}
        answer = await client.post(TWILIO_ROUTE, data=fields, headers=signed(fields))
        assert answer.json() == {"outcome": "delivered"}, answer.text
    finally:
        delivery_config.cache_clear()


async def test_twilio_reports_failing_the_signature_are_charged_apart_from_the_real_ones(
    hooks: httpx.AsyncClient, index: ReceiptIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "RATE_PER_S", 0.01)
    monkeypatch.setattr(webhooks, "RATE_BURST", 2)
    monkeypatch.setattr(webhooks, "UNSIGNED_PER_S", 0.01)
    monkeypatch.setattr(webhooks, "UNSIGNED_BURST", 3)
    await index.remember("SM0009", sms("n-9"))
    fields = {"MessageSid": "SM0009", "MessageStatus": "delivered"}
    # Junk from the source Twilio posts from: unsigned, badly signed, not a form.
    junk = [
        await hooks.post(TWILIO_ROUTE, data=fields),
        await hooks.post(TWILIO_ROUTE, data=fields, headers=signed(fields, token="not-ours")),
        await hooks.post(TWILIO_ROUTE, json=fields),
        await hooks.post(TWILIO_ROUTE, data=fields),
    ]
    assert [a.status_code for a in junk] == [403, 403, 400, 429]  # its own bucket ran dry
    assert_error(junk[-1], 429, "rate_limited")
    # Twilio's real reports are still taken, and charged to the source's own bucket.
    real = [await hooks.post(TWILIO_ROUTE, data=fields, headers=signed(fields)) for _ in range(3)]
    assert [a.status_code for a in real] == [200, 200, 429]
    assert [a.json()["outcome"] for a in real[:2]] == ["delivered", "duplicate"]
