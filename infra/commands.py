"""API → worker commands with an answer: how a state change that must be decided by the owner of
a user's state (a redemption, a referral claim, a new goal) is requested and awaited.

The API produces the command to ``topics.USER_COMMANDS`` keyed by the user, so every command of one
user is applied by one worker, in order: two redemptions racing on one balance from two API
processes are decided one after the other, and the second sees the first's spend. The worker
writes its answer under the command id; a command retried with the same id (a client timeout)
gets the first answer and changes nothing again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from infra import keys
from infra.redis_conn import RedisClient

T = TypeVar("T")

#: How long answers are kept: longer than any client retry.
RESULT_TTL_S = 24 * 3600


async def await_result(redis: RedisClient, command_id: str, timeout_s: float) -> dict[str, Any] | None:
    """The worker's answer to ``command_id``, or None if none came within ``timeout_s``."""

    def answer(raw: bytes | str) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(raw)
        return result

    return await await_key(redis, keys.command_result(command_id), answer, timeout_s)


async def await_key(
    redis: RedisClient, key: str, accept: Callable[[bytes | str], T | None], timeout_s: float
) -> T | None:
    """``accept(value)`` of ``key`` once it is not None, or None if it stays so for ``timeout_s``:
    how the API waits for the worker, the only writer of a view, to show a change it asked for.

    Polls with a short backoff: such waits are rare next to events, and a poll needs no
    connection parked per waiter as BLPOP would.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        raw = await redis.get(key)
        found = accept(raw) if raw is not None else None
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)


# ---------------------------------------------------------------------------------------------
# A user's data (docs/security.md "A user's data"): commands every per-user slice shares, applied
# by the privacy slice (streams/privacy.py) rather than by growth, whose commands the rest are.

#: Erase everything the engine holds about the user: every state table tombstoned, the Redis views,
#: channel history and leaderboard entries deleted.
ERASE_USER = "erase_user"
#: Gather the user's state from every table into the command's answer (the API adds what Redis holds).
EXPORT_USER = "export_user"
PRIVACY_COMMANDS = frozenset({ERASE_USER, EXPORT_USER})
#: An export's answer holds the user's personal data: kept only until the API has read it.
EXPORT_TTL_S = 300
