"""Drop-off risk through the real broker, worker, Redis and API: a generated month of history is
replayed, and the users who went quiet must top ``/v1/at-risk`` before their horizon ends."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from api.auth import issue_token
from models.events import format_ts
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker
from tests.integration.test_careers import read_topic, send
from tests.integration.test_end_to_end import recv_json, recv_until

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
DAYS = 30
#: The fading users' last event: 4 days before the end, well inside the 7-day horizon.
FADE_DAYS = 4
RESCORE = 6 * HOUR


def history(now: int) -> tuple[list[dict[str, Any]], dict[str, int], set[str], set[str], set[str]]:
    """Events of three cohorts over DAYS days ending at ``now``, in time order:
    steady users (active every day to the end), early dropouts (gone after day 8-12, so labels
    resolve as dropped during the replay and the trainer learns), and fading users (active every
    day, then silent for the last FADE_DAYS days)."""
    rng = random.Random(7)
    start = now - DAYS * DAY
    steady = {f"steady-{i}" for i in range(24)}
    dropouts = {f"dropout-{i}" for i in range(12)}
    fading = {f"fading-{i}" for i in range(8)}
    last_day = {u: DAYS - 1 for u in steady}
    last_day.update({u: rng.randint(8, 12) for u in dropouts})
    last_day.update({u: DAYS - 1 - FADE_DAYS for u in fading})
    events: list[dict[str, Any]] = []
    last_ts: dict[str, int] = {}
    for user in sorted(last_day):
        hour = rng.uniform(7, 20)
        for day in range(last_day[user] + 1):
            for k in range(rng.randint(2, 4)):
                ts = start + day * DAY + int((hour + k * 0.3) * HOUR)
                if ts > now - HOUR:
                    continue
                events.append(
                    {
                        "event_id": f"{user}-{day}-{k}",
                        "user_id": user,
                        "type": "lesson_complete",
                        "ts": ts,
                        "props": {"duration_s": rng.randint(600, 1800), "score": rng.randint(60, 95)},
                    }
                )
                last_ts[user] = max(last_ts.get(user, 0), ts)
    events.sort(key=lambda e: e["ts"])
    return events, last_ts, steady, dropouts, fading


async def test_users_who_go_quiet_rise_to_the_top_of_the_at_risk_list(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    # Re-score every 6 hours of stream time (1 hour by default) to keep the replay's sweeps short.
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_RISK_RESCORE_MINUTES=str(RESCORE // 60_000))
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    now = int(time.time() * 1000)
    events, last_ts, steady, dropouts, fading = history(now)
    watermark = max(last_ts.values())
    admin_token = issue_token(TEST_SECRET, "ops", "admin")
    admin = {"Authorization": f"Bearer {admin_token}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def ready() -> bool:
                assert worker.alive(), worker.tail()
                return (await http.get("/readyz")).status_code == 200

            await wait_until(ready, timeout=60, what="/readyz")
            ws_url = url.replace("http", "ws") + f"/v1/ws?token={admin_token}"
            async with websockets.connect(ws_url) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": "admin:at-risk"}).decode())
                assert (await recv_json(ws))["op"] == "subscribed"
                send(fresh_kafka, "behavior-events", events, "user_id")
                pushed = await recv_until(
                    ws, lambda m: m["data"]["user_id"] in fading and m["data"]["score"] >= 60, timeout=90
                )
                assert pushed["type"] == "risk" and pushed["data"]["level"] in ("high", "critical")

            async def everyone_scored_at_the_end() -> Any:
                r = await http.get("/v1/at-risk", params={"threshold": 0, "limit": 500}, headers=admin)
                body = r.json()
                if body["stats"]["total_students"] < len(last_ts):
                    return None
                # Stream time ends at the newest event; the sweep re-scores every 6 hours of it.
                fresh = {
                    s["user_id"] for s in body["students"] if s["updated_at"] >= _iso(watermark - RESCORE)
                }
                return body if fading <= fresh else None

            body = await wait_until(
                everyone_scored_at_the_end, timeout=90, what="sweep re-scored the quiet users"
            )
            ranked = [s["user_id"] for s in body["students"]]
            scores = [s["score"] for s in body["students"]]
            assert scores == sorted(scores, reverse=True)
            quiet = fading | dropouts
            # Every user who went quiet ranks above every user still active.
            assert set(ranked[: len(quiet)]) == quiet, ranked
            for student in body["students"]:
                if student["user_id"] in fading:
                    # Scored by the sweep at stream time (the end of the history), not only at
                    # their last event, and already high before their 7-day horizon ends.
                    assert student["updated_at"] > _iso(last_ts[student["user_id"]])
                    assert student["level"] in ("high", "critical"), student
                    assert {"recency_d", "recency_log_h"} & set(student["signals"]), student
                if student["user_id"] in steady:
                    assert student["level"] == "low", student
            stats = body["stats"]
            assert stats["total_students"] == len(last_ts)
            assert stats["critical"] + stats["high"] >= len(fading)
            top = (await http.get("/v1/at-risk", params={"threshold": 60, "limit": 5}, headers=admin)).json()
            assert len(top["students"]) == 5 and all(s["score"] >= 60 for s in top["students"])
            assert top["stats"] == {**stats, "at_risk_pct": top["stats"]["at_risk_pct"]}
            user_token = issue_token(TEST_SECRET, "fading-0")
            forbidden = await http.get("/v1/at-risk", headers={"Authorization": f"Bearer {user_token}"})
            assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
            mine = await http.get("/v1/users/fading-0", headers={"Authorization": f"Bearer {user_token}"})
            assert mine.json()["risk"]["level"] in ("high", "critical")

            async def trainer_learnt() -> Any:
                r = await http.get("/v1/ops/risk-model", headers=admin)
                evaluation = r.json()
                return evaluation if evaluation.get("labels_learnt", 0) > 0 else None

            # Dropouts' labels resolved as dropped during the replay, steady users' as retained;
            # the single trainer learnt them and reports its prequential evaluation.
            evaluation = await wait_until(trainer_learnt, timeout=60, what="trainer learnt labels")
            assert evaluation["n"] >= evaluation["labels_learnt"] > 0 and evaluation["positives"] > 0

        labels = await read_topic(fresh_kafka, "elimu-risk-labels")
        by_user: dict[str, set[int]] = {}
        for label in labels:
            by_user.setdefault(label["user_id"], set()).add(label["label"])
        assert all(by_user.get(u) == {0} for u in steady & set(by_user))
        assert any(1 in by_user.get(u, set()) for u in dropouts)
        assert not any(1 in by_user.get(u, set()) for u in fading)  # still inside their horizon
        scores_topic = await read_topic(fresh_kafka, "risk-scores")
        assert {s["user_id"] for s in scores_topic} == set(last_ts)
    finally:
        api.stop()
        worker.stop()


def _iso(ms: int) -> str:
    return format_ts(ms)
