"""``GET /v1/users/{id}`` reads the workers' serving view and adds the risk score."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from infra import keys
from models.stats import WeeklyStats, stats_document
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error

STATE = {
    "user_id": "u-42",
    "xp": 340,
    "level": {"level": 3, "title": "Practitioner", "xp_into_level": 40, "xp_to_next": 260},
    "streak": {"current": 4, "longest": 9, "freezes": 1, "last_active_day": "2026-11-21"},
    "badges": [
        {"id": "first_lesson", "name": "First steps", "rarity": "common", "earned_at": "2026-11-01T08:00:00Z"}
    ],
    "counters": {"lesson_complete": 5},
    "timezone": "Africa/Nairobi",
    "updated_at": "2026-11-22T08:15:00Z",
}


async def test_own_state_without_risk(client: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(keys.user_state("u-42"), orjson.dumps(STATE))
    response = await client.get("/v1/users/u-42", headers=bearer("u-42"))
    assert response.status_code == 200
    body = response.json()
    # The streak is shown as of today (tested with a fixed clock below); the rest is as stored.
    streak = body.pop("streak")
    assert body == {
        **{k: v for k, v in STATE.items() if k != "streak"},
        # Level benefits come from the rule book (level 3's in the shipped file), not the view.
        "level": {
            "level": 3,
            "title": "Practitioner",
            "xp_into_level": 40,
            "xp_to_next": 260,
            "benefits": ["Custom avatar frame"],
        },
        "risk": dict.fromkeys(("score", "level", "updated_at")),
    }
    assert set(streak) == set(STATE["streak"]) | {"at_risk"}
    assert streak["longest"] == STATE["streak"]["longest"]


async def test_state_with_risk_for_admin(client: httpx.AsyncClient, redis: Redis) -> None:
    risk = {"score": 72.5, "level": "high", "updated_at": "2026-11-22T09:00:00Z", "signals": ["x"]}
    await redis.set(keys.user_state("u-42"), orjson.dumps(STATE))
    await redis.set(keys.user_risk("u-42"), orjson.dumps(risk))
    response = await client.get("/v1/users/u-42", headers=bearer("boss", "admin"))
    assert response.status_code == 200
    assert response.json()["risk"] == {"score": 72.5, "level": "high", "updated_at": "2026-11-22T09:00:00Z"}
    assert response.json()["xp"] == 340


async def test_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/users/u-404", headers=bearer("u-404")), 404, "user_not_found")


async def test_someone_elses_state_is_403_even_if_it_exists(client: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(keys.user_state("u-42"), orjson.dumps(STATE))
    assert_error(await client.get("/v1/users/u-42", headers=bearer("u-7")), 403, "forbidden")


def _view(current: int, freezes: int, last: str | None, tz: str = "UTC") -> dict[str, Any]:
    return {
        "streak": {"current": current, "longest": 9, "freezes": freezes, "last_active_day": last},
        "timezone": tz,
    }


def test_streak_is_shown_as_of_the_users_local_today() -> None:
    from api.routes.users import streak_today

    now = 1795305600000  # 2026-11-22T00:00:00Z
    # Active yesterday (UTC), not yet today: alive and at risk.
    assert streak_today(_view(5, 0, "2026-11-21"), now) == {
        "current": 5,
        "longest": 9,
        "freezes": 0,
        "last_active_day": "2026-11-21",
        "at_risk": True,
    }
    # Two missed days, one freeze: the streak is gone.
    assert streak_today(_view(5, 1, "2026-11-19"), now)["current"] == 0
    # One missed day covered by a freeze: alive, freeze spent.
    shown = streak_today(_view(5, 1, "2026-11-20"), now)
    assert (shown["current"], shown["freezes"], shown["at_risk"]) == (5, 0, False)
    # In Los Angeles it is still the 21st: active "today", not at risk.
    la = streak_today(_view(5, 0, "2026-11-21", "America/Los_Angeles"), now)
    assert (la["current"], la["at_risk"]) == (5, False)


# ---------------------------------------------------------------------------------------------
# GET /v1/users/{id}/stats: built from the worker's statistics view and ranking (docs/stats.md)


async def put_stats(redis: Redis, user_id: str, *scores: int) -> None:
    weekly = WeeklyStats()
    now = int(time.time() * 1000)
    for score in scores:
        weekly.record(now, score, 600, 50)
    document = stats_document(user_id, weekly, {"behavioral": [2, 180, 1]}, 50 * len(scores), now)
    await redis.set(keys.user_stats(user_id), orjson.dumps(document))
    value = weekly.ranking_value()
    if value is not None:
        await redis.zadd(keys.STATS_RANKING, {user_id: value})


async def test_own_stats_with_the_percentile(client: httpx.AsyncClient, redis: Redis) -> None:
    await put_stats(redis, "u-42", 80, 90, 100)  # average 90
    await put_stats(redis, "u-1", 50, 60, 70)  # 60: below
    await put_stats(redis, "u-2", 90, 90, 90)  # 90: equal, not below
    await put_stats(redis, "u-3", 100, 100, 95)  # above
    response = await client.get("/v1/users/u-42/stats", headers=bearer("u-42"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["range"] == "12w" and len(body["weekly"]) == 12
    assert body["overall"] == {
        "sessions": 3,
        "average_score": 90.0,
        "best_score": 100,
        "practice_s": 1800,
        "xp": 150,
    }
    assert sum(w["sessions"] for w in body["weekly"]) == 3 and body["in_range"]["practice_s"] == 1800
    assert body["percentile"]["value"] == 25.0 and body["percentile"]["ranked_students"] == 4
    assert body["strengths"] == ["behavioral"]
    wide = await client.get("/v1/users/u-42/stats?range=52w", headers=bearer("boss", "admin"))
    assert wide.status_code == 200 and len(wide.json()["weekly"]) == 52


async def test_stats_errors(client: httpx.AsyncClient, redis: Redis) -> None:
    await put_stats(redis, "u-42", 80)
    assert_error(await client.get("/v1/users/u-42/stats", headers=bearer("u-7")), 403, "forbidden")
    for bad in ("1y", "", "12w&range=4w", "x" * 3000):
        response = await client.get("/v1/users/u-42/stats", params={"range": bad}, headers=bearer("u-42"))
        assert_error(response, 400, "bad_request")
    assert_error(await client.get("/v1/users/u-404/stats", headers=bearer("u-404")), 404, "user_not_found")
    unranked = (await client.get("/v1/users/u-42/stats", headers=bearer("u-42"))).json()["percentile"]
    assert unranked["value"] is None and unranked["ranked_students"] == 0
