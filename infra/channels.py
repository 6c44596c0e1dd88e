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
from redis.asyncio.client import Pipeline

from infra import keys

#: Messages kept per channel for replay on reconnect.
HISTORY_SIZE = 500
#: How long a dedup key lives: longer than any redelivery window.
DEDUP_TTL_S = 24 * 3600
#: Channel histories expire when idle for this long.
HISTORY_TTL_S = 7 * 24 * 3600

# Publishes any number of messages in one call (a worker batch is one round trip).
# KEYS, four per message: seq, log, pubsub, dedup ("" for none).
# ARGV: maxlen, dedup-ttl, history-ttl, then four per message: channel, type, data-json, ts-ms.
# Returns each message's id, 0 for one whose dedup key was already seen.
_PUBLISH_LUA = """
local ids = {}
for i = 0, #KEYS / 4 - 1 do
  local k, a = i * 4, 3 + i * 4
  local channel, typ, data, ts = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local n = 0
  if KEYS[k + 4] == '' or redis.call('SET', KEYS[k + 4], '1', 'NX', 'EX', ARGV[2]) then
    n = redis.call('INCR', KEYS[k + 1])
    redis.call('EXPIRE', KEYS[k + 1], ARGV[3])
    redis.call('XADD', KEYS[k + 2], 'MAXLEN', ARGV[1], n .. '-1', 't', typ, 'd', data, 'ts', ts)
    redis.call('EXPIRE', KEYS[k + 2], ARGV[3])
    redis.call('PUBLISH', KEYS[k + 3], '{"channel":' .. cjson.encode(channel) .. ',"id":' .. n
      .. ',"type":' .. cjson.encode(typ) .. ',"data":' .. data .. ',"ts":' .. ts .. '}')
  end
  ids[i + 1] = n
end
return ids
"""


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

    def _call_args(self, messages: Sequence[Outgoing]) -> tuple[list[str], list[Any]]:
        now = int(time.time() * 1000)
        k: list[str] = []
        a: list[Any] = [self.history_size, DEDUP_TTL_S, HISTORY_TTL_S]
        for m in messages:
            k += [
                keys.channel_seq(m.channel),
                keys.channel_log(m.channel),
                keys.channel_pubsub(m.channel),
                keys.channel_dedup(m.channel, m.dedup_key) if m.dedup_key else "",
            ]
            a += [m.channel, m.type, orjson.dumps(m.data), m.ts_ms if m.ts_ms is not None else now]
        return k, a

    async def publish(
        self, channel: str, type_: str, data: Any, dedup_key: str | None = None, ts_ms: int | None = None
    ) -> int:
        """Publish one message; returns its id, or 0 when ``dedup_key`` was seen before."""
        k, a = self._call_args([Outgoing(channel, type_, data, dedup_key, ts_ms)])
        ids = await self._script(keys=k, args=a)
        return int(ids[0])

    def publish_in(self, pipe: Pipeline, messages: Sequence[Outgoing]) -> None:
        """Queue one call publishing all ``messages`` on a pipeline (see ``ensure_loaded``)."""
        if messages:
            k, a = self._call_args(messages)
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
