"""Recommendations and match insights through the real broker, worker, Redis and API: a profile
with skills, postings it matches with a skill missing, an event; the websocket gets a
``recommendations`` push, the routes answer the list and the insights, another user gets 403."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis

from api.auth import issue_token
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_careers import posting, send
from tests.integration.test_end_to_end import recv_json, recv_until

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
DAY = 86_400_000


def _ids(message: dict[str, Any]) -> set[str]:
    return {item["id"] for item in message["data"]["items"]}


async def test_missing_skills_become_a_pushed_recommendation_and_insights(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    user, other = "amina", "brian"
    token = issue_token(TEST_SECRET, user)
    headers = {"Authorization": f"Bearer {token}"}
    intruder = {"Authorization": f"Bearer {issue_token(TEST_SECRET, other)}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)
            ws_url = url.replace("http", "ws") + f"/v1/ws?token={token}"
            async with websockets.connect(ws_url) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": f"user:{user}"}).decode())
                assert (await recv_json(ws))["op"] == "subscribed"

                profile = {
                    "user_id": user,
                    "timezone": "Africa/Nairobi",
                    "location": "Nairobi",
                    "skills": ["Excel", "Python"],
                    "experience_years": 1,
                    "education": "bachelor",
                    "salary_expectation": 70000,
                    "currency": "KES",
                }
                send(fresh_kafka, "user-profiles", [profile], "user_id")
                send(
                    fresh_kafka,
                    "job-postings",
                    [
                        # Both ask for SQL, which Amina lacks: 83 each; j-1 closes in 3 days.
                        posting("j-1"),
                        posting("j-2", industry="finance", deadline=NOW + 20 * DAY, salary_max=120000),
                        # Everything she has: a perfect match.
                        posting("j-3", skills=["excel", "python"], deadline=NOW + 20 * DAY),
                    ],
                    "job_id",
                )
                event = {
                    "event_id": "rec-e-1",
                    "user_id": user,
                    "type": "lesson_complete",
                    "ts": NOW - 1000,
                    "props": {"duration_s": 600, "score": 80, "category": "technical"},
                }
                send(fresh_kafka, "behavior-events", [event], "user_id")

                # The list may be pushed more than once while the postings arrive (in any
                # order); wait for the one that has learned of the SQL gap.
                pushed = await recv_until(
                    ws,
                    lambda m: m.get("type") == "recommendations" and "learn_skill:sql" in _ids(m),
                    timeout=90,
                )
                assert pushed["channel"] == f"user:{user}"
                assert pushed["data"]["user_id"] == user and pushed["data"]["version"] >= 1

            async def listed() -> Any:
                r = await http.get(f"/v1/users/{user}/recommendations", headers=headers)
                assert r.status_code == 200
                body = r.json()
                items = {i["id"]: i for i in body["items"]}
                return body if "learn_skill:sql" in items and "apply_closing:j-1" in items else None

            body = await wait_until(listed, timeout=60, what="recommendations with the SQL gap")
            items = {i["id"]: i for i in body["items"]}
            sql = items["learn_skill:sql"]
            assert (sql["horizon"], sql["kind"], sql["title"]) == ("this_week", "learn_skill", "Learn sql")
            assert sql["reason"].startswith("2 of your top 3 matches ask for sql")
            assert sql["action"] == {"type": "learn_skill", "skill": "sql"}
            assert items["apply_closing:j-1"]["horizon"] == "immediate"
            shape = {"id", "horizon", "kind", "title", "reason", "action"}
            assert all(set(i) == shape for i in body["items"])

            async def insights() -> Any:
                r = await http.get(f"/v1/users/{user}/matches/insights", headers=headers)
                assert r.status_code == 200
                return r.json() if r.json()["total"] == 3 else None

            got = await wait_until(insights, timeout=30, what="insights over three matches")
            assert (got["perfect"], got["urgent"]) == (1, 1)
            assert got["skills_to_improve"][0] == {"skill": "sql", "matches": 2}
            assert got["top_industries"][0] == {"industry": "technology", "matches": 2}
            (kes,) = got["salary_outlook"]["by_currency"]
            assert kes["currency"] == "KES" and kes["comparable"] is True and kes["matches"] == 3
            assert got["salary_outlook"]["expectation"] == 70000

            for path in ("recommendations", "matches/insights"):
                r = await http.get(f"/v1/users/{user}/{path}", headers=intruder)
                assert r.status_code == 403, path

            # Redis lost: the worker rebuilds the facts from its tables, and the list is back.
            redis = Redis.from_url(redis_url)
            try:
                await redis.flushdb()
            finally:
                await redis.aclose()
            await wait_until(listed, timeout=60, what="recommendations rebuilt after a wipe")
    finally:
        api.stop()
        worker.stop()
