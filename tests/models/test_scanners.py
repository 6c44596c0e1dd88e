"""Telling a person's open or click from a machine's (models/scanners.py)."""

from __future__ import annotations

import pytest

from models.scanners import MIN_HUMAN_DELAY_MS, machine_reason

T0 = 1_790_000_000_000
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def reason(
    channel: str = "EMAIL", delay_ms: int = 60_000, agent: str = PHONE, trapped: bool = False
) -> str | None:
    return machine_reason(
        channel=channel, sent_ms=T0, now_ms=T0 + delay_ms, user_agent=agent, trapped=trapped
    )


def test_a_person_reading_a_mail_later_counts() -> None:
    assert reason() is None


def test_a_mail_opened_within_seconds_of_the_send_is_a_gateway() -> None:
    assert reason(delay_ms=MIN_HUMAN_DELAY_MS - 1) == "too_soon"
    assert reason(delay_ms=MIN_HUMAN_DELAY_MS) is None
    assert reason(channel="PUSH", delay_ms=1_000) is None  # people tap a push that fast


def test_a_trapped_notification_is_a_scanner_whatever_it_says() -> None:
    assert reason(trapped=True) == "trap"


@pytest.mark.parametrize(
    "agent",
    [
        "",
        "   ",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "python-httpx/0.27",
        "curl/8.4.0",
        "Mozilla/5.0 (Windows NT 10.0) HeadlessChrome/120.0",
        "Microsoft Office Protocol Discovery SafeLinks",
        "Slackbot-LinkExpanding 1.0",
    ],
)
def test_declared_machines_are_set_aside(agent: str) -> None:
    assert reason(agent=agent) == "agent"


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36",
        PHONE,
    ],
)
def test_people_on_phones_named_like_bots_count(agent: str) -> None:
    assert reason(agent=agent) is None
