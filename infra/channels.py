"""Channel history and live fan-out in Redis (the Centrifugo model).

Each channel has an integer sequence (message ``id``), a capped log of its last messages,
and a pub/sub topic for live delivery. Publishing is one atomic Lua call, so ids are strictly
increasing per channel and the log never has gaps except at its trimmed head. A dedup key
makes a re-published message (redelivery after a worker crash) a no-op; each channel remembers
its newest ``DEDUP_KEEP`` dedup keys, so the memory is bounded per channel.

The log is capped in messages and in bytes (``HISTORY_SIZE``, ``HISTORY_BYTES``): a count alone
let one user's large pushes hold megabytes per channel. Its payload bytes and entry count are
kept in a key beside it, updated in the same call that appends and trims, so they never disagree. A
message whose data is over ``MAX_MESSAGE_BYTES`` is replaced, before anything is written, by a
small marker with the same type (``{"omitted": "too_large", "bytes": n, "limit": ...}``): it keeps
its id, so live clients and replays see that something happened and re-read the resource over
HTTP, where cutting it to fit would have sent them invalid or misleading data.

Recovery is all or nothing: a client that says ``since=N`` either gets every message after N
or ``recovered=False`` when some of them were trimmed away.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from infra import keys, redis_errors
from infra.redis_conn import RedisClient

log = logging.getLogger(__name__)

#: Messages kept per channel for replay on reconnect.
HISTORY_SIZE = 500
#: Payload bytes (type + data JSON + timestamp) kept per channel: 256 KiB.
HISTORY_BYTES = 256 * 1024
#: Largest data JSON one message may carry (32 KiB); larger data is replaced by a marker.
MAX_MESSAGE_BYTES = 32 * 1024
#: Dedup keys remembered per channel (the newest, as 16-byte digests in one sorted set). A
#: re-publish comes from a batch redelivered after a crash, seconds or minutes later: far fewer
#: pushes than this on one channel. One key per message with a day's TTL, as before, held
#: ~10 GB of Redis at 1,000 pushes/s; this holds at most DEDUP_KEEP entries a channel.
DEDUP_KEEP = 256
#: Channel histories expire when idle for this long.
HISTORY_TTL_S = 7 * 24 * 3600

# Lua functions publishing any number of messages in one call, shared by this module's script and by
# the workers' batch-write script (streams/serving.py) so a batch is one round trip. Each message is
# [seq-key, log-key, pubsub-key, dedup-set-key, channel, type, data-json, ts-ms, bytes-key, dedup-
# digest or ""], all strings (Lua numbers would print a millisecond timestamp as 1.79e+12). Messages
# travel as one JSON argument: redis-py encodes every argument in Python, which cost more than the
# work. ARGV[1..4] are the limits (``ChannelLog.limits``); a script's own document comes after them.
# The keys are computed by infra/keys.py, so the layout stays defined once; they are not declared in
# KEYS. On a Redis Cluster each call is routed by one key (KEYS[1]) and carries only keys of that
# key's slot (streams/serving.py splits a batch by slot), so every key it touches is local.
#
# Writes go through ``try``: redis.pcall, so a key Redis refuses (WRONGTYPE, OOM) skips that
# message and is reported in ``errors`` as {Redis's reason, "<command> <key>"} (kept apart: a key
# holds client-chosen text, which must not pass for an error code; infra/redis_errors.py) instead
# of aborting the call and every other user's writes after it.
PUBLISH_ALL_LUA = """
local errors = {}
local function try(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    errors[#errors + 1] = {r.err, cmd .. ' ' .. key}
    return nil, true
  end
  return r, false
end
-- The payload bytes of one log entry, as XRANGE returns its fields {'t', type, 'd', data, 'ts', ts}.
local function entry_bytes(f)
  return #f[2] + #f[4] + #f[6]
end
-- Append message m (its id n) to its channel's log and trim the log's head to both caps. The
-- log's payload bytes and entry count live in one string "<bytes>:<count>" beside it, read and
-- written here only, so no XLEN or measuring read is needed on the common path.
local function append(m, n, maxlen, maxbytes, ttl)
  local meta = try('GET', m[9])
  local bytes, count
  if meta then
    bytes, count = string.match(meta, '^(%d+):(%d+)$')
    bytes, count = tonumber(bytes), tonumber(count)
  end
  if not bytes then
    -- A new channel, or a log without its count (written before the count existed, the count
    -- lost or unreadable): its size is unknown, so the history restarts rather than be read
    -- whole to measure it; clients asking for what it held get recovered: false and resync.
    if not try('DEL', m[2], m[9]) then return end
    bytes, count = 0, 0
  end
  local _, refused = try('XADD', m[2], n .. '-1', 't', m[6], 'd', m[7], 'ts', m[8])
  if refused then return end
  bytes, count = bytes + #m[6] + #m[7] + #m[8], count + 1
  while bytes > maxbytes or count > maxlen do
    local oldest = redis.call('XRANGE', m[2], '-', '+', 'COUNT', 1)[1]
    if not oldest then
      bytes, count = 0, 0
      break
    end
    bytes, count = bytes - entry_bytes(oldest[2]), count - 1
    redis.call('XDEL', m[2], oldest[1])
  end
  redis.call('SET', m[9], bytes .. ':' .. count, 'EX', ttl)
  redis.call('EXPIRE', m[2], ttl)
end
local function publish_all(msgs)
  local maxlen, maxbytes = tonumber(ARGV[1]), tonumber(ARGV[2])
  local keep, ttl = tonumber(ARGV[3]), ARGV[4]
  local ids = {}
  for i, m in ipairs(msgs) do
    local n = 0
    local fresh = true
    if m[10] ~= '' then
      local seen, refused = try('ZSCORE', m[4], m[10])
      fresh = not refused and not seen
    end
    local seq = fresh and try('INCR', m[1])
    if seq then
      n = seq
      redis.call('EXPIRE', m[1], ttl)
      if m[10] ~= '' and try('ZADD', m[4], n, m[10]) then
        redis.call('ZREMRANGEBYRANK', m[4], 0, -(keep + 1))
        redis.call('EXPIRE', m[4], ttl)
      end
      append(m, n, maxlen, maxbytes, ttl)
      redis.call('PUBLISH', m[3], '{"channel":' .. cjson.encode(m[5]) .. ',"id":' .. n
        .. ',"type":' .. cjson.encode(m[6]) .. ',"data":' .. m[7] .. ',"ts":' .. m[8] .. '}')
    end
    ids[i] = n
  end
  return ids
end
"""
#: How many ARGV entries ``ChannelLog.limits`` fills; a script's document follows them.
LIMIT_ARGS = 4
# ARGV: the limits, then the messages' JSON. Returns {each message's id (0 = deduplicated or
# refused), the refusals}.
_PUBLISH_LUA = PUBLISH_ALL_LUA + "local ids = publish_all(cjson.decode(ARGV[5]))\nreturn {ids, errors}"


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


def dedup_digest(key: str) -> str:
    """A dedup key as the channel remembers it: 16 bytes whatever the key (ids can be long)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def omitted_marker(size: int, limit: int) -> dict[str, Any]:
    """What a client receives instead of data over ``MAX_MESSAGE_BYTES``: re-read over HTTP."""
    return {"omitted": "too_large", "bytes": size, "limit": limit}


class ChannelLog:
    """Publish to and replay from channels. One instance per Redis connection pool."""

    def __init__(
        self,
        redis: RedisClient,
        history_size: int = HISTORY_SIZE,
        history_bytes: int = HISTORY_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.redis = redis
        self.history_size = history_size
        self.history_bytes = history_bytes
        self.max_message_bytes = max_message_bytes
        self._script = redis.register_script(_PUBLISH_LUA)

    @property
    def limits(self) -> tuple[int, int, int, int]:
        """The publish function's ARGV[1..4]: (maxlen, max-bytes, dedup-keep, history-ttl)."""
        return self.history_size, self.history_bytes, DEDUP_KEEP, HISTORY_TTL_S

    def encode(self, messages: Sequence[Outgoing]) -> list[list[str]]:
        """Messages as the Lua ``publish_all`` takes them (see PUBLISH_ALL_LUA)."""
        now = str(int(time.time() * 1000))
        return [
            [
                keys.channel_seq(m.channel),
                keys.channel_log(m.channel),
                keys.channel_pubsub(m.channel),
                keys.channel_dedup(m.channel),
                m.channel,
                m.type,
                self.bounded_data(m),
                str(m.ts_ms) if m.ts_ms is not None else now,
                keys.channel_bytes(m.channel),
                dedup_digest(m.dedup_key) if m.dedup_key else "",
            ]
            for m in messages
        ]

    def bounded_data(self, m: Outgoing) -> str:
        """The message's data as JSON, or the marker that replaces data over the limit."""
        data = orjson.dumps(m.data)
        if len(data) <= self.max_message_bytes:
            return data.decode()
        log.warning(
            "%s push on %r is %d bytes (limit %d): sent as an omitted marker",
            m.type,
            m.channel[:200],
            len(data),
            self.max_message_bytes,
        )
        return orjson.dumps(omitted_marker(len(data), self.max_message_bytes)).decode()

    async def publish(
        self, channel: str, type_: str, data: Any, dedup_key: str | None = None, ts_ms: int | None = None
    ) -> int:
        """Publish one message; returns its id, or 0 when ``dedup_key`` was seen before. Raises
        ``RefusedWrites`` (infra/redis_errors.py) when Redis refused to store it."""
        payload = orjson.dumps(self.encode([Outgoing(channel, type_, data, dedup_key, ts_ms)]))
        # The sequence key routes the call on a cluster: every key of a channel shares its slot.
        ids, errors = await self._script(keys=[keys.channel_seq(channel)], args=[*self.limits, payload])
        redis_errors.check(errors)
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
