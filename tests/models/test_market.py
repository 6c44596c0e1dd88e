"""MarketBook: the live job-market pulse (pure; no I/O)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import JobPosting
from models.market import DAY_MS, MarketBook
from tests.models.factories import ms

NOW = ms("2026-11-22T12:00:00Z")
TODAY = ms("2026-11-22T00:00:00Z")
HOUR = 3_600_000
_ids = itertools.count()


def job(posted: str | int, **fields: Any) -> JobPosting:
    fields.setdefault("job_id", f"j-{next(_ids)}")
    fields.setdefault("title", "Data Analyst")
    return JobPosting(posted_at_ms=posted if isinstance(posted, int) else ms(posted), **fields)


def book_of(*postings: JobPosting) -> MarketBook:
    book = MarketBook()
    for posting in postings:
        book.upsert(posting)
    return book


def counts(book: MarketBook, now: int = NOW, **scope: str | None) -> tuple[int, int]:
    pulse = book.pulse(now, **scope)
    return pulse["new_jobs_today"], pulse["new_jobs_yesterday"]


def hot(book: MarketBook, now: int = NOW, **scope: str | None) -> dict[str, dict[str, Any]]:
    return {entry["skill"]: entry for entry in book.pulse(now, **scope)["hot_skills_today"]}


# ---------------------------------------------------------------------------------------------
# Days


def test_utc_day_boundary() -> None:
    book = book_of(job("2026-11-21T23:59:59.999Z"), job("2026-11-22T00:00:00Z"))
    assert counts(book, ms("2026-11-22T00:00:00Z")) == (1, 1)
    assert counts(book, ms("2026-11-21T23:59:59.999Z")) == (1, 0)
    assert book.pulse(ms("2026-11-21T23:59:59.999Z"))["day"] == "2026-11-21"
    assert book.pulse(ms("2026-11-22T00:00:00Z"))["day"] == "2026-11-22"


def test_days_are_utc_not_the_posters_offset() -> None:
    book = book_of(job("2026-11-22T01:00:00+03:00"))  # 2026-11-21T22:00Z
    assert counts(book) == (0, 1)


def test_pulse_shape_and_echo() -> None:
    pulse = MarketBook().pulse(ms("2026-11-22T08:15:00.250Z"), location="Nairobi", industry=None)
    assert pulse == {
        "new_jobs_today": 0,
        "new_jobs_yesterday": 0,
        "growth_pct_vs_yesterday": None,
        "avg_salary_today": {},
        "entry_level_avg_salary": {},
        "hot_skills_today": [],
        "urgent_count": 0,
        "urgent_opportunities": [],
        "location": "Nairobi",
        "industry": None,
        "day": "2026-11-22",
        "updated_at": "2026-11-22T08:15:00.250Z",
    }


def test_late_postings_land_in_their_own_day() -> None:
    book = book_of(job("2026-11-22T09:00:00Z", skills=("sql",)))
    assert book.upsert(job("2026-11-21T10:00:00Z", skills=("sql",)))  # yesterday, arriving today
    assert book.upsert(job("2026-11-18T10:00:00Z", skills=("sql",)))
    assert counts(book) == (1, 1)
    assert hot(book)["sql"]["count"] == 1
    assert hot(book)["sql"]["baseline_avg"] == round(2 / 7, 2)
    assert counts(book, ms("2026-11-18T23:00:00Z")) == (1, 0)


# ---------------------------------------------------------------------------------------------
# Idempotence and updates


def test_resends_count_once() -> None:
    posting = job("2026-11-22T09:00:00Z", skills=("sql",), salary_min=100, currency="KES")
    book = MarketBook()
    assert book.upsert(posting) is True
    assert book.upsert(posting) is False
    assert book.upsert(dataclasses.replace(posting)) is False  # equal, not the same object
    assert len(book) == 1
    assert counts(book) == (1, 0)
    assert hot(book)["sql"]["count"] == 1
    assert book.pulse(NOW)["avg_salary_today"] == {"KES": 100.0}


def test_update_moves_day_salary_and_skills() -> None:
    original = job(
        "2026-11-22T09:00:00Z",
        job_id="j-1",
        skills=("sql", "excel"),
        salary_min=100,
        salary_max=200,
        currency="KES",
        location="Nairobi",
    )
    book = book_of(original, job("2026-11-22T10:00:00Z", salary_min=300, currency="KES"))
    assert book.pulse(NOW)["avg_salary_today"] == {"KES": 225.0}

    moved = dataclasses.replace(
        original, posted_at_ms=ms("2026-11-21T09:00:00Z"), skills=("python",), salary_max=500
    )
    assert book.upsert(moved) is True
    assert len(book) == 2
    assert book.get("j-1") == moved
    assert counts(book) == (1, 1)
    assert counts(book, location="nairobi") == (0, 1)
    assert book.pulse(NOW)["avg_salary_today"] == {"KES": 300.0}
    assert hot(book) == {}
    assert book.pulse(NOW - DAY_MS)["avg_salary_today"] == {"KES": 300.0}  # (100 + 500) / 2
    assert list(hot(book, NOW - DAY_MS)) == ["python"]

    relocated = dataclasses.replace(moved, location="Mombasa")
    assert book.upsert(relocated) is True
    assert counts(book, location="Nairobi") == (0, 0)
    assert counts(book, location="Mombasa") == (0, 1)


def test_update_out_of_the_window_removes_the_old_version() -> None:
    original = job("2026-11-22T09:00:00Z", job_id="j-1")
    book = book_of(original)
    book.evict(NOW)
    assert book.upsert(dataclasses.replace(original, posted_at_ms=NOW - 30 * DAY_MS)) is True
    assert len(book) == 0
    assert counts(book) == (0, 0)
    assert book.scopes() == []


# ---------------------------------------------------------------------------------------------
# Growth and salaries


def test_growth_pct() -> None:
    def growth(today: int, yesterday: int) -> float | None:
        postings = [job(TODAY + HOUR) for _ in range(today)] + [job(TODAY - HOUR) for _ in range(yesterday)]
        result: float | None = book_of(*postings).pulse(NOW)["growth_pct_vs_yesterday"]
        return result

    assert growth(3, 2) == 50.0
    assert growth(1, 3) == -66.7
    assert growth(0, 2) == -100.0
    assert growth(2, 2) == 0.0
    assert growth(5, 0) is None
    assert growth(0, 0) is None


def test_salary_average_per_currency() -> None:
    book = book_of(
        job(TODAY + HOUR, salary_min=100, salary_max=200, currency="KES"),  # midpoint 150
        job(TODAY + HOUR, salary_min=90, currency="kes "),  # min only; same currency
        job(TODAY + HOUR, salary_max=1000, currency="USD"),  # max only
        job(TODAY + HOUR, salary_min=5, salary_max=6, currency=None),  # no currency: skipped
        job(TODAY + HOUR, currency="EUR"),  # no salary: skipped
        job(TODAY - HOUR, salary_min=10_000, currency="KES"),  # yesterday
    )
    assert book.pulse(NOW)["avg_salary_today"] == {"KES": 120.0, "USD": 1000.0}


def test_salary_average_rounds_to_cents() -> None:
    book = book_of(*(job(TODAY + HOUR, salary_min=v, currency="KES") for v in (100, 100, 100.01)))
    assert book.pulse(NOW)["avg_salary_today"] == {"KES": 100.0}
    book.upsert(job(TODAY + HOUR, salary_min=0.1, salary_max=0.2, currency="USD"))
    assert book.pulse(NOW)["avg_salary_today"]["USD"] == 0.15


def test_entry_level_salary() -> None:
    book = book_of(
        job(TODAY + HOUR, salary_min=100, currency="KES", experience_years=0),
        job(TODAY + HOUR, salary_min=200, currency="KES", experience_years=1),
        job(TODAY + HOUR, salary_min=900, currency="KES", experience_years=1.5),
        job(TODAY + HOUR, salary_min=5000, currency="KES", experience_years=None),  # unknown: excluded
        job(TODAY + HOUR, salary_min=40, currency="USD", experience_years=0.5),
    )
    pulse = book.pulse(NOW)
    assert pulse["entry_level_avg_salary"] == {"KES": 150.0, "USD": 40.0}
    assert pulse["avg_salary_today"] == {"KES": 1550.0, "USD": 40.0}


# ---------------------------------------------------------------------------------------------
# Hot skills


def _skill_history(skill: str, per_day: int, today: int) -> list[JobPosting]:
    past = [
        job(TODAY - back * DAY_MS + HOUR, skills=(skill,)) for back in range(1, 8) for _ in range(per_day)
    ]
    return past + [job(TODAY + HOUR, skills=(skill,)) for _ in range(today)]


def test_hot_skill_trends_against_seven_day_baseline() -> None:
    book = book_of(
        *_skill_history("python", 1, 2),  # +100%
        *_skill_history("sql", 2, 2),  # 0%
        *_skill_history("excel", 2, 1),  # -50%
        *_skill_history("go", 5, 6),  # exactly +20%
        *_skill_history("java", 5, 4),  # exactly -20%
        *_skill_history("ruby", 5, 5),  # steady
        *_skill_history("rust", 0, 3),
        job(TODAY - 8 * DAY_MS + HOUR, skills=("rust",)),  # outside the baseline
    )
    skills = hot(book)
    assert {name: entry["trend"] for name, entry in skills.items()} == {
        "python": "rising",
        "sql": "steady",
        "excel": "falling",
        "go": "rising",
        "java": "falling",
        "ruby": "steady",
        "rust": "new",
    }
    assert skills["python"] == {
        "skill": "python",
        "count": 2,
        "trend": "rising",
        "baseline_avg": 1.0,
        "change_pct": 100.0,
    }
    assert skills["excel"]["change_pct"] == -50.0
    assert skills["go"]["change_pct"] == 20.0
    assert skills["rust"]["baseline_avg"] == 0.0
    assert skills["rust"]["change_pct"] is None


def test_change_pct_against_a_fractional_baseline() -> None:
    book = book_of(*_skill_history("sql", 0, 2), *(job(TODAY - DAY_MS, skills=("sql",)) for _ in range(3)))
    (entry,) = book.pulse(NOW)["hot_skills_today"]
    assert entry["baseline_avg"] == 0.43  # 3 / 7
    assert entry["change_pct"] == 366.7  # 2 / (3/7) - 1
    assert entry["trend"] == "rising"


def test_hot_skills_top_ten_by_count_then_name() -> None:
    postings = [job(TODAY + HOUR, skills=tuple(f"s{i:02d}" for i in range(12))) for _ in range(2)]
    postings += [job(TODAY + HOUR, skills=("zzz",)) for _ in range(3)]
    skills = book_of(*postings).pulse(NOW)["hot_skills_today"]
    assert [(entry["skill"], entry["count"]) for entry in skills] == [("zzz", 3)] + [
        (f"s{i:02d}", 2) for i in range(9)
    ]


# ---------------------------------------------------------------------------------------------
# Urgent openings


def test_urgent_openings_window_and_order() -> None:
    book = book_of(
        job(TODAY, job_id="passed", deadline_ms=NOW - 1),
        job(TODAY, job_id="at-now", deadline_ms=NOW),
        job(TODAY, job_id="in-7d", deadline_ms=NOW + 7 * DAY_MS),
        job(TODAY, job_id="after-7d", deadline_ms=NOW + 7 * DAY_MS + 1),
        job(TODAY, job_id="b-in-1h", deadline_ms=NOW + HOUR),
        job(TODAY, job_id="a-in-1h", deadline_ms=NOW + HOUR),
        job(TODAY, job_id="in-2d", deadline_ms=NOW + 2 * DAY_MS),
        job(TODAY, job_id="none"),
    )
    pulse = book.pulse(NOW)
    assert pulse["urgent_count"] == 4
    assert [o["job_id"] for o in pulse["urgent_opportunities"]] == ["a-in-1h", "b-in-1h", "in-2d", "in-7d"]


def test_urgent_opening_fields() -> None:
    posting = job(
        TODAY,
        job_id="j-1",
        title="Nurse",
        company="Aga Khan",
        location="Nairobi",
        industry="Health",
        deadline_ms=ms("2026-11-23T17:00:00Z"),
    )
    assert book_of(posting).pulse(NOW)["urgent_opportunities"] == [
        {
            "job_id": "j-1",
            "title": "Nurse",
            "company": "Aga Khan",
            "location": "Nairobi",
            "industry": "Health",
            "deadline": "2026-11-23T17:00:00Z",
        }
    ]


def test_urgent_list_is_capped_but_counted_in_full() -> None:
    book = book_of(*(job(TODAY, job_id=f"j-{i:02d}", deadline_ms=NOW + (i + 1) * HOUR) for i in range(15)))
    pulse = book.pulse(NOW)
    assert pulse["urgent_count"] == 15
    assert [o["job_id"] for o in pulse["urgent_opportunities"]] == [f"j-{i:02d}" for i in range(10)]


def test_urgent_follows_deadline_updates() -> None:
    posting = job(TODAY, job_id="j-1", deadline_ms=NOW + HOUR)
    book = book_of(posting)
    book.upsert(dataclasses.replace(posting, deadline_ms=NOW + 30 * DAY_MS))
    assert book.pulse(NOW)["urgent_count"] == 0
    assert book.pulse(NOW + 24 * DAY_MS)["urgent_count"] == 1


# ---------------------------------------------------------------------------------------------
# Filters


def test_filters_are_case_insensitive_and_combine() -> None:
    book = book_of(
        job(TODAY + HOUR, location="Nairobi", industry="Tech", skills=("python",), deadline_ms=NOW + HOUR),
        job(TODAY + HOUR, location="nairobi ", industry="Health", skills=("nursing",)),
        job(TODAY + HOUR, location="Mombasa", industry="TECH", skills=("python",)),
        job(TODAY + HOUR, location=None, industry="tech"),
        job(TODAY - HOUR, location="NAIROBI", industry="Tech"),
    )
    assert counts(book) == (4, 1)
    assert counts(book, location="NAIROBI") == (2, 1)
    assert counts(book, industry="Tech") == (3, 1)
    assert counts(book, location="nairobi", industry="tEcH") == (1, 1)
    assert counts(book, location="Kisumu") == (0, 0)
    assert list(hot(book, location="Nairobi")) == ["nursing", "python"]
    assert list(hot(book, industry="health")) == ["nursing"]
    assert book.pulse(NOW, location="Nairobi", industry="Tech")["urgent_count"] == 1
    assert book.pulse(NOW, location="Mombasa")["urgent_count"] == 0
    echoed = book.pulse(NOW, location="NAIROBI", industry="tEcH")
    assert (echoed["location"], echoed["industry"]) == ("NAIROBI", "tEcH")


def test_salary_averages_follow_the_filter() -> None:
    book = book_of(
        job(TODAY + HOUR, location="Nairobi", salary_min=100, currency="KES"),
        job(TODAY + HOUR, location="Mombasa", salary_min=300, currency="KES"),
    )
    assert book.pulse(NOW)["avg_salary_today"] == {"KES": 200.0}
    assert book.pulse(NOW, location="mombasa")["avg_salary_today"] == {"KES": 300.0}


# ---------------------------------------------------------------------------------------------
# Eviction


def test_evict_drops_what_can_no_longer_matter() -> None:
    book = book_of(
        job(TODAY - 7 * DAY_MS, job_id="baseline-edge"),  # first day of the baseline: kept
        job(TODAY - 8 * DAY_MS + DAY_MS - 1, job_id="too-old"),
        job(TODAY - 20 * DAY_MS, job_id="old-but-open", deadline_ms=NOW + DAY_MS),
        job(TODAY - 20 * DAY_MS, job_id="old-closed", deadline_ms=NOW - 1),
        job(TODAY, job_id="today"),
    )
    assert len(book) == 5
    assert book.evict(NOW) == 2
    assert {p.job_id for p in book.postings()} == {"baseline-edge", "old-but-open", "today"}
    assert book.evict(NOW) == 0
    assert book.pulse(NOW)["urgent_count"] == 1
    assert book.evict(TODAY + DAY_MS - 1) == 0
    assert book.evict(NOW + DAY_MS) == 2  # old-but-open closes, baseline-edge ages out at midnight
    assert book.get("old-but-open") is None
    assert book.get("baseline-edge") is None
    assert book.evict(TODAY + 8 * DAY_MS) == 1
    assert len(book) == 0
    assert book.pulse(NOW) == MarketBook().pulse(NOW)


def test_after_evict_stale_postings_are_refused() -> None:
    book = MarketBook()
    book.evict(NOW)
    assert book.upsert(job(TODAY - 8 * DAY_MS)) is False
    assert book.upsert(job(TODAY - 8 * DAY_MS, deadline_ms=NOW)) is False  # closed at now
    assert book.upsert(job(TODAY - 8 * DAY_MS, deadline_ms=NOW + 1)) is True  # still open
    assert book.upsert(job(TODAY - 7 * DAY_MS)) is True
    assert len(book) == 2


def test_evict_never_moves_the_clock_back() -> None:
    book = MarketBook()
    book.evict(NOW)
    assert book.evict(NOW - 30 * DAY_MS) == 0
    assert book.upsert(job(TODAY - 8 * DAY_MS)) is False


def test_evict_ignores_superseded_versions() -> None:
    posting = job(TODAY - 7 * DAY_MS, job_id="j-1")
    book = book_of(posting)
    book.upsert(dataclasses.replace(posting, posted_at_ms=TODAY))
    assert book.evict(TODAY + DAY_MS) == 0  # the first version's expiry has passed; the posting's hasn't
    assert len(book) == 1
    assert book.evict(TODAY + 8 * DAY_MS) == 1


# ---------------------------------------------------------------------------------------------
# Scopes and accessors


def test_scopes_use_the_first_spelling_seen() -> None:
    book = book_of(
        job(TODAY, job_id="a", location="Nairobi", industry="Tech"),
        job(TODAY, job_id="b", location="NAIROBI", industry="health"),
        job(TODAY, job_id="c", location=None, industry="TECH"),
        job(TODAY, job_id="d", location="  ", industry=None),  # blank counts as none
    )
    assert book.scopes() == [
        (None, None),
        (None, "health"),
        (None, "Tech"),
        ("Nairobi", None),
        ("Nairobi", "health"),
        ("Nairobi", "Tech"),
    ]


def test_scopes_forget_names_no_posting_uses() -> None:
    first = job(TODAY, job_id="a", location="nairobi")
    book = book_of(first, job(TODAY, job_id="b", location="Mombasa"))
    book.upsert(dataclasses.replace(first, location="Kisumu"))
    assert book.scopes() == [(None, None), ("Kisumu", None), ("Mombasa", None)]
    book.upsert(job(TODAY, job_id="c", location="NAIROBI"))
    assert ("NAIROBI", None) in book.scopes()
    assert MarketBook().scopes() == []


def test_accessors() -> None:
    a, b = job(TODAY, job_id="a"), job(TODAY, job_id="b")
    book = book_of(a, b)
    assert len(book) == 2
    assert sorted(p.job_id for p in book.postings()) == ["a", "b"]
    assert book.get("a") is a
    assert book.get("missing") is None


# ---------------------------------------------------------------------------------------------
# A full window


def test_a_week_of_twenty_thousand_postings() -> None:
    rng = random.Random(7)
    skills = [f"skill-{i}" for i in range(40)]
    postings = [
        job(
            TODAY - rng.randrange(8) * DAY_MS + rng.randrange(DAY_MS),
            location=rng.choice(["Nairobi", "Mombasa", "Kisumu"]),
            industry=rng.choice(["Tech", "Health"]),
            skills=tuple(rng.sample(skills, 3)),
            salary_min=2 * rng.randrange(50_000),
            currency="KES",
            deadline_ms=NOW + rng.randrange(-DAY_MS, 14 * DAY_MS),
        )
        for _ in range(20_000)
    ]
    book = book_of(*postings)
    pulse = book.pulse(NOW + DAY_MS - 1 - 12 * HOUR, location="nairobi", industry="tech")

    mine = [p for p in postings if p.location == "Nairobi" and p.industry == "Tech"]
    today = [p for p in mine if p.posted_at_ms >= TODAY]
    now = NOW + DAY_MS - 1 - 12 * HOUR
    assert pulse["new_jobs_today"] == len(today)
    assert pulse["new_jobs_yesterday"] == sum(TODAY - DAY_MS <= p.posted_at_ms < TODAY for p in mine)
    salaries = [int(p.salary_min) for p in today if p.salary_min is not None]
    assert pulse["avg_salary_today"] == {"KES": float(round(Fraction(sum(salaries), len(salaries)), 2))}
    skill_counts = Counter(s for p in today for s in p.skills)
    top = sorted(skill_counts.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert [(e["skill"], e["count"]) for e in pulse["hot_skills_today"]] == top
    urgent = sorted(
        (p.deadline_ms, p.job_id)
        for p in mine
        if p.deadline_ms is not None and now < p.deadline_ms <= now + 7 * DAY_MS
    )
    assert pulse["urgent_count"] == len(urgent)
    assert [o["job_id"] for o in pulse["urgent_opportunities"]] == [job_id for _, job_id in urgent[:10]]


# ---------------------------------------------------------------------------------------------
# Properties

_postings = st.builds(
    JobPosting,
    job_id=st.just(""),  # replaced by a unique id below
    title=st.just("Job"),
    posted_at_ms=st.integers(TODAY - 9 * DAY_MS, TODAY + DAY_MS - 1),
    location=st.sampled_from([None, "Nairobi", "nairobi", "Mombasa"]),
    industry=st.sampled_from([None, "Tech", "Health"]),
    skills=st.lists(st.sampled_from(["sql", "python", "excel", "go"]), unique=True, max_size=3).map(tuple),
    experience_years=st.sampled_from([None, 0, 1, 3]),
    salary_min=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False), st.integers(0, 10**6)),
    salary_max=st.one_of(st.none(), st.floats(1e6, 2e6, allow_nan=False)),
    currency=st.sampled_from([None, "KES", "usd"]),
    deadline_ms=st.one_of(st.none(), st.integers(NOW - 3 * DAY_MS, NOW + 10 * DAY_MS)),
)


def _every_pulse(book: MarketBook, now: int) -> dict[tuple[str | None, str | None], dict[str, Any]]:
    scopes = [(loc, ind) for loc in (None, "NAIROBI", "Mombasa") for ind in (None, "tech", "Health")]
    return {(loc, ind): book.pulse(now, loc, ind) for loc, ind in scopes}


def _folded_scopes(book: MarketBook) -> list[tuple[str | None, str | None]]:
    return [(loc and loc.casefold(), ind and ind.casefold()) for loc, ind in book.scopes()]


@settings(max_examples=200, deadline=None)
@given(
    postings=st.lists(_postings, max_size=25),
    resend=st.lists(st.integers(0, 24), max_size=10),
    seed=st.randoms(use_true_random=False),
    offset=st.integers(0, 2 * DAY_MS),
)
def test_any_order_with_duplicates_gives_the_same_pulse(
    postings: list[JobPosting], resend: list[int], seed: random.Random, offset: int
) -> None:
    unique = [dataclasses.replace(p, job_id=f"j-{i}") for i, p in enumerate(postings)]
    shuffled = unique + [unique[i] for i in resend if i < len(unique)]
    seed.shuffle(shuffled)
    now = NOW + offset
    in_order, any_order = book_of(*unique), book_of(*shuffled)
    for book in (in_order, any_order):
        book.evict(now)
    assert len(any_order) == len(in_order)
    assert _every_pulse(any_order, now) == _every_pulse(in_order, now)
    assert _folded_scopes(any_order) == _folded_scopes(in_order)


@settings(max_examples=200, deadline=None)
@given(
    versions=st.lists(st.tuples(st.integers(0, 5), _postings), max_size=30),
    evict_at=st.one_of(st.none(), st.integers(NOW - 2 * DAY_MS, NOW)),
)
def test_updates_leave_exactly_the_latest_versions(
    versions: list[tuple[int, JobPosting]], evict_at: int | None
) -> None:
    churned = MarketBook()
    for i, (job_no, posting) in enumerate(versions):
        churned.upsert(dataclasses.replace(posting, job_id=f"j-{job_no}"))
        if evict_at is not None and i == len(versions) // 2:
            churned.evict(evict_at)
    rebuilt = book_of(*churned.postings())
    assert _every_pulse(churned, NOW) == _every_pulse(rebuilt, NOW)
    assert _folded_scopes(churned) == _folded_scopes(rebuilt)
