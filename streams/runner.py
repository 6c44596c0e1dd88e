"""One batch runner for every slice of the worker.

A **slice** is one domain of the engine (engagement, career, growth, risk, market …). It
declares the input topics it takes, the slices whose outcomes it reads, and three phases:

``process(records, upstream)``
    Apply the slice's records (and what the slices it reads did) to its state, in memory.
    Nothing leaves the process. Returns an outcome, or ``None`` when there is nothing to do.
``persist(outcome)``
    Make durable what the state records as done: the records it marks as sent (acked by Kafka
    first), then the state's own changelog.
``deliver(records, outcome)``
    Everything else: dead letters and re-routed records, output topics, Redis views and pushes.

The runner runs the phases once per batch, in one declared order, for every slice. That order
is the delivery contract, tested for every slice in tests/streams/test_delivery_order.py:

1. ``process``, in list order. A slice that reads another is listed after it and gets its
   outcome (growth and risk read which events engagement applied).
2. ``persist``, in waves: a slice persists only once every slice that reads it has persisted.
   A reader's state records the upstream effects as consumed (growth's challenge progress, risk's
   pending labels), and the upstream changelog marks the input as seen, after which a replay
   would no longer bring those effects to the reader: so the reader's state must be in Kafka
   first. Slices of one wave persist concurrently (their acks overlap).
3. ``deliver``, in list order, once every state is durable: nothing a client or a downstream
   consumer can see runs ahead of the state that produced it.

A slice whose state a timer also changes (the risk sweep) holds a ``lock``: the runner keeps it
from ``process`` to the end of ``persist``, so the timer never flushes state whose records the
batch has not yet sent. (Under exactly-once the sweep may still run before the batch's
transaction commits: docs/operations.md's note on what stays outside the transactions.)

Adding a domain means writing its slice and adding it to the worker's list (docs/slices.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from streams.records import Record

#: What the slices processed before a slice did, by slice name.
Upstream = Mapping[str, Any]


class Slice(Protocol):
    """One domain's part of a batch (see the module docstring for the phase contract)."""

    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> frozenset[str]:
        """The input topics whose records this slice processes."""
        ...

    @property
    def reads(self) -> tuple[str, ...]:
        """Names of the slices (listed before this one) whose outcomes ``process`` reads."""
        ...

    @property
    def lock(self) -> asyncio.Lock | None: ...

    def process(self, records: Sequence[Record], upstream: Upstream) -> Any | None: ...

    async def persist(self, outcome: Any) -> None: ...

    async def deliver(self, records: Sequence[Record], outcome: Any) -> None: ...

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        """Rewrite the Redis views of the users on ``partitions`` from the state (Redis was
        wiped, or this worker gained them); how many states it wrote."""
        ...

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        """These (topic, partition)s went to another worker: drop what is cached of them."""
        ...


class SliceBase:
    """Defaults for a slice: no topics, reads nothing, no lock, nothing to persist, rebuild or
    forget."""

    topics: frozenset[str] = frozenset()
    reads: tuple[str, ...] = ()
    lock: asyncio.Lock | None = None
    #: False for a slice whose state records nothing as consumed (it keeps no state, only views):
    #: the slices it reads need not wait for its persist, so it adds no wave (``persist_waves``).
    persists_reads: bool = True

    async def persist(self, outcome: Any) -> None:
        return None

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        return 0

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        return None


class BatchRunner:
    """Runs the phases of ``slices`` over each batch, in the contract's order."""

    def __init__(self, slices: Sequence[Slice]) -> None:
        self.slices = tuple(slices)
        self.topics = frozenset().union(*(s.topics for s in self.slices))
        self.waves = persist_waves(self.slices)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold every slice's lock (in list order)."""
        async with contextlib.AsyncExitStack() as held:
            for s in self.slices:  # in list order: a fixed order, so two runners cannot deadlock
                if s.lock is not None:
                    await held.enter_async_context(s.lock)
            yield

    async def run(self, records: Sequence[Record]) -> dict[str, Any]:
        """Run one batch through every slice; the outcomes by slice name. The slices' locks are
        held from ``process`` to the end of ``persist``, not while ``deliver`` waits on Redis."""
        outcomes: dict[str, Any] = {}
        mine = {s.name: [r for r in records if r.topic in s.topics] for s in self.slices}
        async with self.exclusive():
            for s in self.slices:
                outcome = s.process(mine[s.name], outcomes)
                if outcome is not None:
                    outcomes[s.name] = outcome
            for wave in self.waves:
                await _all(s.persist(outcomes[s.name]) for s in wave if s.name in outcomes)
        for s in self.slices:
            if s.name in outcomes:
                await s.deliver(mine[s.name], outcomes[s.name])
        return outcomes


def persist_waves(slices: Sequence[Slice]) -> list[list[Slice]]:
    """The persist phase's waves: each slice after every slice that reads it (unless the reader's
    ``persists_reads`` is False: it keeps nothing of what it read). ValueError for a slice that
    reads one not listed before it (its outcome would not exist yet)."""
    names = [s.name for s in slices]
    if len(set(names)) != len(names):
        raise ValueError(f"slice names must be unique: {names}")
    readers: dict[str, set[str]] = {n: set() for n in names}
    for i, s in enumerate(slices):
        for upstream in s.reads:
            if upstream not in names[:i]:
                raise ValueError(f"slice {s.name!r} reads {upstream!r}, which is not listed before it")
            # A reader that makes nothing durable of what it read orders no one's persist.
            if getattr(s, "persists_reads", True):
                readers[upstream].add(s.name)
    waves: list[list[Slice]] = []
    done: set[str] = set()
    while len(done) < len(slices):
        wave = [s for s in slices if s.name not in done and readers[s.name] <= done]
        waves.append(wave)
        done.update(s.name for s in wave)
    return waves


async def _all(phases: Iterable[Any]) -> None:
    pending = list(phases)
    if len(pending) == 1:
        await pending[0]
    elif pending:
        await asyncio.gather(*pending)
