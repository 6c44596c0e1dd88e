"""Each send at most once, whatever Kafka redelivers: a claim per (notification, channel) in
Redis.

A deliverer claims a send before it talks to the provider (``SET NX`` with a lease) and marks it
done after, keeping the outcome. A redelivered record (a rebalance, a restart before the commit)
finds the send done and skips it. A claim whose lease is still running belongs to a deliverer
sending right now: the newcomer waits for it to finish or for the lease to lapse (the holder
died mid-send), then takes over. The one window left is a deliverer killed between the provider's
acceptance and the mark: that send goes out again after the lease, the at-least-once edge of a
provider that takes no idempotency key. Done marks outlive ``MAX_SEND_DELAY_MS``, past which a
notification is not sent at all, so no redelivery can outlive its mark.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Literal

from infra import keys
from infra.redis_conn import RedisClient, as_text
from models.delivery import MAX_SEND_DELAY_MS

#: How long a claim holds before another deliverer may assume its holder died.
LEASE_MS = 60_000
#: How long a done mark is kept (beyond any redelivery of a sendable notification).
DONE_TTL_MS = 2 * MAX_SEND_DELAY_MS
_POLL_S = 0.5

Claim = Literal["claimed", "done"]


class Ledger:
    def __init__(self, redis: RedisClient, owner: str, lease_ms: int = LEASE_MS) -> None:
        self.redis = redis
        self.owner = owner
        self.lease_ms = lease_ms

    async def claim(self, notification_id: str, channel: str) -> tuple[Claim, str | None]:
        """("claimed", None) when this deliverer may send now; ("done", outcome) when the send
        already happened (or was given up). Waits while another deliverer holds the claim."""
        key = keys.delivery_claim(notification_id, channel)
        # Every claim is unique, even two of one process: two copies of a notification in one
        # batch (the engine resends at least once) must not both pass as "mine".
        mine = f"sending:{self.owner}:{secrets.token_hex(6)}"
        deadline = time.monotonic() + self.lease_ms / 1000 + 1
        while True:
            if await self.redis.set(key, mine, nx=True, px=self.lease_ms):
                return "claimed", None
            held = await self.redis.get(key)
            text = None if held is None else as_text(held)
            if text is not None and text.startswith("done:"):
                return "done", text[5:]
            if time.monotonic() > deadline:  # a lease that never lapses is a clock problem
                await self.redis.set(key, mine, px=self.lease_ms)
                return "claimed", None
            await asyncio.sleep(_POLL_S)

    async def done(self, notification_id: str, channel: str, outcome: str) -> None:
        await self.redis.set(keys.delivery_claim(notification_id, channel), f"done:{outcome}", px=DONE_TTL_MS)
