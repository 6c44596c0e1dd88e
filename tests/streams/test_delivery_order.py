"""The runner's delivery contract (streams/runner.py), for every slice, without processes.

Whatever a batch holds, in the journal of what left the worker:
1. every record a slice sent before its state's changelog is acked by Kafka before it (what the
   state records as done is in Kafka first, so a crash can only resend it, never lose it);
2. a reader's changelog (growth, risk) comes before the changelog of the slice it reads
   (engagement), whose changelog marks the input as seen;
3. nothing a client or a downstream consumer sees (Redis views and pushes, ``engagement-updates``,
   ``risk-scores``, dead letters, re-routed records) comes before the last changelog.

The worker's own slices run on ``MemoryStore``s, a recording producer and a recording serving
writer (tests/streams/harness.py), on fixed batches that exercise every effect and on batches
Hypothesis draws from the same records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import topics
from infra.settings import DEFAULT_RULES
from models.risk_state import RiskSettings
from models.rules import Rules
from models.time_units import DAY_MS, HOUR_MS
from streams.engine import Ports, StateTable, build_engine
from streams.market import validate_postings
from streams.records import Record
from streams.runner import BatchRunner, persist_waves
from streams.stores import MemoryStore
from tests.streams.harness import JournaledStore, RecordingProducer, RecordingServing, Tagged

NOW = 1_790_000_000_000
PARTS = 1
#: What clients and downstream consumers see: never before the batch's state is durable.
PUBLISHED = {topics.ENGAGEMENT_UPDATES, topics.RISK_SCORES, topics.DEAD_LETTER, topics.MARKET}
RULES = Rules.from_toml(DEFAULT_RULES.read_text())
_offsets = itertools.count()


def rec(topic: str, key: str | None, value: Any, ts: int = NOW) -> Record:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return Record(topic, 0, next(_offsets), key.encode() if key else None, raw, ts)


def event(user: str, event_id: str, type_: str = "lesson_complete", ago_ms: int = HOUR_MS) -> Record:
    value = {
        "event_id": event_id,
        "user_id": user,
        "type": type_,
        "ts": NOW - ago_ms,
        "props": {"duration_s": 900, "score": 92},
    }
    return rec(topics.BEHAVIOR_EVENTS, user, value)


def profile(user: str) -> Record:
    value = {"user_id": user, "skills": ["sql", "python"], "location": "Nairobi", "experience_years": 1}
    return rec(topics.USER_PROFILES, user, value)


def posting(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "title": "Data Analyst",
        "company": "Acme",
        "location": "Nairobi",
        "skills": ["sql", "python"],
        "experience_years": 1,
        "posted_at": NOW - 60_000,
        "deadline": NOW + 3 * DAY_MS,
    }


def fanout(job_id: str) -> Record:
    """A canonical posting as the market sends it to every user partition."""
    ((key, value),) = validate_postings([rec(topics.JOB_POSTINGS, job_id, posting(job_id))], NOW).forwards
    return Record(topics.JOB_FANOUT, 0, next(_offsets), key, value, NOW)


def status(user: str, application_id: str, status_: str, event_id: str) -> Record:
    value = {
        "event_id": event_id,
        "application_id": application_id,
        "user_id": user,
        "job_id": "j-1",
        "status": status_,
        "ts": NOW - 1000,
    }
    return rec(topics.APPLICATION_STATUS, user, value)


def command(user: str, type_: str, command_id: str, **fields: Any) -> Record:
    value = {"command_id": command_id, "type": type_, "user_id": user, "ts": NOW, **fields}
    return rec(topics.USER_COMMANDS, user, value)


#: Records of every kind the per-user agent takes, each with an effect: a match alert, a first
#: application (its action is acked before the career state), XP and badges (engagement updates,
#: risk scores), credits granted then spent (the fulfilment is acked before the growth state),
#: a malformed event (a dead letter).
PER_USER_RECORDS = [
    profile("amina"),
    profile("brian"),
    fanout("j-1"),
    status("amina", "app-1", "submitted", "s-1"),
    *(event("amina", f"e-{i}", ago_ms=(i + 1) * HOUR_MS) for i in range(5)),
    event("brian", "b-1", "interview_practice_complete", ago_ms=2 * HOUR_MS),
    event("brian", "b-2", "login"),
    command("amina", "grant", "amina:grant:g1", grant_id="g1", amount=400, reason="welcome"),
    command("amina", "redeem", "amina:r1", perk_id="discount_10"),
    rec(topics.BEHAVIOR_EVENTS, "mallory", b"{not json"),
]


@dataclass
class Worker:
    journal: list[str]
    producer: RecordingProducer
    serving: RecordingServing
    runner: BatchRunner

    def run(self, records: Sequence[Record]) -> dict[str, Any]:
        return asyncio.run(self.runner.run(records))


def worker(agent: str = "engagement", partitions: int = PARTS) -> Worker:
    """One of the worker's agents as ``streams.engine`` builds it, on ``MemoryStore``s."""
    journal: list[str] = []
    producer, serving = RecordingProducer(journal), RecordingServing(journal)
    ports = Ports(producer.send, serving, partitions, lambda topic: partitions, b"test-secret")

    def stores(table: StateTable) -> MemoryStore[Any]:
        return JournaledStore(table.name, 1 if table.single_partition else partitions, journal=journal)

    engine = build_engine(RULES, RiskSettings(), 7 * DAY_MS, ports, stores, clock_ms=lambda: NOW)
    slices = dict(engine.agents())[agent]
    return Worker(journal, producer, serving, BatchRunner([Tagged(s) for s in slices]))


