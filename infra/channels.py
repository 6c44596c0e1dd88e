"""Channel history and live fan-out in Redis (the Centrifugo model).

Each channel has an integer sequence (message ``id``), a capped log of its last messages,
and a pub/sub topic for live delivery. Publishing is one atomic Lua call, so ids are strictly
increasing per channel and the log never has gaps except at its trimmed head. A dedup key
makes a re-published message (redelivery after a worker crash) a no-op.

Recovery is all or nothing: a client that says ``since=N`` either gets every message after N
or ``recovered=False`` when some of them were trimmed away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from infra import keys

#: Messages kept per channel for replay on reconnect.
HISTORY_SIZE = 500
#: How long a dedup key lives: longer than any redelivery window.
DEDUP_TTL_S = 24 * 3600
#: Channel histories expire when idle for this long.
HISTORY_TTL_S = 7 * 24 * 3600

# A Lua function publishing any number of messages in one call, shared by this module's script
# and by the workers' batch-write script (streams/serving.py) so a batch is one round trip.
# Each message is [seq-key, log-key, pubsub-key, dedup-key or "", channel, type, data-json, ts-ms],
# all strings (Lua numbers would print a millisecond timestamp as 1.79e+12). Messages travel as
# one JSON argument: redis-py encodes every argument in Python, which cost more than the work.
# The keys are computed by infra/keys.py, so the layout stays defined once; they are not declared
# in KEYS, which ties the script to a single Redis (not Cluster).
PUBLISH_ALL_LUA = """
local function publish_all(msgs, maxlen, dedup_ttl, ttl)
  local ids = {}
  for i, m in ipairs(msgs) do
    local n = 0
    if m[4] == '' or redis.call('SET', m[4], '1', 'NX', 'EX', dedup_ttl) then
      n = redis.call('INCR', m[1])
      redis.call('EXPIRE', m[1], ttl)
      redis.call('XADD', m[2], 'MAXLEN', maxlen, n .. '-1', 't', m[6], 'd', m[7], 'ts', m[8])
      redis.call('EXPIRE', m[2], ttl)
      redis.call('PUBLISH', m[3], '{"channel":' .. cjson.encode(m[5]) .. ',"id":' .. n
        .. ',"type":' .. cjson.encode(m[6]) .. ',"data":' .. m[7] .. ',"ts":' .. m[8] .. '}')
    end
    ids[i] = n
  end
  return ids
end
"""
# ARGV: maxlen, dedup-ttl, history-ttl, messages-json. Returns each message's id (0 = deduplicated).
_PUBLISH_LUA = PUBLISH_ALL_LUA + "return publish_all(cjson.decode(ARGV[4]), ARGV[1], ARGV[2], ARGV[3])"


@dataclass(frozen=True)
class Outgoing:
    """A message to publish: ``dedup_key`` makes a re-publish of the same thing a no-op."""

    channel: str
    type: str
    data: Any
    dedup_key: str | None = None
    ts_ms: int | None = None


@dataclass(frozen=True)
class Message:
    channel: str
    id: int
    type: str
    data: Any
    ts: int  # unix milliseconds

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "id": self.id, "type": self.type, "data": self.data, "ts": self.ts}

    @classmethod
    def from_json(cls, raw: bytes | str) -> Message:
        d = orjson.loads(raw)
        return cls(d["channel"], int(d["id"]), d["type"], d["data"], int(d["ts"]))


class ChannelLog:
    """Publish to and replay from channels. One instance per Redis connection pool."""

    def __init__(self, redis: Redis, history_size: int = HISTORY_SIZE) -> None:
        self.redis = redis
        self.history_size = history_size
        self._script = redis.register_script(_PUBLISH_LUA)

    @property
    def limits(self) -> tuple[int, int, int]:
        """The publish function's (maxlen, dedup-ttl, history-ttl) arguments."""
        return self.history_size, DEDUP_TTL_S, HISTORY_TTL_S

    @staticmethod
    def encode(messages: Sequence[Outgoing]) -> list[list[str]]:
        """Messages as the Lua ``publish_all`` takes them (see PUBLISH_ALL_LUA)."""
        now = str(int(time.time() * 1000))
        return [
            [
                keys.channel_seq(m.channel),
                keys.channel_log(m.channel),
                keys.channel_pubsub(m.channel),
                keys.channel_dedup(m.channel, m.dedup_key) if m.dedup_key else "",
                m.channel,
                m.type,
                orjson.dumps(m.data).decode(),
                str(m.ts_ms) if m.ts_ms is not None else now,
            ]
            for m in messages
        ]

    async def publish(
        self, channel: str, type_: str, data: Any, dedup_key: str | None = None, ts_ms: int | None = None
    ) -> int:
        """Publish one message; returns its id, or 0 when ``dedup_key`` was seen before."""
        payload = orjson.dumps(self.encode([Outgoing(channel, type_, data, dedup_key, ts_ms)]))
        ids = await self._script(keys=[], args=[*self.limits, payload])
        return int(ids[0])

    async def ensure_loaded(self) -> None:
        self._script.sha = await self.redis.script_load(_PUBLISH_LUA)

    async def last_id(self, channel: str) -> int:
        v = await self.redis.get(keys.channel_seq(channel))
        return int(v) if v else 0

    async def replay(self, channel: str, since: int) -> tuple[bool, list[Message]]:
        """Messages with id > ``since``; ``(False, [])`` when some were trimmed (or the history
        expired) so the client must resynchronise from current state."""
        last = await self.last_id(channel)
        if since >= last:
            # Nothing missed. A ``since`` beyond the current sequence means the history was
            # reset (Redis rebuilt); the client cannot know what it missed.
            return since == last, []
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await self.redis.xrange(keys.channel_log(channel), min=f"({since}-1", max="+"),
        )
        msgs = [
            Message(channel, int(rid.split(b"-")[0]), f[b"t"].decode(), orjson.loads(f[b"d"]), int(f[b"ts"]))
            for rid, f in rows
        ]
        if not msgs or msgs[0].id != since + 1:
            return False, []
        return True, msgs
