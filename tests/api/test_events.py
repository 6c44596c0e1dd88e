"""``POST /v1/events`` against the real broker: what a 202 promises is really in the topic."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from api import metrics
from tests.api.conftest import bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error


def event(n: int, user: str = "u-1", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"e-{n}",
        "user_id": user,
        "type": "lesson_complete",
        "ts": "2020-01-01T08:15:00Z",
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
    batch = [event(2), event(3, ts=1_700_000_000_000)]
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
        {"user_id": "u-1", "type": "x", "ts": "2020-01-01T08:15:00Z"},  # no event_id
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
