"""A user's profile and notification settings (api/routes/profile.py), on the real Redis and broker.

No worker runs here. The view is written into Redis as the career slice writes it
(streams/career_pipeline.py: ``keys.user_profile(uid)`` holds the orjson of
``CareerState.profile_view()`` after ``adopt_profile``), and the whole profile a PUT produces is
read back from a per-test ``user-profiles`` topic. Where a test needs the worker's answer to a PUT
(the view showing the new version), the test applies the record it reads, as the worker would.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api import profile_writes
from api.routes import profile as profile_routes
from infra import keys
from infra.producer import ProducerUnavailable
from models.career import CareerState
from models.events import UserProfile, format_ts, parse_profile, parse_ts
from models.notification_settings import settings_view
from tests.api.conftest import bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import create_topic

RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z")

#: A profile as a producer (or an earlier PUT) wrote it.
HELD: dict[str, Any] = {
    "user_id": "u-1",
    "display_name": "Amina",
    "timezone": "Africa/Nairobi",
    "location": "Nairobi",
    "skills": ["sql", "excel"],
    "experience_years": 2,
    "education": "bachelor",
    "interests": ["data"],
    "salary_expectation": 70000,
    "currency": "KES",
    "email": "amina@example.com",
    "phone": "+254712345678",
    "notification_prefs": {"channels": ["PUSH", "IN_APP"], "quiet_hours": ["21:00", "07:00"]},
}


def now_ms() -> int:
    return int(time.time() * 1000)


def profile_path(user_id: str) -> str:
    return f"/v1/users/{user_id}/profile"


def settings_path(user_id: str) -> str:
    return f"/v1/users/{user_id}/notification-settings"


def applied_view(value: bytes, now: int | None = None) -> dict[str, Any]:
    """The view the career slice writes once it applied the profile record ``value``."""
    at = now_ms() if now is None else now
    profile: UserProfile = parse_profile(value, at)  # raises where the worker would dead-letter
    state = CareerState(profile.user_id)
    state.adopt_profile(profile, at)
    return state.profile_view()


async def seed(redis: Redis, fields: dict[str, Any], updated_at_ms: int | None = None) -> dict[str, Any]:
    """Write the view of the profile ``fields`` (stamped ``updated_at_ms``), as the worker would."""
    stamped = fields if updated_at_ms is None else {**fields, "updated_at": updated_at_ms}
    view = applied_view(orjson.dumps(stamped))
    await redis.set(keys.user_profile(view["user_id"]), orjson.dumps(view))
    return view


async def stored(redis: Redis, user_id: str) -> dict[str, Any] | None:
    raw = await redis.get(keys.user_profile(user_id))
    return None if raw is None else dict(orjson.loads(raw))


def shown(view: dict[str, Any]) -> dict[str, Any]:
    """A view as the GET answers it: ``updated_at`` in RFC 3339."""
    return {**view, "updated_at": format_ts(view["updated_at"])}


@pytest.fixture(autouse=True)
def short_applied_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker answers here: a PUT waits 0.3 s for the view, not the production 3 s."""
    monkeypatch.setattr(profile_writes, "APPLIED_WAIT_S", 0.3)


@pytest.fixture
async def profiles_topic(kafka_bootstrap: str, unique: str) -> str:
    return await create_topic(kafka_bootstrap, f"user-profiles-{unique}")


@pytest.fixture
async def client(make_client: Callable[..., Any], profiles_topic: str) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client(profiles_topic=profiles_topic)
    return result


async def written(kafka_bootstrap: str, topic: str) -> tuple[bytes | None, dict[str, Any], bytes]:
    """The one record a PUT produced: its key, its value decoded, and its raw value."""
    (record,) = await read_topic(kafka_bootstrap, topic, 1)
    return record.key, orjson.loads(record.value), record.value


# ---------------------------------------------------------------------------------------------
# Reading


async def test_no_profile_yet_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(profile_path("u-1"), headers=bearer("u-1")), 404, "profile_not_found")


