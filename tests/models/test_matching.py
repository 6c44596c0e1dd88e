from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from models.events import JobPosting, UserProfile, normalize_skills
from models.matching import (
    Candidate,
    CandidateIndex,
    Match,
    PostingIndex,
    match_candidate,
    match_posting,
    salary_fit,
    score,
)
from tests.models.factories import ms

NOW = ms("2026-11-22T08:00:00Z")
DAY = 86_400_000


def posting(job_id: str = "j-1", **fields: Any) -> JobPosting:
    """A posting that a `candidate()` fits perfectly unless a test changes a field."""
    defaults: dict[str, Any] = {
        "title": "Data Analyst",
        "posted_at_ms": NOW - DAY,
        "company": "Acme",
        "location": "Nairobi",
        "skills": ("python", "sql"),
        "experience_years": 2,
        "education": "bachelor",
        "salary_min": 50_000,
        "salary_max": 80_000,
        "currency": "KES",
        "deadline_ms": NOW + 30 * DAY,
    }
    merged = defaults | fields
    # parse_posting normalizes skills; postings built here must hold the same invariant.
    merged["skills"] = normalize_skills(tuple(merged["skills"]))
    return JobPosting(job_id=job_id, **merged)


def candidate(user_id: str = "u-1", **fields: Any) -> Candidate:
    defaults: dict[str, Any] = {
        "skills": ("python", "sql"),
        "location": "Nairobi",
        "experience_years": 3,
        "education": "bachelor",
        "salary_expectation": 60_000,
        "currency": "KES",
    }
    return Candidate(user_id=user_id, **(defaults | fields))


def scored(p: JobPosting, c: Candidate, now_ms: int = NOW) -> Match:
    match = score(p, c, now_ms)
    assert match is not None
    return match


def points(p: JobPosting, c: Candidate, now_ms: int = NOW) -> int:
    return scored(p, c, now_ms).match_score


# --- Candidate -----------------------------------------------------------------------------------


def test_from_profile_normalizes_skills_and_keeps_matching_fields() -> None:
    profile = UserProfile(
        user_id="u-9",
        location="Mombasa",
        skills=(" Python", "SQL", "python", "  "),
        experience_years=1.5,
        education="Diploma",
        salary_expectation=40_000,
        currency="KES",
    )
    assert Candidate.from_profile(profile) == Candidate(
        user_id="u-9",
        skills=("python", "sql"),
        location="Mombasa",
        experience_years=1.5,
        education="Diploma",
        salary_expectation=40_000,
        currency="KES",
    )


def test_candidate_dict_round_trip_is_json_ready_and_compact() -> None:
    full = candidate(experience_years=2.5)
    assert Candidate.from_dict(orjson.loads(orjson.dumps(full.to_dict()))) == full
    bare = Candidate(user_id="u-2")
    assert bare.to_dict() == {"user_id": "u-2"}
    assert Candidate.from_dict(bare.to_dict()) == bare


# --- score: the perfect baseline and each component ------------------------------------------------


def test_baseline_is_a_perfect_match() -> None:
    match = scored(posting(), candidate())
    assert match.match_score == 100
    assert match.is_perfect
    assert match.missing_skills == ()
    assert match.salary_fit == "within"
    assert not match.is_urgent


def test_skills_share_is_worth_50() -> None:
    p = posting(skills=("python", "sql", "excel", "tableau"))
    assert points(p, candidate(skills=("python",))) == 63  # 37.5 of 50 lost: 62.5, rounded up
    assert points(p, candidate(skills=("python", "sql"))) == 75
    assert points(p, candidate(skills=("python", "sql", "excel", "tableau", "r"))) == 100


def test_missing_skills_follow_posting_order() -> None:
    p = posting(skills=("tableau", "python", "excel", "sql", "r"))
    match = scored(p, candidate(skills=("sql", "python")))
    assert match.missing_skills == ("tableau", "excel", "r")
    assert match.to_dict()["missing_skills"] == ["tableau", "excel", "r"]


def test_skills_and_location_are_case_insensitive() -> None:
    c = Candidate.from_profile(UserProfile(user_id="u-1", skills=("PYTHON", "Sql "), location=" nairobi "))
    match = scored(posting(location="NAIROBI", experience_years=None, education=None), c)
    assert match.missing_skills == ()
    # skills 50 + location 15 + experience 15 + education 10 + salary unknown 5
    assert match.match_score == 95


