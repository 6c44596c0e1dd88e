"""Projects per-user state into the Redis serving view and pushes changes to channels.

Every write is overwrite-style (SET of the whole view, ZADD of an absolute score) or
deduplicated (channel publishes carry a dedup key), so writing the same outcome twice, as
at-least-once redelivery will, leaves Redis as if it were written once.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Protocol

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from infra import keys
from infra.channels import LIMIT_ARGS, PUBLISH_ALL_LUA, ChannelLog, Outgoing
from infra.redis_conn import RedisClient, by_slot, mget
from infra.redis_errors import RETRIED, RefusedWrites
from models.boards import Scope, shown_card
from models.channels import leaderboard_channel, user_channel
from models.gamification import UserState, public_view
from models.leaderboard import BUCKET_TTL_S, PERIODS, decode_score, encode_score
from models.levels import level_progress
from models.rules import Rules
from models.stats import stats_document
from streams import redis_faults
from streams.engagement import Applied, BatchOutcome

LEADERBOARD_PUSH_SIZE = 10
#: Users per Redis call when re-projecting a whole partition.
PROJECT_CHUNK = 2000


# One call per batch. ARGV: the publish limits (see infra/channels.py), then one JSON document:
# {"set": [[key, view-json]], "zadd": [[key, ttl-s (0 = none), [score, member, ...]]],
#  "zrem": [[key, [member, ...]]], "hset": [[key, field, value]], "publish": [message, ...]}.
# Scores are integer strings (exact; see models/leaderboard.py). Every write goes through the
# channels' ``try`` (redis.pcall): a key Redis refuses is reported, the others are written.
# Returns {each message's id, the refusals}.
_BATCH_WRITE_LUA = (
    PUBLISH_ALL_LUA
    + f"local doc = cjson.decode(ARGV[{LIMIT_ARGS + 1}])"
    + """