async def test_own_profile_as_the_worker_holds_it(client: httpx.AsyncClient, redis: Redis) -> None:
    at = parse_ts("2026-11-22T08:15:00.250Z")
    view = await seed(redis, HELD, at)
    response = await client.get(profile_path("u-1"), headers=bearer("u-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == shown(view)
    assert body["updated_at"] == "2026-11-22T08:15:00.250Z"
    assert RFC3339_UTC.fullmatch(body["updated_at"]) and parse_ts(body["updated_at"]) == at
    assert (body["email"], body["phone"]) == ("amina@example.com", "+254712345678")


async def test_a_view_without_a_time_shows_null(client: httpx.AsyncClient, redis: Redis) -> None:
    # A state written before profiles were stamped (profile_at_ms None) is projected like this.
    state = CareerState.from_dict({"v": 2, "user_id": "u-1", "candidate": {"user_id": "u-1"}})
    await redis.set(keys.user_profile("u-1"), orjson.dumps(state.profile_view()))
    response = await client.get(profile_path("u-1"), headers=bearer("u-1"))
    assert response.status_code == 200
    assert response.json()["updated_at"] is None


async def test_users_read_only_their_own_and_admins_anyone(client: httpx.AsyncClient, redis: Redis) -> None:
    view = await seed(redis, HELD, now_ms())
    assert_error(await client.get(profile_path("u-1"), headers=bearer("u-2")), 403, "forbidden")
    assert_error(await client.get(settings_path("u-1"), headers=bearer("u-2")), 403, "forbidden")
    admin = await client.get(profile_path("u-1"), headers=bearer("ops", "admin"))
    assert admin.status_code == 200 and admin.json() == shown(view)
    admin_settings = await client.get(settings_path("u-1"), headers=bearer("ops", "admin"))
    assert admin_settings.status_code == 200
    assert admin_settings.json() == settings_view(HELD["notification_prefs"])


async def test_the_routes_need_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(profile_path("u-1")), 401, "unauthorized")
    assert_error(await client.put(profile_path("u-1"), json={}), 401, "unauthorized")
    assert_error(await client.get(settings_path("u-1")), 401, "unauthorized")
    assert_error(await client.put(settings_path("u-1"), json={}), 401, "unauthorized")


async def test_settings_without_a_profile_are_the_defaults(client: httpx.AsyncClient) -> None:
    response = await client.get(settings_path("u-new"), headers=bearer("u-new"))
    assert response.status_code == 200
    assert response.json() == {
        "channels": ["IN_APP"],
        "quiet_hours": None,
        "opt_out": [],
        "job_alerts": True,
        "digest": "off",
    }


async def test_settings_are_the_held_preferences_with_defaults_filled_in(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seed(redis, HELD, now_ms())
    response = await client.get(settings_path("u-1"), headers=bearer("u-1"))
    assert response.status_code == 200
    assert response.json() == {
        "channels": ["PUSH", "IN_APP"],
        "quiet_hours": ["21:00", "07:00"],
        "opt_out": [],
        "job_alerts": True,
        "digest": "off",
    }


# ---------------------------------------------------------------------------------------------
# Writing the profile


async def test_a_profile_put_writes_one_whole_record_and_answers_202_without_the_worker(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    held = await seed(redis, HELD, now_ms() - 60_000)
    body = {
        "display_name": "Amina O.",
        "skills": ["sql", "python"],
        # The held address and number written another way: no new contact, nothing to confirm.
        "email": "  amina@Example.COM ",
        "phone": "00254 (712) 345-678",
        "timezone": "Africa/Nairobi",
    }
    before = now_ms()
    response = await client.put(profile_path("u-1"), json=body, headers=bearer("u-1"))
    after = now_ms()
    assert response.status_code == 202, response.text

    key, record, raw = await written(kafka_bootstrap, profiles_topic)
    assert key == b"u-1"  # keyed by user: the owner's partition, compacted per user
    assert response.json() == record
    stamp = parse_ts(record["updated_at"])
    assert RFC3339_UTC.fullmatch(record["updated_at"])
    assert before <= stamp <= after
    assert record == {
        "user_id": "u-1",
        "display_name": "Amina O.",
        "skills": ["sql", "python"],
        "timezone": "Africa/Nairobi",
        "email": "amina@example.com",  # sent as normalised
        "phone": "+254712345678",
        # The settings are not the profile route's: the held ones are carried over.
        "notification_prefs": held["notification_prefs"],
        "updated_at": record["updated_at"],
    }
    # A whole record: what the body left out (location, education...) is gone once applied.
    assert "location" not in record
    # The worker takes it as is (else it would be dead-lettered) and shows this version.
    parsed = parse_profile(raw, now_ms())
    assert (parsed.user_id, parsed.email, parsed.phone) == ("u-1", "amina@example.com", "+254712345678")
    assert parsed.updated_at_ms == stamp
    applied = applied_view(raw)
    assert applied["updated_at"] == stamp
    assert applied["location"] is None and applied["notification_prefs"] == held["notification_prefs"]
    # The API wrote no view: the worker is its only writer.
    assert await stored(redis, "u-1") == held


async def test_a_profile_put_answers_200_with_the_view_once_the_worker_applies_it(
    client: httpx.AsyncClient,
    profiles_topic: str,
    kafka_bootstrap: str,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(profile_writes, "APPLIED_WAIT_S", 30.0)
    held = await seed(redis, HELD, now_ms() - 60_000)

    async def worker() -> dict[str, Any]:
        # The owning worker applies the record, then writes the view (its only writer).
        key, _, raw = await written(kafka_bootstrap, profiles_topic)
        assert key == b"u-1"
        assert await stored(redis, "u-1") == held  # the API wrote nothing meanwhile
        view = applied_view(raw)
        await redis.set(keys.user_profile("u-1"), orjson.dumps(view))
        return view

    applying = asyncio.create_task(worker())
    response = await client.put(
        profile_path("u-1"),
        json={"display_name": "Amina O.", "phone": "+254 712 345 678"},
        headers=bearer("u-1"),
    )
    assert response.status_code == 200, response.text
    # The answer came after the worker's view (30 s of patience otherwise).
    assert applying.done()
    view = await applying
    assert response.json() == shown(view)
    assert response.json()["display_name"] == "Amina O." and response.json()["phone"] == "+254712345678"
    assert response.json()["notification_prefs"] == held["notification_prefs"]
    listed = await client.get(profile_path("u-1"), headers=bearer("u-1"))
    assert listed.json() == response.json()


async def test_a_put_is_stamped_after_the_held_version_even_when_that_one_is_ahead(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    # A producer's clock 2 minutes fast (within the worker's 5-minute tolerance).
    ahead = now_ms() + 120_000
    await seed(redis, HELD, ahead)
    response = await client.put(profile_path("u-1"), json={"display_name": "A"}, headers=bearer("u-1"))
    assert response.status_code == 202
    _, record, raw = await written(kafka_bootstrap, profiles_topic)
    # Newer than what the view holds, or the wait for the view could never be met.
    assert parse_ts(record["updated_at"]) == ahead + 1
    assert applied_view(raw)["updated_at"] == ahead + 1


async def test_a_first_profile_needs_no_held_one(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str
) -> None:
    response = await client.put(
        profile_path("u-9"), json={"user_id": "u-9", "skills": ["sql"]}, headers=bearer("u-9")
    )
    assert response.status_code == 202, response.text
    key, record, raw = await written(kafka_bootstrap, profiles_topic)
    assert key == b"u-9"
    assert record["notification_prefs"] == {} and (record["email"], record["phone"]) == (None, None)
    assert parse_profile(raw, now_ms()).skills == ("sql",)


async def test_admin_writes_the_owners_profile(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str
) -> None:
    response = await client.put(
        profile_path("u-1"), json={"display_name": "A"}, headers=bearer("ops", "admin")
    )
    assert response.status_code == 202
    key, record, _ = await written(kafka_bootstrap, profiles_topic)
    assert (key, record["user_id"]) == (b"u-1", "u-1")
    settings = await client.put(
        settings_path("u-1"), json={"digest": "daily"}, headers=bearer("ops", "admin")
    )
    assert settings.status_code == 202 and settings.json()["digest"] == "daily"
    _, second = await read_topic(kafka_bootstrap, profiles_topic, 2)
    assert second.key == b"u-1"
    assert orjson.loads(second.value)["notification_prefs"]["digest"] == "daily"


async def test_another_users_profile_is_403_and_writes_nothing(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    held = await seed(redis, HELD, now_ms())
    response = await client.put(profile_path("u-1"), json={"display_name": "Mallory"}, headers=bearer("u-2"))
    assert_error(response, 403, "forbidden")
    response = await client.put(settings_path("u-1"), json={"job_alerts": False}, headers=bearer("u-2"))
    assert_error(response, 403, "forbidden")
    assert await end_offset(kafka_bootstrap, profiles_topic) == 0
    assert await stored(redis, "u-1") == held


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"display_name": "A", "favourite_colour": "red"}, "favourite_colour"),
        ({"updated_at": "2026-11-22T08:15:00Z"}, "updated_at"),  # the API stamps it
        ({"notification_prefs": {"channels": ["PUSH"]}}, "notification_prefs"),
    ],
)
async def test_a_field_that_is_not_the_profiles_is_422(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, body: dict[str, Any], named: str
) -> None:
    error = assert_error(
        await client.put(profile_path("u-1"), json=body, headers=bearer("u-1")), 422, "invalid_profile"
    )
    assert str(error["message"]).startswith(f"{named}: ")
    if named == "notification_prefs":
        assert "notification settings have their own route" in str(error["message"])
    assert await end_offset(kafka_bootstrap, profiles_topic) == 0


async def test_a_user_id_that_is_not_the_paths_is_422(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str
) -> None:
    for other in ("u-2", None, 1):
        response = await client.put(profile_path("u-1"), json={"user_id": other}, headers=bearer("u-1"))
        error = assert_error(response, 422, "invalid_profile")
        assert "user_id" in str(error["message"])
    assert await end_offset(kafka_bootstrap, profiles_topic) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"email": "a@b.com\r\nBcc: x@y.z"}, "bad_email"),
        ({"email": "amina@example.com, boss@example.com"}, "bad_email"),
        ({"phone": "0712345678"}, "bad_phone"),
        ({"timezone": "Mars/Olympus_Mons"}, "bad_timezone"),
        ({"skills": "sql"}, "bad_type"),
    ],
)
async def test_a_value_the_worker_would_refuse_is_422_with_its_reason(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, body: dict[str, Any], reason: str
) -> None:
    response = await client.put(profile_path("u-1"), json=body, headers=bearer("u-1"))
    error = assert_error(response, 422, "invalid_profile")
    assert error["reason"] == reason
    assert await end_offset(kafka_bootstrap, profiles_topic) == 0


