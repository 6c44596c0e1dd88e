"""Leaderboards with people on them, through real processes: profiles written through the API
(school, cohort, display name, the opt-out), events on Kafka, boards read back over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import issue_token
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_end_to_end import kafka_python_send

pytestmark = pytest.mark.integration


def headers(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, user_id)}"}


def lesson(user_id: str, n: int, at: int) -> dict[str, Any]:
    return {"event_id": f"{user_id}-{n}", "user_id": user_id, "type": "lesson_complete", "ts": at}


async def test_profiles_put_people_on_school_boards_and_the_opt_out_hides_them(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)

            async def put_profile(user_id: str, **fields: Any) -> None:
                r = await http.put(f"/v1/users/{user_id}/profile", json=fields, headers=headers(user_id))
                assert r.status_code in (200, 202), r.text

            async def board(path: str, viewer: str = "viewer") -> dict[str, Any]:
                r = await http.get(path, headers=headers(viewer))
                assert r.status_code == 200, r.text
                found: dict[str, Any] = r.json()
                return found

            def people(found: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
                return [(e["user_id"], e["display_name"], e["school"]) for e in found["entries"]]

            async def xp(user_id: str) -> int:
                r = await http.get(f"/v1/users/{user_id}", headers=headers(user_id))
                return int(r.json()["xp"]) if r.status_code == 200 else -1

            async def settled(found: dict[str, Any], users: list[str]) -> bool:
                """The board lists ``users`` in this order, each with the XP of their own view
                (every event is from today: each period's score is all their XP). Derived events
                (a completed daily challenge) may still add XP: the caller waits for agreement."""
                entries = found["entries"]
                return [e["user_id"] for e in entries] == users and all(
                    [e["score"] == await xp(e["user_id"]) for e in entries]
                )

            await put_profile("amina", display_name="Amina", school="Alliance High", cohort="2027")
            await put_profile("baraka", display_name="Baraka at prize.example.com", school="  alliance HIGH")
            await put_profile("chebet", display_name="Chebet", school="Moi Girls", leaderboard_visible=False)
            r = await http.get("/v1/users/chebet/profile", headers=headers("chebet"))
            shown = r.json()
            assert (shown["school"], shown["leaderboard_visible"]) == ("Moi Girls", False)

            now = int(time.time() * 1000)
            # Chebet 3 lessons, Amina 2, Baraka 1: their XP ranks them in that order.
            events = [lesson("amina", i, now - 1000 * i) for i in range(2)]
            events += [lesson("baraka", 0, now - 5000)]
            events += [lesson("chebet", i, now - 1000 * i) for i in range(3)]
            kafka_python_send(fresh_kafka, "behavior-events", events)

            async def school_board() -> dict[str, Any] | None:
                found = await board("/v1/leaderboards/weekly?school=alliance%20high", viewer="amina")
                return found if await settled(found, ["amina", "baraka"]) else None

            found = await wait_until(school_board, timeout=60, what="Alliance High's board")
            # Names from the profiles; one that reads like a link is not repeated.
            assert people(found) == [("amina", "Amina", "Alliance High"), ("baraka", None, "alliance HIGH")]
            assert found["entries"][0]["cohort"] == "2027"
            assert found["me"] == {"rank": 1, "score": found["entries"][0]["score"], "listed": True}

            async def everyone() -> dict[str, Any] | None:
                found = await board("/v1/leaderboards/daily", viewer="chebet")
                return found if found["me"] is not None and len(found["entries"]) == 2 else None

            # Chebet (165) is on no board: nobody's listing shows her, ranks are without her, and
            # she still sees where she stands.
            found = await wait_until(everyone, timeout=60, what="chebet's own standing")
            assert [(e["rank"], e["user_id"]) for e in found["entries"]] == [(1, "amina"), (2, "baraka")]
            assert found["me"]["rank"] == 1 and found["me"]["listed"] is False
            assert found["me"]["score"] > found["entries"][0]["score"]
            moi = await board("/v1/leaderboards/daily?school=Moi%20Girls", viewer="chebet")
            assert moi["entries"] == [] and moi["me"]["rank"] == 1

            # Chebet opts back in (her period XP with her); Amina moves to Moi Girls.
            await put_profile("chebet", display_name="Chebet", school="Moi Girls")
            await put_profile("amina", display_name="Amina", school="moi girls")

            async def moved() -> dict[str, Any] | None:
                found = await board("/v1/leaderboards/all_time?school=MOI%20GIRLS")
                return found if await settled(found, ["chebet", "amina"]) else None

            # Chebet is back with the XP she earned while hidden, Amina brings hers.
            found = await wait_until(moved, timeout=60, what="Moi Girls' board after the moves")
            assert people(found) == [("chebet", "Chebet", "Moi Girls"), ("amina", "Amina", "moi girls")]

            async def alliance_left() -> bool:
                found = await board("/v1/leaderboards/all_time?school=Alliance%20High")
                return [e["user_id"] for e in found["entries"]] == ["baraka"]

            await wait_until(alliance_left, timeout=60, what="Amina off Alliance High's board")
            everyone_now = await board("/v1/leaderboards/all_time")
            assert [e["user_id"] for e in everyone_now["entries"]] == ["chebet", "amina", "baraka"]
    finally:
        api.stop()
        worker.stop()
