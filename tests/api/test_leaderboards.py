"""Leaderboards: Redis order (ties folded into the score), 1-based ranks, windows around a user."""

from __future__ import annotations

import time

import httpx
import pytest
from redis.asyncio import Redis

from api.routes.leaderboards import window_start
from infra import keys
from models.leaderboard import bucket, encode_score
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error

T0 = 1_790_000_000_000


async def fill(redis: Redis, period: str, scores: dict[str, tuple[int, int]]) -> None:
    """``scores``: user -> (xp, reached_at_ms)."""
    key = keys.leaderboard(period, bucket(period, int(time.time() * 1000)))
    await redis.zadd(key, {user: encode_score(xp, at) for user, (xp, at) in scores.items()})


async def board(client: httpx.AsyncClient, path: str) -> list[dict[str, object]]:
    response = await client.get(path, headers=bearer("viewer"))
    assert response.status_code == 200, response.text
    entries: list[dict[str, object]] = response.json()["entries"]
    return entries


async def test_top_entries_in_order_with_time_tie_break(client: httpx.AsyncClient, redis: Redis) -> None:
    await fill(
        redis,
        "daily",
        {
            "u-a": (100, T0 + 5000),
            "u-z": (100, T0),  # same xp, reached first: ranks above u-a despite its name
            "u-b": (250, T0),
            "u-c": (30, T0),
        },
    )
    response = await client.get("/v1/leaderboards/daily", headers=bearer("viewer"))
    assert response.json() == {
        "period": "daily",
        "entries": [
            {"rank": 1, "user_id": "u-b", "score": 250},
            {"rank": 2, "user_id": "u-z", "score": 100},
            {"rank": 3, "user_id": "u-a", "score": 100},
            {"rank": 4, "user_id": "u-c", "score": 30},
        ],
    }


async def test_limit_and_periods_are_separate(client: httpx.AsyncClient, redis: Redis) -> None:
    await fill(redis, "weekly", {f"u-{i}": (i * 10, T0) for i in range(1, 21)})
    await fill(redis, "all_time", {"u-only": (5, T0)})
    weekly = await board(client, "/v1/leaderboards/weekly?limit=3")
    assert [(e["rank"], e["user_id"], e["score"]) for e in weekly] == [
        (1, "u-20", 200),
        (2, "u-19", 190),
        (3, "u-18", 180),
    ]
    assert await board(client, "/v1/leaderboards/all_time") == [{"rank": 1, "user_id": "u-only", "score": 5}]
    assert await board(client, "/v1/leaderboards/daily") == []


async def test_around_centres_the_window_and_clamps_at_the_edges(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    # u-1 has the most xp: rank i is user u-i.
    await fill(redis, "daily", {f"u-{i}": (1000 - i, T0) for i in range(1, 11)})
    middle = await board(client, "/v1/leaderboards/daily?limit=3&around=u-5")
    assert [(e["rank"], e["user_id"]) for e in middle] == [(4, "u-4"), (5, "u-5"), (6, "u-6")]
    top = await board(client, "/v1/leaderboards/daily?limit=4&around=u-1")
    assert [e["rank"] for e in top] == [1, 2, 3, 4]
    bottom = await board(client, "/v1/leaderboards/daily?limit=4&around=u-10")
    assert [e["rank"] for e in bottom] == [7, 8, 9, 10]
    everything = await board(client, "/v1/leaderboards/daily?limit=50&around=u-7")
    assert [e["rank"] for e in everything] == list(range(1, 11))


async def test_errors(client: httpx.AsyncClient, redis: Redis) -> None:
    await fill(redis, "daily", {"u-1": (10, T0)})
    headers = bearer("viewer")
    assert_error(await client.get("/v1/leaderboards/monthly", headers=headers), 404, "unknown_period")
    assert_error(await client.get("/v1/leaderboards/daily?around=u-x", headers=headers), 404, "not_ranked")
    assert_error(
        await client.get("/v1/leaderboards/daily?limit=101", headers=headers), 422, "validation_error"
    )
    assert_error(await client.get("/v1/leaderboards/daily"), 401, "unauthorized")


@pytest.mark.parametrize(
    ("rank", "size", "limit", "start"),
    [(0, 10, 3, 0), (5, 10, 3, 4), (9, 10, 3, 7), (4, 10, 4, 3), (2, 3, 10, 0), (0, 1, 1, 0)],
)
def test_window_start(rank: int, size: int, limit: int, start: int) -> None:
    assert window_start(rank, size, limit) == start
