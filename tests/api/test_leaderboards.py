"""Leaderboards: Redis order (ties folded into the score), 1-based ranks, windows around a user."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.routes.leaderboards import window_start
from infra import keys
from models.events import UserProfile
from models.gamification import UserState, apply_profile
from models.leaderboard import bucket, encode_score
from streams.serving import Board, board_card, board_entries, board_key
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
    nobody = {"display_name": None, "school": None, "cohort": None}  # no profile: no card
    assert response.json() == {
        "period": "daily",
        "entries": [
            {"rank": 1, "user_id": "u-b", "score": 250, **nobody},
            {"rank": 2, "user_id": "u-z", "score": 100, **nobody},
            {"rank": 3, "user_id": "u-a", "score": 100, **nobody},
            {"rank": 4, "user_id": "u-c", "score": 30, **nobody},
        ],
        "me": None,  # the viewer has no score today
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
    assert await board(client, "/v1/leaderboards/all_time") == [
        {"rank": 1, "user_id": "u-only", "score": 5, "display_name": None, "school": None, "cohort": None}
    ]
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


# ---------------------------------------------------------------------------------------------
# People on the boards: names, schools and cohorts, group boards, the opt-out and ``me``.


async def seat(redis: Redis, user_id: str, xp: int, at: int = T0, **profile: object) -> None:
    """What the worker writes for a user with ``profile`` and ``xp`` today, this week and ever
    (streams/serving.py): their card, and their scores on the boards that list them."""
    state = UserState(user_id)
    apply_profile(state, UserProfile(user_id, **profile))  # type: ignore[arg-type]
    now = int(time.time() * 1000)
    state.period_xp = {f"{p}:{bucket(p, now)}": [xp, at] for p in ("daily", "weekly", "all_time")}
    boards: dict[Board, list[str]] = defaultdict(list)
    board_entries(state, state.period_xp, boards)
    for key, members in boards.items():
        await redis.zadd(board_key(key), {members[1]: float(members[0])})
    await redis.set(keys.user_board(user_id), orjson.dumps(board_card(state)))


async def body(client: httpx.AsyncClient, path: str, viewer: str = "viewer") -> dict[str, Any]:
    response = await client.get(path, headers=bearer(viewer))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_entries_show_names_schools_and_cohorts(client: httpx.AsyncClient, redis: Redis) -> None:
    await seat(redis, "u-1", 300, display_name="Amina", school="Nairobi High", cohort="2027")
    await seat(redis, "u-2", 200, display_name="Win a prize at prize.example.com", school="Moi Girls")
    await seat(redis, "u-3", 100, display_name="x" * 65)  # too long for a board: null, not cut
    entries = (await body(client, "/v1/leaderboards/weekly"))["entries"]
    shown = [
        (e["rank"], e["user_id"], e["score"], e["display_name"], e["school"], e["cohort"]) for e in entries
    ]
    assert shown == [
        (1, "u-1", 300, "Amina", "Nairobi High", "2027"),
        (2, "u-2", 200, None, "Moi Girls", None),  # a name that reads like a link is not repeated
        (3, "u-3", 100, None, None, None),
    ]
    assert set(entries[0]) == {"rank", "user_id", "score", "display_name", "school", "cohort"}


async def test_a_school_board_lists_its_pupils_however_the_name_is_spelt(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seat(redis, "u-1", 300, school="Nairobi High")
    await seat(redis, "u-2", 200, school="  nairobi   HIGH ")  # the same school
    await seat(redis, "u-3", 250, school="Moi Girls")
    await seat(redis, "u-4", 400, cohort="Nairobi High")  # a cohort of that name: another board
    school = await body(client, "/v1/leaderboards/daily?school=NAIROBI%20High", viewer="u-2")
    assert [(e["rank"], e["user_id"]) for e in school["entries"]] == [(1, "u-1"), (2, "u-2")]
    assert school["school"] == "NAIROBI High" and school["me"] == {"rank": 2, "score": 200, "listed": True}
    around = await body(client, "/v1/leaderboards/daily?school=nairobi%20high&limit=1&around=u-2")
    assert [e["user_id"] for e in around["entries"]] == ["u-2"]
    cohort = await body(client, "/v1/leaderboards/daily?cohort=nairobi%20high", viewer="u-2")
    assert [e["user_id"] for e in cohort["entries"]] == ["u-4"]
    assert cohort["me"] is None  # not the viewer's cohort
    unknown = await body(client, "/v1/leaderboards/daily?school=Nowhere")
    assert unknown["entries"] == [] and unknown["me"] is None


async def test_hidden_users_are_on_no_board_but_see_their_own_standing(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seat(redis, "u-1", 300, school="Alliance")
    await seat(redis, "u-2", 250, school="Alliance", leaderboard_visible=False)
    await seat(redis, "u-3", 200, school="Alliance")
    for path in ("/v1/leaderboards/all_time", "/v1/leaderboards/all_time?school=Alliance"):
        listing = await body(client, path, viewer="u-3")
        # Nobody sees u-2, and u-3 is second: ranks are counted without the hidden user.
        assert [(e["rank"], e["user_id"]) for e in listing["entries"]] == [(1, "u-1"), (2, "u-3")]
        assert listing["me"] == {"rank": 2, "score": 200, "listed": True}
        own = await body(client, path, viewer="u-2")
        assert [e["user_id"] for e in own["entries"]] == ["u-1", "u-3"]
        # The rank u-2 would have among the listed learners, shown to u-2 only.
        assert own["me"] == {"rank": 2, "score": 250, "listed": False}
    assert_error(
        await client.get("/v1/leaderboards/daily?around=u-2", headers=bearer("u-2")), 404, "not_ranked"
    )


async def test_group_queries_are_bounded_and_one_at_a_time(client: httpx.AsyncClient, redis: Redis) -> None:
    headers = bearer("viewer")
    for query, status, code in [
        ("school=a&cohort=b", 422, "invalid_board"),
        ("school=" + "x" * 65, 422, "invalid_board"),
        ("school=" + "x" * 300, 422, "validation_error"),
        ("school=a%00b", 422, "invalid_board"),
        ("school=%20%20", 422, "invalid_board"),
        ("cohort=%E2%80%8B", 422, "invalid_board"),  # a zero-width space: nothing visible
    ]:
        assert_error(await client.get(f"/v1/leaderboards/daily?{query}", headers=headers), status, code)
    # A school named like another key is just a name: its board is a digest, empty here.
    await fill(redis, "daily", {"u-1": (10, T0)})
    odd = await body(
        client, "/v1/leaderboards/daily?school=daily%3A" + bucket("daily", int(time.time() * 1000))
    )
    assert odd["entries"] == []
