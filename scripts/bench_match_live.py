"""`elimu bench match-live`: a new posting to a matching user's websocket, at population scale.

What is measured and why: the instant-matching promise is end to end: a posting produced to
``job-postings`` goes through the market slice (validated, one copy per partition on
``job-fanout``), the career slice on every partition (its candidate index, scoring, the alert
recorded in the user's career state, durable before it is sent) and the user's channel, to the
user's websocket. Here a worker and an API run on the benchmark's own broker and Redis; the
population of ``elimu bench match`` (``--profiles`` candidates over a Zipf-skewed vocabulary) is
produced to ``user-profiles`` and ingested first; one websocket client watches, for each posting,
the user it matches best (computed in-process with the same matcher, so the watched user is far
above the alert threshold). Postings are then produced at a steady ``--rate``; per posting the
latency is from just before ``send()`` to the watched user's ``match_alert`` arriving.

Baseline in the same run: the in-process matcher (``models.matching.match_posting``) on the same
postings against the same population: the part of the path no transport can remove.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from api.auth import issue_token
from infra import topics
from infra.net import free_port, wait_for_port
from models.events import JobPosting, format_ts
from models.matching import Candidate, CandidateIndex, match_posting
from scripts.bench_match import _vocabulary, population, postings
from scripts.bench_stack import SECRET, Stack, bench_stack, emit, pct, processed, spawn, stop, subscribe_paced


def _profile(c: Candidate) -> dict[str, Any]:
    return {
        "user_id": c.user_id,
        "timezone": "Africa/Nairobi",
        "location": c.location,
        "skills": list(c.skills),
        "experience_years": c.experience_years,
        "education": c.education,
        "salary_expectation": c.salary_expectation,
        "currency": c.currency,
    }


def _posting(job: JobPosting, now_ms: int) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "title": job.title,
        "posted_at": format_ts(now_ms),
        "location": job.location,
        "skills": list(job.skills),
        "experience_years": job.experience_years,
        "education": job.education,
        "salary_min": job.salary_min,
        "salary_max": job.salary_max,
        "currency": job.currency,
        "deadline": format_ts(now_ms + (job.deadline_ms or now_ms) - job.posted_at_ms),
    }


async def _produce(kafka: str, topic: str, records: list[tuple[str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20, max_batch_size=512 * 1024, acks=1)
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(v), key=k.encode()) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _measure(
    st: Stack, api_url: str, jobs: list[JobPosting], watch: dict[str, str], rate: float
) -> tuple[dict[str, float], float]:
    """Send ``jobs`` (the first is a warm-up) at ``rate``; latency (s) per job id to its watched
    user's alert, and the warm-up's."""
    import websockets

    token = issue_token(SECRET, "bench-match", "admin", 3600)
    url = api_url.replace("http", "ws") + f"/v1/ws?token={token}"
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    async with websockets.connect(url, max_size=None) as ws:
        await subscribe_paced(ws, [f"user:{user}" for user in sorted(set(watch.values()))])

        async def receive() -> None:
            async for raw in ws:
                now = time.perf_counter()
                msg = orjson.loads(raw)
                if msg.get("type") != "match_alert":
                    continue
                data = msg.get("data", {})
                job_id = data.get("job_id")
                if job_id in watch and watch[job_id] == data.get("user_id"):
                    arrived.setdefault(job_id, now)

        reader = asyncio.create_task(receive())
        producer = AIOKafkaProducer(bootstrap_servers=st.kafka, linger_ms=0, acks=1)
        await producer.start()
        try:
            warm, rest = jobs[0], jobs[1:]
            # The first posting builds each partition's candidate index from the career table.
            sent[warm.job_id] = time.perf_counter()
            warm_value = orjson.dumps(_posting(warm, _now()))
            await producer.send(topics.JOB_POSTINGS, warm_value, key=warm.job_id.encode())
            deadline = time.perf_counter() + 120
            while warm.job_id not in arrived and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            start = time.perf_counter()
            for i, job in enumerate(rest):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                value = orjson.dumps(_posting(job, _now()))
                sent[job.job_id] = time.perf_counter()
                await producer.send(topics.JOB_POSTINGS, value, key=job.job_id.encode())
            deadline = time.perf_counter() + 30
            while len(arrived) < len(jobs) and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()
            reader.cancel()
    warm_s = arrived.get(jobs[0].job_id, float("nan")) - sent[jobs[0].job_id]
    return {j: arrived[j] - sent[j] for j in arrived if j != jobs[0].job_id}, warm_s


def _now() -> int:
    return int(time.time() * 1000)


def run(profiles: int, n_postings: int, rate: float, vocab_size: int) -> dict[str, Any]:
    vocab = _vocabulary(vocab_size)
    people = population(profiles, vocab)
    jobs = postings(n_postings + 1, vocab, _now(), seed=16)
    index = CandidateIndex()
    for c in people:
        index.upsert(c)
    # Baseline: the matcher alone, and each posting's best match (the user to watch).
    watch: dict[str, str] = {}
    inproc: list[float] = []
    for job in jobs:
        t = time.perf_counter()
        matches = match_posting(job, index, _now())
        inproc.append(time.perf_counter() - t)
        free = [m for m in matches if m.user_id not in watch.values()]
        if free and len(set(watch.values())) < 100:  # one connection: at most 100 channels
            watch[job.job_id] = max(free, key=lambda m: m.match_score).user_id
    jobs = [j for j in jobs if j.job_id in watch]
    with bench_stack() as st:
        port, wport = free_port(), free_port()
        env = {**st.env, "ELIMU_API_PORT": str(port)}
        worker = spawn(["worker"], {**env, "ELIMU_WORKER_PORT": str(wport)}, st.data_dir / "worker.log")
        api = spawn(["api"], env, st.data_dir / "api.log")
        try:
            wait_for_port(port, 60, api)
            t = time.perf_counter()
            asyncio.run(_produce(st.kafka, topics.USER_PROFILES, [(c.user_id, _profile(c)) for c in people]))
            metrics = f"http://127.0.0.1:{wport}/metrics"
            deadline = time.monotonic() + 900
            while processed(metrics, f'agent="engagement",topic="{topics.USER_PROFILES}"') < profiles:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError((st.data_dir / "worker.log").read_text()[-3000:])
                time.sleep(0.2)
            ingest_s = time.perf_counter() - t
            latencies, warm_s = asyncio.run(_measure(st, f"http://127.0.0.1:{port}", jobs, watch, rate))
        finally:
            stop(api)
            stop(worker)
    lat = sorted(latencies.values())
    base = sorted(inproc)
    return {
        "profiles": profiles,
        "postings": len(jobs) - 1,
        "rate": rate,
        "ingest_s": round(ingest_s, 1),
        "first_posting_s": round(warm_s, 2),
        "delivered": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else float("nan"),
        "p99_ms": round(pct(lat, 0.99) * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1) if lat else float("nan"),
        "in_process_p50_ms": round(statistics.median(base) * 1000, 2),
        "in_process_p99_ms": round(pct(base, 0.99) * 1000, 2),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench match-live")
    p.add_argument("--profiles", type=int, default=100_000)
    p.add_argument("--postings", type=int, default=100)
    p.add_argument("--rate", type=float, default=2.0, help="postings per second")
    p.add_argument("--skills", type=int, default=400, help="size of the skill vocabulary")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    r = run(args.profiles, args.postings, args.rate, args.skills)
    print(
        f"posting -> matching user's websocket at {r['profiles']:,} profiles: p50 {r['p50_ms']} ms,"
        f" p99 {r['p99_ms']} ms, max {r['max_ms']} ms ({r['delivered']}/{r['postings']} delivered);"
        f" in-process matcher on the same postings p50 {r['in_process_p50_ms']} ms,"
        f" p99 {r['in_process_p99_ms']} ms; profiles ingested in {r['ingest_s']} s",
        flush=True,
    )
    emit(r, args.json)
    return 0
