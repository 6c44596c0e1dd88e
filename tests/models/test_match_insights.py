"""Match insights (models/match_insights.py) over match-view entries as the worker writes them."""

from __future__ import annotations

from typing import Any

from models.events import format_ts
from models.match_insights import TOP_N, match_insights
from models.matching import PERFECT_SCORE
from models.time_units import DAY_MS

NOW = 1_790_000_000_000


def entry(job_id: str, score: int, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "title": "Analyst",
        "match_score": score,
        "missing_skills": [],
        "salary_fit": "unknown",
        "is_urgent": False,
        "is_perfect": score >= PERFECT_SCORE,
        "deadline": format_ts(NOW + 30 * DAY_MS),
        **fields,
    }


def test_counts_perfect_urgent_and_average_over_open_matches() -> None:
    matches = [
        entry("j-1", 95),
        entry("j-2", 90, deadline=format_ts(NOW + 2 * DAY_MS)),
        entry("j-3", 70, deadline=None),
        entry("j-4", 99, deadline=format_ts(NOW - 1)),  # closed: not counted at all
    ]
    body = match_insights(matches, NOW)
    assert (body["total"], body["perfect"], body["urgent"]) == (3, 2, 1)
    assert body["perfect_threshold"] == PERFECT_SCORE == 90
    assert body["average_score"] == 85.0
    empty = match_insights([], NOW)
    assert (empty["total"], empty["average_score"], empty["top_industries"]) == (0, None, [])


def test_top_industries_and_skills_to_improve_most_frequent_first() -> None:
    matches = [
        entry("j-1", 90, industry="Technology", missing_skills=["sql", "tableau"]),
        entry("j-2", 80, industry="technology", missing_skills=["sql", "sql"]),  # once per match
        entry("j-3", 70, industry="Finance", missing_skills=["excel"]),
        entry("j-4", 95, missing_skills=["tableau"]),  # no industry: not counted there
        *(entry(f"k-{n}", 60, industry=f"i{n}") for n in range(TOP_N + 3)),
    ]
    body = match_insights(matches, NOW)
    assert body["top_industries"][:2] == [
        {"industry": "technology", "matches": 2},
        {"industry": "finance", "matches": 1},
    ]
    assert len(body["top_industries"]) == TOP_N
    # sql and tableau in 2 matches each: tableau's are the better matches (185 > 170).
    assert body["skills_to_improve"] == [
        {"skill": "tableau", "matches": 2},
        {"skill": "sql", "matches": 2},
        {"skill": "excel", "matches": 1},
    ]


def test_salary_outlook_compares_only_in_the_users_currency() -> None:
    matches = [
        entry("j-1", 90, salary_min=60_000, salary_max=90_000, currency="KES", salary_fit="within"),
        entry("j-2", 80, salary_min=80_000, currency="kes", salary_fit="above_expectation"),
        entry("j-3", 70, salary_max=50_000, currency="KES", salary_fit="below_expectation"),
        entry("j-4", 75, salary_min=2_000, salary_max=3_000, currency="USD"),
        entry("j-5", 65),
    ]
    outlook = match_insights(matches, NOW, salary_expectation=70_000, currency="KES")["salary_outlook"]
    assert outlook["expectation"] == 70_000 and outlook["currency"] == "KES"
    kes, usd = outlook["by_currency"]
    assert kes == {
        "currency": "KES",
        "matches": 3,
        "low": 50_000,
        "high": 80_000,
        "median": 75_000,
        "comparable": True,
        "median_vs_expectation_pct": 7.1,
    }
    assert usd["currency"] == "USD" and usd["median"] == 2_500
    assert usd["comparable"] is False and usd["median_vs_expectation_pct"] is None
    assert outlook["fit"] == {"within": 1, "above_expectation": 1, "below_expectation": 1, "unknown": 2}
    # Without an expectation nothing is compared.
    bare = match_insights(matches, NOW)["salary_outlook"]
    assert not any(row["comparable"] for row in bare["by_currency"])


def test_junk_entries_do_not_break_the_insights() -> None:
    matches = [
        entry("j-1", 80, deadline="not a date", industry=7, missing_skills=[None, "\x1bsql\n"], currency=3),
        entry("j-2", 60, salary_min=True, salary_max="lots", currency="KES", salary_fit="huge"),
    ]
    body = match_insights(matches, NOW, salary_expectation=-5, currency="KES")
    assert body["total"] == 2
    assert body["skills_to_improve"] == [{"skill": "sql", "matches": 1}]
    assert body["salary_outlook"]["by_currency"] == []
    assert body["salary_outlook"]["expectation"] is None
    assert body["salary_outlook"]["fit"]["unknown"] == 2
