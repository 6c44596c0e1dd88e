"""The recommendations slice: after each batch, the next best actions of the users it touched,
pushed on ``user:{id}`` (type ``recommendations``) when their list changed.

Why a slice, last in the per-user agent (docs/careers.md, "Recommendations"): every per-user input
(the streak and category stats, the matches and applications, the goals) is in the tables of the
user's partition, on this worker, and the outcomes of career, engagement and growth say which users
a batch changed. Recomputing there costs a bounded gather and a pure call per touched user, and
needs no new state: it keeps no changelog, only a view.

The view (``keys.user_recommendations``, a hash) holds the user's bounded facts, which the API
recommends from at the reader's clock, and ``meta``: the version and digests of the last list
pushed. Before writing, the slice reads ``meta`` of the touched users (one pipelined round trip)
and, per user:

- facts and list unchanged (a redelivered batch, an event that changes nothing shown): nothing;
- facts changed, list not: the facts are rewritten, nothing is pushed;
- list changed: facts, ``meta`` (version + 1) and the push, in the same Redis call (one script,
  atomic on one Redis): a replay after the call finds its own digest and pushes nothing; a replay
  after a crash before the call pushes what was lost. The push's dedup key is
  ``recs:<version>:<digest>``, so two workers racing over a partition during a rebalance (both read
  the same ``meta``) publish it once, and a list that changes back (A, B, A) is still pushed.

Redis lost: ``rebuild`` rewrites facts and ``meta`` of the partition's users without pushing (a
client that reconnects gets ``recovered: false`` and reads the list over HTTP). Partitions gained
in a rebalance are rebuilt too: there ``meta`` survives, and a list that changed since its last
push (a goal fell behind, a job now closes within the week) is pushed as a live batch would. The market's hot
skills come from the pulse in Redis, read at most every ``HOT_SKILLS_REFRESH_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra import keys
from infra.channels import Outgoing
from infra.redis_conn import RedisClient
from models.career import CareerState
from models.channels import user_channel
from models.gamification import UserState
from models.growth import GrowthState
from models.recommendations import (
    HotSkill,
    UserFacts,
    gather_facts,
    hot_skills_of,
    list_digest,
    public_list,
    recommend,
)
from streams.delivery import write_until_redis_answers
from streams.engagement import BatchOutcome
from streams.engagement_pipeline import NAME as ENGAGEMENT
from streams.records import Record
from streams.runner import SliceBase, Upstream
from streams.serving import Serving
from streams.stores import Store

NAME = "recommendations"
#: The websocket message type of a changed list.
MESSAGE_TYPE = "recommendations"
#: How stale the hot skills may be: the pulse itself is published at most once a second.
HOT_SKILLS_REFRESH_S = 30.0
#: Users per Redis call when rebuilding a partition.
REBUILD_CHUNK = 500
#: Users whose last ``meta`` is kept in memory (about 200 bytes each).
MAX_CACHED_METAS = 100_000
#: The list of a user with nothing to recommend: no push for a user who never had one.
EMPTY_DIGEST = list_digest([])


@dataclass(frozen=True, slots=True)
class Meta:
    version: int
    digest: str
    facts_digest: str

    def to_json(self) -> str:
        return orjson.dumps({"v": self.version, "digest": self.digest, "facts": self.facts_digest}).decode()

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Meta | None:
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return cls(int(data["v"]), str(data["digest"]), str(data["facts"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # unreadable: treated as absent (rewritten, a push at worst)


class RecommendationReads:
    """What the slice reads from Redis: the users' last ``meta`` and the pulse's hot skills.
    Without a client (the in-memory contract tests) nothing was pushed and the market is empty."""

    def __init__(self, redis: RedisClient | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.clock = clock
        self._hot: tuple[HotSkill, ...] = ()
        self._hot_at: float | None = None

    async def metas(self, user_ids: Sequence[str]) -> dict[str, Meta]:
        if self.redis is None or not user_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hget(keys.user_recommendations(user_id), keys.RECOMMENDATION_META)
            raws = await pipe.execute(raise_on_error=False)
        found: dict[str, Meta] = {}
        for user_id, raw in zip(user_ids, raws, strict=True):
            meta = Meta.parse(raw) if isinstance(raw, bytes | str) else None
            if meta is not None:
                found[user_id] = meta
        return found

    async def hot_skills(self) -> tuple[HotSkill, ...]:
        now = self.clock()
        if self.redis is None or (self._hot_at is not None and now - self._hot_at < HOT_SKILLS_REFRESH_S):
            return self._hot
        raw = await self.redis.hget(keys.MARKET_PULSE, keys.market_scope(None, None))
        try:
            pulse = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            pulse = None
        self._hot = hot_skills_of(pulse if isinstance(pulse, dict) else None)
        self._hot_at = now
        return self._hot


@dataclass
class RecommendationsOutcome:
    #: The facts of every user the batch touched, gathered from their states.
    facts: dict[str, UserFacts] = field(default_factory=dict)


def _touched(outcome: Any) -> Iterable[str]:
    touched = getattr(outcome, "touched", None)
    return touched.keys() if isinstance(touched, Mapping) else ()


class RecommendationsSlice(SliceBase):
    name = NAME
    reads = ("career", ENGAGEMENT, "growth")
    # It keeps no state: the slices it reads persist as they did (no wave is added).
    persists_reads = False
    agent = "engagement"

    def __init__(
        self,
        users: Store[UserState],
        careers: Store[CareerState],
        growth: Store[GrowthState],
        serving: Serving,
        reads: RecommendationReads,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.users = users
        self.careers = careers
        self.growth = growth
        self.serving = serving
        self.views = reads
        self.clock_ms = clock_ms
        #: The ``meta`` last written per user, so a batch reads Redis only for users it has not
        #: seen (measured: the read was 40% of the slice's time). Dropped whole on a revocation or
        #: a rebuild (another worker may have written since), and when it outgrows its bound.
        self._metas: dict[str, Meta] = {}

    def process(self, records: Sequence[Record], upstream: Upstream) -> RecommendationsOutcome | None:
        """The facts of the users the upstream slices touched (in memory: their tables)."""
        engagement: BatchOutcome | None = upstream.get(ENGAGEMENT)
        career, growth = upstream.get("career"), upstream.get("growth")
        user_ids = dict.fromkeys([*_touched(engagement), *_touched(career), *_touched(growth)])
        if not user_ids:
            return None
        out = RecommendationsOutcome()
        for user_id in user_ids:
            out.facts[user_id] = self._facts(user_id)
        return out

    def _facts(self, user_id: str) -> UserFacts:
        return gather_facts(
            user_id, self.users.get(user_id), self.careers.get(user_id), self.growth.get(user_id)
        )

    async def deliver(self, records: Sequence[Record], outcome: RecommendationsOutcome) -> None:
        await write_until_redis_answers(lambda: self.write(outcome.facts.values()))

    async def write(self, facts: Iterable[UserFacts], rebuilding: bool = False) -> None:
        """Rewrite the views whose facts changed, and push the lists that changed (module doc).
        ``rebuilding``: no push for a user without a stored ``meta`` (Redis lost it, and the
        channel's history with it); one whose list changed since the last push is still told."""
        chosen = list(facts)
        if not chosen:
            return
        now = self.clock_ms()
        hot = await self.views.hot_skills()
        cached = self._metas
        missing = [f.user_id for f in chosen if f.user_id not in cached]
        metas = {**await self.views.metas(missing), **cached} if missing else cached
        written: dict[str, Meta] = {}
        hsets: list[tuple[str, str, str]] = []
        messages: list[Outgoing] = []
        for f in chosen:
            items = recommend(f, hot, now)
            digest, facts_digest = list_digest(items), f.digest()
            stored = metas.get(f.user_id)
            prev = stored or Meta(0, EMPTY_DIGEST, "")
            if prev.digest == digest and prev.facts_digest == facts_digest:
                written[f.user_id] = prev
                continue
            changed = prev.digest != digest
            meta = written[f.user_id] = Meta(prev.version + changed, digest, facts_digest)
            key = keys.user_recommendations(f.user_id)
            hsets.append((key, keys.RECOMMENDATION_FACTS, orjson.dumps(f.to_dict()).decode()))
            hsets.append((key, keys.RECOMMENDATION_META, meta.to_json()))
            if changed and not (rebuilding and stored is None):
                data = {**public_list(f.user_id, items, now), "version": meta.version}
                messages.append(
                    Outgoing(user_channel(f.user_id), MESSAGE_TYPE, data, f"recs:{meta.version}:{digest}")
                )
        await self.serving.write_documents([], hsets, messages)
        if len(cached) + len(written) > MAX_CACHED_METAS:
            cached.clear()
        cached.update(written)

    def forget_user(self, user_id: str) -> None:
        """The user was erased (streams/privacy.py): their last push is no longer a baseline."""
        self._metas.pop(user_id, None)

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        # Another worker may now write these users' views: read their meta from Redis again.
        self._metas.clear()

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        """The views of every user of ``partitions`` with a user or career state (pushes only
        for lists that changed since a push Redis still remembers)."""
        self._metas.clear()  # Redis was wiped, or these partitions were another worker's
        user_ids = dict.fromkeys(
            [s.user_id for s in self.users.states_of(partitions)]
            + [s.user_id for s in self.careers.states_of(partitions)]
        )
        chunk: list[UserFacts] = []
        for user_id in user_ids:
            chunk.append(self._facts(user_id))
            if len(chunk) >= REBUILD_CHUNK:
                await self.write(chunk, rebuilding=True)
                chunk = []
        await self.write(chunk, rebuilding=True)
        return len(user_ids)
