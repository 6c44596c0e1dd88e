"""What every benchmark runs on: a broker and a Redis of its own, the engine's processes, and
the same simulator events, so each figure has its baseline from the same run.

Shared by `elimu bench` (scripts/bench.py) and the benchmarks it dispatches to; it imports none
of them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.kafka import ensure_topics
from infra.net import free_port
from scripts.embedded import start_broker, start_redis
from scripts.kafka_dist import BrokerKind
from scripts.redis_cluster import RedisClusterService, start_redis_cluster
from scripts.service import Service
from scripts.simulator import TrafficModel

SECRET = "bench-secret-not-for-production-0123456789"
PARTITIONS = 8


@dataclass
class Stack:
    kafka: str
    redis: str
    data_dir: Path
    env: dict[str, str]


RedisKind = Literal["single", "cluster"]


@contextmanager
def bench_stack(kind: BrokerKind = "tansu", redis_kind: RedisKind = "single") -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="elimu-bench-") as d:
        data = Path(d)
        broker: Service = start_broker(kind, data, log_path=data / "kafka.log")
        redis: Service | RedisClusterService = (
            start_redis(data / "redis") if redis_kind == "single" else start_redis_cluster(data / "redis")
        )
        try:
            asyncio.run(ensure_topics(broker.address, PARTITIONS))
            env = dict(
                os.environ,
                ELIMU_KAFKA=broker.address,
                ELIMU_REDIS=redis.address,
                ELIMU_DATA_DIR=d,
                ELIMU_SECRET=SECRET,
                ELIMU_PARTITIONS=str(PARTITIONS),
                ELIMU_LOG_LEVEL="warn",
            )
            yield Stack(broker.address, redis.address, data, env)
        finally:
            redis.stop()
            broker.stop()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def produce_events(kafka: str, n: int, users: int, seed: int = 11) -> None:
    model = TrafficModel(users, seed, user_prefix="b-")
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20, max_batch_size=512 * 1024, acks=1)
    await producer.start()
    try:
        now = int(time.time() * 1000)
        futs = []
        for i in range(n):
            # Spread over the last 10 days so streaks, days and periods all do real work.
            m = model.behavior(now - (n - i) * (10 * 86_400_000 // n))
            k, v = m.encode()
            futs.append(await producer.send("behavior-events", v, key=k))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def raw_consume_rate(kafka: str, n: int) -> float:
    """The ceiling: a bare aiokafka consumer decoding every value with orjson."""
    consumer = AIOKafkaConsumer(
        "behavior-events",
        bootstrap_servers=kafka,
        group_id=f"raw-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen, start = 0, 0.0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not start and batch:
                start = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    orjson.loads(m.value)
                seen += len(msgs) if batch else 0
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def processed(metrics_url: str, labels: str = "") -> float:
    """A worker's ``elimu_events_processed_total`` from its metrics page, summed over the
    series whose labels start with ``labels`` (all of them by default); 0 while it is not up."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    prefix = "elimu_events_processed_total{" + labels
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def pct(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nan when empty)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def worker_rate(st: Stack, events: int, workers: int = 1, slices: str | None = None) -> float:
    """Events/s of ``workers`` fresh workers draining the ``events`` already in ``behavior-events``
    (from their first processed event to the last: start-up and group join excluded).
    ``slices``: ``ELIMU_SLICES`` for them (e.g. "engagement": gamification alone)."""
    env = {**st.env, "ELIMU_SESSION_TIMEOUT": "6", **({"ELIMU_SLICES": slices} if slices else {})}
    ports = [free_port() for _ in range(workers)]
    procs = [
        spawn(["worker"], {**env, "ELIMU_WORKER_PORT": str(p)}, st.data_dir / f"worker-{i}.log")
        for i, p in enumerate(ports)
    ]
    try:
        urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]
        deadline = time.monotonic() + 600
        t0 = n0 = None
        while time.monotonic() < deadline:
            n = sum(processed(u) for u in urls)
            now = time.perf_counter()
            if t0 is None and n > 0:
                t0, n0 = now, n
            if n >= events:
                assert t0 is not None and n0 is not None
                return (events - n0) / max(now - t0, 1e-9)
            if any(p.poll() is not None for p in procs):
                raise RuntimeError((st.data_dir / "worker-0.log").read_text()[-3000:])
            time.sleep(0.05)
        raise TimeoutError("the worker did not finish in time")
    finally:
        for p in procs:
            stop(p)


def emit(result: dict[str, Any], json_path: str | Path | None) -> None:
    """Print ``result`` as indented JSON, and write it to ``json_path`` too when given."""
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if json_path:
        Path(json_path).write_text(text + "\n")
    print(text)


async def subscribe_paced(ws: Any, channels: Iterable[str]) -> None:
    """Subscribe one websocket to ``channels``, one at a time and under the API's per-connection
    op rate (api/config.py), which refuses a burst."""
    from api.config import ApiConfig

    pace = 1.0 / ApiConfig().ws_op_rate_per_s
    for channel in channels:
        await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("op") != "subscribed":
            raise RuntimeError(f"subscribe failed: {reply}")
        await asyncio.sleep(pace)