def per_user_worker() -> Worker:
    return worker("engagement")


def assert_delivery_contract(journal: list[str]) -> None:
    changelogs = [i for i, entry in enumerate(journal) if entry.startswith("changelog ")]
    # 1. Every record a slice sent before its changelog is acked before it.
    for i in changelogs:
        owner = journal[i].rsplit(" @", 1)[1]
        before = journal[:i]
        for sent_by in {
            e.split(" ", 1)[1] for e in before if e.startswith("send ") and e.endswith(f"@{owner}")
        }:
            sent, acked = before.count(f"send {sent_by}"), before.count(f"ack {sent_by}")
            assert acked == sent, f"{journal[i]} at {i} before {sent - acked} ack(s) of {sent_by}: {journal}"
    last = max(changelogs, default=-1)
    # 3. Nothing visible before the last changelog.
    for i, entry in enumerate(journal[: last + 1]):
        kind, _, what = entry.partition(" ")
        assert kind != "redis", f"{entry} at {i}, before the changelog at {last}: {journal}"
        assert not (kind == "send" and what.split(" @")[0] in PUBLISHED), f"{entry} at {i}: {journal}"
    # 2. Readers' state before the state of the slice they read.
    flushed = [entry.rsplit(" @", 1)[1] for entry in journal if entry.startswith("changelog ")]
    if "engagement" in flushed:
        for reader in ("growth", "risk"):
            if reader in flushed:
                assert flushed.index(reader) < flushed.index("engagement"), journal


def test_a_batch_of_every_kind_keeps_the_delivery_contract() -> None:
    worker = per_user_worker()
    outcomes = worker.run(PER_USER_RECORDS)
    assert set(outcomes) == {"career", "engagement", "growth", "risk", "recommendations"}
    journal = worker.journal
    assert_delivery_contract(journal)
    # The batch did what it exercises, so the contract above was tested on real effects.
    for effect in (
        f"ack {topics.MATCH_ALERTS}",  # the alert, recorded in career state as sent
        f"ack {topics.BEHAVIOR_EVENTS}",  # the first application's action
        f"ack {topics.NOTIFICATIONS}",  # the redeemed perk's fulfilment
        f"send {topics.ENGAGEMENT_UPDATES}",
        f"send {topics.RISK_SCORES}",
        f"send {topics.DEAD_LETTER}",
        "changelog user-state",
        "changelog career-state",
        "changelog growth-state",
        "changelog risk-state",
        "redis engagement",
        "redis answers",  # the commands' answers
    ):
        assert any(e == effect or e.startswith(f"{effect} @") for e in journal), (effect, journal)
    assert set(worker.serving.engagement) == {"amina", "brian"}


