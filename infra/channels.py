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
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from infra import keys

#: Messages kept per channel for replay on reconnect.
HISTORY_SIZE = 500
#: How long a dedup key lives: longer than any redelivery window.
DEDUP_TTL_S = 24 * 3600
#: Channel histories expire when idle for this long.
HISTORY_TTL_S = 7 * 24 * 3600

# KEYS: seq, log, pubsub, dedup ("" when none)   ARGV: type, data-json, ts-ms, maxlen, dedup-ttl, ttl
_PUBLISH_LUA = """
if KEYS[4] ~= '' then
  if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[5]) == false then return 0 end
end
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], n .. '-1', 't', ARGV[1], 'd', ARGV[2], 'ts', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local msg = '{"channel":' .. cjson.encode(ARGV[7]) .. ',"id":' .. n .. ',"type":' .. cjson.encode(ARGV[1])
  .. ',"data":' .. ARGV[2] .. ',"ts":' .. ARGV[3] .. '}'
redis.call('PUBLISH', KEYS[3], msg)
return n
"""


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

    def _args(
        self, channel: str, type_: str, data: Any, dedup_key: str | None, ts_ms: int | None
    ) -> tuple[list[str], list[Any]]:
        ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
        k = [
            keys.channel_seq(channel),
            keys.channel_log(channel),
            keys.channel_pubsub(channel),
            keys.channel_dedup(channel, dedup_key) if dedup_key else "",
        ]
        a = [type_, orjson.dumps(data), ts, self.history_size, DEDUP_TTL_S, HISTORY_TTL_S, channel]
        return k, a

    async def publish(
        self, channel: str, type_: str, data: Any, dedup_key: str | None = None, ts_ms: int | None = None
    ) -> int:
        """Publish one message; returns its id, or 0 when ``dedup_key`` was seen before."""
        k, a = self._args(channel, type_, data, dedup_key, ts_ms)
        return int(await self._script(keys=k, args=a))

    def publish_in(
        self,
        pipe: Pipeline,
        channel: str,
        type_: str,
        data: Any,
        dedup_key: str | None = None,
        ts_ms: int | None = None,
    ) -> None:
        """Queue a publish on a pipeline (the script must be loaded: see ``ensure_loaded``)."""
        k, a = self._args(channel, type_, data, dedup_key, ts_ms)
        pipe.evalsha(self._script.sha, len(k), *k, *a)

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
