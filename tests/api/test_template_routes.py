"""Notification templates as data (api/routes/templates.py) on the real Redis and broker: the
admins' CRUD, each definition produced to `elimu-broadcast` under ``template:<id>`` (a tombstone
on delete) and mirrored into ``keys.TEMPLATES`` (a deleted marker on delete); the built-ins
listed and read-only; a template a campaign names kept; and each variant's funnel with the A/B
verdict from the analytics view (written here in its format, ``InterventionStats.view``)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from api.routes import templates as template_routes
from infra import keys
from infra.campaign_view import mirror_templates
from infra.producer import ProducerUnavailable
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.interventions.bandit import InterventionStats
from models.interventions.template_admin import (
    MAX_BODY_LEN,
    MAX_HTML_LEN,
    MAX_VARIANTS,
    parse_stored_template,
)
from models.interventions.templates import TEMPLATES
from streams.broadcast import template_key
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import wait_until

ADMIN = bearer("ops", "admin")
ROOT = "/v1/admin/templates"


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return f"tpl-{uuid.uuid4().hex[:12]}"


def definition(template_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "gentle_reminder",
        "name": "Warm welcome back",
        "variants": [
            {"id": "warm", "subject": "We missed you, {display_name}", "body": "It's been {days_quiet} days.",
             "cta": "Resume", "html": "<p>Hi <b>{display_name}</b></p>"},
            {"id": "short", "subject": "Back?", "body": "Ten minutes today.", "cta": "Go"},
        ],
        **overrides,
    }  # fmt: skip
    if template_id is not None:
        body["id"] = template_id
    return body


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(ROOT, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def mirrored(redis: Redis, template_id: str) -> dict[str, Any] | None:
    raw = await redis.hget(keys.TEMPLATES, template_id)
    return None if raw is None else dict(orjson.loads(raw))


async def broadcast_records(bootstrap: str, key: bytes, expected: int, timeout: float = 10.0) -> list[Any]:
    """The records of ``elimu-broadcast`` under ``key``, from the start, once ``expected`` are there
    (the topic is shared by every test on the broker: the others' records are skipped)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(BROADCAST_TOPIC) or set()
        if not partitions:
            await consumer.topics()  # refresh the metadata
            partitions = consumer.partitions_for_topic(BROADCAST_TOPIC) or {0}
        tps = [TopicPartition(BROADCAST_TOPIC, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[ConsumerRecord[bytes, bytes]] = []

        async def enough() -> bool:
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for records in batch.values():
                found.extend(r for r in records if r.key == key)
            return len(found) >= expected

        await wait_until(enough, timeout=timeout, what=f"{expected} records under {key!r}")
        return found
    finally:
        await consumer.stop()


def shown(view: dict[str, Any]) -> dict[str, Any]:
    """A view as a stored definition: without the funnel and the verdict."""
    doc = {k: v for k, v in view.items() if k != "ab_test"}
    doc["variants"] = [{k: v for k, v in variant.items() if k != "stats"} for variant in view["variants"]]
    return doc


# ---------------------------------------------------------------------------------------------
# Auth


def admin_routes() -> list[tuple[str, str, Any]]:
    return [
        ("GET", ROOT, None),
        ("POST", ROOT, definition("tpl-auth")),
        ("GET", f"{ROOT}/tpl-auth", None),
        ("PUT", f"{ROOT}/tpl-auth", definition()),
        ("DELETE", f"{ROOT}/tpl-auth", None),
        ("GET", f"{ROOT}/gentle_reminder", None),
    ]


@pytest.mark.parametrize(("method", "path", "body"), admin_routes())
async def test_every_route_needs_a_token(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    assert_error(await client.request(method, path, json=body), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), admin_routes())
async def test_users_are_refused_and_change_nothing(
    client: httpx.AsyncClient, redis: Redis, method: str, path: str, body: Any
) -> None:
    held = definition() | {"id": "tpl-auth", "updated_ms": 1, "allocation": "auto"}
    await redis.hset(keys.TEMPLATES, "tpl-auth", orjson.dumps(held))
    response = await client.request(method, path, json=body, headers=bearer("u-1"))
    assert_error(response, 403, "forbidden")
    assert await mirrored(redis, "tpl-auth") == held


# ---------------------------------------------------------------------------------------------
# Built-ins


async def test_the_builtins_are_listed_first_and_read_only(client: httpx.AsyncClient) -> None:
    response = await client.get(ROOT, headers=ADMIN)
    assert response.status_code == 200
    listed = response.json()["templates"]
    assert [t["id"] for t in listed] == list(TEMPLATES)
    for view, builtin in zip(listed, TEMPLATES.values(), strict=True):
        assert view["builtin"] is True and view["type"] == builtin.type
        assert [v["id"] for v in view["variants"]] == [v.id for v in builtin.variants]
        assert view["ab_test"]["winner"] is None and view["ab_test"]["p_value"] is None

    one = await client.get(f"{ROOT}/streak_warning", headers=ADMIN)
    assert one.status_code == 200 and one.json() == listed[list(TEMPLATES).index("streak_warning")]


@pytest.mark.parametrize("template_id", ["gentle_reminder", "human_outreach"])
async def test_a_builtin_cannot_be_replaced_deleted_or_taken(
    client: httpx.AsyncClient, redis: Redis, kafka_bootstrap: str, template_id: str
) -> None:
    assert_error(
        await client.put(f"{ROOT}/{template_id}", json=definition(), headers=ADMIN), 409, "builtin_template"
    )
    assert_error(await client.delete(f"{ROOT}/{template_id}", headers=ADMIN), 409, "builtin_template")
    error = assert_error(
        await client.post(ROOT, json=definition(template_id), headers=ADMIN), 422, "invalid_template"
    )
    assert error["field"] == "id"
    assert await redis.hlen(keys.TEMPLATES) == 0


# ---------------------------------------------------------------------------------------------
# Create, read, replace, delete


async def test_crud_round_trip_with_broadcast_and_mirror(
    client: httpx.AsyncClient, redis: Redis, kafka_bootstrap: str
) -> None:
    tid = new_id()
    before = now_ms()
    created = await create(client, definition(tid))
    after = now_ms()

    assert created["id"] == tid and created["builtin"] is False and created["default"] is False
    assert created["allocation"] == "auto" and created["name"] == "Warm welcome back"
    assert before <= created["updated_ms"] <= after
    assert [v["id"] for v in created["variants"]] == ["warm", "short"]
    assert created["variants"][0]["html"] == "<p>Hi <b>{display_name}</b></p>"
    assert created["ab_test"]["winner"] is None

    # Produced to the broadcast topic under template:<id>, the definition every worker reads back.
    (record,) = await broadcast_records(kafka_bootstrap, template_key(tid), 1)
    assert record.key == f"template:{tid}".encode()
    document = orjson.loads(record.value)
    assert document == shown(created)
    assert parse_stored_template(document).to_dict() == document  # a worker accepts it as it is

    # Mirrored for the admin routes.
    assert await mirrored(redis, tid) == document
    got = await client.get(f"{ROOT}/{tid}", headers=ADMIN)
    assert got.status_code == 200 and shown(got.json()) == document
    listed = (await client.get(ROOT, headers=ADMIN)).json()["templates"]
    assert [t["id"] for t in listed] == [*TEMPLATES, tid]

    # Replace: same id, new text, a later updated_ms.
    replacement = definition(
        tid,
        allocation="split",
        default=True,
        variants=[{"subject": "New {streak}", "body": "b", "cta": "c", "weight": 4}],
    )
    response = await client.put(f"{ROOT}/{tid}", json=replacement, headers=ADMIN)
    assert response.status_code == 200, response.text
    replaced = response.json()
    assert replaced["allocation"] == "split" and replaced["default"] is True
    assert [(v["id"], v["subject"], v["weight"]) for v in replaced["variants"]] == [
        ("a", "New {streak}", 4.0)
    ]
    assert replaced["updated_ms"] >= created["updated_ms"]
    records = await broadcast_records(kafka_bootstrap, template_key(tid), 2)
    assert orjson.loads(records[1].value) == shown(replaced)
    assert await mirrored(redis, tid) == shown(replaced)

    # Delete: a tombstone on the topic, a deleted marker in the mirror, then 404 everywhere.
    response = await client.delete(f"{ROOT}/{tid}", headers=ADMIN)
    assert response.status_code == 204 and response.content == b""
    records = await broadcast_records(kafka_bootstrap, template_key(tid), 3)
    assert records[2].value is None
    marker = await mirrored(redis, tid)
    assert marker is not None and marker["deleted"] is True and marker["id"] == tid
    assert marker["updated_ms"] >= replaced["updated_ms"]
    assert_error(await client.get(f"{ROOT}/{tid}", headers=ADMIN), 404, "template_not_found")
    assert_error(
        await client.put(f"{ROOT}/{tid}", json=definition(), headers=ADMIN), 404, "template_not_found"
    )
    assert_error(await client.delete(f"{ROOT}/{tid}", headers=ADMIN), 404, "template_not_found")
    listed = (await client.get(ROOT, headers=ADMIN)).json()["templates"]
    assert tid not in {t["id"] for t in listed}

    # A lagging mirror write of the old definition cannot bring it back.
    await mirror_templates(redis, [(tid, shown(replaced), replaced["updated_ms"])])
    assert_error(await client.get(f"{ROOT}/{tid}", headers=ADMIN), 404, "template_not_found")

    # The id may be used again.
    again = await create(client, definition(tid))
    assert again["updated_ms"] > marker["updated_ms"]  # so the mirror takes it over the marker
    assert (await client.get(f"{ROOT}/{tid}", headers=ADMIN)).status_code == 200


async def test_an_id_is_made_when_none_is_given(client: httpx.AsyncClient, redis: Redis) -> None:
    created = await create(client, definition())
    assert re.fullmatch(r"t-[0-9a-f]{12}", created["id"])
    assert created["name"] == "Warm welcome back"
    assert await mirrored(redis, created["id"]) == shown(created)


async def test_creating_an_existing_id_is_409(client: httpx.AsyncClient, redis: Redis) -> None:
    tid = new_id()
    first = await create(client, definition(tid))
    changed = definition(tid, name="Other")
    assert_error(await client.post(ROOT, json=changed, headers=ADMIN), 409, "template_exists")
    assert await mirrored(redis, tid) == shown(first)


async def test_put_with_another_id_in_the_body_is_refused(client: httpx.AsyncClient, redis: Redis) -> None:
    tid = new_id()
    first = await create(client, definition(tid))
    response = await client.put(f"{ROOT}/{tid}", json=definition("someone-else"), headers=ADMIN)
    assert assert_error(response, 422, "invalid_template")["field"] == "id"
    assert await mirrored(redis, tid) == shown(first)


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("attribute", definition(variants=[{"subject": "{display_name.__class__}", "body": "b", "cta": "c"}]),
     "variants[0].subject"),
    ("positional", definition(variants=[{"subject": "s", "body": "{0}", "cta": "c"}]), "variants[0].body"),
    ("index", definition(variants=[{"subject": "s", "body": "{x[0]}", "cta": "c"}]), "variants[0].body"),
    ("format-spec", definition(variants=[{"subject": "s", "body": "b", "cta": "{name:>999999}"}]),
     "variants[0].cta"),
    ("undeclared", definition(variants=[{"subject": "s", "body": "b", "cta": "c", "html": "{password}"}]),
     "variants[0].html"),
    ("unknown-type", definition(type="fortune"), "type"),
    ("weight-with-auto", definition(variants=[{"subject": "s", "body": "b", "cta": "c", "weight": 2}]),
     "variants[0].weight"),
    ("no-variants", definition(variants=[]), "variants"),
    ("unknown-field", definition(colour="red"), "colour"),
    ("bad-id", definition("Not An Id"), "id"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in INVALID], ids=[i for i, _, _ in INVALID])
async def test_an_invalid_template_is_422_naming_the_field(
    client: httpx.AsyncClient, redis: Redis, body: dict[str, Any], field: str
) -> None:
    error = assert_error(await client.post(ROOT, json=body, headers=ADMIN), 422, "invalid_template")
    assert error["field"] == field
    assert str(error["message"]).startswith(f"{field}: ")
    assert await redis.hlen(keys.TEMPLATES) == 0

    # The same check on a replacement, which leaves the held definition alone.
    tid = new_id()
    held = await create(client, definition(tid))
    replacement = {k: v for k, v in body.items() if k != "id"}
    if field != "id":
        response = await client.put(f"{ROOT}/{tid}", json=replacement, headers=ADMIN)
        assert assert_error(response, 422, "invalid_template")["field"] == field
    assert await mirrored(redis, tid) == shown(held)


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(ROOT, content=b"{oops", headers=ADMIN)
    assert_error(response, 400, "not_json")


async def test_a_body_that_is_not_an_object_is_an_invalid_template(client: httpx.AsyncClient) -> None:
    response = await client.post(ROOT, json=[definition()], headers=ADMIN)
    assert_error(response, 422, "invalid_template")


async def test_a_template_at_every_limit_is_accepted(client: httpx.AsyncClient) -> None:
    variants = [
        {"id": f"v{i}", "subject": "s", "body": "b" * MAX_BODY_LEN, "cta": "c", "html": "h" * MAX_HTML_LEN}
        for i in range(MAX_VARIANTS)
    ]
    await create(client, definition(new_id(), variants=variants))


async def test_a_long_path_id_is_a_validation_error(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"{ROOT}/{'x' * 65}", headers=ADMIN), 422, "validation_error")


async def test_broker_down_is_503_and_mirrors_nothing(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise ProducerUnavailable("Kafka did not acknowledge within 15.0s")

    monkeypatch.setattr(client.app.state.producer, "send_all", unavailable)  # type: ignore[attr-defined]
    tid = new_id()
    response = await client.post(ROOT, json=definition(tid), headers=ADMIN)
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert await mirrored(redis, tid) is None  # a retry is not refused as a duplicate


def test_definitions_go_to_the_broadcast_topic() -> None:
    assert vars(template_routes)["BROADCAST_TOPIC"] == BROADCAST_TOPIC == "elimu-broadcast"


# ---------------------------------------------------------------------------------------------
# In use


async def test_a_template_a_campaign_names_cannot_be_deleted(
    client: httpx.AsyncClient, redis: Redis, kafka_bootstrap: str
) -> None:
    tid = new_id()
    created = await create(client, definition(tid))
    campaign = {"id": "evening", "name": "Evening", "intervention": "gentle_reminder", "template": tid,
                "status": "active", "updated_ms": now_ms()}  # fmt: skip
    other = campaign | {"id": "other", "template": "gentle_reminder"}
    await redis.hset(
        keys.CAMPAIGNS, mapping={"evening": orjson.dumps(campaign), "other": orjson.dumps(other)}
    )

    error = assert_error(await client.delete(f"{ROOT}/{tid}", headers=ADMIN), 409, "template_in_use")
    assert "evening" in str(error["message"]) and "other" not in str(error["message"])
    assert await mirrored(redis, tid) == shown(created)
    assert len(await broadcast_records(kafka_bootstrap, template_key(tid), 1)) == 1  # no tombstone

    # Once the campaign no longer names it (or is deleted), it can go.
    await redis.hset(keys.CAMPAIGNS, "evening", orjson.dumps(campaign | {"deleted": True}))
    response = await client.delete(f"{ROOT}/{tid}", headers=ADMIN)
    assert response.status_code == 204
    marker = await mirrored(redis, tid)
    assert marker is not None and marker["deleted"] is True


# ---------------------------------------------------------------------------------------------
# Results and the A/B verdict


async def test_each_variant_shows_its_funnel_and_the_ab_verdict(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    tid = new_id()
    await create(client, definition(tid))
    stats = InterventionStats()
    for i in range(100):
        stats.record("sent", "gentle_reminder", "EMAIL", tid, "warm")
        stats.record("sent", "gentle_reminder", "EMAIL", tid, "short")
        if i < 50:
            stats.record("clicked", "gentle_reminder", "EMAIL", tid, "warm")
        if i < 30:
            stats.record("clicked", "gentle_reminder", "EMAIL", tid, "short")
    stats.record_delivery("delivered", "EMAIL", tid, "warm")
    stats.record_delivery("bounced", "EMAIL", tid, "short")
    await redis.set(keys.INTERVENTION_ANALYTICS, orjson.dumps(stats.view()))

    view = (await client.get(f"{ROOT}/{tid}", headers=ADMIN)).json()
    warm, short = view["variants"]
    assert (warm["stats"]["sent"], warm["stats"]["clicked"], warm["stats"]["click_rate"]) == (100, 50, 0.5)
    assert (short["stats"]["sent"], short["stats"]["clicked"], short["stats"]["click_rate"]) == (100, 30, 0.3)
    assert warm["stats"]["deliveries"]["delivered"] == 1 and short["stats"]["deliveries"]["bounced"] == 1
    verdict = view["ab_test"]
    assert verdict["winner"] == "warm" and verdict["significant"] is True
    assert verdict["p_value"] == pytest.approx(0.003892, abs=1e-6)
    assert verdict["rates"] == {"warm": 0.5, "short": 0.3}

    # The list shows the same; the built-ins have no results in this view.
    listed = {t["id"]: t for t in (await client.get(ROOT, headers=ADMIN)).json()["templates"]}
    assert listed[tid]["ab_test"] == verdict
    assert listed["gentle_reminder"]["variants"][0]["stats"] == {"deliveries": {}}

    # Unsubscribes count against a variant: 45 of warm's readers left the channel.
    for _ in range(45):
        stats.record_delivery("unsubscribed", "EMAIL", tid, "warm")
    await redis.set(keys.INTERVENTION_ANALYTICS, orjson.dumps(stats.view()))
    verdict = (await client.get(f"{ROOT}/{tid}", headers=ADMIN)).json()["ab_test"]
    assert verdict["rates"] == {"warm": 0.05, "short": 0.3} and verdict["winner"] == "short"


async def test_close_results_have_no_winner(client: httpx.AsyncClient, redis: Redis) -> None:
    stats = InterventionStats()
    for i in range(100):
        for v, clicks in (("a", 50), ("b", 48)):
            stats.record("sent", "streak_warning", "PUSH", "streak_warning", v)
            if i < clicks:
                stats.record("clicked", "streak_warning", "PUSH", "streak_warning", v)
    await redis.set(keys.INTERVENTION_ANALYTICS, orjson.dumps(stats.view()))
    verdict = (await client.get(f"{ROOT}/streak_warning", headers=ADMIN)).json()["ab_test"]
    assert verdict["winner"] is None and verdict["significant"] is False
    assert verdict["p_value"] == pytest.approx(0.777254, abs=1e-6)
