"""Career news as notifications, end to end in the per-user agent: the career slice's status
updates and match alerts become `notifications` records and inbox entries through the risk
slice (streams/risk_pipeline.py ``career_notices``).

Driven as the worker drives it: the agent's slices built by ``streams.engine`` on memory stores,
batches run by ``BatchRunner``, Redis replaced by the harness's recording serving writer.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from infra import keys, topics
from infra.settings import DEFAULT_RULES
from models.interventions import CAREER_TYPES as NOTIFICATION_CAREER_TYPES
from models.risk_state import RiskSettings, RiskState
from models.rules import Rules
from models.time_units import DAY_MS
from streams.engine import Engine, Ports, StateTable, build_engine
from streams.market import validate_postings
from streams.records import Record
from streams.runner import BatchRunner
from streams.stores import MemoryStore
from tests.streams.harness import JournaledStore, RecordingProducer, RecordingServing, Tagged

NOW = 1_790_000_000_000  # 2026-09-21T14:13:20Z
PARTS = 1
RULES = Rules.from_toml(DEFAULT_RULES.read_text())
CAREER_TYPES = set(NOTIFICATION_CAREER_TYPES)
_offsets = itertools.count()


def rec(topic: str, key: str, value: Any) -> Record:
    return Record(topic, 0, next(_offsets), key.encode(), orjson.dumps(value), NOW)


def profile(user: str, **fields: Any) -> Record:
    value = {
        "user_id": user,
        "display_name": user.title(),
        "skills": ["sql", "python"],
        "location": "Nairobi",
        "experience_years": 1,
        **fields,
    }
    return rec(topics.USER_PROFILES, user, value)


def posting(job_id: str, **overrides: Any) -> Record:
    """A posting as the market fans it out to the user partitions (one here)."""
    value = {
        "job_id": job_id,
        "title": "Data Analyst",
        "company": "Acme",
        "location": "Nairobi",
        "skills": ["sql", "python"],
        "experience_years": 1,
        "posted_at": NOW - 60_000,
        "deadline": NOW + 3 * DAY_MS,
        **overrides,
    }
    ((key, canonical),) = validate_postings([rec(topics.JOB_POSTINGS, job_id, value)], NOW).forwards
    return Record(topics.JOB_FANOUT, 0, next(_offsets), key, canonical, NOW)


def status(user: str, application_id: str, status_: str, job_id: str, ago_ms: int, **extra: Any) -> Record:
    value = {
        "event_id": f"{application_id}-{status_}",
        "application_id": application_id,
        "user_id": user,
        "job_id": job_id,
        "status": status_,
        "ts": NOW - ago_ms,
        **extra,
    }
    return rec(topics.APPLICATION_STATUS, user, value)


@dataclass
class Worker:
    journal: list[str]
    producer: RecordingProducer
    serving: RecordingServing
    engine: Engine
    runner: BatchRunner

    def run(self, *records: Record) -> None:
        asyncio.run(self.runner.run(records))

    def notifications(self, user: str | None = None) -> list[dict[str, Any]]:
        """The career `notifications` records sent so far (a perk's fulfilment is not one)."""
        return [
            n
            for n in self.producer.on(topics.NOTIFICATIONS)
            if n.get("type") in CAREER_TYPES and (user is None or n["user_id"] == user)
        ]

    def types(self, user: str) -> list[str]:
        return [n["type"] for n in self.notifications(user)]

    def inbox(self, user: str) -> dict[str, Any] | None:
        raw = self.serving.views.get(keys.user_notifications(user))
        return None if raw is None else dict(orjson.loads(raw))

    def risk_state(self, user: str) -> RiskState:
        state = self.engine.risk.store.get(user)
        assert isinstance(state, RiskState)
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
    return Worker(journal, producer, serving, engine, BatchRunner([Tagged(s) for s in slices]))


#: A posting amina does not match (so the status news is the only news).
WELDER = {"title": "Welder", "company": "Forge Ltd", "skills": ["welding", "metalwork"]}


def test_a_status_change_is_one_application_update_on_every_channel_and_in_the_inbox() -> None:
    w = worker()
    w.run(
        profile("amina", notification_prefs={"channels": ["EMAIL", "PUSH"]}),
        posting("j-weld", **WELDER),
        status("amina", "app-1", "submitted", "j-weld", ago_ms=60_000),
    )
    assert w.notifications() == []  # submitting is the user's own act; the posting no match
    assert w.inbox("amina") is None

    w.run(status("amina", "app-1", "interview_scheduled", "j-weld", ago_ms=1000, note="Monday 10:00"))

    [sent] = w.notifications()
    assert sent["user_id"] == "amina"
    assert sent["type"] == "application_update"
    assert {"IN_APP", "EMAIL", "PUSH"} <= set(sent["channels"])
    assert sent["urgency"] == "high"
    assert sent["idempotency_key"] == "app:app-1:interview_scheduled"
    assert "Welder" in sent["subject"] and "Welder" in sent["body"]
    assert "Forge Ltd" in sent["body"] and "Monday 10:00" in sent["body"]
    assert sent["body"].startswith("Hi Amina,")
    for part in ("subject", "body", "cta"):
        assert "{" not in sent[part] and "}" not in sent[part]

    inbox = w.inbox("amina")
    assert inbox is not None and inbox["unread"] == 1
    [entry] = inbox["notifications"]
    assert entry["id"] == sent["notification_id"]
    assert (entry["type"], entry["body"]) == (sent["type"], sent["body"])
    # The in-app copy is pushed to the user's channel too.
    assert [p.data["id"] for p in w.serving.pushes if p.type == "notification"] == [sent["notification_id"]]


def test_an_unknown_posting_still_reads_as_a_sentence() -> None:
    w = worker()
    w.run(
        profile("amina"),
        status("amina", "app-1", "submitted", "j-gone", ago_ms=60_000),
        status("amina", "app-1", "offer", "j-gone", ago_ms=1000),
    )
    [sent] = w.notifications()
    assert sent["type"] == "application_update" and sent["channels"] == ["IN_APP"]
    for part in ("subject", "body", "cta"):
        assert sent[part].strip() and "{" not in sent[part] and "}" not in sent[part]
    assert "None" not in sent["body"]


def test_a_redelivered_status_record_adds_nothing() -> None:
    w = worker()
    w.run(
        profile("amina", notification_prefs={"channels": ["EMAIL", "PUSH"]}),
        posting("j-weld", **WELDER),
        status("amina", "app-1", "submitted", "j-weld", ago_ms=60_000),
    )
    batch = [status("amina", "app-1", "interview_scheduled", "j-weld", ago_ms=1000)]
    w.run(*batch)
    first = w.notifications()
    inbox = w.inbox("amina")
    assert len(first) == 1

    w.run(*batch)  # the same batch again (a crash before the commit)
    assert w.notifications() == first
    assert w.inbox("amina") == inbox
    assert len(w.risk_state("amina").notifications.inbox) == 1

    # The same status again under another event id changes no status: no news either.
    w.run(status("amina", "app-1", "interview_scheduled", "j-weld", ago_ms=500, event_id="resent"))
    assert w.notifications() == first


def test_a_status_news_for_each_change_of_a_batch() -> None:
    w = worker()
    w.run(profile("amina"), posting("j-weld", **WELDER))
    w.run(
        status("amina", "app-1", "submitted", "j-weld", ago_ms=5000),
        status("amina", "app-1", "viewed", "j-weld", ago_ms=4000),
        status("amina", "app-2", "submitted", "j-weld", ago_ms=3000),
        status("amina", "app-2", "rejected", "j-weld", ago_ms=2000),
    )
    keys_sent = sorted(n["idempotency_key"] for n in w.notifications("amina"))
    assert keys_sent == ["app:app-1:viewed", "app:app-2:rejected"]


def test_three_or_more_new_matches_in_a_batch_are_one_digest() -> None:
    w = worker()
    w.run(profile("amina", notification_prefs={"channels": ["EMAIL"]}))
    w.run(
        posting("j-1", title="Data Analyst"),
        posting("j-2", title="BI Analyst", location="Mombasa"),
        posting("j-3", title="Junior Analyst"),
        posting("j-4", title="Reporting Analyst"),
    )
    assert w.types("amina") == ["match_digest"]
    [digest] = w.notifications("amina")
    assert digest["subject"] == "4 new job matches in Nairobi and elsewhere"  # one is in Mombasa
    assert {"IN_APP", "EMAIL"} <= set(digest["channels"])
    inbox = w.inbox("amina")
    assert inbox is not None and [n["type"] for n in inbox["notifications"]] == ["match_digest"]
    # The whole batch again: the matches are not new, nothing more.
    w.run(posting("j-1", title="Data Analyst"), posting("j-2", title="BI Analyst", location="Mombasa"))
    assert w.types("amina") == ["match_digest"]


def test_a_profile_matching_many_open_postings_gets_one_digest() -> None:
    w = worker()
    w.run(*(posting(f"j-{i}") for i in range(5)))
    w.run(profile("amina"))
    assert w.types("amina") == ["match_digest"]
    assert w.notifications("amina")[0]["subject"].startswith("5 new job matches")


def test_one_perfect_match_is_one_job_match() -> None:
    w = worker()
    w.run(profile("amina", notification_prefs={"channels": ["PUSH"]}))
    w.run(posting("j-1", title="Data Analyst", company="Acme"))
    [job] = w.notifications("amina")
    assert job["type"] == "job_match"
    assert job["idempotency_key"] == "match:j-1"
    assert {"IN_APP", "PUSH"} <= set(job["channels"])
    assert "Data Analyst" in job["subject"] and "Acme" in job["body"] and "Nairobi" in job["body"]
    inbox = w.inbox("amina")
    assert inbox is not None and [n["type"] for n in inbox["notifications"]] == ["job_match"]
    # Two more postings later: below the digest, perfect each, one job_match each.
    w.run(posting("j-2"), posting("j-3"))
    assert w.types("amina") == ["job_match", "job_match", "job_match"]


def test_a_lone_match_that_is_not_perfect_is_not_notified() -> None:
    w = worker()
    w.run(profile("amina"))
    w.run(posting("j-1", skills=["sql", "python", "tableau", "excel"]))
    matches = w.engine.career.store.get("amina")
    assert matches is not None and "j-1" in matches.matches  # matched and alerted...
    assert not matches.matches["j-1"]["is_perfect"]
    assert w.notifications("amina") == []  # ... but no notification


def test_users_without_job_alerts_get_no_match_news() -> None:
    w = worker()
    prefs = {"channels": ["EMAIL", "PUSH"], "job_alerts": False}
    w.run(profile("quiet", notification_prefs=prefs), profile("amina"))
    w.run(posting("j-1"))
    w.run(*(posting(f"j-{i}") for i in range(2, 6)))
    assert not {"job_match", "match_digest"} & set(w.types("quiet"))
    assert w.types("amina") == ["job_match", "match_digest"]
    state = w.engine.career.store.get("quiet")
    assert state is not None and len(state.matches) == 5  # matched all the same


def test_an_opt_out_of_application_updates_is_honoured() -> None:
    w = worker()
    w.run(
        profile("amina", notification_prefs={"channels": ["EMAIL"], "opt_out": ["application_update"]}),
        posting("j-weld", **WELDER),
        status("amina", "app-1", "submitted", "j-weld", ago_ms=5000),
        status("amina", "app-1", "offer", "j-weld", ago_ms=1000),
    )
    assert w.notifications("amina") == []
    assert w.inbox("amina") is None


def event(user: str, event_id: str, ago_ms: int) -> Record:
    value = {
        "event_id": event_id,
        "user_id": user,
        "type": "lesson_complete",
        "ts": NOW - ago_ms,
        "props": {"duration_s": 900, "score": 92},
    }
    return rec(topics.BEHAVIOR_EVENTS, user, value)


def test_quiet_hours_defer_status_news_until_the_sweep_after_them() -> None:
    w = worker()
    # NOW is 14:13Z; the offer came at 12:13Z, inside the user's quiet hour (UTC).
    prefs = {"channels": ["EMAIL", "PUSH"], "quiet_hours": ["12:00", "13:00"]}
    w.run(
        profile("amina", notification_prefs=prefs),
        posting("j-weld", **WELDER),
        status("amina", "app-1", "submitted", "j-weld", ago_ms=3 * 3_600_000),
        status("amina", "app-1", "offer", "j-weld", ago_ms=2 * 3_600_000),
    )
    assert w.notifications() == []  # held back
    [pending] = w.risk_state("amina").notifications.pending
    assert pending.type == "application_update" and "IN_APP" in pending.channels

    # Stream time passes the quiet hour (an event after it), and the sweep sends it.
    w.run(event("amina", "e-1", ago_ms=3_600_000))
    asyncio.run(w.engine.risk.sweep_partitions({0}, False))
    [sent] = w.notifications()
    assert sent["notification_id"] == pending.id and sent["type"] == "application_update"
    inbox = w.inbox("amina")
    assert inbox is not None and [n["id"] for n in inbox["notifications"]] == [pending.id]


def test_the_news_is_durable_before_the_career_state_marks_the_status_seen() -> None:
    """A crash after the career changelog would make the redelivered status a duplicate, so no
    news: the risk slice (a reader of career) sends and stores the notification first."""
    w = worker()
    w.run(
        profile("amina", notification_prefs={"channels": ["EMAIL"]}),
        posting("j-weld", **WELDER),
        status("amina", "app-1", "submitted", "j-weld", ago_ms=5000),
    )
    w.journal.clear()
    w.run(status("amina", "app-1", "hired", "j-weld", ago_ms=1000))
    assert len(w.notifications()) == 1
    order = w.journal.index
    career_changelog = order("changelog career-state @career")
    assert order(f"ack {topics.NOTIFICATIONS} @risk") < order("changelog risk-state @risk") < career_changelog
    assert order("redis documents") > career_changelog  # the inbox only after every state


def test_a_matched_job_closing_soon_is_reminded_once_by_the_sweep() -> None:
    w = worker()
    # A perfect match whose deadline is a day and a half after NOW (14:13Z): its reminder was due
    # at 09:00Z today (the first 9:00 UTC on or after deadline - 48 h).
    w.run(profile("amina"), posting("j-soon", deadline=NOW + 36 * 3_600_000))
    assert "deadline_reminder" not in w.types("amina")
    w.run(event("amina", "e-1", ago_ms=60_000))  # the partition's stream time reaches NOW
    asyncio.run(w.engine.risk.sweep_partitions({0}, False))
    reminders = [n for n in w.notifications("amina") if n["type"] == "deadline_reminder"]
    assert len(reminders) == 1
    assert reminders[0]["subject"] == "Data Analyst closes in 36 hours"
    assert "IN_APP" in reminders[0]["channels"]
    # Looked at again: the same reminder is not sent twice.
    w.run(event("amina", "e-2", ago_ms=30_000))
    asyncio.run(w.engine.risk.sweep_partitions({0}, False))
    assert [n["type"] for n in w.notifications("amina")].count("deadline_reminder") == 1


def test_an_applied_job_is_not_reminded() -> None:
    w = worker()
    w.run(
        profile("amina"),
        posting("j-soon", deadline=NOW + 36 * 3_600_000),
        status("amina", "app-1", "submitted", "j-soon", ago_ms=120_000),
    )
    w.run(event("amina", "e-1", ago_ms=60_000))
    asyncio.run(w.engine.risk.sweep_partitions({0}, False))
    assert "deadline_reminder" not in w.types("amina")


def saved(user: str, event_id: str, job_id: object, ago_ms: int) -> Record:
    value = {
        "event_id": event_id,
        "user_id": user,
        "type": "job_save",
        "ts": NOW - ago_ms,
        "props": {"job_id": job_id},
    }
    return rec(topics.BEHAVIOR_EVENTS, user, value)


def test_a_saved_job_closing_soon_is_reminded_even_unmatched() -> None:
    w = worker()
    # Welding is not amina's skill: no match, but she saved the job.
    w.run(profile("amina"), posting("j-weld", deadline=NOW + 30 * 3_600_000, **WELDER))
    w.run(
        saved("amina", "s-1", "j-weld", ago_ms=120_000),
        saved("amina", "s-2", {"not": "an id"}, ago_ms=110_000),
    )
    assert list(w.risk_state("amina").saved_jobs) == ["j-weld"]
    w.run(event("amina", "e-1", ago_ms=60_000))
    asyncio.run(w.engine.risk.sweep_partitions({0}, False))
    reminders = [n for n in w.notifications("amina") if n["type"] == "deadline_reminder"]
    assert len(reminders) == 1 and reminders[0]["subject"] == "Welder closes in 30 hours"


def test_saved_jobs_are_bounded_most_recent_kept() -> None:
    w = worker()
    w.run(profile("amina"))
    w.run(*(saved("amina", f"s-{i}", f"j-{i}", ago_ms=1_000_000 - i) for i in range(30)))
    kept = w.risk_state("amina").saved_jobs
    assert list(kept) == [f"j-{i}" for i in range(10, 30)]
