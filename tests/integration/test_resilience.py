"""What the worker does with input it should not trust and infrastructure that goes away.

Each test runs a real worker process against its own broker (``fresh_kafka``) and checks the
Redis serving view against the pure model (``oracle.expected_views``), the worker's own
``/metrics`` page and the ``dead-letter`` topic.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from infra import keys
from infra.net import free_port
from models.challenges import challenge_for
from scripts.embedded import start_redis
from streams.records import owner_partition
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import Proc, stack_env, start_worker

pytestmark = pytest.mark.integration

PARTITIONS = 4  # fresh_kafka creates the engine's topics with 4 partitions
BEHAVIOR = "behavior-events"


def now_ms() -> int:
    return int(time.time() * 1000)


def event(eid: str, user: str, etype: str, ts_ms: int, **props: Any) -> dict[str, Any]:
    return {"event_id": eid, "user_id": user, "type": etype, "ts": ts_ms, "props": props}


def owner(user: str) -> int:
    return owner_partition(user.encode(), PARTITIONS)


@contextlib.contextmanager
def running_worker(
    kafka: str, redis_url: str, tmp_path: Path, log: str = "worker.log", **extra: str
) -> Iterator[tuple[Proc, int]]:
    """A worker with its metrics page on a known port. A short session timeout makes the
    (single-member) group join take ~3 s instead of ~15 s on Tansu."""
    port = free_port()
    env = stack_env(
        kafka, redis_url, tmp_path, ELIMU_SESSION_TIMEOUT="6", ELIMU_WORKER_PORT=str(port), **extra
    )
    worker = start_worker(env, tmp_path / log)
    try:
        yield worker, port
    finally:
        worker.stop()


@contextlib.asynccontextmanager
async def producer(kafka: str) -> Any:
    p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def send(
    p: AIOKafkaProducer,
    value: dict[str, Any],
    key: bytes | str | None = "user_id",
    partition: int | None = None,
    topic: str = BEHAVIOR,
) -> RecordMetadata:
    """Send one record and wait for the broker; ``key="user_id"`` keys it as the contract says."""
    k = value["user_id"].encode() if key == "user_id" else key
    assert k is None or isinstance(k, bytes)
    return await p.send_and_wait(topic, orjson.dumps(value), key=k, partition=partition)


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The worker's own /metrics page as {(sample name, labels): value}; {} while it is not up."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.TransportError:
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def metric(port: int, name: str, **labels: str) -> float | None:
    return (await scrape(port)).get((name, frozenset(labels.items())))


async def views(redis: Redis, users: list[str]) -> dict[str, dict[str, Any]]:
    raws = await redis.mget([keys.user_state(u) for u in users])
    return {u: orjson.loads(r) for u, r in zip(users, raws, strict=True) if r}


def essentials(view: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the order records were processed in (a badge's ``earned_at`` is
    the time of whichever qualifying event came first, so only the badge ids are compared)."""
    return {
        "xp": view["xp"],
        "level": view["level"],
        "streak": view["streak"],
        "counters": view["counters"],
        "badges": sorted(b["id"] for b in view["badges"]),
    }


async def wait_for_model(
    redis: Redis, expected: dict[str, dict[str, Any]], worker: Proc, timeout: float = 45
) -> dict[str, dict[str, Any]]:
    users = sorted(expected)
    want = {u: essentials(v) for u, v in expected.items()}
    last: dict[str, dict[str, Any]] = {}

    async def done() -> bool:
        nonlocal last
        assert worker.alive(), worker.tail()
        got = await views(redis, users)
        last = {u: essentials(v) for u, v in got.items()}
        return last == want

    try:
        await wait_until(done, timeout=timeout, interval=0.1, what="serving views equal the model's")
    except AssertionError as exc:
        raise AssertionError(f"views differ\n got: {last}\nwant: {want}\n{worker.tail()}") from exc
    return await views(redis, users)


@contextlib.asynccontextmanager
async def reader(kafka: str, *tps: TopicPartition) -> Any:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    consumer.assign(list(tps))
    await consumer.seek_to_beginning(*tps)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def drain(consumer: AIOKafkaConsumer, into: list[Any]) -> None:
    batch = await consumer.getmany(timeout_ms=200)
    into.extend(m for msgs in batch.values() for m in msgs)


# ---------------------------------------------------------------------------------------------
# a. records on the wrong partition