@pytest.mark.parametrize(
    ("posting_location", "candidate_location", "expected"),
    [
        ("Nairobi", "Nairobi", 100),
        ("Nairobi", "Kisumu", 85),
        ("Nairobi", None, 85),
        ("Remote", "Kisumu", 100),
        (None, "Kisumu", 100),
        ("  ", None, 100),
    ],
)
def test_location_is_worth_15(
    posting_location: str | None, candidate_location: str | None, expected: int
) -> None:
    assert points(posting(location=posting_location), candidate(location=candidate_location)) == expected


@pytest.mark.parametrize(
    ("required", "have", "expected"),
    [
        (None, None, 100),
        (2, 5, 100),
        (2, 2, 100),
        (3, 2, 93),  # 1 year short: 7.5 of 15 lost → 92.5 → 93
        (4, 2.5, 89),  # 1.5 years short: 11.25 lost → 88.75 → 89
        (2, None, 85),  # unknown experience counts as 0 years: exactly 2 short, no points
    ],
)
def test_experience_is_worth_15_and_linear_when_short(
    required: float | None, have: float | None, expected: int
) -> None:
    assert points(posting(experience_years=required), candidate(experience_years=have)) == expected


def test_experience_filter_boundary_is_exactly_two_years() -> None:
    assert score(posting(experience_years=5), candidate(experience_years=3), NOW) is not None
    assert score(posting(experience_years=5), candidate(experience_years=2.99), NOW) is None
    assert score(posting(experience_years=3), candidate(experience_years=None), NOW) is None
    # 3.3 - 1.3 is 2.0000000000000004 in floats: still exactly two years short.
    assert score(posting(experience_years=3.3), candidate(experience_years=1.3), NOW) is not None


@pytest.mark.parametrize(
    ("required", "have", "expected"),
    [
        (None, None, 100),
        ("none", None, 100),
        ("bachelor", "phd", 100),
        ("Bachelor's", "Bachelors", 100),
        ("master", "Masters", 100),
        ("phd", "doctorate", 100),
        ("bachelor", "diploma", 95),
        ("bachelor", "certificate", 90),
        ("bachelor", None, 95),
        ("bachelor", "KCSE", 95),
        ("a good degree", "phd", 95),
    ],
)
def test_education_is_worth_10(required: str | None, have: str | None, expected: int) -> None:
    assert points(posting(education=required), candidate(education=have)) == expected


@pytest.mark.parametrize(
    ("fields", "expectation", "currency", "fit", "expected"),
    [
        ({}, 60_000, "KES", "within", 100),
        ({}, 50_000, "KES", "within", 100),  # bounds are inclusive
        ({}, 80_000, "kes", "within", 100),
        ({}, 40_000, "KES", "above_expectation", 100),
        ({}, 88_000, "KES", "below_expectation", 98),  # max 9.1% under: 1.8 points lost
        ({}, 100_000, "KES", "below_expectation", 96),  # 20% under: 4 lost
        ({}, 160_000, "KES", "below_expectation", 90),  # 50% under: all 10 lost
        ({"salary_min": None}, 10_000, "KES", "within", 100),
        ({"salary_max": None}, 900_000, "KES", "within", 100),
        ({"salary_max": None}, 10_000, "KES", "above_expectation", 100),
        ({}, 60_000, "USD", "unknown", 95),
        ({}, 60_000, None, "unknown", 95),
        ({"currency": None}, 60_000, "KES", "unknown", 95),
        ({}, None, "KES", "unknown", 95),
        ({"salary_min": None, "salary_max": None}, 60_000, "KES", "unknown", 95),
    ],
)
def test_salary_fit_is_worth_10(
    fields: dict[str, Any], expectation: float | None, currency: str | None, fit: str, expected: int
) -> None:
    p = posting(**fields)
    c = candidate(salary_expectation=expectation, currency=currency)
    assert salary_fit(p, c) == fit
    match = scored(p, c)
    assert match.salary_fit == fit
    assert match.match_score == expected


def test_score_rounds_half_up() -> None:
    # skills 1 of 4 = 12.5, location 15, experience 15, education 10, salary 10 → 62.5
    p = posting(skills=("python", "a", "b", "c"))
    assert points(p, candidate(skills=("python",))) == 63


def test_perfect_means_at_least_90() -> None:
    p = posting(education="bachelor")
    at_90 = scored(p, candidate(education="certificate"))
    assert (at_90.match_score, at_90.is_perfect) == (90, True)
    just_below = scored(p, candidate(education="certificate", salary_expectation=88_000))
    assert (just_below.match_score, just_below.is_perfect) == (88, False)


