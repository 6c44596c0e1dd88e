"""Soak: a long run at a steady rate with a trickle of hostile input; memory must stay flat.

``make soak`` (``pytest -m slow``): a broker, Redis, one worker and one API; ``ELIMU_SOAK_RATE``
events/s (default 1,000) for ``ELIMU_SOAK_S`` seconds (default 1,800) over ``ELIMU_SOAK_USERS``
users (default 1,000), about 1% of it hostile (oversized values, ids with control characters,
unsigned ``grant`` commands, event types nobody knows). Every ``ELIMU_SOAK_SAMPLE_S`` seconds
(default 30) it samples the worker's and the API's RSS, Redis ``used_memory``, the dead letters
and the worker's lag, and writes them to ``ELIMU_SOAK_REPORT`` (default ``.elimu/soak.md``, with
the samples as JSON beside it).

Flat memory needs a working set that has stopped growing, and two honest parts of it grow for a
while by design: each user's dedup memory (the ids of the last 7 days of *event time*) and each
channel's history (up to its 500-message / 256 KiB cap). So event time runs fast: it starts
``3 x 7`` days before the end of the run and reaches now as production stops (a replay of three
weeks, ~1,000x at the defaults), putting the dedup windows in steady state after the first third;
and 1,000 users at 1,000 events/s fill their channels' histories within that first third too.
With 5,000 users the histories would still be filling at the end of 30 minutes: Redis grows then
because the serving view is not full yet, not because anything leaks.

Asserted: the worker's RSS and Redis ``used_memory`` averaged over the last third of the samples
are less than ``ELIMU_SOAK_MAX_GROWTH`` (default 10%) above the middle third's (the first third is
warm-up); the lag at the end is bounded and drains; every refused record is a dead letter; the
processes stay up.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from infra.kafka import ensure_topics
from infra.lag import read_offsets
from infra.net import free_port
from infra.topics import BEHAVIOR_EVENTS, DEAD_LETTER, USER_COMMANDS
from models.ingest_policy import USER_EVENT_TYPES
from scripts.embedded import start_broker, start_redis
from scripts.kafka_dist import BrokerKind
from scripts.service import Service
from streams.app import APP_ID
from tests.conftest import wait_until
from tests.integration.processes import Proc, stack_env, start_api, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RATE = int(os.environ.get("ELIMU_SOAK_RATE") or 1000)
DURATION_S = float(os.environ.get("ELIMU_SOAK_S") or 1800)
USERS = int(os.environ.get("ELIMU_SOAK_USERS") or 1000)
#: Event time covered by the run (see the module docstring): three dedup windows.
EVENT_SPAN_MS = 3 * 7 * 86_400_000
SAMPLE_S = float(os.environ.get("ELIMU_SOAK_SAMPLE_S") or 30)
REPORT = Path(os.environ.get("ELIMU_SOAK_REPORT") or ".elimu/soak.md")
MAX_GROWTH = float(os.environ.get("ELIMU_SOAK_MAX_GROWTH") or 0.10)
HOSTILE_SHARE = 0.01
#: Producer ticks per second: the rate is held per tick, so a slow tick is caught up at once.
TICKS_PER_S = 10
PARTITIONS = 4
#: Lag allowed at the end of production: what the worker takes in this many seconds of input
#: (Faust commits every 2.8 s, so some lag is always in flight).
END_LAG_S = 30


@dataclass
class Sample:
    t_s: float
    produced: int
    hostile: int
    worker_rss_kb: int
    api_rss_kb: int
    redis_used_memory: int
    dead_letters: int
    lag: int


def rss_kb(proc: Proc) -> int:
    """The process's resident set (VmRSS) from /proc, in kB."""
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {proc.proc.pid}")


