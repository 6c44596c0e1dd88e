"""The career processor without Faust: dict stores, records as Kafka gives them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

import orjson

from infra import topics
from models.career import CareerState
from models.events import JobPosting
from streams.app import CODECS
from streams.career import CareerProcessor, PostingCopies
from streams.engine import OPEN_POSTINGS
from streams.market import MarketProcessor, validate_postings
from streams.records import Record, owner_partition
from streams.tables import TableStore

NOW = 1_795_000_000_000
DAY = 86_400_000
PARTS = 4
_offsets = itertools.count()


class CareerDict:
    def __init__(self) -> None:
        self.data: dict[str, CareerState] = {}

    def get(self, key: str) -> CareerState | None:
        return self.data.get(key)

    def put(self, key: str, state: CareerState) -> None:
        self.data[key] = state

    def states_of(self, partitions: AbstractSet[int]) -> Iterable[CareerState]:
        return [s for k, s in self.data.items() if owner_partition(k.encode(), PARTS) in partitions]


class CopiesDict:
    def __init__(self) -> None:
        self.data: dict[tuple[int, str], JobPosting] = {}

    def put(self, partition: int, posting: JobPosting) -> None:
        self.data[(partition, posting.job_id)] = posting

    def delete(self, partition: int, job_id: str) -> None:
        self.data.pop((partition, job_id), None)

    def items(self) -> Iterable[tuple[int, JobPosting]]:
        return [(p, v) for (p, _), v in self.data.items()]


class JobsDict(dict[str, JobPosting]):
    def put(self, key: str, posting: JobPosting) -> None:
        self[key] = posting

    def delete(self, key: str) -> None:
        self.pop(key, None)


def record(topic: str, value: Any, key: str, partition: int | None = None) -> Record:
    part = owner_partition(key.encode(), PARTS) if partition is None else partition
    return Record(topic, part, next(_offsets), key.encode(), orjson.dumps(value), NOW)


def profile(user: str, skills: list[str], **extra: Any) -> Record:
    value = {"user_id": user, "skills": skills, "location": "Nairobi", "experience_years": 1, **extra}
    return record(topics.USER_PROFILES, value, user)


def posting(job_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "title": "Data Analyst",
        "company": "Acme",
        "location": "Nairobi",
        "skills": ["sql", "python"],
        "experience_years": 1,
        "posted_at": NOW - 60_000,
        "deadline": NOW + 3 * DAY,
        **overrides,
    }


def fanout(value: dict[str, Any]) -> list[Record]:
    """What the market agent sends for one new posting: a canonical copy to every partition."""
    (forward,) = validate_postings([record("job-postings", value, value["job_id"], 0)], NOW).forwards
    return [Record(topics.JOB_FANOUT, p, next(_offsets), forward[0], forward[1], NOW) for p in range(PARTS)]


def processor() -> tuple[CareerProcessor, CareerDict]:
    return CareerProcessor(lambda topic: PARTS, CopiesDict(), clock_ms=lambda: NOW), CareerDict()


def test_a_posting_alerts_each_suitable_user_once_whatever_the_redelivery() -> None:
    proc, store = processor()
    proc.process([profile("amina", ["SQL", "Python"]), profile("brian", ["welding"])], store)
    copies = fanout(posting("j-1"))
    first = proc.process(copies, store)
    assert [(a.user_id, a.match.job_id) for a in first.alerts] == [("amina", "j-1")]
    assert first.alerts[0].match.match_score >= 90
    # The whole fan-out delivered again (a crash before commit): no second alert.
    again = proc.process(copies, store)
    assert again.alerts == []
    assert list(store.data["amina"].matches) == ["j-1"]


def test_each_partition_copy_matches_only_that_partitions_users() -> None:
    proc, store = processor()
    users = [f"u-{i}" for i in range(20)]
    proc.process([profile(u, ["sql"]) for u in users], store)
    copies = fanout(posting("j-2", skills=["sql"]))
    alerted = [a.user_id for c in copies for a in proc.process([c], store).alerts]
    assert sorted(alerted) == sorted(users)  # every user exactly once across the N copies


def test_a_new_profile_is_matched_against_open_postings() -> None:
    proc, store = processor()
    proc.process(fanout(posting("j-3")), store)
    out = proc.process([profile("late", ["sql", "python"])], store)
    assert [a.match.job_id for a in out.alerts] == ["j-3"]


def test_users_who_opted_out_get_matches_but_no_alert() -> None:
    proc, store = processor()
    proc.process([profile("quiet", ["sql", "python"], notification_prefs={"job_alerts": False})], store)
    out = proc.process(fanout(posting("j-4")), store)
    assert out.alerts == []
    assert "j-4" in store.data["quiet"].matches


def test_application_statuses_fold_in_event_time_and_first_one_earns_the_action_once() -> None:
    proc, store = processor()
    base = {"application_id": "app-1", "user_id": "amina", "job_id": "j-1"}
    late_first = record(
        topics.APPLICATION_STATUS, {**base, "event_id": "a2", "status": "viewed", "ts": NOW - 1000}, "amina"
    )
    submitted = record(
        topics.APPLICATION_STATUS,
        {**base, "event_id": "a1", "status": "submitted", "ts": NOW - 5000},
        "amina",
    )
    out = proc.process([late_first, submitted, submitted], store)
    assert store.data["amina"].applications["app-1"].status == "viewed"
    assert [e.event_id for e in out.new_applications] == ["a2"]  # the first seen, once
    assert len(out.status_updates) == 2  # the duplicate changed nothing


def test_malformed_statuses_are_dead_lettered_and_misrouted_ones_rerouted() -> None:
    proc, store = processor()
    bad = record(topics.APPLICATION_STATUS, {"event_id": "x", "user_id": "amina", "status": "hired"}, "amina")
    wrong_partition = (owner_partition(b"amina", PARTS) + 1) % PARTS
    elsewhere = record(
        topics.APPLICATION_STATUS,
        {
            "event_id": "y",
            "application_id": "a",
            "user_id": "amina",
            "job_id": "j",
            "status": "submitted",
            "ts": NOW,
        },
        "amina",
        wrong_partition,
    )
    out = proc.process([bad, elsewhere], store)
    assert [d.reason for d in out.dead_letters] == ["missing_field"]
    assert [(m[1], m[2]) for m in out.misrouted] == [(b"amina", owner_partition(b"amina", PARTS))]


def test_bad_or_misrouted_profiles_are_left_to_the_engagement_processor_to_report() -> None:
    """Both processors read each profile of a batch: only one may dead-letter or re-route it,
    or each bad profile would be dead-lettered (and counted) twice."""
    proc, store = processor()
    bad = record(topics.USER_PROFILES, {"user_id": "amina", "timezone": "Mars/Olympus"}, "amina")
    wrong_partition = (owner_partition(b"amina", PARTS) + 1) % PARTS
    elsewhere = record(
        topics.USER_PROFILES, {"user_id": "amina", "skills": ["sql"]}, "amina", wrong_partition
    )
    out = proc.process([bad, elsewhere], store)
    assert out.dead_letters == [] and out.misrouted == []
    assert store.data == {}


def test_market_counts_a_resent_posting_once_and_fans_out_only_changes() -> None:
    market, jobs = MarketProcessor(clock_ms=lambda: NOW), JobsDict()
    (fwd,) = validate_postings([record("job-postings", posting("j-9"), "j-9", 0)], NOW).forwards
    as_market = Record("elimu-market", 0, 1, fwd[0], fwd[1], NOW)
    assert [p.job_id for p in market.process([as_market], jobs).changed] == ["j-9"]
    assert market.process([as_market], jobs).changed == []  # a re-send
    (upd,) = validate_postings(
        [record("job-postings", posting("j-9", salary_max=99), "j-9", 0)], NOW
    ).forwards
    changed = market.process([Record("elimu-market", 0, 2, upd[0], upd[1], NOW)], jobs).changed
    assert [p.salary_max for p in changed] == [99]
    assert market.book.pulse(NOW)["new_jobs_today"] == 1


class _Changelog:
    @staticmethod
    def get_topic_name() -> str:
        return "open-postings-changelog"


class _FakeTable:
    """What ``TableStore`` uses of a Faust table: its data and its changelog topic's name."""

    def __init__(self) -> None:
        self.data: dict[str, JobPosting] = {}
        self.changelog_topic = _Changelog()


