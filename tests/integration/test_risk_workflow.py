"""The at-risk workflow staff use, through the real broker, worker, Redis and API: the list's
filters, each row's workflow fields (display name from the profile, last intervention, count,
4-week trend) and ``POST /v1/admin/risk/recalculate`` for one user and for all."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.auth import issue_token
from infra import keys
from models.events import format_ts
from models.interventions.policy import INTERVENTION_TYPES
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_careers import send

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
PARTITIONS = 4  # stack_env's ELIMU_PARTITIONS
HOSTILE_NAME = "\u202e<img src=x onerror=alert(1)>\x07" + "B" * 300


def history(now: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Ten days of lessons: active users to the last hour, quiet ones silent for the last six
    days (their risk is high by the end of the replay's stream time)."""
    rng = random.Random(3)
    events: list[dict[str, Any]] = []
    last: dict[str, int] = {}
    users = {f"active-{i}": 10 for i in range(8)} | {f"quiet-{i}": 4 for i in range(4)}
    for user, days in users.items():
        for day in range(days):
            for k in range(3):
                ts = now - 10 * DAY + day * DAY + int((9 + k + rng.random()) * HOUR)
                if ts > now - HOUR:
                    continue
                events.append(
                    {
                        "event_id": f"{user}-{day}-{k}",
                        "user_id": user,
                        "type": "lesson_complete",
                        "ts": ts,
                        "props": {"duration_s": 1200, "score": 80},
                    }
                )
                last[user] = max(last.get(user, 0), ts)
    events.sort(key=lambda e: e["ts"])
    return events, last


def profile(user: str) -> dict[str, Any]:
    name = HOSTILE_NAME if user == "quiet-3" else f"Student {user}"
    return {"user_id": user, "display_name": name, "timezone": "UTC", "skills": ["sql"]}


