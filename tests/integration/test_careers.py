"""Job market, matching and applications through the real broker, worker, Redis and API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer

from api.auth import issue_token
from infra.topics import SINGLE_PARTITION
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_end_to_end import recv_json, recv_until

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
DAY = 86_400_000


def send(bootstrap: str, topic: str, values: list[dict[str, Any]], key_field: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for v in values:
        producer.send(topic, orjson.dumps(v), key=str(v.get(key_field, "")).encode())
    producer.flush()
    producer.close()


def posting(job_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "title": "Junior Data Analyst",
        "company": "Acme",
        "location": "Nairobi",
        "industry": "technology",
        "skills": ["sql", "excel", "python"],
        "experience_years": 1,
        "education": "bachelor",
        "salary_min": 60000,
        "salary_max": 90000,
        "currency": "KES",
        "posted_at": NOW - 60_000,
        "deadline": NOW + 3 * DAY,
        "source": "careerjet",
        **overrides,
    }


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        # From the topic's known layout (fresh_kafka creates 4 partitions): a new client's
        # metadata holds every topic on Tansu but none on Apache Kafka until it asks for one.
        tps = [TopicPartition(topic, p) for p in range(1 if topic in SINGLE_PARTITION else 4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        idle = 0
        while idle < 5 and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=200)
            idle = 0 if batch else idle + 1
            out.extend(orjson.loads(m.value) for msgs in batch.values() for m in msgs if m.value)
        return out
    finally:
        await consumer.stop()


async def test_posting_to_match_alert_pulse_and_application_status_pushes(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path)
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    user, other = "amina", "brian"
    token = issue_token(TEST_SECRET, user)
    admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)
            profiles: list[dict[str, Any]] = [
                {
                    "user_id": user,
                    "timezone": "Africa/Nairobi",
                    "location": "Nairobi",
                    "skills": ["SQL", "Excel", "Python"],
                    "experience_years": 1,
                    "education": "bachelor",
                    "salary_expectation": 70000,
                    "currency": "KES",
                },
                # Shares no skill with the posting: never a candidate.
                {"user_id": other, "skills": ["welding"], "location": "Mombasa"},
            ]
            send(fresh_kafka, "user-profiles", profiles, "user_id")

            ws_url = url.replace("http", "ws") + f"/v1/ws?token={token}"
            async with websockets.connect(ws_url) as ws:
                for channel in (f"user:{user}", "market"):
                    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
                    assert (await recv_json(ws))["op"] == "subscribed"

                # Either order works: a posting is matched against indexed profiles, and a new
                # profile against the open postings.
                send(fresh_kafka, "job-postings", [posting("j-7")], "job_id")
                alert = await recv_until(ws, lambda m: m.get("type") == "match_alert", timeout=60)
                assert alert["channel"] == f"user:{user}"
                assert alert["data"]["job_id"] == "j-7"
                assert alert["data"]["match_score"] >= 90 and alert["data"]["is_perfect"] is True
                assert alert["data"]["missing_skills"] == []
                assert alert["data"]["is_urgent"] is True  # deadline within 7 days

                pulse = await recv_until(ws, lambda m: m.get("channel") == "market", timeout=30)
                assert pulse["data"]["new_jobs_today"] >= 1

                # The same posting re-sent (a producer retry) and a malformed one.
                send(fresh_kafka, "job-postings", [posting("j-7"), {"job_id": "j-bad"}], "job_id")
                # An application moving through its pipeline, one event delivered twice.
                submitted = {
                    "event_id": "a-1",
                    "application_id": "app-1",
                    "user_id": user,
                    "job_id": "j-7",
                    "status": "submitted",
                    "ts": NOW - 30_000,
                }
                interview = {
                    **submitted,
                    "event_id": "a-2",
                    "status": "interview_scheduled",
                    "ts": NOW - 10_000,
                }
                send(fresh_kafka, "application-status", [submitted, interview, interview], "user_id")
                status = await recv_until(
                    ws,
                    lambda m: (
                        m.get("type") == "application_status" and m["data"]["status"] == "interview_scheduled"
                    ),
                    timeout=30,
                )
                assert status["data"]["application_id"] == "app-1"

            r = await http.get(f"/v1/users/{user}/matches", headers=headers)
            assert [m["job_id"] for m in r.json()] == ["j-7"]
            assert (await http.get(f"/v1/users/{other}/matches", headers=headers)).status_code == 403

            r = await http.get(f"/v1/users/{user}/applications", headers=headers)
            (app,) = r.json()["applications"]
            assert app["status"] == "interview_scheduled"
            assert [h["status"] for h in app["history"]] == ["submitted", "interview_scheduled"]

            async def applied_xp() -> Any:
                view = (await http.get(f"/v1/users/{user}", headers=headers)).json()
                return view if view.get("counters", {}).get("count:job_apply") == 1 else None

            # The new application earned the job_apply action once, through behavior-events.
            assert (await wait_until(applied_xp, timeout=30, what="job_apply XP"))["xp"] > 0

            pulse_now = (await http.get("/v1/market/pulse", headers=headers)).json()
            assert pulse_now["new_jobs_today"] == 1  # j-7 counted once despite the re-send
            nairobi = (await http.get("/v1/market/pulse?location=nairobi", headers=headers)).json()
            assert nairobi["new_jobs_today"] == 1
            elsewhere = (await http.get("/v1/market/pulse?location=Kisumu", headers=headers)).json()
            assert elsewhere["new_jobs_today"] == 0

            analytics = await http.get("/v1/analytics/applications", headers=admin)
            assert analytics.status_code == 200 and analytics.json()["total"] == 1
            assert (await http.get("/v1/analytics/applications", headers=headers)).status_code == 403

        async def dead_letter() -> Any:
            rows = [d for d in await read_topic(fresh_kafka, "dead-letter") if d["topic"] == "job-postings"]
            return rows or None

        (bad,) = await wait_until(dead_letter, timeout=30, what="dead-lettered posting")
        assert bad["reason"] == "missing_field"
        alerts = [a for a in await read_topic(fresh_kafka, "match-alerts") if a["job_id"] == "j-7"]
        assert [a["user_id"] for a in alerts] == [user]  # alerted once, not again on the re-send
    finally:
        api.stop()
        worker.stop()
