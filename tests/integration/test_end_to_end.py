"""The user's path: a Kafka produce from any client ends as a websocket message and an HTTP read."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from kafka import KafkaProducer

from api.auth import issue_token
from models.risk_features import DAY_MS
from tests.conftest import wait_until
from tests.integration.oracle import expected_views
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready

pytestmark = pytest.mark.integration


async def recv_json(ws: Any, timeout: float = 30) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def recv_until(ws: Any, pred: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.1, deadline - time.monotonic()))
        if pred(msg):
            return msg


def kafka_python_send(bootstrap: str, topic: str, values: list[dict[str, Any]]) -> None:
    """A different Kafka client than the engine uses, as producers in the wild will."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for v in values:
        producer.send(topic, orjson.dumps(v), key=v["user_id"].encode())
    producer.flush()
    producer.close()


def lesson_event(now: int) -> dict[str, Any]:
    return {
        "event_id": "w-1",
        "user_id": "u-42",
        "type": "lesson_complete",
        "ts": now - 1000,
        "props": {"lesson_id": "L1", "score": 87},
    }


def assessment_event(now: int) -> dict[str, Any]:
    return {
        "event_id": "w-2",
        "user_id": "u-42",
        "type": "assessment_complete",
        "ts": now - 500,
        "props": {"score": 91},
    }


def quiet_day(now: int) -> int:
    """``now`` moved back by whole days until neither event completes that day's challenge."""
    for days_back in range(6):
        at = now - days_back * DAY_MS
        alone = expected_views([lesson_event(at)], now)["u-42"]["xp"]
        both = expected_views([lesson_event(at), assessment_event(at)], now)["u-42"]["xp"]
        if (alone, both) == (65, 245):
            return at
    raise AssertionError("every day of the last six has a challenge these events complete")


async def test_produce_to_websocket_http_and_replay_after_reconnect(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    token = issue_token(TEST_SECRET, "u-42")
    headers = {"Authorization": f"Bearer {token}"}
    # A day (within the dedup window) whose daily challenge neither event completes: on other days
    # a derived challenge event adds its own push and XP, on its own schedule.
    now = quiet_day(int(time.time() * 1000))
    want = expected_views([lesson_event(now), assessment_event(now)], int(time.time() * 1000))["u-42"]
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)
            ws_url = url.replace("http", "ws") + f"/v1/ws?token={token}"
            async with websockets.connect(ws_url) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": "user:u-42"}).decode())
                sub = await recv_json(ws)
                assert sub["op"] == "subscribed" and sub["channel"] == "user:u-42"
                await ws.send(orjson.dumps({"op": "subscribe", "channel": "leaderboard:all_time"}).decode())
                assert (await recv_json(ws))["channel"] == "leaderboard:all_time"

                first = lesson_event(now)
                kafka_python_send(fresh_kafka, "behavior-events", [first])
                msg = await recv_until(ws, lambda m: m.get("type") == "engagement")
                assert msg["channel"] == "user:u-42"
                assert msg["data"]["event_ids"] == ["w-1"]
                assert msg["data"]["xp_gained"] == 65  # 50 for the lesson + 15 for the day's first event
                assert msg["data"]["streak"]["current"] == 1
                last_seen = msg["id"]
                # The all-time board is pushed live (at most once a second) with the new score.
                board = await recv_until(ws, lambda m: m.get("type") == "leaderboard")
                assert board["data"]["period"] == "all_time"
                # No profile: no name, school or cohort on the entry.
                entry = {
                    "rank": 1,
                    "user_id": "u-42",
                    "score": 65,
                    "display_name": None,
                    "school": None,
                    "cohort": None,
                }
                assert entry in board["data"]["entries"]

            r = await http.get("/v1/users/u-42", headers=headers)
            assert r.status_code == 200
            view = r.json()
            assert view["xp"] == 65 and view["level"]["level"] == 1

            # While the client is away, two more events happen; the second one is a duplicate.
            second = assessment_event(now)
            kafka_python_send(fresh_kafka, "behavior-events", [second, second])

            async def xp_now() -> Any:
                v = (await http.get("/v1/users/u-42", headers=headers)).json()
                return v if v["xp"] > 65 else None

            view = await wait_until(xp_now, timeout=30, what="second event applied")
            # 100 for the assessment + 30 for the first_assessment badge (it sets no XP of its own:
            # [xp] badge_default, the contract's +30) + level 2 (+50) = 245
            assert view["xp"] == 245 == want["xp"], view
            assert view["level"]["level"] == 2
            # As of today: alive only if the chosen day was today or yesterday.
            assert {k: view["streak"][k] for k in want["streak"]} == want["streak"]

            async with websockets.connect(ws_url) as ws:
                await ws.send(
                    orjson.dumps({"op": "subscribe", "channel": "user:u-42", "since": last_seen}).decode()
                )
                sub = await recv_json(ws)
                assert sub == {"op": "subscribed", "channel": "user:u-42", "recovered": True}
                # Everything after `last_seen` is replayed, in id order and without a gap. Other
                # pushes (a notification, say) may come before the engagement one: the engine
                # does not order the pushes of different kinds, so the test must not either.
                replayed = [await recv_json(ws)]
                while replayed[-1].get("type") != "engagement":
                    replayed.append(await recv_json(ws))
                assert [m["id"] for m in replayed] == list(
                    range(last_seen + 1, last_seen + 1 + len(replayed))
                )
                missed = replayed[-1]
                assert missed["data"]["event_ids"] == ["w-2"]  # the duplicate produced nothing
                assert {b["id"] for b in missed["data"]["new_badges"]} == {"first_assessment"}
                assert missed["data"]["level_up"] is True

            # One scrape of the API shows the worker's metrics too, labelled by worker. Three
            # records were consumed: w-1, and w-2 twice (the duplicate is processed and skipped).
            processed = re.compile(
                r'^elimu_events_processed_total\{agent="engagement",topic="behavior-events",'
                r'worker="[^"]+"\} 3\.0$',
                re.M,
            )

            async def worker_metrics() -> str | None:
                text = (await http.get("/metrics")).text
                return text if processed.search(text) else None

            text = await wait_until(worker_metrics, timeout=15, what="worker metrics relayed")
            duplicates = r'^elimu_events_duplicate_total\{agent="engagement",worker="[^"]+"\} 1\.0$'
            assert re.search(duplicates, text, re.M)
            assert "elimu_api_ws_connections" in text

            # The leaderboards saw it too.
            r = await http.get("/v1/leaderboards/all_time?around=u-42", headers=headers)
            assert r.status_code == 200
            assert {
                "rank": 1,
                "user_id": "u-42",
                "score": 245,
                "display_name": None,
                "school": None,
                "cohort": None,
            } in r.json()["entries"]
    finally:
        api.stop()
        worker.stop()