async def test_bodies_that_are_no_profile(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str
) -> None:
    headers = {**bearer("u-1"), "Content-Type": "application/json"}
    for path in (profile_path("u-1"), settings_path("u-1")):
        assert_error(await client.put(path, content=b"{not json", headers=headers), 400, "not_json")
        assert_error(await client.put(path, content=b"", headers=headers), 400, "not_json")
        assert_error(
            await client.put(path, content=b'[{"display_name": "A"}]', headers=headers),
            422,
            "invalid_profile",
        )
        big = orjson.dumps({"display_name": "x" * (profile_routes.MAX_PROFILE_BYTES + 1)})
        assert_error(await client.put(path, content=big, headers=headers), 413, "payload_too_large")
    assert await end_offset(kafka_bootstrap, profiles_topic) == 0


async def test_broker_down_is_503_and_leaves_the_view(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await seed(redis, HELD, now_ms())

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("Kafka did not acknowledge within 15.0s")

    monkeypatch.setattr(client.app.state.producer, "send_all", unavailable)  # type: ignore[attr-defined]
    response = await client.put(profile_path("u-1"), json={"display_name": "A"}, headers=bearer("u-1"))
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert await stored(redis, "u-1") == held


# ---------------------------------------------------------------------------------------------
# Writing the notification settings


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channels": ["FAX"]}, "channels"),
        ({"channels": []}, "channels"),
        ({"quiet_hours": ["21:00", "21:00"]}, "quiet_hours"),
        ({"quiet_hours": ["25:00", "07:00"]}, "quiet_hours"),
        ({"job_alerts": "no"}, "job_alerts"),
        ({"digest": "hourly"}, "digest"),
        ({"opt_out": ["spam"]}, "opt_out"),
        ({"email": "a@b.com"}, "email"),  # the profile's, not a setting
    ],
)
async def test_invalid_settings_are_422_naming_the_field(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, body: dict[str, Any], field: str
) -> None:
    response = await client.put(settings_path("u-1"), json=body, headers=bearer("u-1"))
    error = assert_error(response, 422, "invalid_settings")
    assert error["field"] == field
    assert await end_offset(kafka_bootstrap, profiles_topic) == 0


