"""The engine's state tables, slices and agents, built once for any backend: the worker's Faust
tables (streams/app.py) or the tests' ``MemoryStore``s (tests/streams/test_delivery_order.py).

The worker is Faust configuration plus what ``build_engine`` returns: every agent is one
``BatchRunner`` over its slices, in the order that is its delivery contract (streams/runner.py).
Adding a domain touches its slice, its state table here and the agents list (docs/slices.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from models.career import CareerState
from models.events import JobPosting
from models.gamification import UserState
from models.growth import GrowthState
from models.outcome_ledger import OutcomeLedger
from models.referrals import referral_code
from models.risk_state import RiskSettings, RiskState
from models.rules import Rules
from streams.career import CareerProcessor, PostingCopies
from streams.career_pipeline import CareerSlice
from streams.delivery import Send
from streams.engagement import EngagementProcessor
from streams.engagement_pipeline import EngagementSlice
from streams.erasure import Eraser
from streams.growth import GrowthProcessor
from streams.growth_pipeline import GrowthSlice
from streams.interventions import AnalyticsSlice
from streams.market import MarketProcessor
from streams.market_pipeline import MarketSlice, PostingsSlice
from streams.privacy import PrivacyProcessor, Traces
from streams.privacy_pipeline import PrivacySlice
from streams.recommendations_pipeline import RecommendationReads, RecommendationsSlice
from streams.records import owner_partition
from streams.risk import RiskProcessor
from streams.risk_pipeline import RiskSlice
from streams.runner import Slice
from streams.serving import Serving
from streams.stores import Store
from streams.user_context import BoardStanding, UserDirectory


def _copy_partition(key: str) -> int:
    # An open-postings key is "<fan-out partition>:<job id>": the copy lives on that partition.
    return int(key.split(":", 1)[0])


@dataclass(frozen=True)
class StateTable:
    """One slice's changelog-backed state."""

    name: str
    #: The changelog codec's name (Faust looks codecs up by name).
    codec: str
    from_dict: Callable[[dict[str, Any]], Any]
    #: One partition (owned by one worker) rather than one per user partition.
    single_partition: bool = False
    #: The partition a key's changelog record goes to; None: Kafka's partitioner on the key, the
    #: partition its user's input records arrive on, so the state recovers where it is used.
    partition_of: Callable[[str], int] | None = None


USER_STATE = StateTable("user-state", "elimu_user_state", UserState.from_dict)
CAREER_STATE = StateTable("career-state", "elimu_career_state", CareerState.from_dict)
GROWTH_STATE = StateTable("growth-state", "elimu_growth_state", GrowthState.from_dict)
RISK_STATE = StateTable("risk-state", "elimu_risk_state", RiskState.from_dict)
OPEN_POSTINGS = StateTable(
    "open-postings", "elimu_job_posting", JobPosting.from_dict, partition_of=_copy_partition
)
JOBS = StateTable("jobs", "elimu_job_posting", JobPosting.from_dict, single_partition=True)
LEDGER = StateTable("intervention-analytics", "elimu_outcome_ledger", OutcomeLedger.from_dict, True)
STATE_TABLES = (USER_STATE, CAREER_STATE, GROWTH_STATE, RISK_STATE, OPEN_POSTINGS, JOBS, LEDGER)
#: The per-user tables (what an erasure tombstones, what an export reads) and the slice that
#: persists each (streams/privacy_pipeline.py).
TABLE_OWNERS = {
    USER_STATE: "engagement",
    CAREER_STATE: "career",
    GROWTH_STATE: "growth",
    RISK_STATE: "risk",
}


class Stores(Protocol):
    """The backend: a store for a state table."""

    def __call__(self, table: StateTable) -> Store[Any]: ...


@dataclass(frozen=True)
class Ports:
    """What the slices reach the world through."""

    send: Send
    serving: Serving
    #: User partitions of the input topics (``ELIMU_PARTITIONS``).
    partitions: int
    #: A topic's actual partition count (an input record's owner must agree with the broker).
    partitions_for: Callable[[str], int]
    #: The deployment secret: the worker derives referral codes itself with it.
    secret: bytes
    #: For the admin routes' campaign mirror (``AnalyticsSlice.reproject``).
    redis: Any = None
    #: Removes an erased user's Redis views (``streams.erasure.RedisEraser`` in the worker).
    eraser: Eraser | None = None


@dataclass
class Engine:
    engagement: EngagementSlice
    career: CareerSlice
    growth: GrowthSlice
    risk: RiskSlice
    postings: PostingsSlice
    market: MarketSlice
    analytics: AnalyticsSlice
    recommendations: RecommendationsSlice
    privacy: PrivacySlice
    users: Store[UserState]

    def agents(self, *extra: tuple[str, list[Slice]]) -> list[tuple[str, list[Slice]]]:
        """Each agent's name and slices. The per-user agent's order is its delivery contract:
        growth and risk read what engagement applied; recommendations what career, engagement
        and growth touched; privacy comes last, so an erasure removes what the others wrote for
        the user in the same batch."""
        return [
            (
                "engagement",
                [self.career, self.engagement, self.growth, self.risk, self.recommendations, self.privacy],
            ),
            ("postings", [self.postings]),
            ("market", [self.market]),
            ("interventions", [self.analytics]),
            *extra,
        ]


