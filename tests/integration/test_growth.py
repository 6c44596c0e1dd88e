"""A referral from code to credited reward, and two redemptions racing on one balance through two
API processes, on the real broker, worker and Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.auth import issue_token
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready

pytestmark = pytest.mark.integration


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, user)}"}


async def test_referral_credits_the_referrer_and_racing_redeems_spend_once(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api_a, url_a = start_api(env, tmp_path / "api-a.log")
    api_b, url_b = start_api(env, tmp_path / "api-b.log")
    try:
        async with (
            httpx.AsyncClient(base_url=url_a, timeout=15) as a,
            httpx.AsyncClient(base_url=url_b, timeout=15) as b,
        ):

            async def ready() -> bool:
                assert worker.alive(), worker.tail()
                return (await a.get("/readyz")).status_code == 200 and (
                    await b.get("/readyz")
                ).status_code == 200

            await wait_until(ready, timeout=60, what="/readyz on both APIs")

            generated = await a.post(
                "/v1/referrals/generate", headers=auth("rita"), json={"device_id": "d-rita"}
            )
            assert generated.status_code == 200, generated.text
            code = generated.json()["code"]
            # The same user always gets the same code, from either API process.
            assert (await b.post("/v1/referrals/generate", headers=auth("rita"), json={})).json()[
                "code"
            ] == code

            claim = await b.post(
                "/v1/referrals/claim", headers=auth("uma"), json={"code": code, "device_id": "d-uma"}
            )
            assert claim.status_code == 202 and claim.json()["status"] == "claimed", claim.text
            again = await a.post("/v1/referrals/claim", headers=auth("uma"), json={"code": code})
            assert again.status_code == 409  # referred once
            own = await a.post("/v1/referrals/claim", headers=auth("rita"), json={"code": code})
            assert own.status_code == 422

            # The referred user completes a first lesson: the referral completes. (Its time must not
            # precede the claim's, which the API stamped a moment ago: hence a little ahead.)
            lesson = {
                "event_id": "uma-l1",
                "user_id": "uma",
                "type": "lesson_complete",
                "ts": int(time.time() * 1000) + 2000,
                "props": {"lesson_id": "L1", "duration_s": 600},
            }
            assert (await a.post("/v1/events", headers=auth("uma"), json=lesson)).status_code == 202

            async def credited() -> Any:
                body = (await b.get("/v1/rewards/balance", headers=auth("rita"))).json()
                return body if body["balance"] == 200 else None

            # Every client here is 127.0.0.1, the referrer's own address: the fraud checks hold the
            # referral for review (flagged, not dropped), and nothing is paid until an admin approves.
            admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}

            async def held_and_done() -> Any:
                # Held at the claim; the lesson is remembered on the held referral when it arrives.
                rows = (await a.get("/v1/admin/referrals/held", headers=admin)).json()["held"]
                return rows if rows and rows[0].get("completed_at") else None

            (row,) = await wait_until(held_and_done, timeout=30, what="held referral with its lesson")
            assert row["referred_id"] == "uma" and "shared_ip" in row["flags"]
            assert (await b.get("/v1/rewards/balance", headers=auth("rita"))).json()["balance"] == 0
            review = await b.post(
                "/v1/admin/referrals/rita/uma/review", headers=admin, json={"approve": True}
            )
            assert review.status_code == 200 and review.json()["status"] == "completed", review.text

            await wait_until(credited, timeout=30, what="referral credit")
            stats = (await a.get("/v1/referrals/stats", headers=auth("rita"))).json()
            assert stats["completed"] == 1

            async def referral_xp() -> Any:
                view = (await a.get("/v1/users/rita", headers=auth("rita"))).json()
                return view if view.get("counters", {}).get("count:referral_accepted") == 1 else None

            await wait_until(referral_xp, timeout=30, what="referral_accepted XP")

            # Two redemptions of 150 against 200 credits, at once, through two API processes.
            r1, r2 = await asyncio.gather(
                a.post(
                    "/v1/rewards/redeem",
                    headers=auth("rita"),
                    json={"perk_id": "streak_freeze", "request_id": "r1"},
                ),
                b.post(
                    "/v1/rewards/redeem",
                    headers=auth("rita"),
                    json={"perk_id": "streak_freeze", "request_id": "r2"},
                ),
            )
            assert sorted([r1.status_code, r2.status_code]) == [200, 409], (r1.text, r2.text)
            winner = "r1" if r1.status_code == 200 else "r2"
            # A retry of the winning request (a client timeout) answers the same and spends nothing.
            retry = await b.post(
                "/v1/rewards/redeem",
                headers=auth("rita"),
                json={"perk_id": "streak_freeze", "request_id": winner},
            )
            first = r1 if winner == "r1" else r2
            assert retry.status_code == 200 and retry.json() == first.json()

            async def settled() -> Any:
                body = (await a.get("/v1/rewards/balance", headers=auth("rita"))).json()
                return body if body["lifetime"]["spent"] == 150 else None

            body = await wait_until(settled, timeout=15, what="balance after redemption")
            assert body["balance"] == 50
            history = (await a.get("/v1/rewards/history", headers=auth("rita"))).json()["history"]
            assert [h["kind"] for h in history].count("redeem") == 1

            # The engine fulfils the freeze itself: one more freeze held on the streak, once.
            async def freeze_held() -> Any:
                view = (await a.get("/v1/users/rita", headers=auth("rita"))).json()
                return view if view["streak"]["freezes"] >= 1 else None

            view = await wait_until(freeze_held, timeout=30, what="the bought freeze on the streak")
            assert view["streak"]["freezes"] == 1
    finally:
        for proc in (api_a, api_b, worker):
            proc.stop()


async def test_referral_codes_survive_a_redis_wipe(fresh_kafka: str, redis_url: str, tmp_path: Path) -> None:
    """Codes used to live only in Redis: after FLUSHALL every claim answered 404. The worker now
    re-projects each book's code (derived from the user id and the secret) with the serving view."""
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    redis = Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:
            await wait_ready(http, worker)
            generated = await http.post("/v1/referrals/generate", headers=auth("wanda"), json={})
            assert generated.status_code == 200, generated.text
            code = generated.json()["code"]

            await redis.flushall()

            async def claimed() -> Any:
                assert worker.alive(), worker.tail()
                r = await http.post("/v1/referrals/claim", headers=auth("walt"), json={"code": code})
                return r if r.status_code != 404 else None  # 404 until the worker re-projects

            response = await wait_until(claimed, timeout=60, interval=0.5, what="the code re-projected")
            assert response.status_code == 202 and response.json()["referrer_id"] == "wanda", response.text
    finally:
        await redis.aclose()
        for proc in (api, worker):
            proc.stop()