class Offsets:
    """Dead letters written, and the worker's lag on behavior-events. The dead letters are read
    by a consumer of our own: the lag reader only looks up the partitions some group has
    committed, and no group reads ``dead-letter``."""

    def __init__(self, kafka: str) -> None:
        self.kafka = kafka
        self.consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
        self.behavior = [TopicPartition(BEHAVIOR_EVENTS, p) for p in range(PARTITIONS)]
        self.dead = TopicPartition(DEAD_LETTER, 0)
        self._dead_seen = 0
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=kafka, enable_auto_commit=False, isolation_level="read_committed"
        )

    async def start(self) -> None:
        await self.consumer.start()
        await self._reader.start()
        self._reader.assign([self.dead])
        await self._reader.seek_to_beginning(self.dead)

    async def stop_reader(self) -> None:
        await self._reader.stop()

    async def _committed_records(self) -> int:
        """Dead letters read so far (read_committed), reading on to the current stable end."""
        end = (await self._reader.end_offsets([self.dead]))[self.dead]
        while await self._reader.position(self.dead) < end:
            batch = await self._reader.getmany(self.dead, timeout_ms=1000)
            self._dead_seen += len(batch.get(self.dead, []))
        return self._dead_seen

    async def read(self) -> tuple[int, int]:
        # Dead letters as a read_committed reader counts them: under exactly-once (Apache Kafka)
        # each batch that dead-letters adds a commit marker, so the end offset overcounts.
        dead = await self._committed_records()
        # Ends and commits from one snapshot, the way ``elimu lag`` reads them. A partition whose
        # commit is at or past the end it reports counts as no lag (seen on Tansu after a drain).
        snap = await asyncio.to_thread(read_offsets, self.kafka)
        lag = sum(
            max(
                0,
                snap.ends.get((tp.topic, tp.partition), 0)
                - snap.committed.get((APP_ID, tp.topic, tp.partition), 0),
            )
            for tp in self.behavior
        )
        return dead, lag


class Traffic:
    """Honest events over ``USERS`` users, and the hostile trickle (counted by kind; the kinds
    that must be dead-lettered are known, so the dead-letter count can be checked exactly)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        #: Event time = wall time shifted back by the span and run fast, to end at now.
        self.started = time.time()
        self.speedup = EVENT_SPAN_MS / (DURATION_S * 1000)
        self.users = [f"soak-{i}" for i in range(USERS)]
        self.types = sorted(USER_EVENT_TYPES)
        self.sent = 0
        self.hostile: Counter[str] = Counter()

    def record(self) -> tuple[str, bytes | None, bytes]:
        self.sent += 1
        if self.rng.random() < HOSTILE_SHARE:
            return self.hostile_record()
        user = self.rng.choice(self.users)
        event = {
            "event_id": uuid.uuid4().hex,
            "user_id": user,
            "type": self.rng.choice(self.types),
            "ts": self.event_time_ms() - self.rng.randrange(0, 60_000),
            "session_id": f"s-{user}",
            "props": {"lesson_id": f"L{self.rng.randrange(100)}", "score": self.rng.randrange(101)},
        }
        return BEHAVIOR_EVENTS, user.encode(), orjson.dumps(event)

    def event_time_ms(self) -> int:
        elapsed_ms = (time.time() - self.started) * 1000
        return int(self.started * 1000 - EVENT_SPAN_MS + elapsed_ms * self.speedup)

    def hostile_record(self) -> tuple[str, bytes | None, bytes]:
        kind = self.rng.choice(["oversized", "control_id", "forged_grant", "unknown_type"])
        self.hostile[kind] += 1
        user = self.rng.choice(self.users)
        now = int(time.time() * 1000)
        if kind == "oversized":
            return BEHAVIOR_EVENTS, user.encode(), b"\x01" * 70_000
        if kind == "control_id":
            bad = f"{user}\x00\x1b"
            event = {"event_id": uuid.uuid4().hex, "user_id": bad, "type": "lesson_complete", "ts": now}
            return BEHAVIOR_EVENTS, None, orjson.dumps(event)
        if kind == "forged_grant":
            grant = {
                "command_id": f"{user}:grant:{uuid.uuid4().hex}",
                "type": "grant",
                "user_id": user,
                "ts": now,
                "grant_id": uuid.uuid4().hex,
                "amount": 10_000,
                "reason": "forged",
            }
            return USER_COMMANDS, user.encode(), orjson.dumps(grant)  # unsigned
        # A type nobody defined: kept for analytics, awards nothing, not an error; each is new,
        # which is what would grow a state that kept a counter per type without a bound.
        event = {
            "event_id": uuid.uuid4().hex,
            "user_id": user,
            "type": f"t-{uuid.uuid4().hex[:12]}",
            "ts": self.event_time_ms(),  # the run's event time: `now` would jump the watermark
        }
        return BEHAVIOR_EVENTS, user.encode(), orjson.dumps(event)

    @property
    def must_dead_letter(self) -> int:
        return sum(n for kind, n in self.hostile.items() if kind != "unknown_type")


@dataclass
class SoakStack:
    kafka: Service
    redis: Service
    worker: Proc
    api: Proc
    url: str

    def assert_alive(self) -> None:
        # The embedded Tansu broker keeps every record of every topic in memory (changelogs
        # included, uncompacted); a long run at this rate can exhaust it. Say so, not "timeout".
        assert self.kafka.proc.poll() is None, (
            f"the broker exited ({self.kafka.proc.returncode}); see its log"
        )
        assert self.worker.alive(), f"worker died:\n{self.worker.tail()}"
        assert self.api.alive(), f"API died:\n{self.api.tail()}"


@pytest.fixture
def soak_stack(tmp_path: Path) -> Iterator[SoakStack]:
    # Apache Kafka by default: it keeps its topics on disk, where Tansu holds every record of a
    # 30-minute run in memory and runs out at ~20 minutes (ELIMU_SOAK_BROKER=tansu to see it).
    kind: BrokerKind = "tansu" if os.environ.get("ELIMU_SOAK_BROKER") == "tansu" else "kafka"
    broker = start_broker(kind, tmp_path, log_path=tmp_path / "kafka.log")
    redis = start_redis(tmp_path / "redis", log_path=tmp_path / "redis.log")
    worker = api = None
    try:
        asyncio.run(ensure_topics(broker.address, PARTITIONS))
        env = stack_env(
            broker.address,
            redis.address,
            tmp_path / "data",
            ELIMU_SESSION_TIMEOUT="6",
            ELIMU_WORKER_PORT=str(free_port()),
            ELIMU_LOG_LEVEL="warn",  # a long run's log at info is mostly noise
        )
        worker = start_worker(env, tmp_path / "worker.log")
        api, url = start_api(env, tmp_path / "api.log")
        yield SoakStack(broker, redis, worker, api, url)
    finally:
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        redis.stop()
        broker.stop()


def key_kind(key: str) -> str:
    """A Redis key's family: ``u:state``, ``ch:user:log``, ``lb:daily``... (ids left out)."""
    if key.startswith("elimu:u:{"):
        return "u:" + key.rsplit(":", 1)[-1]
    if key.startswith("elimu:ch:{"):
        channel = key[len("elimu:ch:{") : key.rindex("}")]
        return f"ch:{channel.split(':', 1)[0]}:{key.rsplit('}:', 1)[-1].split(':', 1)[0]}"
    return ":".join(key.split(":")[1:3])


