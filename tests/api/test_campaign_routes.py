"""Campaign admin routes beyond create/read/status (tests/api/test_intervention_routes.py):
edit (PUT), delete, duplicate, send now, templates checked, and each campaign's next run, funnel
and run log, on the real Redis and broker.

Like the other campaign tests, the broadcast topic is a fresh one per test; each test checks what
the route produced there and what it mirrored into ``keys.CAMPAIGNS``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.auth import issue_token
from api.routes import interventions
from infra import keys
from infra.campaign_view import campaign_lock, mirror_campaigns, read_campaign, read_campaigns
from infra.producer import ProducerUnavailable
from models.campaigns.execution import CampaignRun
from models.campaigns.records import Campaign, ManualSend, Schedule, Target
from models.campaigns.sends import MAX_SENDS
from models.campaigns.status import public_campaign
from models.events import format_ts, parse_ts
from models.interventions.templates import Template, Variant
from models.time_units import DAY_MS, HOUR_MS
from streams.broadcast import campaign_key
from tests.api.conftest import bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import create_topic, wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_careers import send as send_events

ADMIN = bearer("ops", "admin")
EVENING = {
    "id": "evening-practice",
    "name": "Evening practice",
    "intervention": "gentle_reminder",
    "schedule": {"kind": "recurring", "every": "daily", "local_time": "19:00"},
    "target": {"kind": "at_risk", "threshold": 60},
}
DRIP = {
    "id": "welcome-drip",
    "name": "Welcome",
    "intervention": "gentle_reminder",
    "schedule": {
        "kind": "drip",
        "local_time": "10:00",
        "steps": [
            {"offset_days": 0, "template": "welcome"},
            {"delay_hours": 2, "intervention": "peer_comparison"},
            {"offset_days": 3, "template": "gentle_reminder"},
        ],
    },
    "target": {"kind": "all"},
}
WELCOME = Template(
    id="welcome",
    type="gentle_reminder",
    variants=(Variant("w", "Welcome", "Start here", "Go"),),
    builtin=False,
    updated_ms=1,
)
BASE = "/v1/campaigns"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def broadcast_topic(kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh one-partition topic per test in place of `elimu-broadcast`."""
    topic = f"elimu-broadcast-{unique}"
    await create_topic(kafka_bootstrap, topic)
    monkeypatch.setattr(interventions, "BROADCAST_TOPIC", topic)
    return topic


async def stored(redis: Redis, campaign_id: str) -> dict[str, Any] | None:
    raw = await redis.hget(keys.CAMPAIGNS, campaign_id)
    return None if raw is None else dict(orjson.loads(raw))


async def store(redis: Redis, campaign: Campaign) -> None:
    await redis.hset(keys.CAMPAIGNS, campaign.id, orjson.dumps(campaign.to_dict()))


async def add_template(redis: Redis, template: Template) -> None:
    await redis.hset(keys.TEMPLATES, template.id, orjson.dumps(template.to_dict()))


async def add_user(redis: Redis, user_id: str) -> None:
    await redis.set(keys.user_state(user_id), b"{}")


