"""An in-memory harness for slices (streams/runner.py): a recording producer, a recording serving
writer and ``streams.stores.MemoryStore``s, all writing one journal of what left the worker in
which order.

Journal entries:
- ``send <topic> @<slice>``: a record handed to the producer while ``slice`` ran (``Tagged``);
- ``ack <topic> @<slice>``: Kafka acked it (a moment after the send, as a real broker does);
- ``changelog <store> @<slice>``: a store flushed its changes (``JournaledStore``);
- ``redis <operation>``: a Redis view, push or answer written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra.channels import Outgoing
from models.gamification import UserState
from streams.engagement import BatchOutcome
from streams.records import Record
from streams.runner import Slice, Upstream
from streams.stores import MemoryStore

#: The slice whose phase is running (set by ``Tagged``; a gathered phase runs in its own task,
#: with its own copy of the context).
RUNNING: ContextVar[str] = ContextVar("RUNNING", default="-")


class Tagged:
    """``inner`` with its phases marked in ``RUNNING``, so the journal says who sent what."""

    def __init__(self, inner: Slice) -> None:
        self.inner = inner
        self.name = inner.name
        self.topics = inner.topics
        self.reads = inner.reads
        self.lock = inner.lock
        # What the runner's persist waves read (streams/runner.py ``SliceBase.persists_reads``).
        self.persists_reads = getattr(inner, "persists_reads", True)

    def process(self, records: Sequence[Record], upstream: Upstream) -> Any | None:
        token = RUNNING.set(self.name)
        try:
            return self.inner.process(records, upstream)
        finally:
            RUNNING.reset(token)

    async def persist(self, outcome: Any) -> None:
        token = RUNNING.set(self.name)
        try:
            await self.inner.persist(outcome)
        finally:
            RUNNING.reset(token)

    async def deliver(self, records: Sequence[Record], outcome: Any) -> None:
        token = RUNNING.set(self.name)
        try:
            await self.inner.deliver(records, outcome)
        finally:
            RUNNING.reset(token)

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        return await self.inner.rebuild(partitions)

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        self.inner.revoked(partitions)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None

    def json(self) -> Any:
        return orjson.loads(self.value) if self.value else None


class JournaledStore(MemoryStore[Any]):
    """A ``MemoryStore`` whose flushes say which slice flushed."""

    def entry(self) -> str:
        return f"changelog {self.name} @{RUNNING.get()}"


class RecordingProducer:
    """``send`` returns a delivery future that the "broker" completes on the next loop turn."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.sent: list[Sent] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> Any:
        self.sent.append(Sent(topic, key, value, partition))
        by = RUNNING.get()
        self.journal.append(f"send {topic} @{by}")
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ack() -> None:
            self.journal.append(f"ack {topic} @{by}")
            acked.set_result(None)

        asyncio.get_running_loop().call_soon(ack)
        return acked

    def on(self, topic: str) -> list[Any]:
        return [s.json() for s in self.sent if s.topic == topic]


@dataclass
class RecordingServing:
    """A ``streams.serving.Serving`` that keeps what it was asked to write."""

    journal: list[str]
    views: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    pushes: list[Outgoing] = field(default_factory=list)
    engagement: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def write(self, outcome: BatchOutcome, updates: dict[str, dict[str, Any]]) -> None:
        self.journal.append("redis engagement")
        self.engagement.update(updates)

    async def project(self, states: Iterable[UserState]) -> int:
        self.journal.append("redis project")
        return len(list(states))

    async def write_documents(
        self,
        sets: list[tuple[str, str]],
        hsets: list[tuple[str, str, str]],
        messages: list[Outgoing],
        zadds: list[tuple[str, list[str]]] | None = None,
    ) -> None:
        self.journal.append("redis documents")
        self.views.update(sets)
        for key, name, value in hsets:
            self.hashes.setdefault(key, {})[name] = value
        self.pushes.extend(messages)

    async def set_expiring(self, docs: list[tuple[str, bytes]], ttl_s: int) -> None:
        self.journal.append("redis answers")
        self.views.update((k, v.decode()) for k, v in docs)

    async def set_if_absent(self, pairs: list[tuple[str, str]]) -> None:
        self.journal.append("redis codes")
        for key, value in pairs:
            self.views.setdefault(key, value)

    async def replace_hash(self, key: str, mapping: dict[str, bytes]) -> None:
        self.journal.append("redis hash")
        self.hashes[key] = {k: v.decode() for k, v in mapping.items()}
