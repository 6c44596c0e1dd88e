"""A user's data on request, end to end on the real broker, worker and Redis: the export holds what
the engine keeps about the user, and an erasure removes it everywhere (state tables, views,
channel history, leaderboards, referral code) and stays erased across a worker restart and a
Redis wipe, while another user's data is untouched."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.auth import issue_token
from infra import keys
from infra.user_data import channel_keys, user_keys
from models.boards import group_digest
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready

pytestmark = pytest.mark.integration


def auth(user: str, role: str = "user") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, user, role)}"}


def lesson(user: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{user}-l{n}",
        "user_id": user,
        "type": "lesson_complete",
        "ts": int(time.time() * 1000),
        "props": {"lesson_id": f"L{n}", "duration_s": 600, "score": 70 + n},
    }


async def _held_keys(redis: Redis, user: str) -> list[str]:
    found = [key for key in [*user_keys(user), *channel_keys(user)] if await redis.exists(key)]
    return found


async def _answers_holding(redis: Redis, marker: bytes) -> list[bytes]:
    """The command answers in Redis whose text holds ``marker``."""
    found = []
    async for key in redis.scan_iter(match=keys.command_result("*")):
        if marker in (await redis.get(key) or b""):
            found.append(key)
    return found


async def test_export_then_erase_everywhere(fresh_kafka: str, redis_url: str, tmp_path: Path) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    redis = Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await wait_ready(http, worker)
            for user in ("pia", "quinn"):
                profile = {
                    "display_name": user.title(),
                    "timezone": "Africa/Nairobi",
                    "skills": ["python"],
                    "school": "Alliance High",
                }
                put = await http.put(f"/v1/users/{user}/profile", headers=auth(user), json=profile)
                assert put.status_code == 200, put.text
                posted = await http.post(
                    "/v1/events", headers=auth(user), json=[lesson(user, n) for n in (1, 2, 3)]
                )
                assert posted.status_code == 202, posted.text
            code = (await http.post("/v1/referrals/generate", headers=auth("pia"), json={})).json()["code"]

            async def all_applied() -> bool:
                for user in ("pia", "quinn"):
                    r = await http.get(f"/v1/users/{user}/stats", headers=auth(user))
                    if r.status_code != 200 or r.json()["overall"]["sessions"] != 3:
                        return False
                return True

            await wait_until(all_applied, timeout=60, what="both users' three lessons applied")

            # -- export: the user's own, complete; nobody else's -------------------------------
            assert (await http.get("/v1/users/pia/export", headers=auth("quinn"))).status_code == 403
            exported = await http.get("/v1/users/pia/export", headers=auth("pia"))
            assert exported.status_code == 200, exported.text
            body = exported.json()
            assert body["user_id"] == "pia"
            assert body["state"]["user-state"]["xp"] > 0
            assert body["state"]["growth-state"] is not None  # the referral book
            assert body["state"]["career-state"] is not None  # the profile
            assert {"state", "profile", "referrals"} <= set(body["serving"]["views"])
            assert body["serving"]["views"]["profile"]["display_name"] == "Pia"
            assert any(m["type"] == "engagement" for m in body["serving"]["channel_history"])
            school_board = keys.group_leaderboard(
                "school", group_digest("school", "Alliance High"), "all_time", "all"
            )
            assert {keys.leaderboard("all_time", "all"), school_board, keys.STATS_RANKING} <= set(
                body["serving"]["ranked"]
            )
            assert "quinn" not in exported.text  # nothing of another user's
            # The answer held personal data: read once, then gone from Redis.
            assert await _answers_holding(redis, b'"user-state"') == []

            # -- erase --------------------------------------------------------------------------
            assert (await http.delete("/v1/users/pia", headers=auth("quinn"))).status_code == 403
            erased = await http.delete("/v1/users/pia", headers=auth("pia"))
            assert erased.status_code == 200, erased.text
            assert erased.json()["erased"] is True
            assert {"user-state", "career-state", "growth-state"} <= set(erased.json()["tables"])

            assert (await http.get("/v1/users/pia", headers=auth("pia"))).status_code == 404
            assert await _held_keys(redis, "pia") == []
            assert await redis.get(keys.referral_code(code)) is None
            assert await redis.zscore(keys.STATS_RANKING, "pia") is None
            assert await redis.zscore(keys.STATS_RANKING, "quinn") is not None
            for board_url in (
                "/v1/leaderboards/all_time",
                "/v1/leaderboards/all_time?school=Alliance%20High",
            ):
                board = (await http.get(board_url, headers=auth("quinn"))).json()
                assert [e["user_id"] for e in board["entries"]] == ["quinn"], board_url
            assert (await http.get("/v1/users/quinn", headers=auth("quinn"))).json()["xp"] > 0
            again = (await http.get("/v1/users/pia/export", headers=auth("pia"))).json()
            assert all(state is None for state in again["state"].values()), again["state"]
            assert again["serving"]["views"] == {} and again["serving"]["channel_history"] == []

        # -- a new worker on a wiped Redis rebuilds every view from the changelogs: quinn's comes
        # back, pia's does not (the tables hold tombstones, not her state).
        worker.stop()
        await redis.flushall()
        worker = start_worker(env, tmp_path / "worker-2.log")
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await wait_ready(http, worker)

            async def quinn_back() -> Any:
                assert worker.alive(), worker.tail()
                r = await http.get("/v1/users/quinn", headers=auth("quinn"))
                return r.json() if r.status_code == 200 else None

            await wait_until(quinn_back, timeout=90, interval=0.5, what="quinn's view rebuilt")
            assert (await http.get("/v1/users/pia", headers=auth("pia"))).status_code == 404
            assert await _held_keys(redis, "pia") == []
            again = (await http.get("/v1/users/pia/export", headers=auth("pia"))).json()
            assert all(state is None for state in again["state"].values()), again["state"]
    finally:
        await redis.aclose()
        for proc in (api, worker):
            proc.stop()
