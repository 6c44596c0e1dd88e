"""The privacy slice (streams/privacy.py) on the engine's own slices, without processes: an erasure
tombstones the user in every per-user table, within the runner's delivery contract, whether the
other slices ran in the batch or not; an export reads every table; growth leaves these commands
to it, and a misrouted or malformed one is handled once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra import keys, topics
from models.boards import group_digest
from models.referrals import referral_code
from models.risk_state import RiskSettings
from models.time_units import DAY_MS
from streams.engine import TABLE_OWNERS, Ports, StateTable, build_engine
from streams.privacy import Traces
from streams.records import Record, owner_partition
from streams.runner import BatchRunner
from streams.stores import MemoryStore
from tests.streams.harness import JournaledStore, RecordingProducer, RecordingServing, Tagged
from tests.streams.test_delivery_order import (
    NOW,
    RULES,
    assert_delivery_contract,
    command,
    event,
    fanout,
    profile,
    rec,
)

PER_USER_TABLES = {table.name for table in TABLE_OWNERS}


@dataclass
class RecordingEraser:
    journal: list[str]
    erased: list[tuple[str, Traces]] = field(default_factory=list)

    async def erase(self, user_id: str, traces: Traces, now_ms: int) -> dict[str, int]:
        self.journal.append("redis erase")
        self.erased.append((user_id, traces))
        return {"keys": 3}


@dataclass
class Worker:
    journal: list[str]
    producer: RecordingProducer
    serving: RecordingServing
    eraser: RecordingEraser
    stores: dict[str, MemoryStore[Any]]
    runner: BatchRunner

    def run(self, *records: Record) -> dict[str, Any]:
        return asyncio.run(self.runner.run(list(records)))

    def holds(self, user: str) -> set[str]:
        return {name for name, store in self.stores.items() if store.get(user) is not None}

    def answer(self, command_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = orjson.loads(self.serving.views[keys.command_result(command_id)])
        return answer

    def letters(self) -> list[dict[str, Any]]:
        return self.producer.on(topics.DEAD_LETTER)


def worker(partitions: int = 1) -> Worker:
    journal: list[str] = []
    producer, serving, eraser = (
        RecordingProducer(journal),
        RecordingServing(journal),
        RecordingEraser(journal),
    )
    ports = Ports(producer.send, serving, partitions, lambda topic: partitions, b"test-secret", eraser=eraser)
    stores: dict[str, MemoryStore[Any]] = {}

    def store(table: StateTable) -> MemoryStore[Any]:
        stores[table.name] = JournaledStore(table.name, partitions, journal=journal)
        return stores[table.name]

    engine = build_engine(RULES, RiskSettings(), 7 * DAY_MS, ports, store, clock_ms=lambda: NOW)
    slices = dict(engine.agents())["engagement"]
    return Worker(journal, producer, serving, eraser, stores, BatchRunner([Tagged(s) for s in slices]))


def erase(user: str, command_id: str = "c-erase") -> Record:
    return command(user, "erase_user", command_id)


def test_an_erasure_in_the_batch_of_the_users_events_removes_them_from_every_table() -> None:
    w = worker()
    w.run(profile("amina"), profile("brian"), event("amina", "a-1"), event("brian", "b-1"))
    code = referral_code(b"test-secret", "amina")
    w.run(command("amina", "referral_generate", "amina:gen", code=code, device_id="d1"))
    assert w.holds("amina") == PER_USER_TABLES

    w.journal.clear()
    outcomes = w.run(event("amina", "a-2"), erase("amina"))
    assert "privacy" in outcomes
    assert w.holds("amina") == set()
    assert w.holds("brian") >= {"user-state", "career-state"}  # nobody else's
    for name in PER_USER_TABLES:
        assert ("amina", None) in w.stores[name].changelog, name  # a tombstone in each changelog
    assert_delivery_contract(w.journal)
    # The views go after everything the other slices wrote for her in this batch, then the answer.
    writes = [e for e in w.journal if e.startswith("redis ")]
    assert "redis engagement" in writes and writes[-2:] == ["redis erase", "redis answers"], writes
    assert w.eraser.erased == [("amina", Traces(code))]  # her referral code's key goes too
    answer = w.answer("c-erase")
    assert answer["ok"] and set(answer["tables"]) == PER_USER_TABLES and answer["redis"] == {"keys": 3}


def test_an_erasure_alone_flushes_the_tombstones_itself() -> None:
    w = worker()
    w.run(profile("amina"), event("amina", "a-1"))
    w.journal.clear()
    outcomes = w.run(erase("amina"))
    assert set(outcomes) == {"growth", "privacy"}  # growth reads every command
    flushed = {e.split(" ")[1] for e in w.journal if e.startswith("changelog ") and e.endswith("@privacy")}
    assert flushed == PER_USER_TABLES - {"growth-state"}  # the stores whose slices did not run
    assert all(store.pending == {} for store in w.stores.values())
    assert_delivery_contract(w.journal)
    # Erasing again (a replay, a repeated DELETE) is the same erasure.
    w.run(erase("amina", "c-again"))
    assert w.answer("c-again")["tables"] == [] and w.holds("amina") == set()


def test_the_erasure_knows_the_group_boards_the_user_is_on_or_left() -> None:
    w = worker()
    for school in ("Alliance High", "Moi Girls"):
        value = {"user_id": "amina", "school": school, "cohort": "2027"}
        w.run(rec(topics.USER_PROFILES, "amina", value), event("amina", f"a-{school}"))
    w.run(erase("amina"))
    ((_, traces),) = w.eraser.erased
    assert set(traces.groups) == {
        ("school", group_digest("school", "Moi Girls")),
        ("cohort", group_digest("cohort", "2027")),
        ("school", group_digest("school", "Alliance High")),  # left: may still be listed there
    }


def test_a_posting_after_the_erasure_matches_nobody_erased() -> None:
    w = worker()
    w.run(profile("amina"), fanout("j-1"))
    assert w.producer.on(topics.MATCH_ALERTS)
    w.run(erase("amina"))
    before = len(w.producer.sent)
    w.run(fanout("j-2"))
    assert [s for s in w.producer.sent[before:] if s.topic == topics.MATCH_ALERTS] == []
    assert w.holds("amina") == set()


def test_an_export_reads_every_table_of_that_user_only() -> None:
    w = worker()
    w.run(profile("amina"), profile("brian"), event("amina", "a-1"), event("brian", "b-1"))
    w.run(command("amina", "export_user", "c-export"))
    answer = w.answer("c-export")
    assert answer["user_id"] == "amina" and set(answer["tables"]) == PER_USER_TABLES
    assert answer["tables"]["user-state"]["xp"] > 0 and answer["tables"]["growth-state"] is None
    assert b"brian" not in orjson.dumps(answer)
    assert w.holds("amina") >= {"user-state", "career-state"}  # an export changes nothing


def test_privacy_commands_are_not_growths_and_a_bad_one_is_dead_lettered_once() -> None:
    w = worker()
    w.run(erase("amina"), command("amina", "export_user", "c-x"))
    assert w.letters() == []  # growth left them alone
    bad_id = command("amina", "erase_user", "c-bad")
    bad = Record(bad_id.topic, 0, 99, b"amina", bad_id.value.replace(b'"amina"', b'"am\\u0000ina"'), NOW)
    w.run(bad, rec(topics.USER_COMMANDS, "amina", b"{not json"))
    reasons = sorted(letter["reason"] for letter in w.letters())
    assert reasons == ["bad_id", "not_json"]  # one letter each, growth's


def test_a_misrouted_erasure_waits_for_its_owner_partition() -> None:
    w = worker(partitions=4)
    w.run(
        *(
            Record(r.topic, owner_partition(b"amina", 4), r.offset, r.key, r.value, r.timestamp_ms)
            for r in (profile("amina"), event("amina", "a-1"))
        )
    )
    wrong = (owner_partition(b"amina", 4) + 1) % 4
    misrouted = erase("amina")
    w.run(Record(misrouted.topic, wrong, misrouted.offset, misrouted.key, misrouted.value, NOW))
    assert w.holds("amina") >= {"user-state"}  # not applied where it landed
    rerouted = [s for s in w.producer.sent if s.topic == topics.USER_COMMANDS]
    assert len(rerouted) == 1 and rerouted[0].partition == owner_partition(b"amina", 4)  # growth's