async def test_a_settings_put_keeps_the_held_profile_and_answers_the_settings(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    held = await seed(redis, HELD, now_ms() - 60_000)
    body = {"channels": ["email", "push"], "quiet_hours": ["22:00", "6:30"], "digest": "weekly"}
    response = await client.put(settings_path("u-1"), json=body, headers=bearer("u-1"))
    assert response.status_code == 202, response.text
    expected = {
        "channels": ["EMAIL", "PUSH"],
        "quiet_hours": ["22:00", "06:30"],
        "opt_out": [],
        "job_alerts": True,
        "digest": "weekly",
    }
    assert response.json() == expected

    key, record, raw = await written(kafka_bootstrap, profiles_topic)
    assert key == b"u-1"
    # Every profile field held is carried over; only the preferences change.
    for name in ("display_name", "timezone", "location", "skills", "experience_years", "education"):
        assert record[name] == held[name], name
    for name in ("interests", "salary_expectation", "currency", "email", "phone"):
        assert record[name] == held[name], name
    assert settings_view(record["notification_prefs"]) == expected
    assert parse_ts(record["updated_at"]) > held["updated_at"]
    applied = applied_view(raw)
    assert {k: v for k, v in applied.items() if k not in ("notification_prefs", "updated_at")} == {
        k: v for k, v in held.items() if k not in ("notification_prefs", "updated_at")
    }
    assert settings_view(applied["notification_prefs"]) == expected


async def test_a_settings_put_answers_200_once_the_worker_applies_it(
    client: httpx.AsyncClient,
    profiles_topic: str,
    kafka_bootstrap: str,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(profile_writes, "APPLIED_WAIT_S", 30.0)
    await seed(redis, HELD, now_ms() - 60_000)

    async def worker() -> dict[str, Any]:
        _, _, raw = await written(kafka_bootstrap, profiles_topic)
        view = applied_view(raw)
        await redis.set(keys.user_profile("u-1"), orjson.dumps(view))
        return view

    applying = asyncio.create_task(worker())
    response = await client.put(settings_path("u-1"), json={"job_alerts": False}, headers=bearer("u-1"))
    assert response.status_code == 200, response.text
    assert applying.done()
    view = await applying
    assert response.json() == settings_view(view["notification_prefs"])
    assert response.json()["job_alerts"] is False
    assert response.json()["channels"] == ["IN_APP"]  # a whole document: channels left out reset
    again = await client.get(settings_path("u-1"), headers=bearer("u-1"))
    assert again.json() == response.json()


async def test_profile_then_settings_each_build_on_the_other(
    client: httpx.AsyncClient, profiles_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    """What a client saving its profile and then its settings gets once the worker kept up."""
    first = await client.put(
        profile_path("u-1"), json={"display_name": "Amina", "skills": ["sql"]}, headers=bearer("u-1")
    )
    assert first.status_code == 202
    (one,) = await read_topic(kafka_bootstrap, profiles_topic, 1)
    await redis.set(keys.user_profile("u-1"), orjson.dumps(applied_view(one.value)))

    second = await client.put(settings_path("u-1"), json={"channels": ["SMS"]}, headers=bearer("u-1"))
    assert second.status_code == 202
    _, two = await read_topic(kafka_bootstrap, profiles_topic, 2)
    record = orjson.loads(two.value)
    assert (record["display_name"], record["skills"]) == ("Amina", ["sql"])
    assert record["notification_prefs"]["channels"] == ["SMS"]
    assert parse_ts(record["updated_at"]) > parse_ts(orjson.loads(one.value)["updated_at"])
    await redis.set(keys.user_profile("u-1"), orjson.dumps(applied_view(two.value)))

    third = await client.put(profile_path("u-1"), json={"display_name": "Amina O."}, headers=bearer("u-1"))
    assert third.status_code == 202
    _, _, three = await read_topic(kafka_bootstrap, profiles_topic, 3)
    assert orjson.loads(three.value)["notification_prefs"]["channels"] == ["SMS"]
