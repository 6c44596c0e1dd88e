"""Removes an erased user from Redis (docs/security.md "A user's data"): the worker's half of a
``DELETE /v1/users/{id}``, run by the privacy slice once the tables' tombstones are in Kafka.

What goes, and how each is found without walking the keyspace (infra/user_data.py lists the first
three, which the export reads):
- every per-user key (``keys.USER_KINDS``: views, inbox, profile, push subscriptions, pending
  addresses), named from the id;
- the user's channel history (log, size, dedup memory), not its sequence number;
- the user's entries on every leaderboard bucket that can still exist (buckets expire:
  ``models.leaderboard.BUCKET_TTL_S``), global and of the groups the user is on or left lately,
  on the risk board and in the statistics ranking;
- the referral code's key and the referrer book;
- the suppression of the user's mail addresses (the profile's and a pending one), their parked
  deliveries (bounded by ``delivery.deferred.MAX_PARKED``) and their outreach tasks (bounded by
  the queue's own caps).
Left to expire: command answers (24 h) and the receipt index of past sends (7 days), which are
found only by ids the user never held; docs/security.md says so.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from delivery.deferred import Parked
from infra import keys
from infra.redis_conn import RedisClient, as_text
from infra.user_data import channel_keys, ranked_keys, user_keys
from models.outreach import OutreachTask
from streams.privacy import Traces


class Eraser(Protocol):
    async def erase(self, user_id: str, traces: Traces, now_ms: int) -> dict[str, int]:
        """Remove the user from the serving view; counts of what was removed, by kind."""
        ...


class RedisEraser:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.parked = Parked(redis)

    async def erase(self, user_id: str, traces: Traces, now_ms: int) -> dict[str, int]:
        redis = self.redis
        addresses = await self._addresses(user_id)
        removed: dict[str, int] = {}
        # One key per call: on a Redis Cluster they live in different slots.
        gone = [*user_keys(user_id), *channel_keys(user_id)]
        removed["keys"] = sum([int(await redis.delete(key)) for key in gone])
        ranked = ranked_keys(now_ms, traces.groups)
        removed["ranked"] = sum([int(await redis.zrem(key, user_id)) for key in ranked])
        removed["referral"] = int(await redis.hdel(keys.REFERRAL_BOOKS, user_id))
        if traces.referral_code:
            key = keys.referral_code(traces.referral_code)
            owner = await redis.get(key)
            if owner is not None and as_text(owner) == user_id:
                removed["referral"] += int(await redis.delete(key))
        removed["suppressions"] = sum([int(await redis.delete(keys.email_suppressed(a))) for a in addresses])
        removed["parked"] = await self.parked.drop_user(user_id)
        removed["outreach"] = await self._outreach(user_id)
        return removed

    async def _addresses(self, user_id: str) -> set[str]:
        """The user's mail addresses: the profile's and one waiting for its code."""
        found: set[str] = set()
        raw = await self.redis.get(keys.user_profile(user_id))
        if raw is not None:
            view = orjson.loads(raw)
            if isinstance(view, dict) and isinstance(view.get("email"), str):
                found.add(view["email"])
        pending = await self.redis.hget(keys.contact_pending(user_id, "EMAIL"), "address")
        if pending:
            found.add(as_text(pending))
        return found

    async def _outreach(self, user_id: str) -> int:
        mine: list[str] = []
        async for task_id, raw in self.redis.hscan_iter(keys.OUTREACH_TASKS, count=500):
            try:
                task = OutreachTask.from_dict(orjson.loads(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if task.user_id == user_id:
                mine.append(as_text(task_id))
        for task_id in mine:
            # One hash tag: the task and its place in both queues go together.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.OUTREACH_TASKS, task_id)
                pipe.zrem(keys.OUTREACH_OPEN, task_id)
                pipe.zrem(keys.OUTREACH_DONE, task_id)
                await pipe.execute()
        return len(mine)
