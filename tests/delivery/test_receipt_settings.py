"""The delivery receipts' settings (delivery/config.py): the bounce domain and listener, and the
Twilio status callback URL, refused early when they cannot work; and the Africa's Talking
callback URL as ``elimu sms-callback-url`` prints it and ``elimu deliver`` logs it."""

from __future__ import annotations

import pytest

from delivery.config import BadSetting, DeliveryConfig
from delivery.main import callback_url_fingerprint
from models.receipts import callback_token, callback_token_valid
from scripts.cli import main as elimu


def test_the_bounce_settings_are_read() -> None:
    config = DeliveryConfig.from_env(
        8000, {"ELIMU_BOUNCE_DOMAIN": " Bounces.Example.org. ", "ELIMU_BOUNCE_LISTEN": "0.0.0.0:2525"}
    )
    assert (config.bounce_domain, config.bounce_listen) == ("bounces.example.org", ("0.0.0.0", 2525))
    v6 = DeliveryConfig.from_env(
        8000, {"ELIMU_BOUNCE_DOMAIN": "b.example.org", "ELIMU_BOUNCE_LISTEN": "[::]:25"}
    )
    assert v6.bounce_listen == ("::", 25)
    # A domain alone: this deliverer sends with VERP senders, another one listens.
    alone = DeliveryConfig.from_env(8000, {"ELIMU_BOUNCE_DOMAIN": "b.example.org"})
    assert (alone.bounce_domain, alone.bounce_listen) == ("b.example.org", None)
    assert DeliveryConfig.from_env(8000, {}).bounce_domain is None


@pytest.mark.parametrize(
    "env",
    [
        {"ELIMU_BOUNCE_LISTEN": "0.0.0.0:2525"},  # where would the bounces be addressed?
        {"ELIMU_BOUNCE_DOMAIN": "localhost"},
        {"ELIMU_BOUNCE_DOMAIN": "bounces@example.org"},
        {"ELIMU_BOUNCE_DOMAIN": "bounces example.org"},
        {"ELIMU_BOUNCE_DOMAIN": "-x.example.org"},
        {"ELIMU_BOUNCE_DOMAIN": "bouncés.example.org"},
        {"ELIMU_BOUNCE_DOMAIN": "b.example.org", "ELIMU_BOUNCE_LISTEN": "2525"},
        {"ELIMU_BOUNCE_DOMAIN": "b.example.org", "ELIMU_BOUNCE_LISTEN": "0.0.0.0:"},
        {"ELIMU_BOUNCE_DOMAIN": "b.example.org", "ELIMU_BOUNCE_LISTEN": ":2525"},
        {"ELIMU_BOUNCE_DOMAIN": "b.example.org", "ELIMU_BOUNCE_LISTEN": "0.0.0.0:70000"},
        {"ELIMU_BOUNCE_DOMAIN": "b.example.org", "ELIMU_BOUNCE_LISTEN": "0.0.0.0:smtp"},
    ],
)
def test_unusable_bounce_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(BadSetting):
        DeliveryConfig.from_env(8000, env)


def test_twilio_is_asked_to_call_back_only_at_a_configured_public_url() -> None:
    config = DeliveryConfig.from_env(8000, {"ELIMU_PUBLIC_URL": "https://pulse.example.org/"})
    assert config.sms_status_callback == "https://pulse.example.org/v1/webhooks/sms/twilio"
    assert config.public_url == "https://pulse.example.org"
    default = DeliveryConfig.from_env(8000, {})
    assert (default.public_url, default.sms_status_callback) == ("http://127.0.0.1:8000", None)


def test_elimu_sms_callback_url_prints_the_whole_url_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "cli-secret-for-the-callback-url-0123456789"
    monkeypatch.setenv("ELIMU_SECRET", secret)
    monkeypatch.setenv("ELIMU_PUBLIC_URL", "https://pulse.example.org/")
    assert elimu(["sms-callback-url"]) == 0
    url = capsys.readouterr().out.strip()
    prefix = "https://pulse.example.org/v1/webhooks/sms/africastalking/"
    assert url.startswith(prefix) and callback_token_valid(secret, url[len(prefix) :])


def test_the_deliverer_logs_only_a_fingerprint_of_the_callback_url() -> None:
    secret = "log-secret-for-the-callback-url-0123456789"
    token = callback_token(secret)
    shown = callback_url_fingerprint("https://pulse.example.org", secret)
    assert shown == f"https://pulse.example.org/v1/webhooks/sms/africastalking/{token[:6]}…"
    assert token[:7] not in shown