def only_slices(
    agents: list[tuple[str, list[Slice]]], names: Collection[str]
) -> list[tuple[str, list[Slice]]]:
    """The agents with only the slices named in ``names`` (agents left with none dropped).
    ValueError for an unknown name or a kept slice that reads a dropped one."""
    known = {s.name for _, slices in agents for s in slices}
    if unknown := set(names) - known:
        raise ValueError(f"unknown slices {sorted(unknown)}; known: {sorted(known)}")
    kept: list[tuple[str, list[Slice]]] = []
    for agent, slices in agents:
        mine = [s for s in slices if s.name in names]
        for s in mine:
            if missing := [r for r in s.reads if r not in names]:
                raise ValueError(f"slice {s.name!r} reads {missing}, which would not run")
        if mine:
            kept.append((agent, mine))
    return kept


class NoViews:
    """The eraser of an engine without Redis views (an in-process bench): nothing to remove."""

    async def erase(self, user_id: str, traces: Traces, now_ms: int) -> dict[str, int]:
        return {}


def _traces(user: UserState | None, growth: GrowthState | None) -> Traces:
    """Where Redis holds an erased user beyond what their id names (streams/privacy.py)."""
    code = None if growth is None or growth.book is None else growth.book.code or None
    seat = None if user is None else user.boards
    return Traces(code, () if seat is None else (*seat.listing.groups, *seat.left))


def build_engine(
    rules: Rules,
    risk: RiskSettings,
    dedup_window_ms: int,
    ports: Ports,
    stores: Stores,
    clock_ms: Callable[[], int] | None = None,
) -> Engine:
    """Every slice on ``stores``; ``clock_ms`` fixes the processors' wall clock (tests)."""
    clock: dict[str, Any] = {} if clock_ms is None else {"clock_ms": clock_ms}
    n, send, serving = ports.partitions, ports.send, ports.serving
    users: Store[UserState] = stores(USER_STATE)
    careers: Store[CareerState] = stores(CAREER_STATE)
    growths: Store[GrowthState] = stores(GROWTH_STATE)
    risks: Store[RiskState] = stores(RISK_STATE)
    copies = PostingCopies(stores(OPEN_POSTINGS))
    career = CareerProcessor(ports.partitions_for, copies, **clock)
    directory = UserDirectory(
        rules, users.get, careers.get, posting_of=career.posting, standings=BoardStanding(users.states_of)
    )
    tables: dict[StateTable, Store[Any]] = {
        USER_STATE: users,
        CAREER_STATE: careers,
        GROWTH_STATE: growths,
        RISK_STATE: risks,
    }
    recommendations = RecommendationsSlice(
        users, careers, growths, serving, RecommendationReads(ports.redis), **clock
    )
    privacy = PrivacyProcessor(
        {table.name: store for table, store in tables.items()},
        forget=[career.forget_user, recommendations.forget_user],
        partitions_for=ports.partitions_for,
        traces_of=lambda user_id: _traces(users.get(user_id), growths.get(user_id)),
    )
    return Engine(
        engagement=EngagementSlice(
            EngagementProcessor(rules, ports.partitions_for, dedup_window_ms, **clock), users, serving, send
        ),
        career=CareerSlice(career, careers, copies, serving, send, n),
        growth=GrowthSlice(
            # The worker derives each user's referral code itself (the API's function and secret), so
            # a forged code is refused and the code -> user map is rebuilt from the table after a wipe.
            GrowthProcessor(
                rules, ports.partitions_for, code_of=functools.partial(referral_code, ports.secret), **clock
            ),
            growths,
            serving,
            send,
            n,
        ),
        risk=RiskSlice(
            RiskProcessor(
                risk,
                directory.streak_of,
                directory,
                partition_of=lambda user_id: owner_partition(user_id.encode(), n),
            ),
            risks,
            serving,
            send,
            rules.streak_milestones,
            directory.peers,
            directory.standings,
        ),
        postings=PostingsSlice(send),
        market=MarketSlice(MarketProcessor(**clock), stores(JOBS), serving, send, n),
        analytics=AnalyticsSlice(stores(LEDGER), serving, send, ports.redis),
        recommendations=recommendations,
        privacy=PrivacySlice(
            privacy,
            {table.name: owner for table, owner in TABLE_OWNERS.items()},
            ports.eraser or NoViews(),
            serving,
            send,
            clock_ms,
        ),
        users=users,
    )