# --- hard filters ----------------------------------------------------------------------------------


def test_passed_deadline_is_unsuitable_but_now_is_still_open() -> None:
    assert score(posting(deadline_ms=NOW - 1), candidate(), NOW) is None
    assert score(posting(deadline_ms=NOW), candidate(), NOW) is not None
    assert score(posting(deadline_ms=None), candidate(), NOW) is not None


def test_no_shared_skill_is_unsuitable() -> None:
    assert score(posting(skills=("java", "go")), candidate(skills=("python",)), NOW) is None
    assert score(posting(skills=("java", "go")), candidate(skills=()), NOW) is None
    assert score(posting(skills=("java", "go")), candidate(skills=("Go",)), NOW) is not None


def test_skill_less_posting_matches_only_its_own_location() -> None:
    p = posting(skills=())
    match = scored(p, candidate(location="nairobi", skills=()))
    assert match.match_score == 75  # skills unknown: half of 50
    assert score(p, candidate(location="Kisumu"), NOW) is None
    assert score(p, candidate(location=None), NOW) is None
    assert score(posting(skills=(), location="Remote"), candidate(), NOW) is None
    assert score(posting(skills=(), location=None), candidate(), NOW) is None


# --- urgency and the alert shape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "urgent"),
    [
        (NOW, True),
        (NOW + 7 * DAY, True),
        (NOW + 7 * DAY + 1, False),
        (None, False),
    ],
)
def test_urgent_means_deadline_within_seven_days(deadline: int | None, urgent: bool) -> None:
    match = scored(posting(deadline_ms=deadline), candidate())
    assert match.is_urgent is urgent
    assert match.match_score == 100  # urgency adds no points


def test_match_to_dict_has_the_contract_shape() -> None:
    match = scored(posting(deadline_ms=ms("2026-11-29T08:00:00Z"), skills=("python", "r")), candidate())
    assert match.to_dict() == {
        "job_id": "j-1",
        "title": "Data Analyst",
        "company": "Acme",
        "match_score": 75,
        "missing_skills": ["r"],
        "salary_fit": "within",
        "is_urgent": True,
        "is_perfect": False,
        "deadline": "2026-11-29T08:00:00Z",
        # Carried for the match insights (models/match_insights.py), only when the posting says.
        "salary_min": 50_000,
        "salary_max": 80_000,
        "currency": "KES",
    }
    assert scored(posting(deadline_ms=None), candidate()).to_dict()["deadline"] is None
    bare = scored(posting(salary_min=None, salary_max=None, currency=None, industry="Tech"), candidate())
    assert bare.to_dict()["industry"] == "Tech"
    assert not {"salary_min", "salary_max", "currency"} & bare.to_dict().keys()


# --- CandidateIndex ----------------------------------------------------------------------------------


def test_candidate_index_follows_skill_changes_and_removal() -> None:
    index = CandidateIndex()
    index.upsert(candidate("u-1", skills=("python",)))
    index.upsert(candidate("u-2", skills=("sql",)))
    assert index.candidates_for(posting(skills=("python",))) == {"u-1"}

    index.upsert(candidate("u-1", skills=("Excel",)))
    assert len(index) == 2
    assert index.candidates_for(posting(skills=("python",))) == set()
    assert index.candidates_for(posting(skills=("excel", "sql"))) == {"u-1", "u-2"}
    assert index.get("u-1") == candidate("u-1", skills=("excel",))

    index.remove("u-1")
    index.remove("u-404")  # unknown: no error
    assert len(index) == 1
    assert index.get("u-1") is None
    assert index.candidates_for(posting(skills=("excel", "sql"))) == {"u-2"}


def test_candidate_index_uses_location_for_skill_less_postings() -> None:
    index = CandidateIndex()
    index.upsert(candidate("u-1", location="Nairobi"))
    index.upsert(candidate("u-2", location="KISUMU"))
    assert index.candidates_for(posting(skills=(), location="kisumu ")) == {"u-2"}
    index.upsert(candidate("u-2", location="Nairobi"))
    assert index.candidates_for(posting(skills=(), location="Kisumu")) == set()
    assert index.candidates_for(posting(skills=(), location="Nairobi")) == {"u-1", "u-2"}
    assert index.candidates_for(posting(skills=(), location="Remote")) == set()


