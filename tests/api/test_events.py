"""``POST /v1/events`` against the real broker: what a 202 promises is really in the topic."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from api import metrics
from models.events import format_ts
from models.time_units import HOUR_MS
from tests.api.conftest import bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error


def now_ms() -> int:
    return int(time.time() * 1000)


def event(n: int, user: str = "u-1", **extra: Any) -> dict[str, Any]:
    """An event a user may post: an allowed type, dated a minute ago (inside the window)."""
    return {
        "event_id": f"e-{n}",
        "user_id": user,
        "type": "lesson_complete",
        "ts": format_ts(now_ms() - 60_000),
        **extra,
    }


def accepted_total() -> float:
    return metrics.REGISTRY.get_sample_value("elimu_api_events_accepted_total") or 0.0


async def test_single_and_batch_are_produced_keyed_by_user(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    before = accepted_total()
    one = event(1, props={"lesson_id": "L12", "score": 87})
    response = await client.post("/v1/events", json=one, headers=bearer("u-1"))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}
    batch = [event(2), event(3, ts=now_ms() - HOUR_MS)]
    response = await client.post("/v1/events", json=batch, headers=bearer("u-1"))
    assert response.json() == {"accepted": 2}

    records = await read_topic(kafka_bootstrap, created_topic, 3)
    assert [orjson.loads(r.value) for r in records] == [one, *batch]
    assert {r.key for r in records} == {b"u-1"}
    assert accepted_total() - before == 3


async def test_admin_may_post_for_anyone(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    batch = [event(1, "u-a"), event(2, "u-b")]
    response = await client.post("/v1/events", json=batch, headers=bearer("importer", "admin"))
    assert response.status_code == 202
    records = await read_topic(kafka_bootstrap, created_topic, 2)
    assert [r.key for r in records] == [b"u-a", b"u-b"]


async def test_invalid_items_refuse_the_whole_batch(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    batch = [
        event(1),
        {"user_id": "u-1", "type": "login", "ts": now_ms()},  # no event_id
        event(3, ts="yesterday"),
        "not an object",
        event(5, ts=4_000_000_000_000),  # far in the future
    ]
    response = await client.post("/v1/events", json=batch, headers=bearer("u-1"))
    error = assert_error(response, 422, "invalid_events")
    items = error["items"]
    assert [(i["index"], i["reason"]) for i in items] == [  # type: ignore[attr-defined]
        (1, "missing_field"),
        (2, "bad_ts"),
        (3, "not_object"),
        (4, "ts_in_future"),
    ]
    assert all(isinstance(i["message"], str) and i["message"] for i in items)  # type: ignore[attr-defined]
    assert await end_offset(kafka_bootstrap, created_topic) == 0


async def test_posting_for_another_user_is_403_and_produces_nothing(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    response = await client.post("/v1/events", json=[event(1), event(2, "u-2")], headers=bearer("u-1"))
    assert_error(response, 403, "forbidden")
    assert await end_offset(kafka_bootstrap, created_topic) == 0


async def test_malformed_bodies(client: httpx.AsyncClient) -> None:
    headers = {**bearer("u-1"), "content-type": "application/json"}
    assert_error(await client.post("/v1/events", content=b"{nope", headers=headers), 400, "invalid_json")
    assert_error(await client.post("/v1/events", content=b"42", headers=headers), 400, "bad_request")
    assert_error(await client.post("/v1/events", json=event(1)), 401, "unauthorized")


@pytest.fixture
async def small_limits(make_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    yield await make_client(max_body_bytes=2048, max_batch=3)


async def test_body_over_the_limit_is_413(small_limits: httpx.AsyncClient) -> None:
    big = [event(1, props={"pad": "x" * 4000})]
    assert_error(
        await small_limits.post("/v1/events", json=big, headers=bearer("u-1")), 413, "payload_too_large"
    )

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 1000

    response = await small_limits.post("/v1/events", content=chunked(), headers=bearer("u-1"))
    assert_error(response, 413, "payload_too_large")


async def test_batch_over_the_limit_is_413(small_limits: httpx.AsyncClient) -> None:
    response = await small_limits.post("/v1/events", json=[event(i) for i in range(4)], headers=bearer("u-1"))
    assert_error(response, 413, "too_many_events")


async def test_rate_limit_per_principal(make_client: Callable[..., Any], created_topic: str) -> None:
    client: httpx.AsyncClient = await make_client(rate_per_s=0.01, rate_burst=2)
    for n in range(2):
        response = await client.post("/v1/events", json=event(n), headers=bearer("u-1"))
        assert response.status_code == 202, response.text
    limited = await client.post("/v1/events", json=event(9), headers=bearer("u-1"))
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    # Another principal has a bucket of its own.
    assert (await client.post("/v1/events", json=event(1, "u-2"), headers=bearer("u-2"))).status_code == 202
    # The bucket is in Redis: a second API process sharing it sees the same exhausted bucket.
    other_process: httpx.AsyncClient = await make_client(rate_per_s=0.01, rate_burst=2)
    assert (await other_process.post("/v1/events", json=event(9), headers=bearer("u-1"))).status_code == 429


async def test_rate_limit_counts_events_not_requests(
    make_client: Callable[..., Any], created_topic: str, kafka_bootstrap: str
) -> None:
    # 1 event/s, burst 5: one batch of 5 spends the whole bucket.
    client: httpx.AsyncClient = await make_client(rate_per_s=1.0, rate_burst=5)
    response = await client.post("/v1/events", json=[event(i) for i in range(5)], headers=bearer("u-1"))
    assert response.status_code == 202, response.text
    # One request, three events: refused as three, with the wait three tokens take to refill.
    limited = await client.post("/v1/events", json=[event(i) for i in range(5, 8)], headers=bearer("u-1"))
    assert_error(limited, 429, "rate_limited")
    assert 2 <= int(limited.headers["retry-after"]) <= 3
    # A user's largest batch is their burst: more could never be allowed, so it is a 413.
    too_big = await client.post("/v1/events", json=[event(i) for i in range(6)], headers=bearer("u-2"))
    assert_error(too_big, 413, "too_many_events")
    records = await read_topic(kafka_bootstrap, created_topic, 5)
    assert [orjson.loads(r.value)["event_id"] for r in records] == [f"e-{i}" for i in range(5)]


async def test_admins_have_a_larger_bucket_of_their_own(
    make_client: Callable[..., Any], created_topic: str, kafka_bootstrap: str
) -> None:
    client: httpx.AsyncClient = await make_client(
        rate_per_s=0.01, rate_burst=2, admin_rate_per_s=0.01, admin_rate_burst=10
    )
    mine = [event(1, "ops"), event(2, "ops")]
    assert (await client.post("/v1/events", json=mine, headers=bearer("ops"))).status_code == 202
    assert (await client.post("/v1/events", json=event(3, "ops"), headers=bearer("ops"))).status_code == 429
    # An admin with the same `sub` has a bucket of its own, and a larger one.
    batch = [event(n, f"u-{n}") for n in range(10)]
    response = await client.post("/v1/events", json=batch, headers=bearer("ops", "admin"))
    assert response.status_code == 202, response.text
    assert_error(
        await client.post("/v1/events", json=event(11), headers=bearer("ops", "admin")), 429, "rate_limited"
    )
    records = await read_topic(kafka_bootstrap, created_topic, 12)
    assert sorted(r.key for r in records[2:]) == sorted(f"u-{n}".encode() for n in range(10))


async def test_users_may_not_post_platform_or_unknown_types(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    before = (
        metrics.REGISTRY.get_sample_value("elimu_api_events_rejected_total", {"reason": "type_not_allowed"})
        or 0.0
    )
    batch = [
        event(1),
        event(2, type="course_complete"),
        event(3, type="notification_clicked", props={"notification_id": "n-1"}),
        event(4, type="referral_accepted"),
        event(5, type="certificate_earned"),
        event(6, type="made_up_counter_0001"),
        event(7, type="daily_challenge_complete"),
    ]
    response = await client.post("/v1/events", json=batch, headers=bearer("u-1"))
    error = assert_error(response, 422, "invalid_events")
    items = error["items"]
    assert [(i["index"], i["reason"]) for i in items] == [  # type: ignore[attr-defined]
        (n, "type_not_allowed") for n in range(1, 7)
    ]
    assert "trusted producers" in items[0]["message"]  # type: ignore[index]
    assert await end_offset(kafka_bootstrap, created_topic) == 0
    after = metrics.REGISTRY.get_sample_value(
        "elimu_api_events_rejected_total", {"reason": "type_not_allowed"}
    )
    assert after == before + 6


async def test_back_dated_events_are_refused(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    batch = [
        event(1, ts=now_ms() - 23 * HOUR_MS),  # inside the day: an offline client syncing
        event(2, ts=now_ms() - 25 * HOUR_MS),
        event(3, ts="1970-01-02T00:00:00Z"),  # the XP farm of the issue: one per day since 1970
        event(4, ts=now_ms() + 10 * 60_000),  # and the future bound still holds
    ]
    response = await client.post("/v1/events", json=batch, headers=bearer("u-1"))
    items = assert_error(response, 422, "invalid_events")["items"]
    assert [(i["index"], i["reason"]) for i in items] == [  # type: ignore[attr-defined]
        (1, "ts_too_old"),
        (2, "ts_too_old"),
        (3, "ts_in_future"),
    ]
    assert await end_offset(kafka_bootstrap, created_topic) == 0
    assert (await client.post("/v1/events", json=batch[0], headers=bearer("u-1"))).status_code == 202


async def test_admin_is_a_trusted_producer_but_not_from_the_future(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str
) -> None:
    admin = bearer("importer", "admin")
    batch = [
        event(1, "u-a", type="course_complete", props={"course_id": "c-1"}),
        event(2, "u-b", type="certificate_earned", ts="2020-01-01T08:15:00Z"),  # a replay
        event(3, "u-c", type="made_up_counter"),  # kept for analytics; awards nothing
    ]
    response = await client.post("/v1/events", json=batch, headers=admin)
    assert response.status_code == 202, response.text
    records = await read_topic(kafka_bootstrap, created_topic, 3)
    assert [orjson.loads(r.value)["type"] for r in records] == [
        "course_complete",
        "certificate_earned",
        "made_up_counter",
    ]
    future = await client.post("/v1/events", json=event(4, "u-a", ts=now_ms() + HOUR_MS), headers=admin)
    assert assert_error(future, 422, "invalid_events")["items"] == [
        {"index": 0, "reason": "ts_in_future", "message": "ts is more than 5 minutes ahead"}
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("event_id", "\x01" * 128, "bad_id"),
        ("event_id", "e" * 129, "id_too_long"),
        ("event_id", "é" * 65, "id_too_long"),  # 65 characters, 130 bytes
        ("event_id", "e-\u200b1", "bad_id"),  # an invisible separator
        ("session_id", "s\n1", "bad_id"),
    ],
)
async def test_ids_have_a_byte_budget_and_are_printable(
    client: httpx.AsyncClient, created_topic: str, field: str, value: str, reason: str
) -> None:
    response = await client.post("/v1/events", json=event(1, **{field: value}), headers=bearer("u-1"))
    items = assert_error(response, 422, "invalid_events")["items"]
    assert [(i["index"], i["reason"]) for i in items] == [(0, reason)]  # type: ignore[attr-defined]
