"""API → worker commands with an answer: how a state change that must be decided by the owner of
a user's state (a redemption, a referral claim, a new goal) is requested and awaited.

The API produces the command to ``COMMANDS_TOPIC`` keyed by the user, so every command of one
user is applied by one worker, in order: two redemptions racing on one balance from two API
processes are decided one after the other, and the second sees the first's spend. The worker
writes its answer under the command id; a command retried with the same id (a client timeout)
gets the first answer and changes nothing again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from infra import keys, topics
from infra.redis_conn import RedisClient

COMMANDS_TOPIC = topics.USER_COMMANDS
#: How long answers are kept: longer than any client retry.
RESULT_TTL_S = 24 * 3600


async def await_result(redis: RedisClient, command_id: str, timeout_s: float) -> dict[str, Any] | None:
    """The worker's answer to ``command_id``, or None if none came within ``timeout_s``.

    Polls with a short backoff: commands are rare next to events, and a poll needs no connection
    parked per waiter as BLPOP would.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        raw = await redis.get(keys.command_result(command_id))
        if raw is not None:
            result: dict[str, Any] = orjson.loads(raw)
            return result
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)