async def redis_breakdown(redis: Redis, limit: int = 20_000) -> dict[str, dict[str, int]]:
    """Keys and bytes (``MEMORY USAGE``) by family, over the first ``limit`` keys SCAN returns."""
    out: dict[str, dict[str, int]] = {}
    seen = 0
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        family = out.setdefault(key_kind(key), {"keys": 0, "bytes": 0})
        family["keys"] += 1
        family["bytes"] += int(await redis.memory_usage(key) or 0)
        seen += 1
        if seen >= limit:
            break
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))


def thirds(values: list[float]) -> tuple[float, float]:
    """Mean of the middle third and of the last third of ``values``."""
    n = len(values) // 3
    assert n >= 1, f"too few samples ({len(values)}) for thirds: run longer or sample more often"
    return statistics.fmean(values[n : 2 * n]), statistics.fmean(values[-n:])


def write_report(
    samples: list[Sample],
    traffic: Traffic,
    verdict: dict[str, Any],
    breakdown: dict[str, dict[str, int]] | None = None,
) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.with_suffix(".json").write_bytes(
        orjson.dumps(
            {
                "rate": RATE,
                "duration_s": DURATION_S,
                "users": USERS,
                "hostile": dict(traffic.hostile),
                "verdict": verdict,
                "redis_by_key_family": breakdown,
                "samples": [asdict(s) for s in samples],
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    lines = [
        f"# Soak: {RATE} events/s for {DURATION_S:.0f} s over {USERS} users",
        "",
        f"Hostile input (~{HOSTILE_SHARE:.0%}): {dict(traffic.hostile)}; produced {traffic.sent}.",
        "",
        "| t (s) | produced | worker RSS (MB) | API RSS (MB) | Redis used (MB) | dead letters | lag |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.t_s:.0f} | {s.produced} | {s.worker_rss_kb / 1024:.1f} | {s.api_rss_kb / 1024:.1f} | "
        f"{s.redis_used_memory / 2**20:.1f} | {s.dead_letters} | {s.lag} |"
        for s in samples
    ]
    lines += ["", "Verdict (last third over middle third):", ""]
    lines += [f"- {name}: {value}" for name, value in verdict.items()]
    if breakdown:
        lines += ["", "Redis at the end, by key family (MEMORY USAGE):", "", "| family | keys | MB |"]
        lines += ["|---|---:|---:|"]
        lines += [f"| {k} | {v['keys']} | {v['bytes'] / 2**20:.1f} |" for k, v in breakdown.items()]
    REPORT.write_text("\n".join(lines) + "\n")


@pytest.mark.timeout(int(DURATION_S) + 900)
async def test_memory_stays_flat_under_steady_load_with_hostile_input(soak_stack: SoakStack) -> None:
    stack = soak_stack
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:

        async def ready() -> bool:
            stack.assert_alive()
            return (await http.get("/readyz")).status_code == 200

        await wait_until(ready, timeout=90, what="/readyz")

    traffic = Traffic(seed=int(os.environ.get("ELIMU_SOAK_SEED") or 1))
    redis = Redis.from_url(stack.redis.address)
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka.address, acks="all", linger_ms=20, max_request_size=2**20
    )
    await producer.start()
    kafka_offsets = Offsets(stack.kafka.address)
    await kafka_offsets.start()
    samples: list[Sample] = []
    start = time.monotonic()

    async def sample() -> None:
        stack.assert_alive()
        dead, lag = await kafka_offsets.read()
        info = await redis.info("memory")
        samples.append(
            Sample(
                t_s=round(time.monotonic() - start, 1),
                produced=traffic.sent,
                hostile=sum(traffic.hostile.values()),
                worker_rss_kb=rss_kb(stack.worker),
                api_rss_kb=rss_kb(stack.api),
                redis_used_memory=int(info["used_memory"]),
                dead_letters=dead,
                lag=lag,
            )
        )
        write_report(samples, traffic, {"status": "running"})  # a run cut short still reports

    try:
        per_tick = RATE / TICKS_PER_S
        tick = 0
        next_sample = SAMPLE_S
        while (elapsed := time.monotonic() - start) < DURATION_S:
            # Pacing a load generator, not synchronising: each tick sends its share of the rate,
            # then waits for the tick's slot (a late tick sends at once, catching up).
            due = int((tick + 1) * per_tick) - int(tick * per_tick)
            for _ in range(due):
                topic, key, value = traffic.record()
                await producer.send(topic, value, key=key)
            tick += 1
            if elapsed >= next_sample:
                await sample()
                next_sample += SAMPLE_S
            await asyncio.sleep(max(0.0, start + tick / TICKS_PER_S - time.monotonic()))
        await producer.flush()
        await sample()
        end_lag = samples[-1].lag

        # After production: the lag drains and every refused record is a dead letter.
        last = (-1, -1)

        async def drained() -> bool:
            stack.assert_alive()
            nonlocal last
            last = await kafka_offsets.read()
            dead, lag = last
            return lag == 0 and dead >= traffic.must_dead_letter

        try:
            await wait_until(drained, timeout=180, interval=1.0, what="lag drained, dead letters written")
        except AssertionError as exc:
            raise AssertionError(
                f"(dead letters, lag) = {last}, expected ({traffic.must_dead_letter}, 0); see {REPORT}"
            ) from exc
        await sample()
        breakdown = await redis_breakdown(redis)
    finally:
        await producer.stop()
        await kafka_offsets.consumer.stop()
        await kafka_offsets.stop_reader()
        await redis.aclose()

    during = samples[:-1]  # the drained sample is not part of the steady state
    worker_mid, worker_last = thirds([s.worker_rss_kb for s in during])
    redis_mid, redis_last = thirds([s.redis_used_memory for s in during])
    verdict = {
        "worker RSS growth": f"{worker_last / worker_mid - 1:+.1%}",
        "Redis used_memory growth": f"{redis_last / redis_mid - 1:+.1%}",
        "lag at the end of production": end_lag,
        "dead letters (expected)": f"{samples[-1].dead_letters} ({traffic.must_dead_letter})",
        "events/s produced": f"{traffic.sent / (during[-1].t_s or 1):.0f}",
    }
    write_report(samples, traffic, verdict, breakdown)
    assert samples[-1].dead_letters == traffic.must_dead_letter, verdict
    assert end_lag <= RATE * END_LAG_S, verdict
    assert worker_last <= worker_mid * (1 + MAX_GROWTH), verdict
    assert redis_last <= redis_mid * (1 + MAX_GROWTH), verdict
