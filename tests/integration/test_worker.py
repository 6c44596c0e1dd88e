"""Kafka in, Redis out, through a real worker process: dedup, dead letters, crash and rebuild."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from infra import keys
from infra.redis_conn import mget
from scripts.kafka_dist import BrokerKind
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import Proc, stack_env, start_worker

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


def event(
    eid: str, user: str, etype: str = "lesson_complete", minutes_ago: int = 5, **props: Any
) -> dict[str, Any]:
    return {"event_id": eid, "user_id": user, "type": etype, "ts": NOW - minutes_ago * 60_000, "props": props}


async def produce(kafka: str, topic: str, values: list[Any], key_field: str = "user_id") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await producer.start()
    try:
        for v in values:
            raw = v if isinstance(v, bytes) else orjson.dumps(v)
            key = v[key_field].encode() if isinstance(v, dict) else None
            await producer.send(topic, raw, key=key)
        await producer.flush()
    finally:
        await producer.stop()


#: Event types that score and count toward badges and streaks.
SCORED_TYPES = ["lesson_complete", "quiz_complete", "interview_session_complete", "career_research"]


def random_events(
    rng: random.Random, users: list[str], n: int, types: list[str], days: int
) -> list[dict[str, Any]]:
    """``n`` scored events of ``types`` by ``users`` over the last ``days``, ids ``<user prefix>-e<i>``."""
    prefix = users[0].split("-")[0]
    return [
        event(
            f"{prefix}-e{i}",
            rng.choice(users),
            rng.choice(types),
            minutes_ago=rng.randint(0, days * 24 * 60),
            score=rng.randint(50, 100),
            category="behavioral",
            duration_s=600,
        )
        for i in range(n)
    ]


async def user_views(redis: Redis, users: list[str]) -> dict[str, dict[str, Any]]:
    raws = await mget(redis, [keys.user_state(u) for u in users])
    return {u: orjson.loads(r) for u, r in zip(users, raws, strict=True) if r}


#: The view's fields an oracle can predict: all of them when events arrive in one order.
ALL_FIELDS = ("xp", "level", "streak", "badges", "counters")


def comparable(view: dict[str, Any], fields: tuple[str, ...] = ALL_FIELDS) -> dict[str, Any]:
    return {k: view[k] for k in fields}


async def wait_for_views(
    redis: Redis,
    expected: dict[str, dict[str, Any]],
    worker: Proc,
    timeout: float = 60,
    fields: tuple[str, ...] = ALL_FIELDS,
) -> None:
    users = sorted(expected)

    def comparable(view: dict[str, Any]) -> dict[str, Any]:
        return {k: view[k] for k in fields}

    async def done() -> bool:
        assert worker.alive(), worker.tail()
        got = await user_views(redis, users)
        return all(u in got and comparable(got[u]) == comparable(expected[u]) for u in users)

    try:
        await wait_until(done, timeout=timeout, interval=0.2, what="serving views equal the model's")
    except AssertionError as exc:
        got = await user_views(redis, users)
        diff = {
            u: (got.get(u, {}).get("xp"), expected[u]["xp"])
            for u in users
            if u not in got or comparable(got[u]) != comparable(expected[u])
        }
        counters = {
            u: {
                k: (got.get(u, {}).get("counters", {}).get(k), v)
                for k, v in expected[u]["counters"].items()
                if got.get(u, {}).get("counters", {}).get(k) != v
            }
            for u in list(diff)[:5]
        }
        fields = {
            u: {
                k: (v, comparable(expected[u])[k])
                for k, v in comparable(got.get(u, {k: None for k in comparable(expected[u])})).items()
                if v != comparable(expected[u])[k]
            }
            for u in list(diff)[:3]
        }
        raise AssertionError(
            f"views differ (got xp, want xp): {dict(list(diff.items())[:10])}\n"
            f"counters (got, want): {counters}\nfields (got, want): {fields}\n{worker.tail()}"
        ) from exc


async def test_events_reach_redis_duplicates_count_once_bad_input_dead_letters(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    worker = start_worker(stack_env(fresh_kafka, redis_url, tmp_path), tmp_path / "worker.log")
    try:
        good = [
            event("e1", "u-a"),
            event(
                "e2", "u-a", "interview_session_complete", score=100, category="behavioral", duration_s=900
            ),
            event("e3", "u-a", "assessment_complete", score=70),
            event("e4", "u-b", "some_future_type"),  # unknown types are kept, award nothing, no error
        ]
        bad: list[Any] = [b"{not json", {"event_id": "x1", "user_id": "u-a", "type": "login"}]
        await produce(fresh_kafka, "behavior-events", [*good, good[0], good[1], *bad])
        expected = expected_views(good, NOW)
        await wait_for_views(redis, expected, worker)
        got = (await user_views(redis, ["u-a"]))["u-a"]
        assert {b["id"] for b in got["badges"]} >= {"perfect_score", "first_assessment"}
        assert got["xp"] == expected["u-a"]["xp"] > 0

        consumer = AIOKafkaConsumer(
            "dead-letter",
            bootstrap_servers=fresh_kafka,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            reasons: list[str] = []

            async def two_dead_letters() -> bool:
                batch = await consumer.getmany(timeout_ms=200)
                reasons.extend(orjson.loads(m.value)["reason"] for msgs in batch.values() for m in msgs)
                return len(reasons) >= 2

            await wait_until(two_dead_letters, timeout=30)
            assert sorted(reasons) == ["missing_field", "not_json"]
        finally:
            await consumer.stop()
    finally:
        worker.stop()


async def test_sigkill_mid_stream_loses_nothing_doubles_nothing_and_redis_rebuilds(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path, broker_kind: BrokerKind
) -> None:
    rng = random.Random(3)
    users = [f"k-{i}" for i in range(40)]
    types = ["lesson_complete", "quiz_complete", "interview_session_complete", "job_apply", "career_research"]
    events = random_events(rng, users, 3000, types, days=3)
    # A producer retrying: some events are sent twice.
    sent = events + rng.sample(events, 300)
    expected = expected_views(events, NOW)
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_SESSION_TIMEOUT="6")

    await produce(fresh_kafka, "behavior-events", sent[:1500])
    first = start_worker(env, tmp_path / "worker-1.log")

    async def some_progress() -> bool:
        assert first.alive(), first.tail()
        return len(await user_views(redis, users)) > 5

    await wait_until(some_progress, timeout=60, what="first worker processed something")
    first.kill()  # SIGKILL: no commit, no flush, no goodbye
    await produce(fresh_kafka, "behavior-events", sent[1500:])
    second = start_worker(env, tmp_path / "worker-2.log")
    try:
        await wait_for_views(redis, expected, second, timeout=90)
        # No consumed-offset jumps on a topic without compaction: nothing was skipped on the way.
        # Under exactly-once (Apache Kafka) jumps are expected: behavior-events also carries the
        # events the engine derives (a challenge completed), written in batch transactions, and
        # a read_committed reader steps over their markers and over the killed batch's aborted
        # records. There the views above, equal to the model's, are the check.
        snapshots = [] if broker_kind == "kafka" else await redis.hvals(keys.WORKER_METRICS)
        assert not [
            line
            for text in snapshots
            for line in (text.decode() if isinstance(text, bytes) else text).splitlines()
            if line.startswith('elimu_input_offset_gaps_total{topic="behavior-events"')
            and float(line.rsplit(" ", 1)[1]) > 0
        ]

        # Redis is a rebuildable view: wipe it and the worker projects the same answers again.
        before = await user_views(redis, users)
        board_before = await redis.zrevrange(keys.leaderboard("all_time", "all"), 0, -1, withscores=True)
        await redis.flushdb()
        await wait_for_views(redis, expected, second, timeout=30)
        assert await user_views(redis, users) == before

        async def board() -> Any:
            rows = await redis.zrevrange(keys.leaderboard("all_time", "all"), 0, -1, withscores=True)
            return rows if len(rows) == len(board_before) else None

        assert await wait_until(board, timeout=10) == board_before
    finally:
        second.stop()