async def create(client: httpx.AsyncClient, body: Any) -> dict[str, Any]:
    response = await client.post(BASE, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def produced(kafka_bootstrap: str, topic: str) -> list[tuple[bytes, Any]]:
    """(key, decoded value or None for a tombstone) of every record on the topic."""
    n = await end_offset(kafka_bootstrap, topic)
    records = await read_topic(kafka_bootstrap, topic, n) if n else []
    return [(r.key, None if r.value is None else orjson.loads(r.value)) for r in records]


def campaign(campaign_id: str, created_ms: int, **extra: Any) -> Campaign:
    return Campaign(
        id=campaign_id,
        name=f"Campaign {campaign_id}",
        schedule=Schedule("recurring", every="daily", local_time="07:30"),
        target=Target("all"),
        intervention="gentle_reminder",
        created_ms=created_ms,
        updated_ms=created_ms,
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# Auth

NEW_ROUTES = [
    ("PUT", f"{BASE}/held", EVENING),
    ("DELETE", f"{BASE}/held", None),
    ("POST", f"{BASE}/held/duplicate", {}),
    ("POST", f"{BASE}/held/send", {"user_id": "u-1"}),
]


@pytest.mark.parametrize(("method", "path", "body"), NEW_ROUTES)
async def test_every_new_route_needs_an_admin(
    client: httpx.AsyncClient,
    redis: Redis,
    broadcast_topic: str,
    kafka_bootstrap: str,
    method: str,
    path: str,
    body: Any,
) -> None:
    held = campaign("held", now_ms())
    await store(redis, held)
    assert_error(await client.request(method, path, json=body), 401, "unauthorized")
    assert_error(await client.request(method, path, json=body, headers=bearer("u-1")), 403, "forbidden")
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0
    assert await stored(redis, "held") == held.to_dict()
    assert await redis.hlen(keys.CAMPAIGNS) == 1


# ---------------------------------------------------------------------------------------------
# Templates are checked at create and edit


async def test_a_named_template_must_exist_and_send_the_campaigns_type(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    cases = [
        ({**EVENING, "template": "nope"}, "template"),
        ({**EVENING, "template": "discount_offer"}, "template"),  # a built-in of another type
        (DRIP, "schedule.steps[0].template"),  # "welcome" is not an admin's template yet
    ]
    for body, field in cases:
        error = assert_error(await client.post(BASE, json=body, headers=ADMIN), 422, "invalid_campaign")
        assert error["field"] == field
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0
    # A built-in id of the right type, and an admin's template, are accepted.
    assert (await create(client, {**EVENING, "template": "gentle_reminder"}))["template"] == "gentle_reminder"
    await add_template(redis, WELCOME)
    created = await create(client, DRIP)
    assert created["schedule"]["steps"][0] == {"offset_days": 0, "template": "welcome"}
    # A deleted admin's template is no template.
    await redis.hset(keys.TEMPLATES, "gone", orjson.dumps({"id": "gone", "deleted": True, "updated_ms": 5}))
    error = assert_error(
        await client.post(BASE, json={**EVENING, "id": "x", "template": "gone"}, headers=ADMIN),
        422,
        "invalid_campaign",
    )
    assert error["field"] == "template"


async def test_a_template_a_drip_step_names_cannot_be_deleted(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.routes import templates as template_routes

    monkeypatch.setattr(template_routes, "BROADCAST_TOPIC", broadcast_topic)
    await add_template(redis, WELCOME)
    await create(client, DRIP)
    response = await client.delete("/v1/admin/templates/welcome", headers=ADMIN)
    error = assert_error(response, 409, "template_in_use")
    assert "welcome-drip" in str(error["message"])


# ---------------------------------------------------------------------------------------------
# Edit


async def test_put_replaces_the_definition_and_keeps_id_creation_and_status(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    created = await create(client, EVENING)
    active = (await client.post(f"{BASE}/evening-practice/activate", headers=ADMIN)).json()
    active_held = await stored(redis, "evening-practice")
    weekly = {
        "name": "Three evenings",
        "intervention": "gentle_reminder",
        "schedule": {
            "kind": "recurring",
            "every": "weekly",
            "days": ["mon", "wed", "fri"],
            "local_time": "18:00",
        },
        "target": {"kind": "all"},
    }
    response = await client.put(f"{BASE}/evening-practice", json=weekly, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "evening-practice" and body["name"] == "Three evenings"
    assert body["schedule"] == {
        "kind": "recurring",
        "every": "weekly",
        "local_time": "18:00",
        "days": ["mon", "wed", "fri"],
    }
    assert (body["status"], body["created_at"], body["activated_at"]) == (
        "active",
        created["created_at"],
        active["activated_at"],
    )
    assert body["updated_at"] >= active["updated_at"]
    assert body["next_run"] is not None and body["next_run"].endswith("T18:00:00Z")
    mirrored = await stored(redis, "evening-practice")
    assert mirrored is not None and active_held is not None
    assert mirrored["updated_ms"] > active_held["updated_ms"]
    records = await produced(kafka_bootstrap, broadcast_topic)
    assert [key for key, _ in records] == [campaign_key("evening-practice")] * 3
    assert records[-1][1] == mirrored
    assert Campaign.from_dict(mirrored).schedule.weekdays == (0, 2, 4)
    # With a status: the usual transitions.
    paused = await client.put(f"{BASE}/evening-practice", json={**weekly, "status": "paused"}, headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    error = assert_error(
        await client.put(f"{BASE}/evening-practice", json={**weekly, "status": "draft"}, headers=ADMIN),
        409,
        "invalid_transition",
    )
    assert error["field"] == "status"
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**EVENING, "id": "other"}, "id"),
        ({**EVENING, "name": ""}, "name"),
        (
            {**EVENING, "schedule": {"kind": "recurring", "every": "weekly", "days": ["mon", "mon"]}},
            "schedule.days[1]",
        ),
        (
            {**EVENING, "schedule": {"kind": "drip", "steps": [{"offset_days": 1, "x": 1}]}},
            "schedule.steps[0].x",
        ),
        ({**EVENING, "template": "nope"}, "template"),
        ({**EVENING, "status": "completed"}, "status"),
        ({**EVENING, "created_at": "2026-01-01T00:00:00Z"}, "created_at"),  # a GET view is not a body
        ([EVENING], "campaign"),
    ],
)
async def test_put_refuses_bad_bodies_naming_the_field(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str, body: Any, field: str
) -> None:
    held = campaign("evening-practice", now_ms())
    await store(redis, held)
    error = assert_error(
        await client.put(f"{BASE}/evening-practice", json=body, headers=ADMIN), 422, "invalid_campaign"
    )
    assert error["field"] == field
    assert await stored(redis, "evening-practice") == held.to_dict()
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0


async def test_put_refuses_an_edit_that_would_never_fire_and_unknown_campaigns(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    at = now_ms() + DAY_MS
    once = {**EVENING, "schedule": {"kind": "one_time", "at": format_ts(at)}, "status": "active"}
    await create(client, once)
    past = {**once, "schedule": {"kind": "one_time", "at": "2020-01-01T00:00:00Z"}}
    past.pop("status")
    error = assert_error(
        await client.put(f"{BASE}/evening-practice", json=past, headers=ADMIN), 422, "invalid_campaign"
    )
    assert error["field"] == "schedule.at"
    assert_error(await client.put(f"{BASE}/nope", json=EVENING, headers=ADMIN), 404, "campaign_not_found")
    assert_error(
        await client.put(
            f"{BASE}/evening-practice", content=b"{", headers={**ADMIN, "content-type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 1


# ---------------------------------------------------------------------------------------------
# Delete


async def test_delete_tombstones_marks_and_hides_the_campaign(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await create(client, EVENING)
    other = await create(client, {**EVENING, "id": "other"})
    before = await stored(redis, "evening-practice")
    assert before is not None
    response = await client.delete(f"{BASE}/evening-practice", headers=ADMIN)
    assert response.status_code == 204 and response.content == b""
    records = await produced(kafka_bootstrap, broadcast_topic)
    assert records[-1] == (campaign_key("evening-practice"), None)  # a tombstone
    marker = await stored(redis, "evening-practice")
    assert marker is not None and set(marker) == {"id", "deleted", "updated_ms"}
    assert (marker["id"], marker["deleted"]) == ("evening-practice", True)
    assert marker["updated_ms"] > before["updated_ms"]
    # Gone from every read and change; the id is not reused.
    assert_error(await client.get(f"{BASE}/evening-practice", headers=ADMIN), 404, "campaign_not_found")
    assert [c["id"] for c in (await client.get(BASE, headers=ADMIN)).json()["campaigns"]] == [other["id"]]
    assert_error(
        await client.put(f"{BASE}/evening-practice", json=EVENING, headers=ADMIN), 404, "campaign_not_found"
    )
    for action in ("activate", "pause", "duplicate", "send"):
        response = await client.post(f"{BASE}/evening-practice/{action}", json={}, headers=ADMIN)
        assert_error(response, 404, "campaign_not_found")
    error = assert_error(await client.post(BASE, json=EVENING, headers=ADMIN), 409, "campaign_exists")
    assert "deleted" in str(error["message"])
    # Deleting again is the same outcome and produces nothing.
    assert (await client.delete(f"{BASE}/evening-practice", headers=ADMIN)).status_code == 204
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 3
    # A worker whose feed lags mirrors the old definition: the marker is newer, it stays.
    await mirror_campaigns(redis, [Campaign.from_dict(before)])
    assert await stored(redis, "evening-practice") == marker
    assert await read_campaign(redis, "evening-practice") == (None, True)
    assert [c.id for c in await read_campaigns(redis)] == ["other"]
    assert_error(await client.delete(f"{BASE}/never", headers=ADMIN), 404, "campaign_not_found")


async def test_delete_with_the_broker_down_is_503_and_keeps_the_campaign(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = campaign("held", now_ms())
    await store(redis, held)

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("Kafka did not acknowledge within 15.0s")

    monkeypatch.setattr(client.app.state.producer, "send_all", unavailable)  # type: ignore[attr-defined]
    assert_error(await client.delete(f"{BASE}/held", headers=ADMIN), 503, "unavailable")
    assert await stored(redis, "held") == held.to_dict()


# ---------------------------------------------------------------------------------------------
# Duplicate


async def test_duplicate_makes_a_draft_copy_with_a_new_id(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await create(client, {**EVENING, "status": "active"})
    response = await client.post(f"{BASE}/evening-practice/duplicate", headers=ADMIN)
    assert response.status_code == 201, response.text
    copy = response.json()
    assert copy["id"].startswith("c-") and copy["id"] != "evening-practice"
    assert (copy["name"], copy["status"], copy["activated_at"], copy["sends"]) == (
        "Copy of Evening practice",
        "draft",
        None,
        [],
    )
    assert (copy["schedule"], copy["target"]) == (
        {"kind": "recurring", "every": "daily", "local_time": "19:00"},
        {"kind": "at_risk", "threshold": 60.0},
    )
    assert copy["executions"] == CampaignRun(copy["id"]).to_dict()
    named = await client.post(
        f"{BASE}/evening-practice/duplicate",
        json={"id": "evening-2", "name": "Evening, again"},
        headers=ADMIN,
    )
    assert named.status_code == 201 and (named.json()["id"], named.json()["name"]) == (
        "evening-2",
        "Evening, again",
    )
    records = await produced(kafka_bootstrap, broadcast_topic)
    assert [key for key, _ in records] == [
        campaign_key("evening-practice"),
        campaign_key(copy["id"]),
        campaign_key("evening-2"),
    ]
    assert records[2][1] == await stored(redis, "evening-2")
    # The original is untouched.
    original = await stored(redis, "evening-practice")
    assert original is not None and original["status"] == "active"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"id": "evening-practice"}, 422, "invalid_campaign", "id"),
        ({"id": "bad id"}, 422, "invalid_campaign", "id"),
        ({"id": 7}, 422, "invalid_campaign", "id"),
        ({"name": ""}, 422, "invalid_campaign", "name"),
        ({"status": "active"}, 422, "invalid_campaign", "status"),
        (["x"], 422, "invalid_campaign", "duplicate"),
        ({"id": "taken"}, 409, "campaign_exists", None),
    ],
)
async def test_duplicate_refusals(
    client: httpx.AsyncClient,
    redis: Redis,
    broadcast_topic: str,
    kafka_bootstrap: str,
    body: Any,
    status: int,
    code: str,
    field: str | None,
) -> None:
    await store(redis, campaign("evening-practice", now_ms()))
    await store(redis, campaign("taken", now_ms()))
    error = assert_error(
        await client.post(f"{BASE}/evening-practice/duplicate", json=body, headers=ADMIN), status, code
    )
    assert error.get("field") == field
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0
    assert_error(await client.post(f"{BASE}/nope/duplicate", headers=ADMIN), 404, "campaign_not_found")


# ---------------------------------------------------------------------------------------------
# Send now


async def test_send_to_one_student_is_broadcast_once_however_often_retried(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await add_user(redis, "u-42")
    await create(client, EVENING)  # a draft: a send is an explicit act, whatever the status
    before = now_ms()
    response = await client.post(f"{BASE}/evening-practice/send", json={"user_id": "u-42"}, headers=ADMIN)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["campaign_id"] == "evening-practice" and body["duplicate"] is False
    send = body["send"]
    assert (send["user_id"], send["filter"]) == ("u-42", None)
    assert before <= parse_ts(send["at"]) <= now_ms()
    mirrored = await stored(redis, "evening-practice")
    assert mirrored is not None
    assert mirrored["sends"] == [
        {"id": send["id"], "at_ms": mirrored["sends"][0]["at_ms"], "user_id": "u-42", "target": None}
    ]
    records = await produced(kafka_bootstrap, broadcast_topic)
    assert len(records) == 2 and records[-1][1] == mirrored
    # A retried request (same audience, moments later) is the same send: nothing produced.
    again = await client.post(f"{BASE}/evening-practice/send", json={"user_id": "u-42"}, headers=ADMIN)
    assert again.status_code == 202 and again.json() == {**body, "duplicate": True}
    # With the client's own send_id, a retry at any time is the same send.
    first = await client.post(
        f"{BASE}/evening-practice/send", json={"user_id": "u-42", "send_id": "ticket-9"}, headers=ADMIN
    )
    assert first.json()["duplicate"] is False and first.json()["send"]["id"] == "ticket-9"
    retry = await client.post(
        f"{BASE}/evening-practice/send", json={"user_id": "u-42", "send_id": "ticket-9"}, headers=ADMIN
    )
    assert retry.json()["duplicate"] is True
    conflict = await client.post(f"{BASE}/evening-practice/send", json={"send_id": "ticket-9"}, headers=ADMIN)
    assert assert_error(conflict, 409, "send_conflict")["field"] == "send_id"
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 3
    # The campaign shows its sends, newest first.
    view = (await client.get(f"{BASE}/evening-practice", headers=ADMIN)).json()
    assert [s["id"] for s in view["sends"]] == ["ticket-9", send["id"]]
    assert view["status"] == "draft"


async def test_send_to_a_filtered_set_or_the_campaigns_own_audience(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await create(client, {**EVENING, "status": "active"})
    nairobi = {"kind": "filter", "field": "location", "op": "in", "value": ["Nairobi", "Kisumu"]}
    bulk = await client.post(f"{BASE}/evening-practice/send", json={"filter": nairobi}, headers=ADMIN)
    assert bulk.status_code == 202, bulk.text
    assert bulk.json()["send"]["filter"] == nairobi and bulk.json()["send"]["user_id"] is None
    own = await client.post(f"{BASE}/evening-practice/send", headers=ADMIN)  # no body: its own audience
    assert own.status_code == 202 and own.json()["send"]["filter"] is None
    mirrored = await stored(redis, "evening-practice")
    assert mirrored is not None
    sends = Campaign.from_dict(mirrored).sends
    assert [s.target for s in sends] == [
        Target("filter", field="location", op="in", value=("Nairobi", "Kisumu")),
        None,
    ]
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u-1", "filter": {"kind": "all"}}, "filter"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": "tab\there"}, "user_id"),
        ({"filter": {"kind": "filter", "field": "email", "value": "a@b"}}, "filter.field"),
        ({"filter": {"kind": "filter", "field": "skills", "op": "gte", "value": 1}}, "filter.op"),
        ({"send_id": "has space"}, "send_id"),
        ({"when": "later"}, "when"),
        ("now", "send"),
    ],
)
async def test_send_refuses_bad_bodies_naming_the_field(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str, body: Any, field: str
) -> None:
    held = campaign("held", now_ms())
    await store(redis, held)
    error = assert_error(
        await client.post(f"{BASE}/held/send", json=body, headers=ADMIN), 422, "invalid_campaign"
    )
    assert error["field"] == field
    assert await stored(redis, "held") == held.to_dict()
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0


async def test_send_to_an_unknown_student_or_campaign_is_404(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await store(redis, campaign("held", now_ms()))
    error = assert_error(
        await client.post(f"{BASE}/held/send", json={"user_id": "ghost"}, headers=ADMIN),
        404,
        "user_not_found",
    )
    assert error["field"] == "user_id"
    # Known by their risk view alone is known.
    await redis.set(keys.user_risk("scored-only"), b"{}")
    assert (
        await client.post(f"{BASE}/held/send", json={"user_id": "scored-only"}, headers=ADMIN)
    ).status_code == 202
    assert_error(
        await client.post(f"{BASE}/nope/send", json={"user_id": "ghost"}, headers=ADMIN),
        404,
        "campaign_not_found",
    )
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 1


async def test_sends_are_bounded(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    now = now_ms()
    full = campaign(
        "full", now, sends=tuple(ManualSend(f"s{i}", now - i, user_id=f"u-{i}") for i in range(MAX_SENDS))
    )
    await store(redis, full)
    await add_user(redis, "u-new")
    response = await client.post(f"{BASE}/full/send", json={"user_id": "u-new"}, headers=ADMIN)
    assert_error(response, 429, "too_many_sends")
    assert int(response.headers["retry-after"]) > 0
    # A definition never grows past what a broker takes: huge filters are refused whole.
    big = {
        "kind": "filter",
        "field": "location",
        "op": "in",
        "value": [f"{i:03d}" + "x" * 508 for i in range(100)],
    }
    await store(redis, campaign("big", now))
    statuses = []
    for i in range(6):
        reply = await client.post(f"{BASE}/big/send", json={"filter": big, "send_id": f"b{i}"}, headers=ADMIN)
        statuses.append(reply.status_code)
    assert statuses[:4] == [202] * 4 and statuses[-1] == 413
    mirrored = await stored(redis, "big")
    assert mirrored is not None and len(orjson.dumps(mirrored)) <= 256 * 1024
    assert await end_offset(kafka_bootstrap, broadcast_topic) == statuses.count(202)


async def test_concurrent_changes_of_one_campaign_all_land(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await create(client, EVENING)
    for i in range(6):
        await add_user(redis, f"u-{i}")
    replies = await asyncio.gather(
        *(
            client.post(f"{BASE}/evening-practice/send", json={"user_id": f"u-{i}"}, headers=ADMIN)
            for i in range(6)
        ),
        client.put(f"{BASE}/evening-practice", json={**EVENING, "name": "Renamed"}, headers=ADMIN),
    )
    assert [r.status_code for r in replies] == [202] * 6 + [200]
    mirrored = await stored(redis, "evening-practice")
    assert mirrored is not None
    final = Campaign.from_dict(mirrored)
    assert final.name == "Renamed"
    assert sorted(s.user_id or "" for s in final.sends) == [f"u-{i}" for i in range(6)]
    records = await produced(kafka_bootstrap, broadcast_topic)
    assert records[-1][1] == mirrored  # the topic's last word is the mirror's


async def test_a_change_waits_for_another_and_gives_up_with_409(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store(redis, campaign("held", now_ms()))
    monkeypatch.setattr(interventions, "LOCK_WAIT_S", 0.2)
    async with campaign_lock(redis, "held", 10_000):
        response = await client.post(f"{BASE}/held/activate", headers=ADMIN)
        assert_error(response, 409, "campaign_busy")
        assert response.headers["retry-after"] == "1"
    # Released: the change goes through.
    assert (await client.post(f"{BASE}/held/activate", headers=ADMIN)).json()["status"] == "active"
    assert await redis.exists(keys.campaign_lock("held")) == 0


async def test_a_lock_is_released_only_by_its_holder(redis: Redis) -> None:
    async with campaign_lock(redis, "c", 50):
        await asyncio.sleep(0.1)  # expired; another takes it
        assert await redis.set(keys.campaign_lock("c"), "theirs", nx=True, px=10_000)
    assert await redis.get(keys.campaign_lock("c")) == b"theirs"


# ---------------------------------------------------------------------------------------------
# Next run, funnel and run log


async def test_views_show_next_run_funnel_and_runs(client: httpx.AsyncClient, redis: Redis) -> None:
    now = now_ms()
    daily = campaign("daily", now - DAY_MS, status="active", activated_ms=now - DAY_MS)
    drip = dataclasses.replace(
        campaign("drip", now - DAY_MS, status="active", activated_ms=now - DAY_MS),
        schedule=Schedule("drip", offsets_days=(0, 2)),
    )
    draft = campaign("draft", now)
    for c in (daily, drip, draft):
        await store(redis, c)
    run = CampaignRun("daily")
    run.record("evaluated", now - HOUR_MS, n=3, occurrence="2026-01-02")
    run.record("sent", now - HOUR_MS, n=2, occurrence="2026-01-02")
    run.record_stage("sent", "2026-01-02", now - HOUR_MS)
    run.record_stage("sent", "2026-01-02", now - HOUR_MS)
    run.record_stage("opened", "2026-01-02")
    run.record_stage("clicked", "2026-01-02")
    run.record("sent", now, occurrence="s-abc")
    await redis.hset(keys.CAMPAIGN_RUNS, "daily", orjson.dumps(run.to_dict()))

    one = (await client.get(f"{BASE}/daily", headers=ADMIN)).json()
    assert one["next_run"] == public_campaign(daily, now_ms())["next_run"]
    assert one["next_run"].endswith("T07:30:00Z")
    executions = one["executions"]
    assert executions["funnel"] == {
        "sent": 2,
        "opened": 1,
        "clicked": 1,
        "converted": 0,
        "open_rate": 0.5,
        "click_rate": 0.5,
        "conversion_rate": 0.0,
    }
    assert [r["key"] for r in executions["runs"]] == ["s-abc", "2026-01-02"]
    assert executions["runs"][1]["counts"] == {"evaluated": 3, "sent": 2}
    assert executions["runs"][1]["funnel"]["sent"] == 2

    listed = {c["id"]: c for c in (await client.get(BASE, headers=ADMIN)).json()["campaigns"]}
    assert listed["daily"]["executions"] == executions
    assert listed["drip"]["next_run"] == "per user"
    assert listed["draft"]["next_run"] is None
    assert listed["draft"]["executions"] == CampaignRun("draft").to_dict()


# ---------------------------------------------------------------------------------------------
# End to end: the API, a worker and the analytics agent on the real broker and Redis


@pytest.mark.integration
async def test_a_manual_send_reaches_one_student_with_the_chosen_template_and_is_counted(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}
    student = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'e2e-a', 'user')}"}
    users = ["e2e-a", "e2e-b"]
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            await wait_ready(http, worker)
            now = int(time.time() * 1000)
            lessons = [
                {"event_id": f"{u}-1", "user_id": u, "type": "lesson_complete", "ts": now - 60_000}
                for u in users
            ]
            send_events(fresh_kafka, "behavior-events", lessons, "user_id")
            template = {
                "id": "new-course",
                "type": "achievement_notification",
                "name": "A new course",
                "variants": [
                    {"id": "only", "subject": "A new course for you", "body": "Try it today.", "cta": "Open"}
                ],
            }
            assert (await http.post("/v1/admin/templates", json=template, headers=admin)).status_code == 201
            body = {
                "id": "try-it",
                "name": "Try it",
                "intervention": "achievement_notification",
                "template": "new-course",
                "schedule": {"kind": "one_time", "at": now + 30 * DAY_MS},
                "target": {"kind": "all"},
            }
            assert (await http.post(BASE, json=body, headers=admin)).status_code == 201

            async def known() -> bool:
                return (await http.get("/v1/users/e2e-a", headers=admin)).status_code == 200

            await wait_until(known, timeout=60, what="the student's state written")
            reply = await http.post(f"{BASE}/try-it/send", json={"user_id": "e2e-a"}, headers=admin)
            assert reply.status_code == 202, reply.text
            send_id = reply.json()["send"]["id"]
            at = parse_ts(reply.json()["send"]["at"])
            # Stream time passes the send when an event newer than it arrives on each partition.
            ticks = [{"event_id": f"tick-{u}", "user_id": u, "type": "login", "ts": at + 1000} for u in users]
            send_events(fresh_kafka, "behavior-events", ticks, "user_id")

            async def sent() -> Any:
                assert worker.alive(), worker.tail()
                executions = (await http.get(f"{BASE}/try-it", headers=admin)).json()["executions"]
                return executions if executions["funnel"]["sent"] == 1 else None

            executions = await wait_until(sent, timeout=90, what="the send delivered and counted")
            # Only the named student was evaluated; the draft's own schedule never fired.
            assert executions["counts"] == {"evaluated": 1, "targeted": 1, "sent": 1}
            [run] = executions["runs"]
            assert run["key"] == f"s-{send_id}" and run["counts"]["sent"] == 1

            inbox = (await http.get("/v1/users/e2e-a/notifications", headers=student)).json()
            [note] = [n for n in inbox["notifications"] if n.get("type") == "achievement_notification"]
            assert note["subject"] == "A new course for you"  # the admin's template, as chosen
            other = (await http.get("/v1/users/e2e-b/notifications", headers=admin)).json()
            assert not [n for n in other["notifications"] if n.get("type") == "achievement_notification"]

            # The student opens it: the campaign's funnel, and that run's, count the open.
            opened = await http.post(f"/v1/users/e2e-a/notifications/{note['id']}/read", headers=student)
            assert opened.status_code == 200, opened.text

            async def counted_open() -> Any:
                executions = (await http.get(f"{BASE}/try-it", headers=admin)).json()["executions"]
                return executions if executions["funnel"]["opened"] == 1 else None

            executions = await wait_until(counted_open, timeout=60, what="the open counted for the campaign")
            assert executions["funnel"]["open_rate"] == 1.0
            assert executions["runs"][0]["funnel"]["opened"] == 1

            # Deleted: gone for the admin, the template free again.
            assert (await http.delete(f"{BASE}/try-it", headers=admin)).status_code == 204
            assert (await http.get(f"{BASE}/try-it", headers=admin)).status_code == 404
            assert (await http.delete("/v1/admin/templates/new-course", headers=admin)).status_code == 204
    finally:
        api.stop()
        worker.stop()