for _, kv in ipairs(doc["set"]) do try('SET', kv[1], kv[2]) end
for _, h in ipairs(doc["hset"]) do try('HSET', h[1], h[2], h[3]) end
for _, z in ipairs(doc["zadd"]) do
  local members = z[3]
  for i = 1, #members, 2000 do
    try('ZADD', z[1], unpack(members, i, math.min(i + 1999, #members)))
  end
  if z[2] > 0 then redis.call('EXPIRE', z[1], z[2]) end
end
for _, z in ipairs(doc["zrem"]) do
  local members = z[2]
  for i = 1, #members, 2000 do
    try('ZREM', z[1], unpack(members, i, math.min(i + 1999, #members)))
  end
end
local ids = publish_all(doc["publish"])
return {ids, errors}
"""
)


#: The batch document's parts, each a list of entries whose first element is a key.
_DOC_PARTS = ("set", "zadd", "zrem", "hset", "publish")

#: One leaderboard: the global one (scope None) or a group's, of a period bucket.
Board = tuple[Scope, str, str]


def _period_key(period_bucket: str) -> tuple[str, str]:
    period, _, bucket = period_bucket.partition(":")
    return period, bucket


def board_key(board: Board) -> str:
    scope, period, bucket = board
    if scope is None:
        return keys.leaderboard(period, bucket)
    kind, digest = scope
    return keys.group_leaderboard(kind, digest, period, bucket)


def board_card(state: UserState) -> dict[str, Any]:
    """``keys.user_board``: what a board entry shows of the user, whether they are listed, their
    groups (so the API can tell whether a group board is theirs), and, only when hidden, their
    period scores (their own rank is then computed against the listed learners: a listed user's
    rank is their position on the board)."""
    seat = state.boards
    listed = seat.listing.visible
    return {
        **seat.listing.card(),
        "listed": listed,
        "groups": dict(seat.listing.groups),
        "periods": {} if listed else state.period_xp,
    }


def board_entries(state: UserState, period_buckets: Iterable[str], boards: dict[Board, list[str]]) -> None:
    """Add the user's scores of ``period_buckets`` to every board they are listed on."""
    scopes = state.boards.scopes()
    for pb in period_buckets:
        if pb not in state.period_xp:
            # Touched, then pruned by a newer event of the same batch (a backlog or a replay
            # spanning more days than the state keeps): a board too old to show.
            continue
        xp, reached = state.period_xp[pb]
        # As an integer string: exact (< 2^53) where a Lua number would print 1.8e+15.
        score = str(int(encode_score(xp, reached)))
        period, bucket = _period_key(pb)
        for scope in scopes:
            boards[(scope, period, bucket)] += [score, state.user_id]


def board_removals(state: UserState, removals: dict[Board, list[str]]) -> None:
    """Take the user off the boards that must not list them (groups left; all when hidden), for
    every period bucket they hold: idempotent, so repeated on every full projection."""
    for scope in state.boards.removals():
        for pb in state.period_xp:
            period, bucket = _period_key(pb)
            removals[(scope, period, bucket)].append(state.user_id)


#: Event ids listed in one engagement push (the newest of the batch).
MAX_PUSHED_IDS = 50


def engagement_message(state: UserState, applied: list[Applied], rules: Rules) -> dict[str, Any]:
    """One push per user per batch: what happened (possibly several events) and where it left them."""
    first, last = applied[0].effects, applied[-1].effects
    breakdown: list[dict[str, Any]] = []
    badges: list[dict[str, Any]] = []
    for a in applied:
        breakdown.extend({"reason": r, "xp": xp} for r, xp in a.effects.breakdown)
        badges.extend(
            {"id": b.id, "name": b.name, "rarity": b.rarity, "xp": b.xp} for b in a.effects.new_badges
        )
    streak = last.streak_after
    return {
        "user_id": state.user_id,
        # The newest ids only: a batch of 1,000 events of 128-byte ids would make a 130 KB push
        # into the user's channel history; the count says how many there were.
        "event_ids": [a.event.event_id for a in applied[-MAX_PUSHED_IDS:]],
        "events": len(applied),
        "xp_gained": sum(a.effects.xp_gained for a in applied),
        "breakdown": breakdown,
        "xp": state.xp,
        "level": level_progress(state.xp, rules.levels),
        "level_up": last.level_after > first.level_before,
        "level_before": first.level_before,
        "streak": {
            "current": streak.current,
            "longest": streak.longest,
            "freezes": streak.freezes,
            "extended": streak.current != first.streak_before.current
            or streak.last_active_day != first.streak_before.last_active_day,
        },
        "new_badges": badges,
    }


def _stats_writes(state: UserState, views: list[tuple[str, str]], ranking: list[str]) -> None:
    """The user's statistics view, and their ranking entry once they are ranked: absolute values
    (SET, ZADD of the member's current average), so a replay or a re-projection writes the same."""
    document = stats_document(
        state.user_id, state.weekly, state.category_stats, state.xp, state.updated_at_ms
    )
    views.append((keys.user_stats(state.user_id), orjson.dumps(document).decode()))
    value = state.weekly.ranking_value()
    if value is not None:
        # repr: the shortest text that reads back as the same double, so the API's "strictly
        # below" (ZCOUNT to the member's own score, exclusive) compares equal values as equal.
        ranking += [repr(value), state.user_id]


def _ranking_zadd(ranking: list[str]) -> list[tuple[str, list[str]]]:
    return [(keys.STATS_RANKING, ranking)] if ranking else []


class Serving(Protocol):
    """What slices write to Redis through (``ServingWriter``; a recording one in the tests)."""

    async def write(self, outcome: BatchOutcome, updates: dict[str, dict[str, Any]]) -> None: ...

    async def project(self, states: Iterable[UserState]) -> int: ...

    async def write_documents(
        self,
        sets: list[tuple[str, str]],
        hsets: list[tuple[str, str, str]],
        messages: list[Outgoing],
        zadds: list[tuple[str, list[str]]] | None = None,
    ) -> None: ...

    async def set_expiring(self, docs: list[tuple[str, bytes]], ttl_s: int) -> None: ...

    async def set_if_absent(self, pairs: list[tuple[str, str]]) -> None: ...

    async def replace_hash(self, key: str, mapping: dict[str, bytes]) -> None: ...


class ServingWriter:
    def __init__(self, redis: RedisClient, channels: ChannelLog, rules: Rules) -> None:
        self.redis = redis
        self.channels = channels
        self.rules = rules
        #: Leaderboard buckets changed since the last push, per period.
        self.dirty_buckets: dict[str, set[str]] = defaultdict(set)
        self._write_script = redis.register_script(_BATCH_WRITE_LUA)

    async def start(self) -> None:
        await self.channels.ensure_loaded()

    async def write(self, outcome: BatchOutcome, updates: dict[str, dict[str, Any]]) -> None:
        """The whole batch in one Redis call: every view, every leaderboard score, every push.

        ``updates`` holds each changed user's engagement message (``engagement_message``).
        """
        if not outcome.touched:
            return
        by_user = outcome.applied_by_user()
        views: list[tuple[str, str]] = []
        boards: dict[Board, list[str]] = defaultdict(list)
        removals: dict[Board, list[str]] = defaultdict(list)
        messages: list[Outgoing] = []
        ranking: list[str] = []
        for user_id, state in outcome.touched.items():
            views.append((keys.user_state(user_id), orjson.dumps(public_view(state, self.rules)).decode()))
            _stats_writes(state, views, ranking)
            applied = by_user.get(user_id)
            # Only changed buckets for users with new events; everything for a user whose
            # events were all duplicates, whose view may be the one a crash lost, or whose
            # profile came in this batch (it may move or hide them: a replay of it repeats this).
            full = not applied or user_id in outcome.profiled
            buckets = (
                set(state.period_xp)
                if full
                else {p for a in applied or () for p in a.effects.touched_periods}
            )
            board_entries(state, buckets, boards)
            if full:
                board_removals(state, removals)
            if full or not state.boards.listing.visible:
                # A hidden user's card carries their scores, which move with every event.
                views.append((keys.user_board(user_id), orjson.dumps(board_card(state)).decode()))
            msg = updates.get(user_id)
            if msg is not None:
                dedup = hashlib.blake2b("\x00".join(msg["event_ids"]).encode(), digest_size=12).hexdigest()
                messages.append(Outgoing(user_channel(user_id), "engagement", msg, dedup))
        await self._execute(views, boards, messages, sorted_sets=_ranking_zadd(ranking), removals=removals)

    async def project(self, states: Iterable[UserState]) -> int:
        """Rewrite the serving view of ``states`` (a rebuild after Redis was lost), through the
        same batch write as live processing, in chunks that keep each Redis call short."""
        n = 0
        views: list[tuple[str, str]] = []
        boards: dict[Board, list[str]] = defaultdict(list)
        removals: dict[Board, list[str]] = defaultdict(list)
        ranking: list[str] = []
        for state in states:
            views.append(
                (keys.user_state(state.user_id), orjson.dumps(public_view(state, self.rules)).decode())
            )
            _stats_writes(state, views, ranking)
            views.append((keys.user_board(state.user_id), orjson.dumps(board_card(state)).decode()))
            board_entries(state, state.period_xp, boards)
            board_removals(state, removals)
            n += 1
            if len(views) >= 3 * PROJECT_CHUNK:  # three views a user: state, statistics, board card
                await self._execute(views, boards, [], sorted_sets=_ranking_zadd(ranking), removals=removals)
                views, boards, removals, ranking = [], defaultdict(list), defaultdict(list), []
        if views:
            await self._execute(views, boards, [], sorted_sets=_ranking_zadd(ranking), removals=removals)
        return n

    async def write_documents(
        self,
        sets: list[tuple[str, str]],
        hsets: list[tuple[str, str, str]],
        messages: list[Outgoing],
        zadds: list[tuple[str, list[str]]] | None = None,
    ) -> None:
        """Whole-document views, hash fields, sorted-set scores ([score, member, ...], kept
        without expiry) and pushes in one call (career, market, risk views)."""
        if sets or hsets or messages or zadds:
            await self._execute(sets, {}, messages, hsets, zadds)

    async def set_expiring(self, docs: list[tuple[str, bytes]], ttl_s: int) -> None:
        """``docs`` (key, value), each expiring after ``ttl_s`` (command answers)."""
        if not docs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value in docs:
                pipe.set(key, value, ex=ttl_s)
            await pipe.execute()

    async def set_if_absent(self, pairs: list[tuple[str, str]]) -> None:
        """Each (key, value) unless the key is set: the first writer keeps it (referral codes)."""
        if not pairs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value in pairs:
                pipe.set(key, value, nx=True)
            await pipe.execute()

    async def replace_hash(self, key: str, mapping: dict[str, bytes]) -> None:
        """The hash at ``key`` becomes ``mapping``, atomically (a reader sees old or new)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            await pipe.execute()

    async def _execute(
        self,
        views: list[tuple[str, str]],
        boards: dict[Board, list[str]],
        messages: list[Outgoing],
        hsets: list[tuple[str, str, str]] | None = None,
        sorted_sets: list[tuple[str, list[str]]] | None = None,
        removals: dict[Board, list[str]] | None = None,
    ) -> None:
        zadds: list[list[Any]] = [
            [board_key(board), BUCKET_TTL_S.get(board[1], 0), members] for board, members in boards.items()
        ]
        zadds.extend([key, 0, members] for key, members in sorted_sets or ())
        zrems: list[list[Any]] = [[board_key(board), members] for board, members in (removals or {}).items()]
        errors = await self._write_by_slot(
            {
                "set": views,
                "zadd": zadds,
                "zrem": zrems,
                "hset": hsets or [],
                "publish": self.channels.encode(messages),
            }
        )
        if errors:
            refused = RefusedWrites.from_script(errors)
            if refused.kind in RETRIED:
                raise refused  # e.g. out of memory: nothing was written, the caller retries it all
            # Only the refused keys were not written: report them, and the rest of the call
            # stands (a live batch goes on; a re-projection does not loop on one bad key).
            redis_faults.report(refused)
        for scope, period, bucket in [*boards, *(removals or {})]:
            if scope is None:  # only the global boards are pushed (docs/rules.md)
                self.dirty_buckets[period].add(bucket)

    async def _write_by_slot(self, doc: dict[str, list[Any]]) -> list[Any]:
        """Run the batch script once on one Redis; on a Redis Cluster once per hash slot, every
        call in one pipeline (one round trip per node). Each entry's first element is its key
        (a message's is its sequence key, whose tag all its keys share). Returns the refusals."""
        entries = [(part, item) for part in _DOC_PARTS for item in doc[part]]
        if not entries:
            return []
        if not isinstance(self.redis, RedisCluster):
            # One Redis: the whole batch in one call, as built (no regrouping on the hot path).
            _, errors = await self._write_script(
                keys=[entries[0][1][0]], args=[*self.channels.limits, orjson.dumps(doc)]
            )
            return list(errors)
        docs: list[tuple[str, bytes]] = []
        for indexes in by_slot(self.redis, [item[0] for _, item in entries]).values():
            group: dict[str, list[Any]] = {part: [] for part in _DOC_PARTS}
            for i in indexes:
                part, item = entries[i]
                group[part].append(item)
            # The first key routes the call; the script reads its keys from the document.
            docs.append((entries[indexes[0]][1][0], orjson.dumps(group)))
        return await self._write_pipelined(docs)

    async def _write_pipelined(self, docs: list[tuple[str, bytes]]) -> list[Any]:
        sha = self._write_script.sha or await self._load_script()
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for route, payload in docs:
                    pipe.evalsha(sha, 1, route, *self.channels.limits, payload)
                results = await pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in results) and attempt == 1:
                # A node restarted or a replica took over without the script: load it everywhere
                # and run the batch again (every write in it is idempotent).
                sha = await self._load_script()
                continue
            errors: list[Any] = []
            for r in results:
                if isinstance(r, Exception):
                    raise r
                errors.extend(r[1])
            return errors
        raise AssertionError("unreachable")

    async def _load_script(self) -> str:
        sha: str = await self.redis.script_load(_BATCH_WRITE_LUA)
        self._write_script.sha = sha
        return sha

    async def push_leaderboards(self, current: dict[str, str]) -> None:
        """Publish the top of every leaderboard that changed, for its current bucket only.

        Called on a timer, not per event: a leaderboard channel carries at most one snapshot
        per tick however fast events arrive.
        """
        for period in PERIODS:
            buckets = self.dirty_buckets.pop(period, set())
            bucket = current[period]
            if bucket not in buckets:
                continue
            rows: list[tuple[bytes, float]] = await self.redis.zrevrange(  # type: ignore[assignment]
                keys.leaderboard(period, bucket), 0, LEADERBOARD_PUSH_SIZE - 1, withscores=True
            )
            cards = await mget(self.redis, [keys.user_board(m.decode()) for m, _ in rows]) if rows else []
            entries = [
                {
                    "rank": i + 1,
                    "user_id": m.decode(),
                    "score": decode_score(s),
                    **shown_card(None if card is None else orjson.loads(card)),
                }
                for i, ((m, s), card) in enumerate(zip(rows, cards, strict=True))
            ]
            await self.channels.publish(
                leaderboard_channel(period),
                "leaderboard",
                {"period": period, "bucket": bucket, "entries": entries},
            )
