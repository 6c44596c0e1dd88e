"""Where a user's data lies in Redis, for the two requests about all of it (docs/security.md "A
user's data"): the export reads it (api/routes/privacy.py), the erasure removes it
(streams/erasure.py). One list, so the two cannot disagree on what "everything" is.

Each place is found from the user id alone, never by walking the keyspace: the per-user keys by
their kinds, the user's channel, the leaderboards that can still exist, the risk board and the
referral books.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import orjson

from infra import keys
from infra.redis_conn import RedisClient, as_text
from models import boards
from models.channels import user_channel
from models.leaderboard import live_buckets


def user_keys(user_id: str) -> list[str]:
    """Every per-user key (``keys.USER_KINDS``), whatever its kind holds."""
    return [f"{keys.USER_PREFIX}{{{user_id}}}:{kind}" for kind in sorted(keys.USER_KINDS)]


def channel_keys(user_id: str) -> list[str]:
    """The user's channel history: the log, its size and its dedup memory. Not the sequence
    number: it holds nothing about the user, and a connected client must not see ids go back."""
    channel = user_channel(user_id)
    return [keys.channel_log(channel), keys.channel_bytes(channel), keys.channel_dedup(channel)]


def ranked_keys(now_ms: int, groups: Iterable[tuple[str, str]] = ()) -> list[str]:
    """The sorted sets a user can be a member of at ``now_ms``: the leaderboards that can still
    exist, global and of ``groups`` (kind, digest: their school and cohort), the risk board and
    the statistics ranking."""
    buckets = live_buckets(now_ms)
    return [
        *(keys.leaderboard(p, b) for p, b in buckets),
        *(keys.group_leaderboard(kind, digest, p, b) for kind, digest in groups for p, b in buckets),
        keys.RISK_SCORES,
        keys.STATS_RANKING,
    ]


async def dump_user(redis: RedisClient, user_id: str, now_ms: int) -> dict[str, Any]:
    """What Redis holds about ``user_id``: each per-user key by kind (JSON documents decoded,
    hashes as maps), the channel history, the scores on boards and the referral book."""
    views: dict[str, Any] = {}
    for kind in sorted(keys.USER_KINDS):
        value = await _read(redis, f"{keys.USER_PREFIX}{{{user_id}}}:{kind}")
        if value is not None:
            views[kind] = value
    history = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await redis.xrange(keys.channel_log(user_channel(user_id)), min="-", max="+"),
    )
    scores: dict[str, float] = {}
    for key in ranked_keys(now_ms, _groups(views.get("board"))):
        score = await redis.zscore(key, user_id)
        if score is not None:
            scores[key] = score
    book = await redis.hget(keys.REFERRAL_BOOKS, user_id)
    return {
        "views": views,
        # As the websocket replays it (infra/channels.py): id, type, data, time.
        "channel_history": [
            {
                "id": int(rid.split(b"-")[0]),
                "type": as_text(f[b"t"]),
                "data": _decoded(f[b"d"]),
                "ts": int(f[b"ts"]),
            }
            for rid, f in history
        ],
        "ranked": scores,
        "referral_book": None if book is None else _decoded(book),
    }


def _groups(card: Any) -> list[tuple[str, str]]:
    """The group boards (kind, digest) the user's board card names (streams/serving.py
    ``board_card``), those that name a board."""
    named = card.get("groups") if isinstance(card, dict) else None
    if not isinstance(named, dict):
        return []
    return [(k, d) for k, d in named.items() if k in boards.GROUP_KINDS and boards.is_group_digest(d)]


def _message(rid: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    return {
        "id": int(rid.split(b"-")[0]),
        "type": as_text(fields[b"t"]),
        "data": _decoded(fields[b"d"]),
        "ts": int(fields[b"ts"]),
    }


async def _read(redis: RedisClient, key: str) -> Any:
    kind = as_text(await redis.type(key))
    if kind == "string":
        raw = await redis.get(key)
        return None if raw is None else _decoded(raw)
    if kind == "hash":
        return {as_text(k): _decoded(v) for k, v in (await redis.hgetall(key)).items()}
    if kind == "zset":
        rows = cast(list[tuple[bytes, float]], await redis.zrange(key, 0, -1, withscores=True))
        return [[as_text(member), score] for member, score in rows]
    if kind == "list":
        return [_decoded(v) for v in await redis.lrange(key, 0, -1)]
    if kind == "set":
        return sorted(as_text(v) for v in await redis.smembers(key))
    return None  # "none": absent


def _decoded(raw: bytes | str) -> Any:
    """A stored value as JSON when it is JSON, else as text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return as_text(raw)