def test_expired_posting_copies_are_tombstoned() -> None:
    sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> None:
        sent.append((topic, key, value, partition))

    store = TableStore(
        _FakeTable(), send, PARTS, CODECS[OPEN_POSTINGS.codec][0], lambda k: int(k.split(":", 1)[0])
    )  # type: ignore[arg-type]
    copies = PostingCopies(store)
    copies.put(2, JobPosting("j-live", "Analyst", NOW, deadline_ms=NOW + DAY))
    copies.put(3, JobPosting("j-gone", "Analyst", NOW - 9 * DAY, deadline_ms=NOW - DAY))
    asyncio.run(copies.flush())
    sent.clear()
    assert copies.expire(NOW) == 1
    asyncio.run(copies.flush())
    assert sent == [("open-postings-changelog", b"3:j-gone", None, 3)]  # a tombstone on its partition
    assert [p.job_id for _, p in copies.items()] == ["j-live"]


def test_the_jobs_table_forgets_closed_postings_past_the_pulse_window() -> None:
    market, jobs = MarketProcessor(clock_ms=lambda: NOW), JobsDict()
    jobs.put("old-closed", JobPosting("old-closed", "A", NOW - 10 * DAY, deadline_ms=NOW - DAY))
    jobs.put("old-open", JobPosting("old-open", "B", NOW - 10 * DAY, deadline_ms=NOW + DAY))
    jobs.put("recent-closed", JobPosting("recent-closed", "C", NOW - 2 * DAY, deadline_ms=NOW - DAY))
    jobs.put("old-no-deadline", JobPosting("old-no-deadline", "D", NOW - 10 * DAY))
    assert sorted(market.expire(jobs, NOW)) == ["old-closed", "old-no-deadline"]
    assert sorted(jobs) == ["old-open", "recent-closed"]
