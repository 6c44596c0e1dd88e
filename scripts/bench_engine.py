"""`elimu bench engine`: the per-user agent's own work per event, without Kafka.

What it measures: the worker's per-user agent exactly as ``streams.engine.build_engine`` wires it
(career, engagement, growth, risk and recommendations slices under one ``BatchRunner``, the
shipped rule book), fed the same simulator traffic as ``elimu bench throughput`` in batches of one
partition's fetch (``--batch``, the worker's ``MAX_BATCH``). Its Redis writes go to a real
``redis-server`` of the bench's own (the serving script runs there, as in production); its Kafka
sends complete at once, and its stores are ``MemoryStore``s that encode every flushed state as the
changelog would.
So the figure is the ceiling our own code sets on one worker, whatever the broker.

Baseline in the same run: decoding the same record values with orjson (what any consumer pays).
Run it under ``py-spy record`` to see where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from infra import gc_tuning, topics
from infra.channels import ChannelLog
from infra.redis_conn import connect
from infra.settings import DEFAULT_RULES
from models.risk_state import RiskSettings
from models.rules import Rules
from models.time_units import DAY_MS
from scripts.embedded import start_redis
from scripts.simulator import TrafficModel
from streams.app import MAX_BATCH
from streams.engine import Ports, StateTable, build_engine
from streams.records import Record, owner_partition
from streams.runner import BatchRunner
from streams.serving import ServingWriter
from streams.stores import MemoryStore

PARTITIONS = 8
SPAN_MS = 10 * DAY_MS


def batches(events: int, users: int, batch: int, seed: int = 11) -> list[list[Record]]:
    """The throughput bench's traffic (10 days of event time, in time order), cut as a consumer
    fetches it: per partition, up to ``batch`` records, partitions taken in turn."""
    model = TrafficModel(users, seed, user_prefix="b-")
    now = int(time.time() * 1000)
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for i in range(events):
        ts = now - (events - i) * (SPAN_MS // events)
        key, value = model.behavior(ts).encode()
        p = owner_partition(key, PARTITIONS)
        by_partition[p].append(Record(topics.BEHAVIOR_EVENTS, p, len(by_partition[p]), key, value, ts))
    out: list[list[Record]] = []
    queues = {p: [rs[i : i + batch] for i in range(0, len(rs), batch)] for p, rs in by_partition.items()}
    while any(queues.values()):
        for q in queues.values():
            if q:
                out.append(q.pop(0))
    return out


async def _sent(*_: Any) -> Any:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def run_engine(fetches: Sequence[Sequence[Record]], redis_url: str) -> float:
    """Events/s through the per-user agent's runner."""
    rules = Rules.from_toml(DEFAULT_RULES.read_text())
    redis = connect(redis_url)
    channels = ChannelLog(redis)
    serving = ServingWriter(redis, channels, rules)
    await serving.start()
    # With the client: the recommendations slice reads its last pushes from Redis, as in production.
    ports = Ports(_sent, serving, PARTITIONS, lambda topic: PARTITIONS, b"bench-secret", redis)

    def stores(table: StateTable) -> MemoryStore[Any]:
        return MemoryStore(
            table.name,
            1 if table.single_partition else PARTITIONS,
            encode=lambda state: orjson.dumps(state.to_dict()),
        )

    engine = build_engine(rules, RiskSettings(), 7 * DAY_MS, ports, stores)
    runner = BatchRunner(dict(engine.agents())["engagement"])
    n = sum(len(f) for f in fetches)
    start = time.perf_counter()
    for fetch in fetches:
        await runner.run(fetch)
    elapsed = time.perf_counter() - start
    await redis.aclose()
    return n / elapsed


def decode_rate(fetches: Sequence[Sequence[Record]]) -> float:
    n = sum(len(f) for f in fetches)
    start = time.perf_counter()
    for fetch in fetches:
        for r in fetch:
            orjson.loads(r.value or b"")
    return n / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench engine")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=MAX_BATCH, help="records per fetched batch")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args(argv)
    gc_tuning.tune()  # as the worker does
    fetches = batches(args.events, args.users, args.batch)
    with tempfile.TemporaryDirectory(prefix="elimu-bench-engine-") as tmp:
        redis = start_redis(Path(tmp) / "redis")
        try:
            eps = asyncio.run(run_engine(fetches, redis.address))
        finally:
            redis.stop()
    ceiling = decode_rate(fetches)
    result = {
        "events": args.events,
        "users": args.users,
        "batch": args.batch,
        "fetches": len(fetches),
        "engine_eps": eps,
        "decode_eps": ceiling,
        "ratio": eps / ceiling,
        "us_per_event": 1e6 / eps,
    }
    print(
        f"engine (per-user agent, no Kafka): {eps:,.0f} events/s ({1e6 / eps:.0f} µs/event);"
        f" orjson decode of the same values {ceiling:,.0f}/s (ratio {eps / ceiling:.3f})"
        f" — {args.events:,} events, {args.users:,} users, {len(fetches)} fetches",
        flush=True,
    )
    if args.json:
        args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0
