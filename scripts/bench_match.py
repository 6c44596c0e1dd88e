"""`elimu bench match`: instant matching at population scale, against a full scan in the same run.

Builds N candidate profiles with a skewed skill vocabulary (a few skills are common, most are
rare, as on a real platform), then times ``match_posting`` through the skill index for a stream of
postings, and the same postings scored against every candidate (the scan the index avoids).
Both produce the same alerts (checked), so the ratio is the index's gain.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import orjson

from models.events import JobPosting
from models.matching import Candidate, CandidateIndex, match_posting, score
from models.time_units import DAY_MS

LOCATIONS = ["Nairobi", "Mombasa", "Kisumu", "Nakuru", "Eldoret", "Kampala", "Dar es Salaam", "Kigali"]
EDUCATION = ["certificate", "diploma", "bachelor", "bachelor", "master"]


def _vocabulary(size: int) -> list[str]:
    return [f"skill-{i}" for i in range(size)]


def _pick_skills(rng: random.Random, vocab: list[str], k: int) -> list[str]:
    # Zipf-like: skill i is chosen with weight 1/(i+1), so "skill-0" is everywhere and the tail is rare.
    weights = [1 / (i + 1) for i in range(len(vocab))]
    return list(dict.fromkeys(rng.choices(vocab, weights, k=k)))


def population(n: int, vocab: list[str], seed: int = 5) -> list[Candidate]:
    rng = random.Random(seed)
    return [
        Candidate(
            user_id=f"u-{i}",
            skills=tuple(_pick_skills(rng, vocab, rng.randint(2, 8))),
            location=rng.choice(LOCATIONS),
            experience_years=rng.choice([0, 0, 1, 1, 2, 3, 5]),
            education=rng.choice(EDUCATION),
            salary_expectation=rng.choice([None, 50_000, 70_000, 90_000]),
            currency="KES",
        )
        for i in range(n)
    ]


def postings(n: int, vocab: list[str], now_ms: int, seed: int = 6) -> list[JobPosting]:
    rng = random.Random(seed)
    return [
        JobPosting(
            job_id=f"j-{i}",
            title="Analyst",
            posted_at_ms=now_ms,
            location=rng.choice(LOCATIONS),
            skills=tuple(_pick_skills(rng, vocab[20:], rng.randint(3, 6))),  # beyond the ubiquitous few
            experience_years=rng.choice([0, 1, 2, 3]),
            education=rng.choice(EDUCATION),
            salary_min=40_000,
            salary_max=rng.choice([60_000, 80_000, 120_000]),
            currency="KES",
            deadline_ms=now_ms + rng.randint(1, 30) * DAY_MS,
        )
        for i in range(n)
    ]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(profiles: int, n_postings: int, scan_postings: int, vocab_size: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    vocab = _vocabulary(vocab_size)
    people = population(profiles, vocab)
    started = time.perf_counter()
    index = CandidateIndex()
    for c in people:
        index.upsert(c)
    build_s = time.perf_counter() - started
    jobs = postings(n_postings, vocab, now)

    indexed_ms: list[float] = []
    alerts = candidates = scored = 0
    t0 = time.perf_counter()
    for job in jobs:
        s = time.perf_counter()
        matches = match_posting(job, index, now)
        indexed_ms.append((time.perf_counter() - s) * 1000)
        alerts += len(matches)
        candidates += len(index.candidates_for(job))
        scored += len(index.shortlist(job, 60))
    indexed_total = time.perf_counter() - t0

    # The full scan is slow by construction; a sample of the same postings is enough for its rate.
    scan_ms: list[float] = []
    for job in jobs[:scan_postings]:
        s = time.perf_counter()
        scanned = [m for c in people if (m := score(job, c, now)) is not None and m.match_score >= 60]
        scan_ms.append((time.perf_counter() - s) * 1000)
        indexed = match_posting(job, index, now)
        assert {m.user_id for m in scanned} == {m.user_id for m in indexed}, "index missed a candidate"
    return {
        "profiles": profiles,
        "postings": n_postings,
        "index_build_s": round(build_s, 2),
        "indexed_p50_ms": round(statistics.median(indexed_ms), 3),
        "indexed_p99_ms": round(_pct(indexed_ms, 0.99), 3),
        "indexed_postings_per_s": round(n_postings / indexed_total, 1),
        "mean_candidates_per_posting": round(candidates / n_postings, 1),
        "mean_scored_per_posting": round(scored / n_postings, 1),
        "mean_alerts_per_posting": round(alerts / n_postings, 1),
        "scan_p50_ms": round(statistics.median(scan_ms), 1),
        "scan_postings_per_s": round(len(scan_ms) / (sum(scan_ms) / 1000), 2),
        "speedup_vs_scan": round(statistics.median(scan_ms) / statistics.median(indexed_ms), 1),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench match")
    p.add_argument("--profiles", type=int, default=100_000)
    p.add_argument("--postings", type=int, default=2_000)
    p.add_argument("--scan-postings", type=int, default=20)
    p.add_argument("--skills", type=int, default=400, help="size of the skill vocabulary")
    args = p.parse_args(argv)
    r = run(args.profiles, args.postings, args.scan_postings, args.skills)
    print(
        f"matching at {r['profiles']:,} profiles: p50 {r['indexed_p50_ms']} ms,"
        f" p99 {r['indexed_p99_ms']} ms per posting, {r['indexed_postings_per_s']:,} postings/s"
        f" ({r['mean_candidates_per_posting']:,} share a skill, {r['mean_scored_per_posting']:,} scored,"
        f" {r['mean_alerts_per_posting']} alerts each);"
        f" full scan p50 {r['scan_p50_ms']} ms"
        f" → index {r['speedup_vs_scan']}x faster",
        flush=True,
    )
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
    return 0
