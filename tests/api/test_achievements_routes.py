"""``GET /v1/achievements``, ``GET /v1/levels`` and ``GET /v1/users/{id}/achievements``: the
rule book's catalogues, and one user's badges read from the serving view the workers write."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.config import ApiConfig
from infra import keys
from infra.settings import DEFAULT_RULES, Settings
from models.achievements import catalogue, level_catalogue
from models.gamification import UserState, apply_event, public_view
from models.rules import Rules
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error
from tests.api.test_ids import BAD_IDS
from tests.models.factories import event, ms

RULES = Rules.from_toml(DEFAULT_RULES.read_text("utf-8"))
T = ms("2026-11-22T08:00:00Z")
DAY = 86_400_000


def view_of(user_id: str, sessions: int) -> dict[str, Any]:
    """The view a worker writes after ``sessions`` interview sessions, one a day."""
    state = UserState(user_id=user_id)
    for i in range(sessions):
        ev = event("interview_session_complete", T + i * DAY, user_id=user_id, score=80, category="technical")
        apply_event(state, ev, RULES, 30 * DAY)
    view: dict[str, Any] = orjson.loads(orjson.dumps(public_view(state, RULES)))
    return view


async def test_the_catalogue_is_the_rule_books(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/achievements", headers=bearer("u-1"))
    assert response.status_code == 200
    body = response.json()
    assert body == catalogue(RULES)
    first = body["achievements"][0]
    assert first["id"] == "first_session" and first["xp"] == 10 and first["category"] == "practice"


async def test_the_level_catalogue_lists_benefits(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/levels", headers=bearer("u-1"))
    assert response.status_code == 200
    body = response.json()
    assert body == level_catalogue(RULES)
    assert body["levels"][9] == {
        "level": 10,
        "title": "Interview Guru",
        "min_xp": 5500,
        "benefits": ["Interview Guru profile banner", "Hall of fame listing"],
    }


@pytest.mark.parametrize("path", ["/v1/achievements", "/v1/levels", "/v1/users/u-1/achievements"])
async def test_every_route_needs_a_token(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(path), 401, "unauthorized")
    assert_error(await client.get(path, headers={"Authorization": "Bearer x.y.z"}), 401, "unauthorized")


async def test_own_achievements_with_progress(client: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(keys.user_state("u-ach-1"), orjson.dumps(view_of("u-ach-1", 3)))
    response = await client.get("/v1/users/u-ach-1/achievements", headers=bearer("u-ach-1"))
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u-ach-1"
    items = {item["id"]: item for item in body["achievements"]}
    assert items["first_session"]["status"] == "earned"
    assert items["first_session"]["earned_at"] == "2026-11-22T08:00:00Z"
    assert items["ten_sessions"]["status"] == "locked"
    assert items["ten_sessions"]["progress"] == {
        "current": 3,
        "target": 10,
        "unit": "sessions",
        "text": "3 of 10 sessions",
    }
    assert items["streak_7"]["progress"]["text"] == "3 of 7 days"
    assert body["earned"] == 1 and body["total"] == len(RULES.badges)


async def test_a_user_without_state_sees_everything_locked(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users/u-ach-new/achievements", headers=bearer("u-ach-new"))
    assert response.status_code == 200
    body = response.json()
    assert body["earned"] == 0
    assert all(i["status"] == "locked" and i["progress"]["current"] == 0 for i in body["achievements"])


async def test_another_users_achievements_are_403_and_leak_nothing(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await redis.set(keys.user_state("u-ach-2"), orjson.dumps(view_of("u-ach-2", 12)))
    response = await client.get("/v1/users/u-ach-2/achievements", headers=bearer("u-ach-3"))
    error = assert_error(response, 403, "forbidden")
    assert "ten_sessions" not in response.text and "u-ach-2" not in str(error["message"])
    # The admin reads anyone's.
    response = await client.get("/v1/users/u-ach-2/achievements", headers=bearer("ops", "admin"))
    assert response.status_code == 200
    items = {item["id"]: item for item in response.json()["achievements"]}
    assert items["ten_sessions"]["status"] == "earned"
    assert items["fifty_sessions"]["progress"]["text"] == "12 of 50 sessions"


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_hostile_user_ids_are_refused(client: httpx.AsyncClient, bad: str) -> None:
    url = f"/v1/users/{quote(bad, safe='')}/achievements"
    for headers in (bearer("ops", "admin"), bearer("u-1")):
        error = assert_error(await client.get(url, headers=headers), 422, "validation_error")
        assert str(error["message"]).startswith("path.")
    # A token whose subject is such an id is no token at all.
    assert_error(await client.get("/v1/achievements", headers=bearer(bad)), 401, "unauthorized")


async def test_a_garbled_view_does_not_break_the_route(client: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(
        keys.user_state("u-ach-4"), orjson.dumps({"badges": "x", "metrics": [1], "counters": None})
    )
    response = await client.get("/v1/users/u-ach-4/achievements", headers=bearer("u-ach-4"))
    assert response.status_code == 200
    assert response.json()["earned"] == 0


async def test_the_user_view_shows_the_levels_benefits(client: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(keys.user_state("u-ach-5"), orjson.dumps(view_of("u-ach-5", 3)))
    body = (await client.get("/v1/users/u-ach-5", headers=bearer("u-ach-5"))).json()
    level = body["level"]
    assert level["benefits"] == list(RULES.levels[level["level"] - 1].benefits)


async def _started(settings: Settings, config: ApiConfig) -> tuple[Any, httpx.AsyncClient]:
    app = create_app(settings, config)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    return lifespan, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test")


async def test_the_api_shows_the_rules_file_it_is_given(
    settings: Settings, api_config: ApiConfig, tmp_path: Path
) -> None:
    custom = tmp_path / "rules.toml"
    custom.write_text(
        "[actions]\nlesson_complete = { xp = 50, streak = true }\n"
        "[[levels]]\nlevel = 1\ntitle = 'Start'\nmin_xp = 0\nbenefits = ['Everything']\n"
        "[[badges]]\nid = 'only'\nname = 'Only'\ndescription = 'd'\nrarity = 'rare'\ncategory = 'learning'\n"
        "metric = 'count:lesson_complete'\nthreshold = 2\n"
    )
    lifespan, client = await _started(dataclasses.replace(settings, rules_path=custom), api_config)
    try:
        body = (await client.get("/v1/achievements", headers=bearer("u-1"))).json()
        assert [(a["id"], a["xp"], a["criteria"]) for a in body["achievements"]] == [
            ("only", 30, "Complete 2 lessons")
        ]
        levels = (await client.get("/v1/levels", headers=bearer("u-1"))).json()
        assert levels == {"levels": [{"level": 1, "title": "Start", "min_xp": 0, "benefits": ["Everything"]}]}
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_a_bad_rules_file_stops_the_api_naming_the_entry(
    settings: Settings, api_config: ApiConfig, tmp_path: Path
) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text(
        DEFAULT_RULES.read_text("utf-8").replace('category = "mastery"', 'category = "wizardry"', 1)
    )
    with pytest.raises(ValueError, match=r"badges\[5\]\.category"):
        await _started(dataclasses.replace(settings, rules_path=bad), api_config)