def test_candidates_for_returns_a_copy() -> None:
    index = CandidateIndex()
    index.upsert(candidate("u-1"))
    index.candidates_for(posting()).add("u-intruder")
    assert index.candidates_for(posting()) == {"u-1"}


def test_match_posting_orders_best_first_then_by_user_id() -> None:
    index = CandidateIndex()
    index.upsert(candidate("u-c", skills=("python",)))  # 75
    index.upsert(candidate("u-b"))  # 100
    index.upsert(candidate("u-a"))  # 100
    index.upsert(candidate("u-d", skills=("java",)))  # no shared skill
    matches = match_posting(posting(), index, NOW)
    assert [(m.user_id, m.match_score) for m in matches] == [("u-a", 100), ("u-b", 100), ("u-c", 75)]
    assert [m.user_id for m in match_posting(posting(), index, NOW, threshold=76)] == ["u-a", "u-b"]
    assert match_posting(posting(deadline_ms=NOW - 1), index, NOW) == []


# --- PostingIndex ------------------------------------------------------------------------------------


def test_posting_index_follows_skill_changes_and_removal() -> None:
    postings = PostingIndex()
    postings.upsert(posting("j-1", skills=("python",)))
    postings.upsert(posting("j-2", skills=("sql",)))
    postings.upsert(posting("j-3", skills=(), location="Nairobi"))
    postings.upsert(posting("j-4", skills=(), location="Kisumu"))
    postings.upsert(posting("j-5", skills=(), location="Remote"))
    assert len(postings) == 5
    ids = [p.job_id for p in postings.postings_for(candidate(skills=("python",), location="nairobi"))]
    assert ids == ["j-1", "j-3"]

    postings.upsert(posting("j-1", skills=("go",)))
    postings.remove("j-3")
    postings.remove("j-404")
    assert len(postings) == 4
    assert postings.get("j-3") is None
    assert [p.job_id for p in postings.postings_for(candidate(skills=("python",)))] == []
    assert [p.job_id for p in postings.postings_for(candidate(skills=("GO", "sql")))] == ["j-1", "j-2"]


def test_posting_index_evicts_passed_deadlines_only() -> None:
    postings = PostingIndex()
    postings.upsert(posting("j-1", deadline_ms=NOW + DAY))
    postings.upsert(posting("j-2", deadline_ms=NOW + 2 * DAY))
    postings.upsert(posting("j-3", deadline_ms=None))
    postings.upsert(posting("j-4", deadline_ms=NOW + DAY))
    postings.upsert(posting("j-4", deadline_ms=NOW + 5 * DAY))  # extended: its old deadline is stale
    postings.upsert(posting("j-5", deadline_ms=NOW + DAY))
    postings.remove("j-5")

    assert postings.evict(NOW + DAY) == 0  # a deadline equal to now is still open
    assert postings.evict(NOW + DAY + 1) == 1
    assert postings.get("j-1") is None
    assert postings.get("j-4") is not None
    assert postings.evict(NOW + 10 * DAY) == 2
    assert [p.job_id for p in postings.postings_for(candidate())] == ["j-3"]


def test_posting_index_evicts_correctly_after_many_redatings() -> None:
    # Enough re-datings to rebuild the deadline heap several times; every rebuild must keep the
    # live deadlines, including that of a posting upserted before all of them.
    postings = PostingIndex()
    postings.upsert(posting("j-keep", deadline_ms=NOW + 50))
    for step in range(500):
        postings.upsert(posting(f"j-{step % 7}", deadline_ms=NOW + 100 + step))
    live = {f"j-{step % 7}": NOW + 100 + step for step in range(493, 500)}  # each job's last upsert
    assert {job_id: p.deadline_ms for job_id in live if (p := postings.get(job_id))} == live
    assert postings.evict(NOW + 51) == 1
    assert postings.get("j-keep") is None
    assert postings.evict(NOW + 596) == 3
    assert postings.evict(NOW + 10_000) == 4
    assert len(postings) == 0


def test_match_candidate_orders_best_first_then_by_job_id() -> None:
    postings = PostingIndex()
    postings.upsert(posting("j-c", skills=("python", "r")))  # 75
    postings.upsert(posting("j-b"))  # 100
    postings.upsert(posting("j-a"))  # 100
    postings.upsert(posting("j-d", skills=("java",)))
    postings.upsert(posting("j-e", deadline_ms=NOW - 1))
    matches = match_candidate(candidate(), postings, NOW)
    assert [(m.job_id, m.match_score) for m in matches] == [("j-a", 100), ("j-b", 100), ("j-c", 75)]
    assert all(m.user_id == "u-1" for m in matches)


