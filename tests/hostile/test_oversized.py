"""Size as an attack (issue 11): records and users that would grow past what Kafka accepts.

Before the trust work, a 200 KB value of ``\\x01`` became a dead letter larger than the broker
takes, and 2,000 events with long ids made one user's state 1.4 MB; both sends were retried
forever and every user of the worker stalled while /readyz stayed green.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from infra import keys
from infra.channels import HISTORY_BYTES, MAX_MESSAGE_BYTES
from infra.topics import BEHAVIOR_EVENTS
from models.ingest_policy import USER_EVENT_TYPES
from models.state_budget import STATE_BUDGET_BYTES
from tests.hostile.kit import (
    MAX_DEAD_LETTER_BYTES,
    Stack,
    dead_letters,
    honest_event_applied,
    lesson,
    new_id,
    now_ms,
    produce_all,
    user_headers,
    wait_xp,
)

pytestmark = pytest.mark.integration


async def test_a_200_kb_value_of_control_bytes_is_one_small_dead_letter(stack: Stack) -> None:
    value = b"\x01" * 200_000
    async with (
        dead_letters(stack.kafka) as letters,
        httpx.AsyncClient(base_url=stack.url, timeout=15) as http,
    ):
        (origin,) = await produce_all(stack.kafka, [(BEHAVIOR_EVENTS, b"poison", value, None)])
        await letters.wait_for([origin], stack)
        await honest_event_applied(stack, http)
        await letters.drain()
    (letter,) = letters.by_origin[origin]
    assert letter.reason in ("too_large", "not_json"), letter.body
    assert letter.size < MAX_DEAD_LETTER_BYTES, letter.size
    assert letter.body["raw_bytes"] == len(value) and letter.body["raw_truncated"] is True
    stack.assert_alive()


@pytest.mark.parametrize("key_bytes", [200_000, 300_000])
async def test_a_huge_key_is_one_small_dead_letter(stack: Stack, key_bytes: int) -> None:
    """A keyed record whose id is too long: the contract's key (the id) is as long as the id.
    The dead letter must be bounded in its Kafka key too, and still be written when the original
    key alone is over the worker's own record limit (256 KiB)."""
    user_id = "k" * key_bytes
    value = orjson.dumps(lesson(user_id))
    async with (
        dead_letters(stack.kafka) as letters,
        httpx.AsyncClient(base_url=stack.url, timeout=15) as http,
    ):
        (origin,) = await produce_all(stack.kafka, [(BEHAVIOR_EVENTS, user_id.encode(), value, None)])
        await honest_event_applied(stack, http)
        await letters.wait_for([origin], stack, timeout=15)
    (letter,) = letters.by_origin[origin]
    assert letter.reason in ("too_large", "id_too_long"), letter.body
    assert letter.size < MAX_DEAD_LETTER_BYTES, f"dead letter of {letter.size} bytes for a {key_bytes} B key"


def long_id(prefix: str, n: int) -> str:
    """A printable id of exactly 128 UTF-8 bytes: 4-byte letters, then ASCII to make it unique."""
    tail = f"-{prefix}-{n}"
    letters = (128 - len(tail)) // 4
    return "\U0001d49c" * letters + "x" * (128 - len(tail) - 4 * letters) + tail


async def test_two_thousand_events_with_128_byte_ids_stall_no_one(stack: Stack) -> None:
    attacker = new_id("hoarder")
    types = sorted(USER_EVENT_TYPES)
    now = now_ms()
    headers = user_headers(attacker)

    def batch(b: int) -> list[dict[str, Any]]:
        return [
            {
                "event_id": long_id(f"b{b}", i),
                "user_id": attacker,
                "type": types[i % len(types)],
                "ts": now - 3_600_000 + b * 1000 + i,
                "session_id": long_id(f"s{b}", i),
                "props": {"lesson_id": long_id("L", i), "score": 90},
            }
            for i in range(1000)
        ]

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        for b in range(2):
            events = batch(b)
            assert all(len(e["event_id"].encode()) == 128 for e in events)
            r = await http.post("/v1/events", headers=headers, json=events)
            assert r.status_code == 202, r.text
        # Produced after the 2,000: applied only if the worker got through them.
        await honest_event_applied(stack, http)
        view = await wait_xp(stack, http, attacker)
        assert view["xp"] > 0

        async def readiness() -> dict[str, Any]:
            r = await http.get("/readyz")
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 else {}

        ready = await readiness()
        assert ready, "/readyz is not green after the attack"
        assert "stalled" not in ready["checks"]["workers"], ready

    # What the attack left behind is bounded: the serving view and the channel history.
    redis = Redis.from_url(stack.redis)
    try:
        state = await redis.strlen(keys.user_state(attacker))
        history = await redis.get(keys.channel_bytes(f"user:{attacker}"))
    finally:
        await redis.aclose()
    assert 0 < state < STATE_BUDGET_BYTES, state
    # "<payload bytes>:<entries>" (infra/channels.py keeps it beside the log).
    text = history.decode() if isinstance(history, bytes) else history
    held = 0 if text is None else int(text.split(":")[0])
    assert held <= HISTORY_BYTES + MAX_MESSAGE_BYTES, history
