"""User ids chosen to collide with the engine's shared Redis keys (issue 11).

Users named after shared keys (``books``, ``facts``, ``pulse``, ``at-risk``, ``workers``...), or
holding the key layout's own separators and hash-tag braces, once made the worker loop on a Redis
``WRONGTYPE`` and the admin growth routes answer 500. Each of them here posts an event, applies
for a job and generates a referral code; then every shared read answers and each user's own
reads are theirs.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from infra.topics import APPLICATION_STATUS
from tests.conftest import wait_until
from tests.hostile.kit import (
    Outgoing,
    Stack,
    admin_headers,
    honest_event_applied,
    lesson,
    now_ms,
    produce_all,
    user_headers,
    wait_xp,
)

# The API and Redis are under attack here, not the broker: Apache Kafka only.
pytestmark = [pytest.mark.integration, pytest.mark.one_broker]

COLLIDING = [
    "books",
    "facts",
    "pulse",
    "at-risk",
    "risk-board",
    "workers",
    "worker-stalls",
    "campaigns",
    "campaign-runs",
    "referral-books",
    "application-facts",
    "lb:daily:x",
    "{x}",
    "a:b",
    "x}:state",
    "u:{y}:state",
    "*",
    "[a-z]?",
]

SHARED_READS = [
    "/v1/admin/referrals/held",
    "/v1/analytics/growth",
    "/v1/analytics/applications",
    "/v1/analytics/interventions",
    "/v1/at-risk",
    "/v1/campaigns",
    "/v1/leaderboards/daily",
    "/v1/leaderboards/all_time",
    "/v1/ops/lag",
]


def path(user_id: str) -> str:
    return quote(user_id, safe="")


def application(user_id: str) -> Outgoing:
    status = {
        "event_id": f"a-{user_id}",
        "application_id": f"app-{user_id}",
        "user_id": user_id,
        "job_id": "j-collide",
        "status": "submitted",
        "ts": now_ms() - 1000,
    }
    return (APPLICATION_STATUS, user_id.encode(), orjson.dumps(status), None)


async def test_users_named_like_shared_keys_break_nothing(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        codes: dict[str, str] = {}
        for user in COLLIDING:
            r = await http.post("/v1/events", headers=user_headers(user), json=lesson(user))
            assert r.status_code == 202, (user, r.text)
            r = await http.post("/v1/referrals/generate", headers=user_headers(user), json={})
            assert r.status_code == 200, (user, r.text)
            codes[user] = r.json()["code"]
        await produce_all(stack.kafka, [application(u) for u in COLLIDING])

        views = await asyncio.gather(*(wait_xp(stack, http, u) for u in COLLIDING))
        for user, view in zip(COLLIDING, views, strict=True):
            # 65 for the lesson; the application may have been applied already and earned more.
            assert view["user_id"] == user and view["xp"] >= 65, view
            assert view["counters"]["count:lesson_complete"] == 1, view

        async def applied(user: str) -> dict[str, Any]:
            async def ready() -> dict[str, Any] | None:
                r = await http.get(f"/v1/users/{path(user)}/applications", headers=user_headers(user))
                assert r.status_code == 200, (user, r.text)
                body: dict[str, Any] = r.json()
                return body if body["applications"] else None

            found: dict[str, Any] = await wait_until(ready, timeout=30, what=f"{user}'s application")
            return found

        for user in COLLIDING:
            body = await applied(user)
            assert body["user_id"] == user
            assert [a["application_id"] for a in body["applications"]] == [f"app-{user}"], body
            history = await http.get("/v1/referrals/history", headers=user_headers(user))
            assert history.status_code == 200, (user, history.text)
            assert history.json()["user_id"] == user and history.json()["code"] == codes[user]
        assert len(set(codes.values())) == len(COLLIDING)

        for route in SHARED_READS:
            r = await http.get(route, headers=admin_headers())
            assert r.status_code == 200, (route, r.text)
        growth = (await http.get("/v1/analytics/growth", headers=admin_headers())).json()
        assert growth["total_users"] >= len(COLLIDING), growth
        board = (await http.get("/v1/leaderboards/all_time?limit=100", headers=admin_headers())).json()
        assert set(COLLIDING) <= {e["user_id"] for e in board["entries"]}, board
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        await honest_event_applied(stack, http)
    stack.assert_alive()
    assert "WRONGTYPE" not in stack.worker.tail(2000)
