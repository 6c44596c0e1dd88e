"""Student statistics through the real processes: scored events with durations, on the broker, end
as ``GET /v1/users/{id}/stats`` (the worker's statistics view and ranking, docs/stats.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import issue_token
from models.stats import week_label, week_of
from models.time_units import DAY_MS
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_end_to_end import kafka_python_send

pytestmark = [pytest.mark.integration, pytest.mark.one_broker]


def lesson(event_id: str, user_id: str, ts: int, **props: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user_id, "type": "lesson_complete", "ts": ts, "props": props}


async def test_scored_events_become_statistics_with_a_percentile(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    headers = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'st-1')}"}
    now = int(time.time() * 1000)
    late_ts = now - 6 * DAY_MS
    first = [
        lesson("st-1-a", "st-1", now - 3000, score=70, duration_s=600),
        lesson("st-1-b", "st-1", now - 2000, score=80, duration_s=600),
        # Hostile values: a score out of range is no session; a duration is clamped to a day.
        lesson("st-1-c", "st-1", now - 1500, score=1e9, duration_s=10**12),
        lesson("st-1-d", "st-1", now - 1000, score=-5),
        *(lesson(f"st-2-{i}", "st-2", now - 1000 + i, score=50) for i in range(3)),
    ]
    # Then a late event, six days back, and a duplicate.
    second = [lesson("st-1-late", "st-1", late_ts, score=90, duration_s=300), first[0]]
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)
            kafka_python_send(fresh_kafka, "behavior-events", first)
            kafka_python_send(fresh_kafka, "behavior-events", second)

            async def stats() -> dict[str, Any] | None:
                r = await http.get("/v1/users/st-1/stats", headers=headers)
                body: dict[str, Any] = r.json()
                done = r.status_code == 200 and body["overall"]["sessions"] == 3
                return body if done and body["percentile"]["ranked_students"] == 2 else None

            body = await wait_until(stats, timeout=60, what="st-1's statistics with both students ranked")
            assert body["range"] == "12w" and len(body["weekly"]) == 12
            assert {
                k: body["overall"][k] for k in ("sessions", "average_score", "best_score", "practice_s")
            } == {
                "sessions": 3,
                "average_score": 80.0,
                "best_score": 90,
                "practice_s": 600 + 600 + 86_400 + 300,
            }
            user = (await http.get("/v1/users/st-1", headers=headers)).json()
            assert body["overall"]["xp"] == user["xp"] == sum(w["xp"] for w in body["weekly"])
            # st-2 (average 50) is strictly below st-1 (80): half of the two ranked students.
            assert body["percentile"]["value"] == 50.0
            # The late event landed in its own week.
            late_week = next(w for w in body["weekly"] if w["week"] == week_label(week_of(late_ts)))
            assert late_week["best_score"] == 90
            four = await http.get("/v1/users/st-1/stats?range=4w", headers=headers)
            assert four.status_code == 200 and len(four.json()["weekly"]) == 4
            bad = await http.get("/v1/users/st-1/stats?range=forever", headers=headers)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
            other = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'st-2')}"}
            forbidden = await http.get("/v1/users/st-1/stats", headers=other)
            assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    finally:
        api.stop()
        worker.stop()
