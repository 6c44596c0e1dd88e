"""The recommendations slice (streams/recommendations_pipeline.py), driven as the worker drives
it: the per-user agent's slices built by ``streams.engine`` on memory stores, batches run by
``BatchRunner``, Redis replaced by the harness's recording serving writer (whose hashes the slice
reads back as it would read Redis).

What it must do: push a user's list when it changes, once; nothing on a redelivered batch or an
event that changes nothing shown; a new version (and dedup key) for every change, even back to a
list pushed before; a rebuild rewrites the view without pushing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from infra import keys, topics
from infra.channels import Outgoing
from infra.settings import DEFAULT_RULES
from models.recommendations import HotSkill, UserFacts
from models.risk_state import RiskSettings
from models.rules import Rules
from models.time_units import DAY_MS
from streams.engine import Ports, StateTable, build_engine
from streams.market import validate_postings
from streams.recommendations_pipeline import MESSAGE_TYPE, Meta, RecommendationReads, RecommendationsSlice
from streams.records import Record
from streams.runner import BatchRunner, persist_waves
from streams.stores import MemoryStore
from tests.streams.harness import JournaledStore, RecordingProducer, RecordingServing, Tagged

NOW = 1_790_000_000_000  # 2026-09-21T14:13:20Z: 14:13 in UTC, not late in the day
PARTS = 1
RULES = Rules.from_toml(DEFAULT_RULES.read_text())
_offsets = itertools.count()


def rec(topic: str, key: str, value: Any) -> Record:
    return Record(topic, 0, next(_offsets), key.encode(), orjson.dumps(value), NOW)


def profile(user: str, skills: list[str]) -> Record:
    value = {"user_id": user, "skills": skills, "location": "Nairobi", "experience_years": 1}
    return rec(topics.USER_PROFILES, user, value)


def posting(job_id: str, skills: list[str]) -> Record:
    value = {
        "job_id": job_id,
        "title": "Data Analyst",
        "location": "Nairobi",
        "skills": skills,
        "experience_years": 1,
        "posted_at": NOW - 60_000,
        "deadline": NOW + 30 * DAY_MS,
    }
    ((key, canonical),) = validate_postings([rec(topics.JOB_POSTINGS, job_id, value)], NOW).forwards
    return Record(topics.JOB_FANOUT, 0, next(_offsets), key, canonical, NOW)


def lesson(user: str, event_id: str) -> Record:
    value = {"event_id": event_id, "user_id": user, "type": "lesson_complete", "ts": NOW - 1000}
    return rec(topics.BEHAVIOR_EVENTS, user, value)


class RecordedReads(RecommendationReads):
    """Reads ``meta`` back from what the recording writer was asked to write (Redis's part)."""

    def __init__(self, serving: RecordingServing) -> None:
        super().__init__(None)
        self.serving = serving
        self.hot: tuple[HotSkill, ...] = ()

    async def metas(self, user_ids: Sequence[str]) -> dict[str, Meta]:
        found = {}
        for user_id in user_ids:
            raw = self.serving.hashes.get(keys.user_recommendations(user_id), {}).get(
                keys.RECOMMENDATION_META
            )
            meta = Meta.parse(raw)
            if meta is not None:
                found[user_id] = meta
        return found

    async def hot_skills(self) -> tuple[HotSkill, ...]:
        return self.hot


@dataclass
class Worker:
    serving: RecordingServing
    slice: RecommendationsSlice
    reads: RecordedReads
    runner: BatchRunner

    def run(self, *records: Record) -> None:
        asyncio.run(self.runner.run(records))

    def pushes(self, user: str) -> list[Outgoing]:
        return [m for m in self.serving.pushes if m.channel == f"user:{user}" and m.type == MESSAGE_TYPE]

    def facts(self, user: str) -> UserFacts:
        raw = self.serving.hashes[keys.user_recommendations(user)][keys.RECOMMENDATION_FACTS]
        return UserFacts.from_dict(orjson.loads(raw))


def worker() -> Worker:
    journal: list[str] = []
    producer, serving = RecordingProducer(journal), RecordingServing(journal)
    ports = Ports(producer.send, serving, PARTS, lambda topic: PARTS, b"test-secret")

    def stores(table: StateTable) -> MemoryStore[Any]:
        return JournaledStore(table.name, 1 if table.single_partition else PARTS, journal=journal)

    engine = build_engine(RULES, RiskSettings(), 7 * DAY_MS, ports, stores, clock_ms=lambda: NOW)
    reads = RecordedReads(serving)
    engine.recommendations.views = reads
    slices = dict(engine.agents())["engagement"]
    return Worker(serving, engine.recommendations, reads, BatchRunner([Tagged(s) for s in slices]))


def ids(message: Outgoing) -> list[str]:
    return [item["id"] for item in message.data["items"]]


def test_a_changed_list_is_pushed_once_and_a_redelivery_pushes_nothing() -> None:
    w = worker()
    batch = (profile("amina", ["excel"]), posting("j-1", ["sql", "excel"]), posting("j-2", ["sql", "excel"]))
    w.run(*batch)
    [first] = w.pushes("amina")
    assert ids(first) == ["learn_skill:sql"]
    assert first.data["items"][0]["reason"] == "2 of your top 2 matches ask for sql."
    assert first.data["version"] == 1 and first.dedup_key == f"recs:1:{first.data['digest']}"
    assert w.facts("amina").skills == ("excel",)

    w.run(*batch)  # redelivered
    w.run(lesson("amina", "e-1"))  # changes the streak, not the list
    assert len(w.pushes("amina")) == 1
    assert w.facts("amina").streak is not None  # ... but the facts the API reads are rewritten


def test_every_change_is_a_new_version_even_back_to_an_earlier_list() -> None:
    w = worker()
    w.run(profile("amina", ["excel"]), posting("j-1", ["sql", "excel"]))
    w.run(profile("amina", ["excel", "sql"]))  # nothing missing any more: the list empties
    w.run(profile("amina", ["excel"]))  # and back
    pushes = w.pushes("amina")
    assert [ids(p) for p in pushes] == [["learn_skill:sql"], [], ["learn_skill:sql"]]
    assert [p.data["version"] for p in pushes] == [1, 2, 3]
    assert len({p.dedup_key for p in pushes}) == 3


def test_a_user_with_nothing_to_recommend_is_not_pushed_an_empty_list() -> None:
    w = worker()
    w.run(lesson("brian", "e-1"))
    assert w.pushes("brian") == []
    assert w.facts("brian").user_id == "brian"


def test_the_market_can_change_the_list() -> None:
    w = worker()
    w.run(profile("amina", ["python"]))
    assert w.pushes("amina") == []
    w.reads.hot = (HotSkill("python", 12, "rising"),)
    w.run(lesson("amina", "e-1"))
    [push] = w.pushes("amina")
    assert ids(push) == ["use_hot_skill:python"]


def test_a_rebuild_rewrites_the_views_without_pushing() -> None:
    w = worker()
    w.run(profile("amina", ["excel"]), posting("j-1", ["sql", "excel"]))
    w.serving.hashes.clear()  # Redis lost
    assert asyncio.run(w.slice.rebuild({0})) == 1
    assert w.facts("amina").matches[0].missing_skills == ("sql",)
    assert len(w.pushes("amina")) == 1
    w.run(profile("amina", ["excel"]))  # the same list as the rebuilt view's: no push
    assert len(w.pushes("amina")) == 1


def test_the_slice_adds_no_persist_wave() -> None:
    """It keeps no state, so the slices it reads persist exactly as they would without it."""
    w = worker()
    slices = list(w.runner.slices)
    without = [s for s in slices if s.name != "recommendations"]
    names = [[s.name for s in wave if s.name != "recommendations"] for wave in persist_waves(slices)]
    assert names == [[s.name for s in wave] for wave in persist_waves(without)]
    assert names == [["growth", "risk", "privacy"], ["career", "engagement"]]


def test_a_rebuild_on_gained_partitions_pushes_a_list_that_changed_since_its_push() -> None:
    w = worker()
    w.run(profile("amina", ["excel"]), posting("j-1", ["sql", "excel"]))
    w.reads.hot = (HotSkill("dbt", 12, "rising"),)  # the list changed, no batch touched her
    w.slice.revoked({(topics.BEHAVIOR_EVENTS, 0)})  # the partition went away and came back
    asyncio.run(w.slice.rebuild({0}))
    pushes = w.pushes("amina")
    assert [p.data["version"] for p in pushes] == [1, 2]
    assert "learn_hot_skill:dbt" in ids(pushes[-1])