def test_a_replayed_batch_repeats_no_effect_and_keeps_the_contract() -> None:
    worker = per_user_worker()
    worker.run(PER_USER_RECORDS)
    sent = len(worker.producer.sent)
    worker.journal.clear()
    outcomes = worker.run(PER_USER_RECORDS)  # redelivered after a crash before the commit
    assert_delivery_contract(worker.journal)
    assert outcomes["engagement"].applied == []
    durable = {topics.MATCH_ALERTS, topics.NOTIFICATIONS, topics.BEHAVIOR_EVENTS}
    assert not [s for s in worker.producer.sent[sent:] if s.topic in durable]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(range(len(PER_USER_RECORDS))), max_size=12), st.integers(1, 3))
def test_any_batches_of_these_records_keep_the_delivery_contract(picks: list[int], batches: int) -> None:
    worker = per_user_worker()
    records = [PER_USER_RECORDS[i] for i in picks]
    size = max(1, len(records) // batches)
    for start in range(0, len(records), size):
        worker.journal.clear()
        worker.run(records[start : start + size])
        assert_delivery_contract(worker.journal)


def test_the_market_slices_keep_the_contract() -> None:
    postings = worker("postings")
    postings.run([rec(topics.JOB_POSTINGS, "j-9", posting("j-9")), rec(topics.JOB_POSTINGS, "x", b"[]")])
    assert [e for e in postings.journal if e.startswith("send")] == [
        f"send {topics.DEAD_LETTER} @postings",
        f"send {topics.MARKET} @postings",
    ]

    market = worker("market", partitions=4)
    market.run([dataclasses.replace(fanout("j-9"), topic=topics.MARKET)])
    assert market.journal.count(f"ack {topics.JOB_FANOUT} @market") == 4  # a copy to every user partition
    assert market.journal[-1] == "changelog jobs @market"
    assert_delivery_contract(market.journal)


def test_the_analytics_slice_keeps_the_contract() -> None:
    analytics = worker("interventions")
    report = {"kind": "sent", "type": "gentle_reminder", "variant": "a", "channel": "IN_APP", "id": "n-1"}
    analytics.run([rec(topics.INTERVENTION_OUTCOMES, None, report)])
    journal = analytics.journal
    assert journal[0] == "changelog intervention-analytics @interventions"
    assert f"send {topics.BROADCAST} @interventions" in journal and "redis documents" in journal
    assert_delivery_contract(journal)


@pytest.mark.parametrize(
    "reads",
    [
        {"engagement": (), "growth": ("engagement",), "risk": ("engagement",), "career": ()},
        {"a": (), "b": ("a",), "c": ("b",)},
    ],
)
def test_every_slice_persists_after_its_readers(reads: dict[str, tuple[str, ...]]) -> None:
    slices = [_Named(name, upstream) for name, upstream in reads.items()]
    order = [s.name for wave in persist_waves(slices) for s in wave]
    for s in slices:
        for upstream in s.reads:
            assert order.index(s.name) < order.index(upstream)


def test_a_slice_cannot_read_one_listed_after_it() -> None:
    with pytest.raises(ValueError, match="not listed before it"):
        persist_waves([_Named("growth", ("engagement",)), _Named("engagement", ())])


class _Named:
    topics: frozenset[str] = frozenset()
    lock = None

    def __init__(self, name: str, reads: tuple[str, ...]) -> None:
        self.name = name
        self.reads = reads

    def process(self, records: Sequence[Record], upstream: Any) -> None:
        return None

    async def persist(self, outcome: Any) -> None:
        return None

    async def deliver(self, records: Sequence[Record], outcome: Any) -> None:
        return None

    async def rebuild(self, partitions: Any) -> int:
        return 0

    def revoked(self, partitions: Any) -> None:
        return None