async def test_misrouted_and_unkeyed_records_are_rerouted_to_the_owner_and_counted_once(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    now = now_ms()
    a, b = "mis-a", "mis-b"
    wrong_a = [(owner(a) + 1) % PARTITIONS, (owner(a) + 2) % PARTITIONS]
    wrong_b = (owner(b) + 1) % PARTITIONS
    e1 = event("m-1", a, "lesson_complete", now - 60_000, score=80)
    e2 = event("m-2", a, "assessment_complete", now - 50_000, score=70)
    e3 = event("m-3", a, "daily_challenge_complete", now - 40_000)
    e4 = event("m-4", a, "quiz_complete", now - 30_000, score=95)
    e5 = event("m-5", b, "lesson_complete", now - 20_000)
    with running_worker(fresh_kafka, redis_url, tmp_path) as (worker, port):
        async with producer(fresh_kafka) as p:
            await send(p, e1, partition=wrong_a[0])  # keyed, but placed by another partitioner
            await send(p, e2, partition=wrong_a[1])
            await send(p, e3, key=None, partition=wrong_a[0])  # no key at all
            await send(p, e1, partition=owner(a))  # a producer retry, this time on the owner
            await send(p, e4, partition=owner(a))  # correctly routed
            await send(p, e5, key=None, partition=wrong_b)
        misrouted = 4

        got = await wait_for_model(redis, expected_views([e1, e2, e3, e4, e5], now), worker)
        assert got[a]["xp"] == expected_views([e1, e2, e3, e4], now)[a]["xp"] > 0
        assert got[a]["counters"]["count:lesson_complete"] == 1  # e1 twice, counted once

        async def misrouted_metric() -> float | None:
            value = await metric(port, "elimu_misrouted_total", topic=BEHAVIOR)
            return value if value is not None and value >= misrouted else None

        assert await wait_until(misrouted_metric, timeout=15, what="elimu_misrouted_total") == misrouted
        duplicates = await metric(port, "elimu_events_duplicate_total", agent="engagement")
        assert duplicates == 1

    # Every re-routed record now sits on its owner partition, keyed by its user.
    tps = [TopicPartition(BEHAVIOR, owner(a)), TopicPartition(BEHAVIOR, owner(b))]
    async with reader(fresh_kafka, *set(tps)) as consumer:
        seen: list[Any] = []

        def ours() -> list[tuple[int, bytes, str]]:
            # The test's own records only: on days whose challenge one lesson completes, the
            # engine's derived challenge events land on these partitions too.
            return sorted(
                (m.partition, m.key, event_id)
                for m in seen
                if m.key in (a.encode(), b.encode())
                and (event_id := orjson.loads(m.value)["event_id"]).startswith("m-")
            )

        async def all_read() -> bool:
            await drain(consumer, seen)
            return len(ours()) >= 6

        await wait_until(all_read, timeout=15, what="owner partitions read back")
        await drain(consumer, seen)  # and nothing more turns up
    assert ours() == sorted(
        [
            (owner(a), a.encode(), "m-1"),  # re-routed
            (owner(a), a.encode(), "m-1"),  # the retry, produced there directly
            (owner(a), a.encode(), "m-2"),
            (owner(a), a.encode(), "m-3"),  # re-routed and given its key
            (owner(a), a.encode(), "m-4"),
            (owner(b), b.encode(), "m-5"),
        ]
    )


# ---------------------------------------------------------------------------------------------
# b. Redis goes away and comes back


async def test_redis_down_then_back_on_the_same_port_loses_nothing_and_the_worker_survives(
    fresh_kafka: str, tmp_path: Path
) -> None:
    redis_dir = tmp_path / "redis"
    redis_port = free_port()
    redis_svc = start_redis(redis_dir, port=redis_port, log_path=tmp_path / "redis.log")
    client = Redis.from_url(redis_svc.address)
    now = now_ms()
    users = [f"rd-{i}" for i in range(6)]
    types = ["lesson_complete", "assessment_complete", "quiz_complete", "daily_challenge_complete"]
    before = [
        event(f"rd-b{i}", users[i % 6], types[i % 4], now - 600_000 + i * 1000, score=70) for i in range(18)
    ]
    during = [
        event(f"rd-d{i}", users[i % 6], types[(i + 1) % 4], now - 300_000 + i * 1000, score=90)
        for i in range(18)
    ]
    try:
        with running_worker(fresh_kafka, redis_svc.address, tmp_path) as (worker, port):
            async with producer(fresh_kafka) as p:
                for e in before:
                    await send(p, e)
            await wait_for_model(client, expected_views(before, now), worker)

            redis_svc.stop()
            async with producer(fresh_kafka) as p:
                for e in during:
                    await send(p, e)
                await send(p, during[0])  # and a duplicate, for good measure

            # The worker applies what it fetched (its engagement updates go out) and then holds
            # the batch, retrying the Redis write, rather than acknowledging it without the view.
            async with reader(
                fresh_kafka, *(TopicPartition("engagement-updates", i) for i in range(PARTITIONS))
            ) as consumer:
                updates: list[Any] = []

                async def some_applied() -> bool:
                    assert worker.alive(), worker.tail()
                    await drain(consumer, updates)
                    ids = {i for m in updates for i in orjson.loads(m.value)["event_ids"]}
                    return bool(ids & {e["event_id"] for e in during})

                await wait_until(some_applied, timeout=30, what="events applied while Redis is down")

            # Six failed attempts: at least 3.1 s with Redis gone (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s
            # of backoff between them), longer than the worker's 2 s heartbeat timer period.
            async def serving_errors() -> float | None:
                assert worker.alive(), worker.tail()
                value = await metric(port, "elimu_serving_errors_total")
                return value if value and value >= 6 else None

            await wait_until(serving_errors, timeout=20, what="elimu_serving_errors_total >= 6")
            assert worker.alive(), worker.tail()

            redis_svc = start_redis(redis_dir, port=redis_port, log_path=tmp_path / "redis.log")
            await client.aclose()  # its pooled connection died with the old server
            client = Redis.from_url(redis_svc.address)
            got = await wait_for_model(client, expected_views(before + during, now), worker, timeout=60)
            assert sum(v["xp"] for v in got.values()) > 0
            assert worker.alive(), worker.tail()
    finally:
        await client.aclose()
        redis_svc.stop()


# ---------------------------------------------------------------------------------------------
# c. refused input goes to dead-letter with a reason; good input keeps flowing


async def test_key_mismatch_future_and_too_late_events_are_dead_lettered_and_processing_goes_on(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    now = now_ms()
    user = "dl-u"
    fresh = event("dl-fresh", user, "lesson_complete", now - 60_000)
    mismatch = event("dl-mismatch", user, "assessment_complete", now - 50_000, score=90)
    future = event("dl-future", user, "assessment_complete", now + 10 * 60_000, score=90)
    late = event("dl-late", user, "assessment_complete", now - 3 * 86_400_000, score=90)
    after = [
        event("dl-after-1", user, "quiz_complete", now - 30_000, score=80),
        event("dl-after-2", "dl-other", "lesson_complete", now - 20_000),
    ]
    with running_worker(fresh_kafka, redis_url, tmp_path, ELIMU_DEDUP_WINDOW_DAYS="1") as (worker, port):
        async with producer(fresh_kafka) as p:
            await send(p, fresh)  # the user's newest event: the dedup window ends 1 day before it
            meta = {
                "key_mismatch": await send(p, mismatch, key=b"someone-else"),
                "ts_in_future": await send(p, future),
                "too_late": await send(p, late),
            }
            values = {"key_mismatch": mismatch, "ts_in_future": future, "too_late": late}
            for e in after:
                await send(p, e)

        await wait_for_model(redis, expected_views([fresh, *after], now), worker)

        async with reader(fresh_kafka, TopicPartition("dead-letter", 0)) as consumer:
            letters: list[Any] = []

            async def three() -> bool:
                await drain(consumer, letters)
                return len(letters) >= 3

            await wait_until(three, timeout=20, what="three dead letters")
        by_reason = {orjson.loads(m.value)["reason"]: orjson.loads(m.value) for m in letters}
        assert len(letters) == 3 and set(by_reason) == set(meta)
        for reason, md in meta.items():
            dl = by_reason[reason]
            assert dl["topic"] == BEHAVIOR, dl
            assert (dl["partition"], dl["offset"]) == (md.partition, md.offset), dl
            assert dl["raw"] == orjson.dumps(values[reason]).decode(), dl
        assert by_reason["key_mismatch"]["key"] == "someone-else"

        for reason in meta:

            async def counted(reason: str = reason) -> float | None:
                return await metric(port, "elimu_dead_letters_total", topic=BEHAVIOR, reason=reason)

            assert await wait_until(counted, timeout=10, what=f"dead letters counted ({reason})") == 1
        assert worker.alive(), worker.tail()


# ---------------------------------------------------------------------------------------------
# d. streak days are the user's local days


def latest_11_utc(now: datetime) -> datetime:
    """The most recent 11:00 UTC not after ``now``: at most a day old, and 01:00 the next local
    day in Pacific/Kiritimati (UTC+14)."""
    candidate = now.replace(hour=11, minute=0, second=0, microsecond=0)
    return candidate if candidate <= now else candidate - timedelta(days=1)


async def test_a_profile_time_zone_decides_the_local_day_of_a_streak(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    user = "tz-kiritimati"
    at = latest_11_utc(datetime.now(UTC))  # e.g. 2026-11-21T11:00:00Z = 2026-11-22 01:00 local
    local_day = (at.date() + timedelta(days=1)).isoformat()
    profile = {"user_id": user, "display_name": "Teuea", "timezone": "Pacific/Kiritimati"}
    lesson = event("tz-1", user, "lesson_complete", int(at.timestamp() * 1000), score=87)
    with running_worker(fresh_kafka, redis_url, tmp_path) as (worker, _):
        async with producer(fresh_kafka) as p:
            await send(p, profile, topic="user-profiles")

            # The two topics are consumed independently: wait until the profile is applied.
            async def profile_applied() -> bool:
                assert worker.alive(), worker.tail()
                got = await views(redis, [user])
                return user in got and got[user]["timezone"] == "Pacific/Kiritimati"

            await wait_until(profile_applied, timeout=45, what="profile applied")
            await send(p, lesson)

        # 50 for the lesson + 15 for the local day's first event; and when the local day's challenge
        # (the same for everyone that day) is completed by one lesson, its own action, paying the
        # variant's reward, which arrives through Kafka after the lesson's: wait for the total, not
        # the first change. (A lesson without a duration completes only a one-session variant
        # whose minimum score, if any, its 87 reaches.)
        challenge = challenge_for(date.fromisoformat(local_day))
        one_lesson_completes = (
            challenge.template in ("quick_practice", "streak_challenge")
            and challenge.target == 1
            and (challenge.min_score or 0) <= 87
        )
        expected = 65 + (challenge.xp if one_lesson_completes else 0)

        async def lesson_applied() -> dict[str, Any] | None:
            assert worker.alive(), worker.tail()
            view = (await views(redis, [user])).get(user)
            return view if view and view["xp"] == expected else None

        view = await wait_until(lesson_applied, timeout=30, what=f"lesson applied (xp {expected})")
    assert view["streak"]["last_active_day"] == local_day != at.date().isoformat()
    assert date.fromisoformat(local_day) - at.date() == timedelta(days=1)
    assert view["streak"]["current"] == 1


# ---------------------------------------------------------------------------------------------
# e. a restarted worker recovers its table from the changelog


async def test_a_restarted_worker_recovers_every_users_state_from_the_changelog(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    now = now_ms()
    users = [f"rc-{i}" for i in range(60)]
    first = [event(f"rc-a{i}", users[i % 60], "lesson_complete", now - 900_000 + i) for i in range(240)]
    then = [event(f"rc-b{i}", u, "assessment_complete", now - 60_000, score=95) for i, u in enumerate(users)]
    async with producer(fresh_kafka) as p:
        for e in first:
            await p.send(BEHAVIOR, orjson.dumps(e), key=e["user_id"].encode())
        await p.flush()

    with running_worker(fresh_kafka, redis_url, tmp_path, "worker-1.log") as (worker, _):
        await wait_for_model(redis, expected_views(first, now), worker)
    assert worker.proc is not None and worker.proc.returncode == 0  # stopped cleanly, offsets committed

    # A new worker, and a Redis that lost everything: the view can only come from the table.
    await redis.flushdb()
    with running_worker(fresh_kafka, redis_url, tmp_path, "worker-2.log") as (worker, port):

        async def projected() -> float | None:
            assert worker.alive(), worker.tail()
            value = await metric(port, "elimu_serving_rebuilds_total")
            return value if value else None

        await wait_until(projected, timeout=45, what="the new worker projected its table into Redis")
        want = {u: essentials(v) for u, v in expected_views(first, now).items()}
        got = {u: essentials(v) for u, v in (await views(redis, users)).items()}
        missing = sorted(set(want) - set(got))
        wrong = sorted(u for u in got if got[u] != want[u])
        assert not missing and not wrong, f"{len(missing)} users missing, {len(wrong)} differ"

        # And what happens next builds on the recovered state, not on an empty one.
        async with producer(fresh_kafka) as p:
            for e in then:
                await send(p, e)
        await wait_for_model(redis, expected_views(first + then, now), worker)
