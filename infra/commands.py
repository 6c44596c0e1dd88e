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
from aiokafka.partitioner import murmur2

from infra import keys
from infra.redis_conn import RedisClient

T = TypeVar("T")

#: How long answers are kept: longer than any client retry.
RESULT_TTL_S = 24 * 3600

# Command types of the risk slice (streams/risk_pipeline.py; docs/risk.md "Recalculate"). The
# growth slice applies every other type on ``user-commands`` and leaves these alone.
#: Re-score one user now (key and ``user_id``: the user).
RISK_RECALCULATE = "risk_recalculate"
#: Re-score every user of one partition (``partition``); the API sends one per partition, each
#: keyed by `partition_key` so that it lands on the partition it names.
RISK_RECALCULATE_PARTITION = "risk_recalculate_partition"
RISK_COMMANDS = frozenset({RISK_RECALCULATE, RISK_RECALCULATE_PARTITION})


def partition_key(partition: int, partitions: int) -> str:
    """A message key that Kafka's default partitioner (murmur2) puts on ``partition`` of a topic
    of ``partitions``: how a command addressed to a partition, not to a user, reaches the worker
    that owns it. Deterministic (the first such key of a fixed sequence); a user id can look the
    same, harmlessly: the key only routes, the command's type and ``partition`` say what it is."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is outside 0..{partitions - 1}")
    for i in range(1_000_000):
        key = f"~partition:{partition}:{i}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % partitions == partition:
            return key
    raise RuntimeError(f"no key found for partition {partition} of {partitions}")  # pragma: no cover


def partition_result_id(command_id: str, partition: int) -> str:
    """The answer id of a partition's share of a command sent to every partition."""
    return f"{command_id}:p{partition}"


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
