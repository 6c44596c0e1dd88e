"""Notifications held back by the user's quiet hours at send time, kept in Redis until they end.

The engine already schedules a notification after the user's quiet hours (models/interventions
``quiet_until``). But the delivery services can be behind (an outage, a backlog up to
``MAX_SEND_DELAY_MS``), and a streak warning meant for 19:00 must not ring a phone at 02:00. So a
deliverer checks again, on the profile as it is now: a record whose user is in their quiet hours
is parked here (a sorted set scored by when the window ends, the record itself as the member, so
a redelivered record parks once), its offset committed, and it is handled again once due.

Taking due records is a lease, not a removal (``_TAKE``): their score moves ``LEASE_MS`` ahead,
and they are removed only after they were handled. A deliverer that dies in between leaves them
to come due again, and the ledger (delivery/ledger.py) skips any send already made. The set is
bounded (``MAX_PARKED``): past it, records are sent now rather than lost or piling up.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from infra import keys
from infra.redis_conn import RedisClient
from streams.records import Record

#: Records parked at most (all users); past it, a record is sent at once. A record is ~2 KB
#: (up to ~22 KB with an admin's HTML): a few tens of MB of Redis typically, 450 MB at worst.
#: Only a backlog that runs into the night parks anything, so this is far above what one holds.
MAX_PARKED = 20_000
#: How long taken records stay taken before another deliverer may take them again.
LEASE_MS = 120_000
#: Records taken per look.
TAKE = 100

# KEYS: the set. ARGV: now, lease ms, limit. Takes the due members and leases them.
_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), member)
end
return due
"""


# KEYS: the set. ARGV: the lease's score, members. Removes the members still leased at that
# score: one parked again while it was handled (the user's quiet hours moved) stays.
_DONE = """
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
"""


def _encode(record: Record) -> bytes:
    return orjson.dumps(
        {
            "t": record.topic,
            "p": record.partition,
            "o": record.offset,
            "k": None if record.key is None else base64.b64encode(record.key).decode(),
            "v": base64.b64encode(record.value or b"").decode(),
            "ts": record.timestamp_ms,
            "h": [[name, base64.b64encode(value).decode()] for name, value in record.headers],
        }
    )


def _decode(member: bytes | str) -> Record | None:
    try:
        data = orjson.loads(member)
        return Record(
            str(data["t"]),
            int(data["p"]),
            int(data["o"]),
            None if data["k"] is None else base64.b64decode(data["k"]),
            base64.b64decode(data["v"]),
            int(data["ts"]),
            tuple((str(name), base64.b64decode(value)) for name, value in data["h"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class Parked:
    def __init__(self, redis: RedisClient, key: str = keys.DELIVERY_PARKED) -> None:
        self.redis = redis
        self.key = key
        self._take = redis.register_script(_TAKE)
        self._done = redis.register_script(_DONE)

    async def park(self, record: Record, until_ms: int) -> bool:
        """Hold ``record`` until ``until_ms``; False when the set is full (send it now). A record
        parked twice (redelivered, or parked again) is one member, due at the latest word."""
        if await self.redis.zcard(self.key) >= MAX_PARKED:
            return False
        await self.redis.zadd(self.key, {_encode(record): until_ms})
        return True

    async def take_due(self, now_ms: int) -> Taken:
        """The records due by ``now_ms``, leased until ``done`` removes them once handled. A
        member that does not decode is removed with them."""
        members: Sequence[bytes | str] = await self._take(keys=[self.key], args=[now_ms, LEASE_MS, TAKE])
        records = [r for r in map(_decode, members) if r is not None]
        return Taken(records, list(members), now_ms + LEASE_MS)

    async def drop_user(self, user_id: str) -> int:
        """Remove every record parked for ``user_id`` (the user was erased); how many. Walks the
        set, which ``MAX_PARKED`` bounds: erasure is rare, and no index to keep in step with it."""
        key = user_id.encode()
        mine: list[bytes | str] = []
        async for member, _ in self.redis.zscan_iter(self.key, count=1000):
            record = _decode(member)
            if record is not None and record.key == key:
                mine.append(member)
        return int(await self.redis.zrem(self.key, *mine)) if mine else 0

    async def done(self, taken: Taken) -> None:
        if taken.members:
            await self._done(keys=[self.key], args=[taken.lease_score, *taken.members])


@dataclass(frozen=True, slots=True)
class Taken:
    records: list[Record]
    members: list[bytes | str]
    #: The score the lease gave them (what ``done`` checks they still have).
    lease_score: int
