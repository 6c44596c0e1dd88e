"""Campaigns and the interventions analytics (admin routes) on the real Redis and broker.

The campaign routes write each definition to the compacted broadcast topic under
``campaign:<id>`` (redirected here to a fresh per-test topic, as the growth tests redirect the
commands topic) and mirror it into ``keys.CAMPAIGNS``; each test checks both. Execution logs and
analytics are the analytics agent's views, written here in its format (``CampaignRun.to_dict``,
``InterventionStats.view``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.routes import interventions
from infra import keys
from infra.producer import ProducerUnavailable
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.campaigns.execution import CampaignRun
from models.campaigns.records import Campaign, Schedule, Target
from models.campaigns.status import public_campaign
from models.events import format_ts
from models.interventions.bandit import InterventionStats
from models.time_units import DAY_MS
from streams.broadcast import campaign_key
from tests.api.conftest import bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import create_topic

ADMIN = bearer("ops", "admin")
EVENING = {
    "id": "evening-practice",
    "name": "Evening practice",
    "intervention": "gentle_reminder",
    "schedule": {"kind": "recurring", "every": "daily", "local_time": "19:00"},
    "target": {"kind": "at_risk", "threshold": 60},
}


def now_ms() -> int:
    return int(time.time() * 1000)


def one_time(campaign_id: str, at_ms: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": campaign_id,
        "name": f"Once: {campaign_id}",
        "intervention": "discount_offer",
        "schedule": {"kind": "one_time", "at": format_ts(at_ms)},
        "target": {"kind": "all"},
        **extra,
    }


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
    """A campaign as the routes mirror it (for states the API cannot reach without waiting)."""
    await redis.hset(keys.CAMPAIGNS, campaign.id, orjson.dumps(campaign.to_dict()))


async def create(client: httpx.AsyncClient, body: Any) -> dict[str, Any]:
    response = await client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_definitions_go_to_the_broadcast_topic() -> None:
    # The tests redirect the topic; production must use the one every worker reads.
    assert vars(interventions)["BROADCAST_TOPIC"] == BROADCAST_TOPIC == "elimu-broadcast"


# ---------------------------------------------------------------------------------------------
# Auth


ADMIN_ROUTES = [
    ("GET", "/v1/campaigns", None),
    ("POST", "/v1/campaigns", EVENING),
    ("GET", "/v1/campaigns/evening-practice", None),
    ("POST", "/v1/campaigns/evening-practice/activate", None),
    ("POST", "/v1/campaigns/evening-practice/pause", None),
    ("GET", "/v1/analytics/interventions", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_every_route_needs_a_token(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert_error(await client.request(method, path, json=body), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_users_are_refused(
    client: httpx.AsyncClient,
    redis: Redis,
    broadcast_topic: str,
    kafka_bootstrap: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    draft = campaign("evening-practice", now_ms())  # a draft the user must not change
    await store(redis, draft)
    response = await client.request(method, path, json=body, headers=bearer("u-1"))
    assert_error(response, 403, "forbidden")
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0
    assert await stored(redis, "evening-practice") == draft.to_dict()


# ---------------------------------------------------------------------------------------------
# Creating


async def test_create_produces_mirrors_and_answers_the_public_view(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    before = now_ms()
    body = await create(client, EVENING)
    after = now_ms()

    mirrored = await stored(redis, "evening-practice")
    assert mirrored is not None
    campaign = Campaign.from_dict(mirrored)
    assert before <= campaign.created_ms == campaign.updated_ms <= after
    assert (campaign.status, campaign.activated_ms) == ("draft", None)
    assert campaign.schedule == Schedule("recurring", every="daily", local_time="19:00")
    assert campaign.target == Target("at_risk", threshold=60.0)

    (record,) = await read_topic(kafka_bootstrap, broadcast_topic, 1)
    assert record.key == campaign_key("evening-practice") == b"campaign:evening-practice"
    assert orjson.loads(record.value) == mirrored == campaign.to_dict()

    assert body == {
        **public_campaign(campaign, after),
        "executions": CampaignRun("evening-practice").to_dict(),
    }
    assert body["status"] == "draft"
    assert body["schedule"] == {"kind": "recurring", "every": "daily", "local_time": "19:00"}
    assert body["target"] == {"kind": "at_risk", "threshold": 60.0}
    assert body["created_at"] == format_ts(campaign.created_ms)
    assert (body["start"], body["end"], body["activated_at"], body["template"]) == (None, None, None, None)


async def test_create_active_stamps_the_activation(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    at_ms = now_ms() + DAY_MS
    body = await create(client, one_time("flash-sale", at_ms, status="active", template="discount_offer"))
    assert body["status"] == "active"
    assert body["schedule"] == {"kind": "one_time", "at": format_ts(at_ms)}
    assert body["target"] == {"kind": "all"}
    assert body["template"] == "discount_offer"
    assert body["activated_at"] == body["created_at"]
    (record,) = await read_topic(kafka_bootstrap, broadcast_topic, 1)
    produced = orjson.loads(record.value)
    assert (produced["status"], produced["activated_ms"]) == ("active", produced["created_ms"])


async def test_create_without_an_id_generates_one(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    body = await create(client, {k: v for k, v in EVENING.items() if k != "id"})
    campaign_id = body["id"]
    assert re.fullmatch(r"c-[0-9a-f]{12}", campaign_id)
    assert await stored(redis, campaign_id) is not None
    (record,) = await read_topic(kafka_bootstrap, broadcast_topic, 1)
    assert record.key == f"campaign:{campaign_id}".encode()
    # An explicit null id is the same as none.
    other = await create(client, {**EVENING, "id": None})
    assert other["id"] != campaign_id and other["id"].startswith("c-")


async def test_duplicate_id_is_409_and_changes_nothing(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    await create(client, EVENING)
    first = await stored(redis, "evening-practice")
    response = await client.post("/v1/campaigns", json={**EVENING, "name": "Renamed"}, headers=ADMIN)
    assert_error(response, 409, "campaign_exists")
    assert await stored(redis, "evening-practice") == first
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "campaign"),
        ([EVENING], "campaign"),
        ({k: v for k, v in EVENING.items() if k != "name"}, "name"),
        ({**EVENING, "name": "   "}, "name"),
        ({**EVENING, "colour": "red"}, "colour"),
        ({**EVENING, "id": "bad id!"}, "id"),
        ({**EVENING, "id": "x" * 129}, "id"),
        ({**EVENING, "id": ""}, "id"),  # an empty id is replaced, then does not match the body's
        ({k: v for k, v in EVENING.items() if k != "schedule"}, "schedule"),
        ({**EVENING, "schedule": {"kind": "sometimes"}}, "schedule.kind"),
        (
            {**EVENING, "schedule": {"kind": "recurring", "every": "daily", "local_time": "24:00"}},
            "schedule.local_time",
        ),
        ({**EVENING, "schedule": {"kind": "recurring", "every": "weekly"}}, "schedule.days"),
        ({**EVENING, "schedule": {"kind": "recurring", "every": "daily", "weekday": 1}}, "schedule.weekday"),
        ({**EVENING, "schedule": {"kind": "drip", "offsets_days": [3, 1]}}, "schedule.offsets_days"),
        ({**EVENING, "schedule": {"kind": "one_time", "at": "tomorrow"}}, "schedule.at"),
        ({k: v for k, v in EVENING.items() if k != "target"}, "target"),
        ({**EVENING, "target": {"kind": "at_risk", "threshold": 101}}, "target.threshold"),
        ({**EVENING, "target": {"kind": "all", "threshold": 50}}, "target.threshold"),
        (
            {**EVENING, "target": {"kind": "filter", "field": "skills", "op": "eq", "value": "sql"}},
            "target.op",
        ),
        ({**EVENING, "intervention": "spam"}, "intervention"),
        ({**EVENING, "status": "completed"}, "status"),
        ({**EVENING, "start": "2027-01-02T00:00:00Z", "end": "2027-01-01T00:00:00Z"}, "end"),
        (one_time("past", 1_600_000_000_000, status="active"), "schedule.at"),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient,
    redis: Redis,
    broadcast_topic: str,
    kafka_bootstrap: str,
    body: Any,
    field: str,
) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    response = await client.post("/v1/campaigns", content=orjson.dumps(body), headers=headers)  # None: null
    error = assert_error(response, 422, "invalid_campaign")
    assert error["field"] == field
    assert field in str(error["message"])
    assert await redis.hlen(keys.CAMPAIGNS) == 0
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0


async def test_a_non_string_id_names_the_field(client: httpx.AsyncClient, broadcast_topic: str) -> None:
    response = await client.post("/v1/campaigns", json={**EVENING, "id": 5}, headers=ADMIN)
    error = assert_error(response, 422, "invalid_campaign")
    assert error.get("field") == "id"


async def test_a_non_string_id_is_422_and_stores_nothing(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    for bad in (5, True, ["x"]):
        response = await client.post("/v1/campaigns", json={**EVENING, "id": bad}, headers=ADMIN)
        assert_error(response, 422, "invalid_campaign")
    assert await redis.hlen(keys.CAMPAIGNS) == 0
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0


@pytest.mark.parametrize("content", [b"{nope", b"", b"\xff"])
async def test_a_body_that_is_not_json_is_400(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str, content: bytes
) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    assert_error(await client.post("/v1/campaigns", content=content, headers=headers), 400, "invalid_json")
    assert await redis.hlen(keys.CAMPAIGNS) == 0
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0


async def test_broker_down_is_503_and_stores_nothing(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("Kafka did not acknowledge within 15.0s")

    monkeypatch.setattr(client.app.state.producer, "send_all", unavailable)  # type: ignore[attr-defined]
    response = await client.post("/v1/campaigns", json=EVENING, headers=ADMIN)
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    # Not mirrored, so a retry is not refused as a duplicate.
    assert await stored(redis, "evening-practice") is None


# ---------------------------------------------------------------------------------------------
# Reading


def campaign(campaign_id: str, created_ms: int, **extra: Any) -> Campaign:
    return Campaign(
        id=campaign_id,
        name=f"Campaign {campaign_id}",
        schedule=Schedule("recurring", every="weekly", local_time="07:30", weekday=0),
        target=Target("filter", field="location", op="in", value=("Nairobi", "Mombasa")),
        intervention="personalized_content",
        created_ms=created_ms,
        updated_ms=created_ms,
        **extra,
    )


async def test_list_is_sorted_by_creation_then_id_with_executions(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    for c in (
        campaign("beta", 1_500),
        campaign("zeta", 1_000),
        campaign("alpha", 1_500),
        campaign("mid", 500),
    ):
        await store(redis, c)
    run = CampaignRun("beta")
    run.record("evaluated", 1_700_000_000_000, 10)
    run.record("sent", 1_700_000_100_000, 4)
    run.record("suppressed:quiet_hours", 1_700_000_050_000)
    await redis.hset(keys.CAMPAIGN_RUNS, "beta", orjson.dumps(run.to_dict()))

    response = await client.get("/v1/campaigns", headers=ADMIN)
    assert response.status_code == 200
    listed = response.json()["campaigns"]
    # Oldest first; the id breaks a tie.
    assert [c["id"] for c in listed] == ["mid", "zeta", "alpha", "beta"]
    by_id = {c["id"]: c for c in listed}
    assert by_id["beta"]["executions"] == run.to_dict()
    assert by_id["beta"]["executions"]["counts"] == {"evaluated": 10, "sent": 4, "suppressed:quiet_hours": 1}
    assert by_id["alpha"]["executions"] == CampaignRun("alpha").to_dict()
    assert by_id["zeta"]["schedule"] == {
        "kind": "recurring",
        "every": "weekly",
        "local_time": "07:30",
        "weekday": 0,
    }
    assert by_id["zeta"]["target"] == {
        "kind": "filter",
        "field": "location",
        "op": "in",
        "value": ["Nairobi", "Mombasa"],
    }
    assert by_id["zeta"]["created_at"] == format_ts(1_000)


async def test_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/campaigns", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"campaigns": []}


async def test_get_one_and_unknown(client: httpx.AsyncClient, redis: Redis) -> None:
    stored_campaign = campaign("one", 1_000)
    await store(redis, stored_campaign)
    response = await client.get("/v1/campaigns/one", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        **public_campaign(stored_campaign, now_ms()),
        "executions": CampaignRun("one").to_dict(),
    }
    assert_error(await client.get("/v1/campaigns/two", headers=ADMIN), 404, "campaign_not_found")


async def test_an_active_campaign_past_its_end_shows_as_completed(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    past = now_ms() - DAY_MS
    await store(
        redis, campaign("over", past - DAY_MS, status="active", end_ms=past, activated_ms=past - DAY_MS)
    )
    await store(redis, campaign("resting", past - DAY_MS, status="paused", end_ms=past))
    assert (await client.get("/v1/campaigns/over", headers=ADMIN)).json()["status"] == "completed"
    # Only an active campaign is derived as completed.
    assert (await client.get("/v1/campaigns/resting", headers=ADMIN)).json()["status"] == "paused"


# ---------------------------------------------------------------------------------------------
# Status changes


async def test_draft_active_paused_active(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    created = await create(client, EVENING)
    base = "/v1/campaigns/evening-practice"

    refused = await client.post(f"{base}/pause", headers=ADMIN)
    error = assert_error(refused, 409, "invalid_transition")
    assert "draft" in str(error["message"])
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 1

    before = now_ms()
    active = await client.post(f"{base}/activate", headers=ADMIN)
    assert active.status_code == 200, active.text
    body = active.json()
    assert body["status"] == "active"
    assert body["activated_at"] is not None and body["activated_at"] == body["updated_at"]
    assert body["created_at"] == created["created_at"]
    assert body["executions"] == CampaignRun("evening-practice").to_dict()
    mirrored = await stored(redis, "evening-practice")
    assert mirrored is not None
    assert mirrored["status"] == "active" and mirrored["activated_ms"] >= before

    # Asking for the current status changes nothing and produces nothing.
    again = await client.post(f"{base}/activate", headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["updated_at"] == body["updated_at"]
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 2

    paused = await client.post(f"{base}/pause", headers=ADMIN)
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["activated_at"] == body["activated_at"]
    assert (await client.post(f"{base}/pause", headers=ADMIN)).json()["status"] == "paused"

    resumed = await client.post(f"{base}/activate", headers=ADMIN)
    assert resumed.json()["status"] == "active"

    records = await read_topic(kafka_bootstrap, broadcast_topic, 4)
    assert len(records) == 4
    assert {r.key for r in records} == {b"campaign:evening-practice"}
    produced = [orjson.loads(r.value) for r in records]
    assert [p["status"] for p in produced] == ["draft", "active", "paused", "active"]
    assert produced[-1] == await stored(redis, "evening-practice")
    assert produced[3]["activated_ms"] >= produced[1]["activated_ms"]
    assert (await client.get(base, headers=ADMIN)).json()["status"] == "active"


async def test_activating_a_campaign_that_can_never_fire_is_409(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    # A draft may name a past instant; activating it is refused, and it stays a draft.
    await create(client, one_time("too-late", 1_600_000_000_000))
    error = assert_error(
        await client.post("/v1/campaigns/too-late/activate", headers=ADMIN), 409, "invalid_transition"
    )
    assert "schedule.at" in str(error["message"])
    mirrored = await stored(redis, "too-late")
    assert mirrored is not None and mirrored["status"] == "draft"
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 1


async def test_a_completed_campaign_may_be_paused_but_not_reactivated(
    client: httpx.AsyncClient, redis: Redis, broadcast_topic: str, kafka_bootstrap: str
) -> None:
    past = now_ms() - DAY_MS
    await store(
        redis, campaign("over", past - DAY_MS, status="active", end_ms=past, activated_ms=past - DAY_MS)
    )
    # Already active: a no-op that still shows the derived status.
    still = await client.post("/v1/campaigns/over/activate", headers=ADMIN)
    assert still.status_code == 200 and still.json()["status"] == "completed"
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0
    paused = await client.post("/v1/campaigns/over/pause", headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    error = assert_error(
        await client.post("/v1/campaigns/over/activate", headers=ADMIN), 409, "invalid_transition"
    )
    assert "end" in str(error["message"])
    mirrored = await stored(redis, "over")
    assert mirrored is not None and mirrored["status"] == "paused"
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 1


@pytest.mark.parametrize("action", ["activate", "pause"])
async def test_status_change_of_an_unknown_campaign_is_404(
    client: httpx.AsyncClient, broadcast_topic: str, kafka_bootstrap: str, action: str
) -> None:
    response = await client.post(f"/v1/campaigns/nope/{action}", headers=ADMIN)
    assert_error(response, 404, "campaign_not_found")
    assert await end_offset(kafka_bootstrap, broadcast_topic) == 0


async def test_status_change_with_the_broker_down_is_503_and_keeps_the_old_status(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = campaign("held", now_ms())
    await store(redis, draft)

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("Kafka did not acknowledge within 15.0s")

    monkeypatch.setattr(client.app.state.producer, "send_all", unavailable)  # type: ignore[attr-defined]
    assert_error(await client.post("/v1/campaigns/held/activate", headers=ADMIN), 503, "unavailable")
    assert await stored(redis, "held") == draft.to_dict()


# ---------------------------------------------------------------------------------------------
# Analytics


async def test_analytics_before_any_report(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/analytics/interventions", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert {name: body[name] for name in ("by_type", "by_channel", "by_template")} == {
        "by_type": {},
        "by_channel": {},
        "by_template": {},
    }


async def test_analytics_before_any_report_has_the_stored_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/analytics/interventions", headers=ADMIN)
    assert response.json() == InterventionStats().view()


async def test_analytics_returns_the_agents_view(client: httpx.AsyncClient, redis: Redis) -> None:
    stats = InterventionStats()
    for stage in ("sent", "sent", "sent", "sent", "opened", "opened", "clicked"):
        stats.record(stage, "gentle_reminder", "PUSH", "gentle_reminder", "b")
    stats.record("sent", "streak_warning", "IN_APP", "streak_warning", "a")
    view = stats.view()
    await redis.set(keys.INTERVENTION_ANALYTICS, orjson.dumps(view))
    response = await client.get("/v1/analytics/interventions", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == view
    reminder = response.json()["by_type"]["gentle_reminder"]
    assert (reminder["sent"], reminder["open_rate"], reminder["click_rate"]) == (4, 0.5, 0.25)
