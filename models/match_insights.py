"""Match insights (``GET /v1/users/{id}/matches/insights``): what a user's held matches say, in
one bounded pass over the match view (at most ``models.career.MAX_MATCHES`` entries), at the
reader's clock. Pure; docs/careers.md ("Match insights") is the reference.

- ``total``: matches held whose posting is still open (as ``GET .../matches`` lists them);
- ``perfect``: those scoring at least ``models.matching.PERFECT_SCORE`` (90), the threshold the
  engine's ``is_perfect`` and its perfect-match notifications use;
- ``urgent``: those closing within ``URGENT_WITHIN_MS`` (7 days) of now;
- ``average_score``: their mean score, one decimal (``null`` without matches);
- ``top_industries``: the postings' industries (casefolded), most matches first, ``TOP_N``;
- ``skills_to_improve``: the missing skills most frequent across the matches, each counted once
  per match (unweighted, so "in 7 of your 12 matches" is literal); ties by the summed score of
  the matches asking for it (a skill the better matches want comes first), then by name;
- ``salary_outlook``: per currency of the postings, the range and the median of the postings'
  salary midpoints, and, in the user's own currency only, how that median compares with their
  ``salary_expectation`` (no exchange rates: amounts in other currencies are listed, never
  compared); plus the count of matches per ``salary_fit``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from models.events import InvalidEvent, parse_ts
from models.matching import PERFECT_SCORE, URGENT_WITHIN_MS
from models.state_budget import clip_text

#: Entries of each ranked list.
TOP_N = 5
#: Currencies listed in the salary outlook (most matches first).
MAX_CURRENCIES = 5
SALARY_FITS = ("within", "above_expectation", "below_expectation", "unknown")


def _deadline(entry: Mapping[str, Any]) -> int | None:
    raw = entry.get("deadline")
    if not isinstance(raw, str | int):
        return None
    try:
        return parse_ts(raw)
    except InvalidEvent:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _midpoint(entry: Mapping[str, Any]) -> float | None:
    low, high = _number(entry.get("salary_min")), _number(entry.get("salary_max"))
    if low is not None and high is not None:
        return (low + high) / 2
    return low if low is not None else high


def _text(value: object, max_bytes: int = 64) -> str | None:
    if not isinstance(value, str):
        return None
    text = clip_text("".join(ch for ch in value if ch.isprintable()).strip(), max_bytes)
    return text or None


def _ranked(counts: Counter[str], scores: Counter[str], key: str) -> list[dict[str, Any]]:
    order = sorted(counts, key=lambda k: (-counts[k], -scores[k], k))[:TOP_N]
    return [{key: k, "matches": counts[k]} for k in order]


def match_insights(
    matches: Iterable[Mapping[str, Any]],
    now_ms: int,
    salary_expectation: float | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """The insights of ``matches`` (the match view's entries) at ``now_ms``; see the module doc."""
    live = [m for m in matches if (d := _deadline(m)) is None or d >= now_ms]
    scores = [int(m.get("match_score") or 0) for m in live]
    industries: Counter[str] = Counter()
    industry_scores: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    missing_scores: Counter[str] = Counter()
    fits: Counter[str] = Counter()
    by_currency: dict[str, list[float]] = {}
    urgent = 0
    for m, score in zip(live, scores, strict=True):
        deadline = _deadline(m)
        if deadline is not None and deadline - now_ms <= URGENT_WITHIN_MS:
            urgent += 1
        industry = _text(m.get("industry"))
        if industry:
            industries[industry.casefold()] += 1
            industry_scores[industry.casefold()] += score
        for skill in dict.fromkeys(s for s in m.get("missing_skills") or () if isinstance(s, str)):
            shown = _text(skill)
            if shown:
                missing[shown] += 1
                missing_scores[shown] += score
        fit = m.get("salary_fit")
        fits[fit if fit in SALARY_FITS else "unknown"] += 1
        code, mid = _text(m.get("currency"), 16), _midpoint(m)
        if code and mid is not None:
            by_currency.setdefault(code.upper(), []).append(mid)
    return {
        "total": len(live),
        "perfect": sum(s >= PERFECT_SCORE for s in scores),
        "perfect_threshold": PERFECT_SCORE,
        "urgent": urgent,
        "average_score": round(sum(scores) / len(scores), 1) if scores else None,
        "top_industries": _ranked(industries, industry_scores, "industry"),
        "skills_to_improve": _ranked(missing, missing_scores, "skill"),
        "salary_outlook": _salary_outlook(by_currency, fits, salary_expectation, currency),
    }


def _salary_outlook(
    by_currency: Mapping[str, list[float]],
    fits: Counter[str],
    expectation: float | None,
    currency: str | None,
) -> dict[str, Any]:
    own = (_text(currency, 16) or "").upper() or None
    wanted = expectation if expectation is not None and expectation > 0 else None
    rows = []
    for code in sorted(by_currency, key=lambda c: (c != own, -len(by_currency[c]), c))[:MAX_CURRENCIES]:
        mids = by_currency[code]
        median = statistics.median(mids)
        comparable = wanted is not None and code == own
        rows.append(
            {
                "currency": code,
                "matches": len(mids),
                "low": min(mids),
                "high": max(mids),
                "median": median,
                "comparable": comparable,
                # How far the median posting's midpoint is above (+) or below (-) the expectation.
                "median_vs_expectation_pct": (
                    round((median - wanted) / wanted * 100, 1) if comparable and wanted else None
                ),
            }
        )
    return {
        "expectation": wanted,
        "currency": own,
        "by_currency": rows,
        "fit": {fit: fits.get(fit, 0) for fit in SALARY_FITS},
    }
