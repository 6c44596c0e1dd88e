"""What every hostile test needs: the running stack, tokens, a producer that can send anything,
the dead letters indexed by the record they refuse, and the "is it still serving?" probes."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from api.auth import issue_token
from infra.topics import DEAD_LETTER
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import TEST_SECRET, Proc

PARTITIONS = 4
#: A dead letter must stay far below the broker's limit whatever it refuses (issue 11: a 200 KB
#: value of control characters once became a dead letter the broker would not take).
MAX_DEAD_LETTER_BYTES = 16 * 1024
#: Records these tests send can be far over the engine's own limits, not the broker's.
MAX_REQUEST_BYTES = 4 * 1024 * 1024

#: (topic, partition, offset) of a record on the broker.
Origin = tuple[str, int, int]
#: (topic, key, value, headers) of a record to produce.
Outgoing = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]


@dataclass
class Stack:
    kafka: str
    redis: str
    url: str
    worker: Proc
    api: Proc
    worker_port: int
    root: Path

    def assert_alive(self) -> None:
        assert self.worker.alive(), f"worker died:\n{self.worker.tail()}"
        assert self.api.alive(), f"API died:\n{self.api.tail()}"


def user_headers(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, user_id)}"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'hostile-ops', 'admin')}"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_ready(stack: Stack, timeout: float = 90) -> None:
    """Block until /readyz is green (the worker has beaten, broker and Redis answer)."""
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(base_url=stack.url, timeout=5) as http:
        while time.monotonic() < deadline:
            stack.assert_alive()
            try:
                r = http.get("/readyz")
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.1)  # polling a condition, not synchronising on time
    raise AssertionError(f"/readyz not green after {timeout}s: {last}\n{stack.worker.tail()}")


@contextlib.asynccontextmanager
async def producer(kafka: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5, max_request_size=MAX_REQUEST_BYTES)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def produce_all(kafka: str, records: Sequence[Outgoing]) -> list[Origin]:
    """Send every record in one go (no await between them) and return where each landed."""
    async with producer(kafka) as p:
        futures = [
            await p.send(topic, value, key=key, headers=headers) for topic, key, value, headers in records
        ]
        metas = [await f for f in futures]
    return [(m.topic, m.partition, m.offset) for m in metas]


async def offer_all(kafka: str, records: Sequence[Outgoing]) -> list[tuple[Origin | None, str]]:
    """Like ``produce_all``, one record at a time, and a record the broker refuses (Apache Kafka
    refuses a keyless record on a compacted topic) is reported as (None, the error) instead of
    failing. One at a time because the broker refuses a whole produce batch for one bad record."""
    out: list[tuple[Origin | None, str]] = []
    async with producer(kafka) as p:
        for topic, key, value, headers in records:
            try:
                m = await p.send_and_wait(topic, value, key=key, headers=headers)
            except KafkaError as exc:
                out.append((None, repr(exc)))
            else:
                out.append(((m.topic, m.partition, m.offset), ""))
    return out


@dataclass
class Letter:
    reason: str
    size: int
    body: dict[str, Any]


@dataclass
class DeadLetters:
    """Every dead letter read so far, by the record it refuses. The topic has one partition and
    each module has a broker of its own, so this sees exactly the module's dead letters."""

    consumer: AIOKafkaConsumer
    by_origin: dict[Origin, list[Letter]] = field(default_factory=dict)
    total: int = 0

    async def drain(self) -> None:
        batch = await self.consumer.getmany(timeout_ms=200, max_records=5000)
        for msgs in batch.values():
            for m in msgs:
                self.total += 1
                body = orjson.loads(m.value)
                origin = (body["topic"], body["partition"], body["offset"])
                size = len(m.value) + len(m.key or b"")
                self.by_origin.setdefault(origin, []).append(Letter(body["reason"], size, body))

    async def wait_for(self, origins: Iterable[Origin], stack: Stack, timeout: float = 60) -> None:
        wanted = set(origins)

        async def all_there() -> bool:
            stack.assert_alive()
            await self.drain()
            return wanted <= self.by_origin.keys()

        try:
            await wait_until(all_there, timeout=timeout, interval=0.05, what="dead letters")
        except AssertionError as exc:
            missing = sorted(wanted - self.by_origin.keys())
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} records have no dead letter, e.g. {missing[:5]}\n"
                f"{stack.worker.tail(30)}"
            ) from exc


@contextlib.asynccontextmanager
async def dead_letters(kafka: str) -> AsyncIterator[DeadLetters]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_bytes=MAX_REQUEST_BYTES,
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
    )
    await consumer.start()
    tp = TopicPartition(DEAD_LETTER, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    try:
        yield DeadLetters(consumer)
    finally:
        await consumer.stop()


def lesson(user_id: str, event_id: str | None = None, ts: int | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or new_id("lesson"),
        "user_id": user_id,
        "type": "lesson_complete",
        "ts": now_ms() - 1000 if ts is None else ts,
        "props": {"lesson_id": "L1", "score": 80},
    }


async def user_view(http: httpx.AsyncClient, user_id: str) -> dict[str, Any] | None:
    r = await http.get(f"/v1/users/{quote(user_id, safe='')}", headers=user_headers(user_id))
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def wait_xp(stack: Stack, http: httpx.AsyncClient, user_id: str, timeout: float = 45) -> dict[str, Any]:
    """The user's view once it shows XP (the worker applied their event)."""

    async def applied() -> dict[str, Any] | None:
        stack.assert_alive()
        view = await user_view(http, user_id)
        return view if view is not None and view["xp"] > 0 else None

    try:
        view: dict[str, Any] = await wait_until(applied, timeout=timeout, interval=0.1, what="XP")
    except AssertionError as exc:
        raise AssertionError(f"{user_id}'s event was never applied\n{stack.worker.tail(40)}") from exc
    return view


async def honest_event_applied(stack: Stack, http: httpx.AsyncClient, timeout: float = 45) -> dict[str, Any]:
    """A new user's lesson, posted through the API now, shows up as XP: the worker is not stalled."""
    user = new_id("honest")
    event = lesson(user)
    # 50 for the lesson + 15 for the day's first event, + the day's challenge bonus on the days
    # whose challenge one lesson completes; that bonus arrives after the lesson's own push.
    want = expected_views([event], now_ms())[user]["xp"]
    r = await http.post("/v1/events", headers=user_headers(user), json=event)
    assert r.status_code == 202, r.text

    async def all_of_it() -> dict[str, Any] | None:
        stack.assert_alive()
        view = await user_view(http, user)
        assert view is None or view["xp"] <= want, view
        return view if view is not None and view["xp"] == want else None

    try:
        view: dict[str, Any] = await wait_until(all_of_it, timeout=timeout, interval=0.1, what=f"XP {want}")
    except AssertionError as exc:
        raise AssertionError(f"{user}'s event was not applied in full\n{stack.worker.tail(40)}") from exc
    return view


async def worker_metrics(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The worker's own /metrics page as {(sample name, labels): value}."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{stack.worker_port}/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def worker_metric(stack: Stack, name: str, **labels: str) -> float:
    return (await worker_metrics(stack)).get((name, frozenset(labels.items())), 0.0)
