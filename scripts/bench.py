"""`elimu bench`: throughput and latency of the engagement pipeline, with its ceiling.

Every figure is measured in the same run as its baseline, on a broker and Redis of the
benchmark's own, so ratios are meaningful on a loaded or slower machine.

  elimu bench throughput [--events N] [--users U]   events/s through one worker vs raw aiokafka
  elimu bench latency [--rate R] [--seconds S]       produce→websocket p50/p99 at a steady rate
  elimu bench all                                    both, and the markdown for docs/benchmarks.md
  elimu bench match [--profiles N]                   posting→matches at population scale vs a full scan
  elimu bench fanout [--connections 100 1000]        one channel → N websockets vs 1 connection
  elimu bench memory [--users U]                     state bytes per 100k users (RAM and changelog)
  elimu bench quix [--events N]                      Quix Streams per-user count vs raw aiokafka
  elimu bench engine [--events N] [--users U]        the per-user agent's own work, no Kafka
  elimu bench match-live [--profiles N]              a posting to a matching user's websocket
  elimu bench risk [--populations] [--seed S]        the drop-off model and its candidates, in-process
  elimu bench cohort [--seed S]... [--start-stack]   an independent cohort through a live stack
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from api.auth import issue_token
from infra.net import free_port, wait_for_port
from scripts.bench_stack import (
    SECRET,
    RedisKind,
    Stack,
    bench_stack,
    produce_events,
    raw_consume_rate,
    spawn,
    stop,
    subscribe_paced,
    worker_rate,
)
from scripts.kafka_dist import BrokerKind
from scripts.simulator import TrafficModel
from streams.transactions import GUARANTEE_VAR

#: The configurations `elimu bench brokers` compares on the same data in one run.
BROKER_RUNS: tuple[tuple[str, BrokerKind, str], ...] = (
    ("tansu, at-least-once", "tansu", "at_least_once"),
    ("Apache Kafka, at-least-once", "kafka", "at_least_once"),
    ("Apache Kafka, exactly-once", "kafka", "exactly_once"),
)


def throughput(
    events: int,
    users: int,
    workers: int = 1,
    kind: BrokerKind = "tansu",
    guarantee: str | None = None,
    redis_kind: RedisKind = "single",
    slices: str | None = None,
) -> dict[str, Any]:
    with bench_stack(kind, redis_kind) as st:
        if guarantee:
            st.env[GUARANTEE_VAR] = guarantee
        asyncio.run(produce_events(st.kafka, events, users))
        raw = asyncio.run(raw_consume_rate(st.kafka, events))
        rate = worker_rate(st, events, workers, slices)
    return {
        "broker": kind,
        "redis": redis_kind,
        "guarantee": guarantee or "default",
        "events": events,
        "users": users,
        "workers": workers,
        "slices": slices or "all",
        "worker_eps": rate,
        "raw_aiokafka_eps": raw,
        "ratio": rate / raw,
    }


async def _latency_run(st: Stack, api: str, rate: float, seconds: float, users: int) -> list[float]:
    import websockets

    model = TrafficModel(users, 5, user_prefix="l-")
    token = issue_token(SECRET, "bench", "admin", 3600)
    sent_at: dict[str, float] = {}
    lat: list[float] = []
    ws_url = api.replace("http", "ws") + f"/v1/ws?token={token}"
    async with websockets.connect(ws_url, max_size=None) as ws:
        # Paced under the API's per-connection op rate (api/config.py), which refuses a burst.
        await subscribe_paced(ws, [f"user:{u}" for u in model.users])

        async def receive() -> None:
            async for raw in ws:
                now = time.perf_counter()
                msg = orjson.loads(raw)
                for eid in msg.get("data", {}).get("event_ids", []):
                    if eid in sent_at:
                        lat.append(now - sent_at.pop(eid))

        reader = asyncio.create_task(receive())
        producer = AIOKafkaProducer(bootstrap_servers=st.kafka, linger_ms=0, acks=1)
        await producer.start()
        try:
            total = int(rate * seconds)
            start = time.perf_counter()
            for i in range(total):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                m = model.behavior(int(time.time() * 1000))
                m.value["type"] = "lesson_complete"  # always awards XP, so always pushes
                k, v = m.encode()
                sent_at[m.value["event_id"]] = time.perf_counter()
                await producer.send("behavior-events", v, key=k)
            deadline = time.perf_counter() + 30
            while sent_at and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()
            reader.cancel()
    return lat


def latency(rate: float, seconds: float, users: int, kind: BrokerKind = "tansu") -> dict[str, Any]:
    with bench_stack(kind) as st:
        port = free_port()
        env = {**st.env, "ELIMU_API_PORT": str(port)}
        worker = spawn(["worker"], env, st.data_dir / "worker.log")
        api = spawn(["api"], env, st.data_dir / "api.log")
        try:
            wait_for_port(port, 60, api)
            api_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{api_url}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.2)
            lat = asyncio.run(_latency_run(st, api_url, rate, seconds, users))
        finally:
            stop(api)
            stop(worker)
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [float("nan")] * 99
    return {
        "rate": rate,
        "seconds": seconds,
        "received": len(lat),
        "sent": int(rate * seconds),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["match"]:
        from scripts.bench_match import main as match_main

        return match_main(argv[1:])
    if argv[:1] == ["cohort"]:
        from scripts.cohort_replay import main as cohort_main

        return cohort_main(argv[1:])
    if argv[:1] == ["risk"]:
        from scripts.bench_risk import main as risk_main

        return risk_main(argv[1:])
    if argv[:1] == ["fanout"]:
        from scripts.bench_fanout import main as fanout_main

        return fanout_main(argv[1:])
    if argv[:1] == ["memory"]:
        from scripts.bench_memory import main as memory_main

        return memory_main(argv[1:])
    if argv[:1] == ["match-live"]:
        from scripts.bench_match_live import main as match_live_main

        return match_live_main(argv[1:])
    if argv[:1] == ["engine"]:
        from scripts.bench_engine import main as engine_main

        return engine_main(argv[1:])
    if argv[:1] == ["quix"]:
        from scripts.bench_quix import main as quix_main

        return quix_main(argv[1:])
    p = argparse.ArgumentParser(prog="elimu bench")
    p.add_argument(
        "what", nargs="?", default="all", choices=("throughput", "latency", "all", "brokers", "redis")
    )
    p.add_argument("--broker", choices=("tansu", "kafka"), default="tansu", help="for throughput and latency")
    p.add_argument(
        "--guarantee", choices=("exactly_once", "at_least_once"), help="default: the broker's best"
    )
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=1, help="workers for the throughput run")
    p.add_argument("--slices", help="throughput: run only these slices (ELIMU_SLICES, e.g. engagement)")
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    if args.what == "brokers":
        # Same events, same users, one after another in this run: read the ratios.
        runs = results["brokers"] = [
            {"name": name, **throughput(args.events, args.users, args.workers, kind, guarantee)}
            for name, kind, guarantee in BROKER_RUNS
        ]
        base = runs[0]["worker_eps"]
        for r in runs:
            print(
                f"{r['name']:<30} {r['worker_eps']:>8,.0f} events/s"
                f" ({r['worker_eps'] / base:.2f}x the first);"
                f" raw aiokafka {r['raw_aiokafka_eps']:,.0f}/s (ratio {r['ratio']:.3f})",
                flush=True,
            )
        for kind in ("tansu", "kafka"):
            r = results[f"latency_{kind}"] = latency(args.rate, args.seconds, min(args.users, 100), kind)
            print(f"latency on {kind}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms", flush=True)
    if args.what == "redis":
        # The same events on one Redis, then on a three-master Redis Cluster, in this run.
        runs = results["redis"] = [
            throughput(args.events, args.users, args.workers, args.broker, args.guarantee, redis_kind)
            for redis_kind in ("single", "cluster")
        ]
        for r in runs:
            print(
                f"{r['redis']:<8} Redis: {r['worker_eps']:>8,.0f} events/s"
                f" ({r['worker_eps'] / runs[0]['worker_eps']:.2f}x one Redis) on {r['broker']}",
                flush=True,
            )
    if args.what in ("throughput", "all"):
        results["throughput"] = throughput(
            args.events, args.users, args.workers, args.broker, args.guarantee, slices=args.slices
        )
        t = results["throughput"]
        print(
            f"throughput: {t['worker_eps']:,.0f} events/s through {t['workers']} worker(s)"
            f" running {t['slices']} slices;"
            f" raw aiokafka {t['raw_aiokafka_eps']:,.0f}/s"
            f" (ratio {t['ratio']:.3f}) — {t['events']:,} events, {t['users']:,} users",
            flush=True,
        )
    if args.what in ("latency", "all"):
        # One connection watching 100 users' channels (the API's per-connection limit).
        results["latency"] = latency(args.rate, args.seconds, min(args.users, 100), args.broker)
        r = results["latency"]
        print(
            f"latency at {r['rate']:.0f} ev/s for {r['seconds']:.0f}s:"
            f" p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms,"
            f" max {r['max_ms']:.1f} ms ({r['received']}/{r['sent']} received)",
            flush=True,
        )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0
