"""The profile view (``keys.user_profile``): the career slice writes ``CareerState.profile_view()``
for each profile it applies, and rewrites it on a rebuild, so the API's profile routes and the
delivery services read what the worker holds.

Driven as the worker drives it: the per-user agent's slices built by ``streams.engine`` on memory
stores, a batch run by ``BatchRunner``, Redis replaced by the harness's recording serving writer.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from infra import keys, topics
from infra.settings import DEFAULT_RULES
from models.career import CareerState
from models.events import format_ts
from models.risk_state import RiskSettings
from models.rules import Rules
from models.time_units import DAY_MS
from streams.career_pipeline import CareerSlice
from streams.engine import Ports, StateTable, build_engine
from streams.records import Record
from streams.runner import BatchRunner
from streams.stores import MemoryStore
from tests.streams.harness import JournaledStore, RecordingProducer, RecordingServing, Tagged

NOW = 1_790_000_000_000
PARTS = 1
RULES = Rules.from_toml(DEFAULT_RULES.read_text())
_offsets = itertools.count()


def profile(user: str, **fields: Any) -> Record:
    value = {"user_id": user, "skills": ["sql", "python"], "location": "Nairobi", **fields}
    return Record(topics.USER_PROFILES, 0, next(_offsets), user.encode(), orjson.dumps(value), NOW)


def status(user: str, application_id: str) -> Record:
    value = {
        "event_id": f"{application_id}-e1",
        "application_id": application_id,
        "user_id": user,
        "job_id": "j-1",
        "status": "submitted",
        "ts": NOW - 1000,
    }
    return Record(topics.APPLICATION_STATUS, 0, next(_offsets), user.encode(), orjson.dumps(value), NOW)


@dataclass
class Worker:
    producer: RecordingProducer
    serving: RecordingServing
    career: CareerSlice
    runner: BatchRunner

    def run(self, *records: Record) -> None:
        asyncio.run(self.runner.run(records))

    def view(self, user: str) -> dict[str, Any] | None:
        raw = self.serving.views.get(keys.user_profile(user))
        return None if raw is None else dict(orjson.loads(raw))

    def held(self, user: str) -> CareerState:
        state = self.career.store.get(user)
        assert isinstance(state, CareerState)
        return state


def worker() -> Worker:
    """The per-user agent as ``streams.engine`` builds it, on memory stores."""
    journal: list[str] = []
    producer, serving = RecordingProducer(journal), RecordingServing(journal)
    ports = Ports(producer.send, serving, PARTS, lambda topic: PARTS, b"test-secret")

    def stores(table: StateTable) -> MemoryStore[Any]:
        return JournaledStore(table.name, 1 if table.single_partition else PARTS, journal=journal)

    engine = build_engine(RULES, RiskSettings(), 7 * DAY_MS, ports, stores, clock_ms=lambda: NOW)
    slices = dict(engine.agents())["engagement"]
    return Worker(producer, serving, engine.career, BatchRunner([Tagged(s) for s in slices]))


def test_a_profile_writes_the_profile_view() -> None:
    w = worker()
    stamped = format_ts(NOW - 60_000)
    w.run(
        profile(
            "amina",
            display_name="Amina",
            timezone="Africa/Nairobi",
            email=" Amina@Example.COM",
            phone="00254 712 345 678",
            notification_prefs={"channels": ["push", "FAX"], "digest": "Daily"},
            updated_at=stamped,
        )
    )
    view = w.view("amina")
    assert view == {
        "user_id": "amina",
        "display_name": "Amina",
        "timezone": "Africa/Nairobi",
        "location": "Nairobi",
        "skills": ["sql", "python"],
        "experience_years": None,
        "education": None,
        "interests": [],
        "salary_expectation": None,
        "currency": None,
        "email": "Amina@example.com",
        "phone": "+254712345678",
        "notification_prefs": {"channels": ["PUSH"], "digest": "daily"},
        "updated_at": NOW - 60_000,  # the record's updated_at, as epoch ms
        "school": None,
        "cohort": None,
        "leaderboard_visible": True,
    }
    assert view == w.held("amina").profile_view()


def test_the_latest_profile_replaces_the_view_and_unstamped_ones_take_the_worker_clock() -> None:
    w = worker()
    w.run(profile("amina", email="a@example.com", phone="+254712345678", updated_at=NOW - 5000))
    # Two in one batch: the later offset wins, whole (its missing phone is no phone).
    w.run(profile("amina", email="old@example.com"), profile("amina", email="b@example.com"))
    view = w.view("amina")
    assert view is not None
    assert (view["email"], view["phone"], view["updated_at"]) == ("b@example.com", None, NOW)


def test_each_user_gets_their_own_view_and_a_user_without_a_profile_none() -> None:
    w = worker()
    w.run(
        profile("amina", display_name="Amina"), profile("brian", display_name="Brian"), status("chris", "a-1")
    )
    amina, brian = w.view("amina"), w.view("brian")
    assert amina is not None and amina["display_name"] == "Amina"
    assert brian is not None and brian["display_name"] == "Brian"
    assert w.view("chris") is None  # an application is no profile
    assert keys.user_applications("chris") in w.serving.views


def test_a_refused_profile_is_dead_lettered_and_leaves_the_view() -> None:
    w = worker()
    w.run(profile("amina", email="amina@example.com", updated_at=NOW - 5000))
    before = w.view("amina")
    w.run(profile("amina", email="amina@example.com\r\nBcc: all@example.com"), profile("brian", phone="0712"))
    assert w.view("amina") == before
    assert w.view("brian") is None
    reasons = sorted(letter["reason"] for letter in w.producer.on(topics.DEAD_LETTER))
    assert reasons == ["bad_email", "bad_phone"]  # once each, though two slices read profiles


def test_a_rebuild_rewrites_the_profile_views() -> None:
    w = worker()
    w.run(
        profile("amina", email="amina@example.com", updated_at=NOW - 5000),
        profile("brian", phone="+254700000001"),
        status("chris", "a-1"),
    )
    written = {user: w.view(user) for user in ("amina", "brian")}
    w.serving.views.clear()  # Redis lost

    rebuilt = asyncio.run(w.career.rebuild({0}))

    assert rebuilt == 3
    assert {user: w.view(user) for user in ("amina", "brian")} == written
    assert w.view("chris") is None
    # project() itself, for states read back from the changelog (older ones included).
    w.serving.views.clear()
    older = CareerState.from_dict(
        {"v": 2, "user_id": "dana", "candidate": {"user_id": "dana", "skills": ["go"]}}
    )
    asyncio.run(w.career.project([older]))
    view = w.view("dana")
    assert view == older.profile_view()
    assert view is not None and view["skills"] == ["go"] and view["updated_at"] is None
