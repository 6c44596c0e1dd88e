"""The staff workflow's routes on the real Redis and broker, without a worker: the at-risk list's
filters and row fields (views written as the risk pipeline writes them), and
``POST /v1/admin/risk/recalculate`` answered by a fake worker (tests/api/test_growth_routes.py)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.cursors import encode_cursor
from api.routes import risk as risk_routes
from infra import keys
from infra.commands import RISK_RECALCULATE, RISK_RECALCULATE_PARTITION, partition_result_id
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error
from tests.api.test_growth_routes import FakeWorker, commands_topic, short_wait, worker
from tests.api.test_risk_routes import ADMIN, at_risk, document

__all__ = ["commands_topic", "short_wait", "worker"]  # fixtures used here


async def seed(redis: Redis, rows: dict[str, tuple[float, list[str]]]) -> None:
    """Documents with the given score and signals, and the index, as the pipeline writes them."""
    for uid, (score, signals) in rows.items():
        await redis.set(keys.user_risk(uid), orjson.dumps({**document(uid, score), "signals": signals}))
    await redis.zadd(keys.RISK_SCORES, {uid: score for uid, (score, _) in rows.items()})


async def every_page(client: httpx.AsyncClient, query: str) -> list[list[str]]:
    out: list[list[str]] = []
    cursor: str | None = None
    while True:
        body = await at_risk(client, query + (f"&cursor={cursor}" if cursor else ""))
        out.append([s["user_id"] for s in body["students"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 200, "the cursor does not advance"


ROWS = {
    "c1": (95.0, ["recency_d", "events_7d"]),
    "c2": (81.0, ["missed_days"]),
    "h1": (79.9, ["recency_d"]),
    "h2": (60.0, ["streak"]),
    "m1": (55.0, ["recency_d"]),
    "l1": (39.9, ["recency_d", "missed_days"]),
    "l2": (5.0, ["events_7d"]),
}


# --- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?threshold=0&level=critical", ["c1", "c2"]),
        ("?threshold=0&level=critical,low", ["c1", "c2", "l1", "l2"]),
        ("?threshold=0&level=low&level=critical", ["c1", "c2", "l1", "l2"]),
        ("?threshold=0&level=high,medium", ["h1", "h2", "m1"]),
        ("?threshold=60&level=high,medium", ["h1", "h2"]),  # the threshold composes
        ("?threshold=0&signal=recency_d", ["c1", "h1", "m1", "l1"]),
        ("?threshold=0&signal=missed_days,streak", ["c2", "h2", "l1"]),
        ("?threshold=50&level=low,critical&signal=recency_d", ["c1"]),
        ("?threshold=0&level=low&signal=streak", []),
    ],
)
@pytest.mark.parametrize("limit", [1, 2, 50])
async def test_filters_page_through_exactly_the_matching_students(
    client: httpx.AsyncClient, redis: Redis, query: str, expected: list[str], limit: int
) -> None:
    await seed(redis, ROWS)
    pages = await every_page(client, f"{query}&limit={limit}")
    assert [uid for page in pages for uid in page] == expected
    assert all(len(page) <= limit for page in pages)
    # The stats stay the whole board's, whatever the filter.
    body = await at_risk(client, f"{query}&limit={limit}")
    assert body["stats"]["total_students"] == len(ROWS)
    assert (body["stats"]["critical"], body["stats"]["high"], body["stats"]["medium"]) == (2, 2, 1)


async def test_a_signal_filter_reads_a_bounded_number_of_rows_a_page(
    client: httpx.AsyncClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(risk_routes, "SIGNAL_SCAN_BUDGET", 5)
    rows = {f"u-{i:02d}": (90.0 - i, ["streak" if i in (2, 17) else "recency_d"]) for i in range(20)}
    await seed(redis, rows)
    first = await at_risk(client, "?threshold=0&limit=5&signal=streak")
    # Five rows read, one matched: a short page and a cursor to follow.
    assert [s["user_id"] for s in first["students"]] == ["u-02"] and first["next_cursor"]
    pages = await every_page(client, "?threshold=0&limit=5&signal=streak")
    assert [uid for page in pages for uid in page] == ["u-02", "u-17"]


async def test_the_rows_carry_the_workflow_fields(client: httpx.AsyncClient, redis: Redis) -> None:
    await seed(redis, {"u-1": (82.0, ["recency_d"])})
    (row,) = (await at_risk(client, "?threshold=0"))["students"]
    assert row["display_name"] == "Student u-1"
    assert row["last_intervention"] == {
        "type": "gentle_reminder",
        "channel": "PUSH",
        "at": "2026-11-21T00:00:00Z",
    }
    assert row["interventions"] == 1
    assert row["trend"] == [None, None, 87.0, 82.0]
    assert row["trend_weeks"] == ["2026-W44", "2026-W45", "2026-W46", "2026-W47"]
    detail = (await client.get("/v1/at-risk/u-1", headers=ADMIN)).json()
    assert {
        k: detail[k] for k in ("display_name", "last_intervention", "interventions", "trend", "trend_weeks")
    } == {k: row[k] for k in ("display_name", "last_intervention", "interventions", "trend", "trend_weeks")}


async def test_a_hostile_display_name_in_a_view_is_cleaned_on_the_way_out(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    doc = {**document("u-1", 90.0), "display_name": "\u202e<img src=x onerror=alert(1)>" + "A" * 5000}
    await redis.set(keys.user_risk("u-1"), orjson.dumps(doc))
    await redis.zadd(keys.RISK_SCORES, {"u-1": 90.0})
    response = await client.get("/v1/at-risk", headers=ADMIN)
    assert response.headers["content-type"].startswith("application/json")
    (row,) = response.json()["students"]
    assert row["display_name"].startswith("<img src=x onerror=alert(1)>") and len(row["display_name"]) == 64


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?level=severe", "level"),
        ("?level=critical,Critical", "level"),
        ("?signal=nope", "signal"),
        ("?signal=recency_d%00", "signal"),
        ("?signal=" + "x" * 600, "signal"),
        ("?level=" + ",".join(["low"] * 40), "level"),
        ("?" + "&".join(["level=low"] * 40), "level"),
    ],
)
async def test_an_unknown_or_oversized_filter_is_400(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    error = assert_error(await client.get(f"/v1/at-risk{query}", headers=ADMIN), 400, "invalid_filter")
    assert error["field"] == field
    assert len(str(error["message"])) < 200


async def test_a_cursor_continues_only_the_list_of_its_filters(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seed(redis, ROWS)
    cursor = (await at_risk(client, "?threshold=0&level=critical,high&limit=1"))["next_cursor"]
    assert cursor
    ok = await at_risk(client, f"?threshold=0&level=high,critical&limit=1&cursor={cursor}")  # same filter
    assert [s["user_id"] for s in ok["students"]] == ["c2"]
    for other in (
        "?threshold=0&level=critical",
        "?threshold=1&level=critical,high",
        "?threshold=0",
        "?threshold=0&level=critical,high&signal=streak",
    ):
        response = await client.get(f"/v1/at-risk{other}&cursor={cursor}", headers=ADMIN)
        assert_error(response, 400, "invalid_cursor")
    # A forged scope, and a cursor from before scopes on a filtered list, are refused too.
    forged = base64.urlsafe_b64encode(orjson.dumps([95.0, "c1", "0" * 12])).decode()
    assert_error(
        await client.get(f"/v1/at-risk?level=critical&cursor={forged}", headers=ADMIN), 400, "invalid_cursor"
    )
    legacy = encode_cursor(95.0, "c1")
    assert_error(
        await client.get(f"/v1/at-risk?level=critical&cursor={legacy}", headers=ADMIN), 400, "invalid_cursor"
    )
    # ... while it still continues the unfiltered list it came from.
    continued = await at_risk(client, f"?threshold=0&cursor={legacy}")
    assert continued["students"][0]["user_id"] == "c2"


# --- recalculate ------------------------------------------------------------------------------

RECALC = "/v1/admin/risk/recalculate"


async def test_recalculate_needs_an_admin(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(RECALC, json={"all": True}), 401, "unauthorized")
    assert_error(await client.post(RECALC, json={"user_id": "u-1"}, headers=bearer("u-1")), 403, "forbidden")
    assert_error(await client.get(f"{RECALC}/risk-recalc-x", headers=bearer("u-1")), 403, "forbidden")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"all": False},
        {"all": "true"},
        {"all": 1},
        {"user_id": "u-1", "all": True},
        {"user_id": 7},
        {"user_id": "u\x00-1"},
        {"user_id": "x" * 129},
        {"user_id": "u-1", "extra": 1},
        {"user_id": "u-1", "request_id": "r" * 500},
        [],
        "all",
    ],
)
async def test_recalculate_refuses_a_bad_body(client: httpx.AsyncClient, body: object) -> None:
    assert_error(await client.post(RECALC, json=body, headers=ADMIN), 422, "validation_error")


async def test_recalculate_refuses_garbage_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    garbage = await client.post(
        RECALC, content=b"\xff{not json", headers={**ADMIN, "content-type": "application/json"}
    )
    assert garbage.status_code in (400, 422)
    huge = await client.post(
        RECALC,
        content=b'{"user_id": "' + b"a" * 2_000_000 + b'"}',
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert huge.status_code in (413, 422)


async def test_recalculating_an_unknown_user_is_404(client: httpx.AsyncClient, commands_topic: str) -> None:
    assert_error(await client.post(RECALC, json={"user_id": "ghost"}, headers=ADMIN), 404, "user_not_found")


async def test_recalculate_one_user_answers_with_the_workers_result(
    client: httpx.AsyncClient, redis: Redis, worker: FakeWorker
) -> None:
    await seed(redis, {"u-1": (70.0, ["recency_d"])})
    worker.reply = lambda c: {
        "ok": True,
        "user_id": c["user_id"],
        "score": 71.5,
        "level": "high",
        "updated_at": "x",
    }
    before = int(time.time() * 1000)
    response = await client.post(RECALC, json={"user_id": "u-1", "request_id": "r-1"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done" and body["result"]["score"] == 71.5
    (command,) = worker.commands
    assert command["type"] == RISK_RECALCULATE and command["user_id"] == "u-1"
    assert command["command_id"] == body["command_id"] and before <= command["ts"]
    assert worker.record_keys == [b"u-1"]
    # A retry with the same request_id is the same request: no second command, the same answer.
    again = await client.post(RECALC, json={"user_id": "u-1", "request_id": "r-1"}, headers=ADMIN)
    assert again.status_code == 200 and again.json() == body
    assert len(worker.commands) == 1
    polled = await client.get(body["poll"], headers=ADMIN)
    assert polled.status_code == 200 and polled.json() == body
    # The same request_id for another request is a conflict.
    other = await client.post(RECALC, json={"all": True, "request_id": "r-1"}, headers=ADMIN)
    assert_error(other, 409, "request_conflict")


async def test_a_workers_refusal_is_said(client: httpx.AsyncClient, redis: Redis, worker: FakeWorker) -> None:
    await seed(redis, {"u-1": (70.0, ["recency_d"])})
    worker.reply = lambda c: {"ok": False, "code": "unknown_user", "message": "no risk state"}
    assert_error(await client.post(RECALC, json={"user_id": "u-1"}, headers=ADMIN), 404, "unknown_user")


async def test_without_an_answer_recalculate_is_202_to_poll(
    client: httpx.AsyncClient, redis: Redis, worker: FakeWorker, short_wait: None
) -> None:
    await seed(redis, {"u-1": (70.0, ["recency_d"])})
    response = await client.post(RECALC, json={"user_id": "u-1"}, headers=ADMIN)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["poll"] == f"{RECALC}/{body['command_id']}"
    assert (await client.get(body["poll"], headers=ADMIN)).status_code == 202
    assert_error(await client.get(f"{RECALC}/risk-recalc-forged", headers=ADMIN), 404, "unknown_command")
    assert_error(await client.get(f"{RECALC}/{'x' * 300}", headers=ADMIN), 422, "validation_error")


async def test_recalculate_all_asks_every_partition_and_is_rate_limited(
    client: httpx.AsyncClient, redis: Redis, worker: FakeWorker
) -> None:
    worker.reply = lambda c: {"ok": True, "partition": c["partition"], "queued": 3, "as_of_ms": 1}
    response = await client.post(RECALC, json={"all": True}, headers=ADMIN)
    assert response.status_code == 202, response.text
    body = response.json()
    partitions = client_partitions(body)
    # Answers come as the worker reads the commands: poll until every partition answered.
    deadline = time.monotonic() + 20
    while True:
        polled = await client.get(body["poll"], headers=ADMIN)
        if polled.status_code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # a poll's pace, not a synchronisation: the loop waits on the answer
    assert polled.status_code == 200, polled.text
    status = polled.json()
    assert (
        status["status"] == "queued"
        and status["answered"] == partitions
        and status["queued"] == 3 * partitions
    )
    assert sorted(c["partition"] for c in worker.commands) == list(range(partitions))
    assert {c["type"] for c in worker.commands} == {RISK_RECALCULATE_PARTITION}
    assert {c["command_id"] for c in worker.commands} == {
        partition_result_id(body["command_id"], p) for p in range(partitions)
    }
    # Expensive: once per RECALC_ALL_EVERY_S for everyone.
    limited = await client.post(RECALC, json={"all": True}, headers=bearer("another-admin", "admin"))
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) > 0


def client_partitions(body: dict[str, Any]) -> int:
    raw = body.get("partitions")
    assert isinstance(raw, int) and raw >= 1
    return raw
