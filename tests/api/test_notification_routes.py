"""A user's inbox and marking a notification read, on the real Redis and broker.

No worker runs here: the inbox is written into Redis in the risk pipeline's format
(streams/risk_pipeline.py ``inbox_view``: ``{"user_id", "unread", "notifications"}`` with each
notification's ``public()`` form, newest first), and the ``notification_opened`` event a read
produces is read back from the (per-test) events topic. Where a test needs the worker's answer
to that event (the view showing it read), the test writes it, as the worker would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.routes import notifications as notification_routes
from infra import keys
from infra.producer import ProducerUnavailable
from models.events import validate_behavior
from tests.api.conftest import bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error


def now_ms() -> int:
    return int(time.time() * 1000)


def notification(nid: str, read: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "gentle_reminder",
        "subject": "We miss you",
        "body": "Five minutes today keeps your streak alive.",
        "cta": "Practice now",
        "channels": ["IN_APP", "PUSH"],
        "created_at": "2026-11-22T08:15:00Z",
        "read": read,
        **extra,
    }


def inbox(user_id: str, *notifications: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "unread": sum(1 for n in notifications if not n["read"]),
        "notifications": list(notifications),
    }


@pytest.fixture(autouse=True)
def short_read_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker answers here: a read waits 0.3 s for the view, not the production 3 s."""
    monkeypatch.setattr(notification_routes, "READ_VISIBLE_WAIT_S", 0.3)


async def seed(redis: Redis, view: dict[str, Any]) -> None:
    await redis.set(keys.user_notifications(view["user_id"]), orjson.dumps(view))


async def stored(redis: Redis, user_id: str) -> dict[str, Any]:
    raw = await redis.get(keys.user_notifications(user_id))
    assert raw is not None
    view: dict[str, Any] = orjson.loads(raw)
    return view


def read_path(user_id: str, nid: str) -> str:
    return f"/v1/users/{user_id}/notifications/{nid}/read"


# ---------------------------------------------------------------------------------------------
# Reading the inbox


async def test_own_inbox_as_stored(client: httpx.AsyncClient, redis: Redis) -> None:
    view = inbox("u-1", notification("n-2"), notification("n-1", read=True, type="streak_warning"))
    await seed(redis, view)
    response = await client.get("/v1/users/u-1/notifications", headers=bearer("u-1"))
    assert response.status_code == 200
    assert response.json() == view
    assert response.json()["unread"] == 1


async def test_empty_inbox_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users/u-new/notifications", headers=bearer("u-new"))
    assert response.status_code == 200
    assert response.json() == {"user_id": "u-new", "unread": 0, "notifications": []}


