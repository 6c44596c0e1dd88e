"""SMS through Twilio's Messages API (``ELIMU_SMS_PROVIDER=twilio``), against a loopback HTTP
server that speaks it: basic auth, form ``To``/``From``/``Body``, 201 with a ``sid``; errors as
Twilio answers them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from delivery.channels import Recipient, SendFailed
from delivery.config import BadSetting, DeliveryConfig, SmsProvider
from delivery.sms import TwilioSmsChannel
from infra.net import free_port
from models.delivery import DeliveryRequest

SID, TOKEN = "AC0123456789abcdef", "auth-token-xyz"


class Twilio:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, str]] = []
        self.answer: dict[str, tuple[int, dict[str, object]]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        form = {k: str(v) for k, v in (await request.post()).items()}
        status, body = self.answer.get(
            form.get("To", ""), (201, {"sid": f"SM{len(self.received)}", "status": "queued"})
        )
        if status == 201:
            self.received.append(form)
        return web.json_response(body, status=status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/2010-04-01/Accounts/{SID}/Messages.json"


@pytest.fixture
async def twilio() -> AsyncIterator[Twilio]:
    peer = Twilio()
    app = web.Application()
    app.router.add_post(f"/2010-04-01/Accounts/{SID}/Messages.json", peer.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", peer.port).start()
    yield peer
    await runner.cleanup()


def request() -> DeliveryRequest:
    return DeliveryRequest(
        notification_id="n-1", user_id="u-1", type="streak_warning", channels=("SMS",),
        subject="s", body="One lesson keeps your streak.", cta="Open the app", template="t", variant="a",
        deliver_at_ms=0,
    )  # fmt: skip


async def test_a_message_goes_with_basic_auth_and_the_form_twilio_reads(twilio: Twilio) -> None:
    channel = TwilioSmsChannel(SmsProvider(twilio.url, SID, TOKEN, "+15005550006", kind="twilio"))
    try:
        sent = await channel.send(request(), Recipient("u-1", phone="+254712345678"))
    finally:
        await channel.close()
    assert sent.provider_id == "SM0"
    assert twilio.received == [
        {"To": "+254712345678", "From": "+15005550006", "Body": "One lesson keeps your streak. Open the app"}
    ]


@pytest.mark.parametrize(
    ("status", "body", "result", "permanent"),
    [
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}, "bounced", True),
        (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}, "bounced", True),
        (400, {"code": 21606, "message": "The 'From' phone number is not valid"}, "failed", True),
        (429, {"code": 20429, "message": "Too Many Requests"}, "failed", False),
        (503, {}, "failed", False),
    ],
)
async def test_twilio_errors_are_sorted(
    twilio: Twilio, status: int, body: dict[str, object], result: str, permanent: bool
) -> None:
    twilio.answer["+254700000001"] = (status, body)
    channel = TwilioSmsChannel(SmsProvider(twilio.url, SID, TOKEN, "+15005550006", kind="twilio"))
    try:
        with pytest.raises(SendFailed) as failed:
            await channel.send(request(), Recipient("u-1", phone="+254700000001"))
    finally:
        await channel.close()
    assert (failed.value.result, failed.value.permanent) == (result, permanent)


async def test_a_wrong_token_is_our_failure_not_a_bounce(twilio: Twilio) -> None:
    channel = TwilioSmsChannel(SmsProvider(twilio.url, SID, "wrong", "+15005550006", kind="twilio"))
    try:
        with pytest.raises(SendFailed) as failed:
            await channel.send(request(), Recipient("u-1", phone="+254712345678"))
    finally:
        await channel.close()
    assert (failed.value.result, failed.value.permanent, failed.value.reason) == (
        "failed",
        True,
        "sms_error_20003",
    )


def test_the_provider_is_chosen_by_settings() -> None:
    env = {"ELIMU_SMS_URL": "https://api.twilio.com/x", "ELIMU_SMS_USERNAME": SID, "ELIMU_SMS_KEY": TOKEN}
    config = DeliveryConfig.from_env(
        8000, {**env, "ELIMU_SMS_PROVIDER": "twilio", "ELIMU_SMS_FROM": "+15005550006"}
    )
    assert config.sms is not None and config.sms.kind == "twilio"
    assert DeliveryConfig.from_env(8000, env).sms.kind == "africastalking"  # type: ignore[union-attr]
    with pytest.raises(BadSetting):
        DeliveryConfig.from_env(8000, {**env, "ELIMU_SMS_PROVIDER": "carrier-pigeon"})
    with pytest.raises(BadSetting):
        DeliveryConfig.from_env(8000, {**env, "ELIMU_SMS_PROVIDER": "twilio"})  # no From