async def test_filters_row_fields_and_recalculate_through_the_engine(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    now = int(time.time() * 1000)
    events, last = history(now)
    users = sorted(last)
    quiet = {u for u in users if u.startswith("quiet-")}
    admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}
    redis = Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:
            await wait_ready(http, worker)
            # Profiles first, and applied, before any event: the display name a row shows then
            # comes from the profile whichever way the topics interleave.
            send(fresh_kafka, "user-profiles", [profile(u) for u in users], "user_id")

            async def profiles_applied() -> bool:
                return all([await redis.exists(keys.user_profile(u)) for u in users])

            await wait_until(profiles_applied, timeout=60, what="the worker applied the profiles")
            send(fresh_kafka, "behavior-events", events, "user_id")

            async def listed() -> Any:
                r = await http.get("/v1/at-risk", params={"threshold": 0, "limit": 500}, headers=admin)
                body = r.json()
                rows = {s["user_id"]: s for s in body["students"]}
                if set(rows) != set(users):
                    return None
                # The quiet users were scored by the sweep after their last event (at stream time)
                # and nudged there: their rows show it.
                for user in quiet:
                    row = rows[user]
                    if row["updated_at"] <= format_ts(last[user]) or row["last_intervention"] is None:
                        return None
                return rows

            rows = await wait_until(listed, timeout=120, what="every user scored, the quiet ones nudged")

            # --- row fields ----------------------------------------------------------------------
            assert rows["active-0"]["display_name"] == "Student active-0"
            shown = rows["quiet-3"]["display_name"]
            assert (
                shown.startswith("<img src=x onerror=alert(1)>") and shown.isprintable() and len(shown) <= 64
            )
            for row in rows.values():
                assert len(row["trend"]) == 4 and row["trend"][-1] == row["score"], row
                assert isinstance(row["interventions"], int) and row["interventions"] >= 0
            for user in quiet:
                row = rows[user]
                assert row["level"] in ("high", "critical"), row
                intervention = row["last_intervention"]
                assert intervention["type"] in INTERVENTION_TYPES and intervention["channel"]
                assert intervention["at"] >= format_ts(last[user]) and row["interventions"] >= 1

            # --- filters: each a subset of the unfiltered list, and exactly the matching part ----
            async def filtered(params: dict[str, Any]) -> list[str]:
                out: list[str] = []
                cursor = None
                while True:
                    query = {**params, "threshold": 0, "limit": 2, **({"cursor": cursor} if cursor else {})}
                    r = await http.get("/v1/at-risk", params=query, headers=admin)
                    assert r.status_code == 200, r.text
                    out.extend(s["user_id"] for s in r.json()["students"])
                    cursor = r.json()["next_cursor"]
                    if cursor is None:
                        return out

            # No event arrives meanwhile, so the scores hold still between these reads.
            by_score = sorted(rows.values(), key=lambda s: (-s["score"], s["user_id"]))
            high_up = await filtered({"level": "critical,high"})
            assert set(high_up) == {u for u, r in rows.items() if r["level"] in ("critical", "high")}
            assert quiet <= set(high_up)
            low = await filtered({"level": ["low"]})
            assert set(low) == {u for u, r in rows.items() if r["level"] == "low"}
            assert not quiet & set(low)
            signal = rows["quiet-0"]["signals"][0]
            with_signal = await filtered({"signal": signal})
            assert set(with_signal) == {u for u, r in rows.items() if signal in r["signals"]}
            assert [u for u in (s["user_id"] for s in by_score) if u in set(with_signal)] == sorted(
                with_signal, key=lambda u: (-rows[u]["score"], u)
            )
            bad = await http.get("/v1/at-risk", params={"level": "severe"}, headers=admin)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"
            first = (
                await http.get(
                    "/v1/at-risk", params={"level": "low", "limit": 1, "threshold": 0}, headers=admin
                )
            ).json()
            assert first["next_cursor"]
            other = await http.get(
                "/v1/at-risk",
                params={"level": "high", "threshold": 0, "cursor": first["next_cursor"]},
                headers=admin,
            )
            assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_cursor"

            # --- recalculate one user --------------------------------------------------------------
            user_h = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'quiet-0')}"}
            assert (
                await http.post("/v1/admin/risk/recalculate", json={"user_id": "quiet-0"}, headers=user_h)
            ).status_code == 403
            assert (
                await http.post("/v1/admin/risk/recalculate", json={"user_id": "quiet-0"})
            ).status_code == 401
            missing = await http.post("/v1/admin/risk/recalculate", json={"user_id": "nobody"}, headers=admin)
            assert missing.status_code == 404
            done = await http.post("/v1/admin/risk/recalculate", json={"user_id": "quiet-0"}, headers=admin)
            assert done.status_code == 200, done.text
            result = done.json()["result"]
            assert result["user_id"] == "quiet-0" and result["level"] in ("high", "critical")
            # The answer is written after the view: the row already shows what it says.
            row = (await http.get("/v1/at-risk/quiet-0", headers=admin)).json()
            assert (row["score"], row["updated_at"]) == (result["score"], result["updated_at"])
            # Again (as a redelivered command would): the same stream time, the same score, and
            # the gate sends no intervention a second time.
            again = await http.post("/v1/admin/risk/recalculate", json={"user_id": "quiet-0"}, headers=admin)
            assert again.status_code == 200 and again.json()["result"]["score"] == result["score"]
            after = (await http.get("/v1/at-risk/quiet-0", headers=admin)).json()
            assert after["interventions"] == row["interventions"]

            # --- recalculate everyone -------------------------------------------------------------
            asked = await http.post("/v1/admin/risk/recalculate", json={"all": True}, headers=admin)
            # 202 while partitions are still answering; 200 when every one had by the reply (the
            # workers read the commands at once): which of the two is a race, so both are right.
            assert asked.status_code in (200, 202), asked.text
            poll = asked.json()["poll"]

            async def queued() -> Any:
                r = await http.get(poll, headers=admin)
                return r.json() if r.status_code == 200 else None

            status = await wait_until(queued, timeout=60, what="every partition queued its users")
            assert status["partitions"] == PARTITIONS and status["answered"] == PARTITIONS
            assert status["queued"] == len(users)
            limited = await http.post("/v1/admin/risk/recalculate", json={"all": True}, headers=admin)
            assert limited.status_code == 429
    finally:
        await redis.aclose()
        api.stop()
        worker.stop()