async def test_admin_reads_any_inbox_and_users_only_their_own(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    view = inbox("u-1", notification("n-1"))
    await seed(redis, view)
    assert_error(await client.get("/v1/users/u-1/notifications", headers=bearer("u-2")), 403, "forbidden")
    admin = await client.get("/v1/users/u-1/notifications", headers=bearer("ops", "admin"))
    assert admin.status_code == 200
    assert admin.json() == view


async def test_inbox_needs_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/users/u-1/notifications"), 401, "unauthorized")
    assert_error(await client.post(read_path("u-1", "n-1")), 401, "unauthorized")


# ---------------------------------------------------------------------------------------------
# Marking read


async def test_read_produces_an_opened_event_and_answers_once_the_worker_shows_it(
    client: httpx.AsyncClient,
    created_topic: str,
    kafka_bootstrap: str,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notification_routes, "READ_VISIBLE_WAIT_S", 30.0)
    seeded = inbox("u-1", notification("n-3"), notification("n-2"), notification("n-1", read=True))
    await seed(redis, seeded)
    worker_view = inbox(
        "u-1", notification("n-3"), notification("n-2", read=True), notification("n-1", read=True)
    )

    async def worker() -> dict[str, Any]:
        # The owning worker applies the event, then writes the view (its only writer).
        (record,) = await read_topic(kafka_bootstrap, created_topic, 1)
        assert await stored(redis, "u-1") == seeded  # the API wrote nothing meanwhile
        await seed(redis, worker_view)
        event: dict[str, Any] = orjson.loads(record.value)
        assert record.key == b"u-1"  # keyed by user, like every behaviour event
        return event

    before = now_ms()
    applying = asyncio.create_task(worker())
    response = await client.post(read_path("u-1", "n-2"), headers=bearer("u-1"))
    assert response.status_code == 200, response.text
    assert response.json() == {"notification_id": "n-2", "read": True}
    # The answer came after the worker's view (30 s of patience otherwise): the reader sees it.
    assert applying.done()
    event = await applying
    assert event == {
        "event_id": "read:n-2",
        "user_id": "u-1",
        "type": "notification_opened",
        "ts": event["ts"],
        "props": {"notification_id": "n-2", "via": "inbox"},
    }
    assert before <= event["ts"] <= now_ms()
    # The worker accepts it as a behaviour event (else it would be dead-lettered).
    parsed = validate_behavior(event, now_ms())
    assert (parsed.type, parsed.props["notification_id"]) == ("notification_opened", "n-2")
    listed = await client.get("/v1/users/u-1/notifications", headers=bearer("u-1"))
    assert listed.json() == worker_view


async def test_without_the_worker_the_read_is_sent_and_the_view_left_to_it(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    view = inbox("u-1", notification("n-1"))
    await seed(redis, view)
    response = await client.post(read_path("u-1", "n-1"), headers=bearer("u-1"))
    # The event is in Kafka, so the read is done; the view changes when the worker applies it.
    assert response.status_code == 200 and response.json() == {"notification_id": "n-1", "read": True}
    assert await end_offset(kafka_bootstrap, created_topic) == 1
    assert await stored(redis, "u-1") == view


async def test_reading_again_produces_nothing_more(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    await seed(redis, inbox("u-1", notification("n-1"), notification("n-0")))
    first = await client.post(read_path("u-1", "n-1"), headers=bearer("u-1"))
    assert first.status_code == 200
    await read_topic(kafka_bootstrap, created_topic, 1)
    applied = inbox("u-1", notification("n-1", read=True), notification("n-0"))
    await seed(redis, applied)  # what the worker writes once it applied the event

    again = await client.post(read_path("u-1", "n-1"), headers=bearer("u-1"))
    assert again.status_code == 200
    assert again.json() == {"notification_id": "n-1", "read": True}
    assert await end_offset(kafka_bootstrap, created_topic) == 1
    assert await stored(redis, "u-1") == applied


async def test_reading_one_the_worker_already_marked_read_produces_nothing(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    view = inbox("u-1", notification("n-1", read=True))
    await seed(redis, view)
    response = await client.post(read_path("u-1", "n-1"), headers=bearer("u-1"))
    assert response.status_code == 200
    assert response.json() == {"notification_id": "n-1", "read": True}
    assert await end_offset(kafka_bootstrap, created_topic) == 0
    assert await stored(redis, "u-1") == view


async def test_admin_marks_read_for_the_inbox_owner(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    await seed(redis, inbox("u-1", notification("n-1")))
    response = await client.post(read_path("u-1", "n-1"), headers=bearer("ops", "admin"))
    assert response.status_code == 200
    (record,) = await read_topic(kafka_bootstrap, created_topic, 1)
    event = orjson.loads(record.value)
    # The event is the owner's feedback, not the admin's.
    assert (record.key, event["user_id"]) == (b"u-1", "u-1")


async def test_another_users_notification_is_403_and_changes_nothing(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    view = inbox("u-1", notification("n-1"))
    await seed(redis, view)
    assert_error(await client.post(read_path("u-1", "n-1"), headers=bearer("u-2")), 403, "forbidden")
    assert await end_offset(kafka_bootstrap, created_topic) == 0
    assert await stored(redis, "u-1") == view


async def test_unknown_notification_is_404(
    client: httpx.AsyncClient, created_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    view = inbox("u-1", notification("n-1"))
    await seed(redis, view)
    assert_error(
        await client.post(read_path("u-1", "n-404"), headers=bearer("u-1")), 404, "notification_not_found"
    )
    # Someone else's notification id is unknown in this inbox too.
    await seed(redis, inbox("u-2", notification("n-theirs")))
    assert_error(
        await client.post(read_path("u-1", "n-theirs"), headers=bearer("u-1")), 404, "notification_not_found"
    )
    # And an empty inbox has none at all.
    assert_error(
        await client.post(read_path("u-3", "n-1"), headers=bearer("u-3")), 404, "notification_not_found"
    )
    assert await end_offset(kafka_bootstrap, created_topic) == 0
    assert await stored(redis, "u-1") == view
    assert await redis.exists(keys.user_notifications("u-3")) == 0


async def test_overlong_notification_id_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(read_path("u-1", "n" * 129), headers=bearer("u-1"))
    error = assert_error(response, 422, "validation_error")
    details = error["details"]
    assert isinstance(details, list) and details[0]["loc"] == "path.notification_id"


async def test_broker_down_is_503_and_leaves_the_view_unread(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = inbox("u-1", notification("n-1"))
    await seed(redis, view)

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("Kafka did not acknowledge within 15.0s")

    monkeypatch.setattr(client.app.state.producer, "send_all", unavailable)  # type: ignore[attr-defined]
    response = await client.post(read_path("u-1", "n-1"), headers=bearer("u-1"))
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    # Not recorded as read, so the reader's retry will produce the event.
    assert await stored(redis, "u-1") == view