# --- indexes against brute force ------------------------------------------------------------------

SKILLS = [f"skill-{i}" for i in range(40)]
PLACES = ["Nairobi", "nairobi", "Kisumu", "Mombasa", "Remote", None]
EDUCATION = ["none", "certificate", "Diploma", "bachelor", "Masters", "phd", "KCSE", None]
CURRENCIES = ["KES", "kes", "USD", None]


def random_candidate(rng: random.Random, user_id: str) -> Candidate:
    return Candidate(
        user_id=user_id,
        skills=tuple(rng.sample(SKILLS, rng.randint(0, 6))),
        location=rng.choice(PLACES),
        experience_years=rng.choice([None, 0, 1, 2.5, 4, 8]),
        education=rng.choice(EDUCATION),
        salary_expectation=rng.choice([None, 30_000, 60_000, 120_000]),
        currency=rng.choice(CURRENCIES),
    )


def random_posting(rng: random.Random, job_id: str) -> JobPosting:
    salary_min = rng.choice([None, 20_000, 50_000])
    return posting(
        job_id,
        location=rng.choice(PLACES),
        skills=tuple(rng.sample(SKILLS, rng.choice([0, 1, 2, 3, 5]))),
        experience_years=rng.choice([None, 0, 1, 3, 5]),
        education=rng.choice(EDUCATION),
        salary_min=salary_min,
        salary_max=rng.choice([None, (salary_min or 0) + 40_000]),
        currency=rng.choice(CURRENCIES),
        deadline_ms=rng.choice([None, NOW - DAY, NOW + 3 * DAY, NOW + 30 * DAY]),
    )


def brute_force(matches: list[Match | None], threshold: int, tie: str) -> list[Match]:
    found = [m for m in matches if m is not None and m.match_score >= threshold]
    return sorted(found, key=lambda m: (-m.match_score, getattr(m, tie)))


@pytest.fixture(scope="module")
def population() -> tuple[dict[str, Candidate], CandidateIndex]:
    rng = random.Random(20261122)
    index = CandidateIndex()
    candidates: dict[str, Candidate] = {}
    for i in range(2000):
        c = random_candidate(rng, f"u-{i:04d}")
        index.upsert(c)
        candidates[c.user_id] = c
    # Churn: changed profiles must leave no stale entries, removed ones none at all.
    for i in rng.sample(range(2000), 300):
        c = random_candidate(rng, f"u-{i:04d}")
        index.upsert(c)
        candidates[c.user_id] = c
    for i in rng.sample(range(2000), 100):
        index.remove(f"u-{i:04d}")
        candidates.pop(f"u-{i:04d}")
    assert len(index) == len(candidates)
    return candidates, index


@pytest.mark.parametrize("threshold", [0, 60, 90])
def test_match_posting_equals_brute_force(
    population: tuple[dict[str, Candidate], CandidateIndex], threshold: int
) -> None:
    candidates, index = population
    rng = random.Random(threshold)
    non_empty = 0
    for j in range(60):
        p = random_posting(rng, f"j-{j}")
        expected = brute_force([score(p, c, NOW) for c in candidates.values()], threshold, "user_id")
        assert match_posting(p, index, NOW, threshold) == expected
        non_empty += bool(expected)
    assert non_empty >= 10  # the comparison is not vacuous


@pytest.mark.parametrize("threshold", [0, 60, 90])
def test_match_candidate_equals_brute_force(threshold: int) -> None:
    rng = random.Random(1000 + threshold)
    postings = PostingIndex()
    all_postings: dict[str, JobPosting] = {}
    for j in range(1500):
        p = random_posting(rng, f"j-{j:04d}")
        postings.upsert(p)
        all_postings[p.job_id] = p
    for j in rng.sample(range(1500), 200):
        p = random_posting(rng, f"j-{j:04d}")
        postings.upsert(p)
        all_postings[p.job_id] = p
    for j in rng.sample(range(1500), 100):
        postings.remove(f"j-{j:04d}")
        all_postings.pop(f"j-{j:04d}")
    assert len(postings) == len(all_postings)

    non_empty = 0
    for i in range(200):
        c = random_candidate(rng, f"u-{i}")
        expected = brute_force([score(p, c, NOW) for p in all_postings.values()], threshold, "job_id")
        assert match_candidate(c, postings, NOW, threshold) == expected
        non_empty += bool(expected)
    assert non_empty >= 10
