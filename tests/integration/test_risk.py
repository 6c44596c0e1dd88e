"""Drop-off risk through the real broker, worker, Redis and API: a generated month of history is
replayed, and the users who went quiet must top ``/v1/at-risk`` before their horizon ends; the
trainer's model survives a SIGKILL, from a checkpoint of one chunk and of many."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from api.auth import issue_token
from infra import keys, topics
from infra.signing import RecordSigner
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.events import format_ts
from models.risk import PendingLabel, Resolution
from models.risk_features import FEATURE_NAMES
from streams.broadcast import CHECKPOINT_KEY
from streams.chunks import ChunkBuffer, ChunkError, Manifest
from streams.records import owner_partition
from streams.risk import resolution_message
from streams.risk_trainer import decode_checkpoint
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_careers import read_topic, send
from tests.integration.test_end_to_end import recv_json, recv_until

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
DAYS = 30
#: The fading users' last event: 4 days before the end, well inside the 7-day horizon.
FADE_DAYS = 4
RESCORE = 6 * HOUR
#: Input partitions of the test stack (tests/integration/processes.py stack_env).
PARTITIONS = 4


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
            await wait_ready(http, worker)
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
                learnt = evaluation.get("labels_learnt", 0) > 0 and evaluation.get("positives", 0) > 0
                return evaluation if learnt else None

            # Dropouts' labels resolved as dropped during the replay, steady users' as retained;
            # the single trainer learnt them and reports its prequential evaluation.
            evaluation = await wait_until(trainer_learnt, timeout=60, what="trainer learnt labels")
            assert evaluation["n"] >= evaluation["labels_learnt"] > 0 and evaluation["positives"] > 0

            # --- interventions: the sweep nudged the fading users; one reads and clicks -------
            mine_h = {"Authorization": f"Bearer {user_token}"}

            async def inbox() -> Any:
                r = await http.get("/v1/users/fading-0/notifications", headers=mine_h)
                return r.json() if r.json()["notifications"] else None

            box = await wait_until(inbox, timeout=60, what="an in-app nudge for a fading user")
            note = box["notifications"][0]
            assert box["unread"] >= 1 and note["read"] is False and note["subject"] and note["body"]
            assert "{" not in note["body"]  # every placeholder rendered
            # Steady users levelled up and kept streaks during the replay: each celebrated once.
            steady_box = (await http.get("/v1/users/steady-0/notifications", headers=admin)).json()
            celebrated = [n for n in steady_box["notifications"] if n["type"] == "milestone_celebration"]
            texts = [n["subject"] + " " + n["body"] for n in celebrated]
            assert any("level" in t for t in texts) and all("level" in t or "streak" in t for t in texts)
            assert len({n["id"] for n in celebrated}) == len(celebrated)
            other = issue_token(TEST_SECRET, "steady-0")
            denied = await http.get(
                "/v1/users/fading-0/notifications", headers={"Authorization": f"Bearer {other}"}
            )
            assert denied.status_code == 403
            read = await http.post(f"/v1/users/fading-0/notifications/{note['id']}/read", headers=mine_h)
            assert read.status_code == 200 and read.json() == {"notification_id": note["id"], "read": True}
            missing = await http.post("/v1/users/fading-0/notifications/n-nope/read", headers=mine_h)
            assert missing.status_code == 404
            after = (await http.get("/v1/users/fading-0/notifications", headers=mine_h)).json()
            assert next(n for n in after["notifications"] if n["id"] == note["id"])["read"] is True
            click = {
                "event_id": "click-1",
                "user_id": "fading-0",
                "type": "notification_clicked",
                "ts": int(time.time() * 1000),
                "props": {"notification_id": note["id"]},
            }
            # Clicks steer the A/B choice: only trusted producers post them (models/ingest_policy.py).
            assert (await http.post("/v1/events", json=click, headers=mine_h)).status_code == 422
            assert (await http.post("/v1/events", json=click, headers=admin)).status_code == 202

            async def clicked() -> Any:
                r = await http.get("/v1/analytics/interventions", headers=admin)
                row = r.json()["by_type"].get(note["type"], {})
                return r.json() if row.get("clicked", 0) >= 1 else None

            analytics = await wait_until(clicked, timeout=60, what="click counted in analytics")
            row = analytics["by_type"][note["type"]]
            assert row["sent"] >= row["opened"] >= row["clicked"] == 1 and row["click_rate"] > 0
            assert (await http.get("/v1/analytics/interventions", headers=mine_h)).status_code == 403

            # --- a campaign, fired by stream time -----------------------------------------------
            at = int(time.time() * 1000) + 3000
            body = {
                "id": "quiet-3d",
                "name": "Come back",
                "schedule": {"kind": "one_time", "at": at},
                "target": {"kind": "inactive", "inactive_days": 3},
                # Not gentle_reminder: the sweep already sent every critical student one (with
                # the staff task), and its 48 h gap would hold the campaign's back for all.
                "intervention": "personalized_content",
                "status": "active",
            }
            created = await http.post("/v1/campaigns", json=body, headers=admin)
            assert created.status_code == 201, created.text
            assert created.json()["status"] == "active"
            assert (await http.post("/v1/campaigns", json=body, headers=admin)).status_code == 409
            assert (await http.post("/v1/campaigns", json=body, headers=mine_h)).status_code == 403
            bad = await http.post(
                "/v1/campaigns", json={**body, "id": "x", "intervention": "spam"}, headers=admin
            )
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "intervention"

            # The worker must hold the campaign before stream time passes its instant: a user
            # looked at past it by a worker that did not know the campaign yet is not evaluated
            # for it (a campaign is for what comes after the worker learns of it).
            async def campaign_applied() -> bool:
                text = (await http.get("/metrics")).text
                return any(
                    line.startswith("elimu_broadcast_applied_total{")
                    and 'kind="campaign"' in line
                    and float(line.rsplit(" ", 1)[1]) >= 1
                    for line in text.splitlines()
                )

            await wait_until(campaign_applied, timeout=30, what="the worker applied the campaign")
            # Stream time passes the campaign's instant when an event newer than it arrives, on each
            # partition (each keeps its own clock): a steady user's login on every partition.
            clocks: dict[int, str] = {}
            for user in sorted(steady):
                clocks.setdefault(owner_partition(user.encode(), PARTITIONS), user)
            assert len(clocks) == PARTITIONS, clocks
            ticks = [
                {**click, "event_id": f"tick-{user}", "user_id": user, "type": "login", "ts": at + 1000}
                for user in clocks.values()
            ]
            send(fresh_kafka, "behavior-events", ticks, "user_id")

            seen: list[Any] = [None]

            async def executed() -> Any:
                r = await http.get("/v1/campaigns/quiet-3d", headers=admin)
                seen[0] = r.json()["executions"]
                counts = seen[0]["counts"]
                return counts if counts.get("evaluated") == len(last_ts) else None

            try:
                counts = await wait_until(executed, timeout=60, what="campaign evaluated for every user")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; executions last seen: {seen[0]}") from None
            # fading-0 came back (read and clicked): no longer inactive.
            assert counts["targeted"] == len(fading | dropouts) - 1
            assert counts["not_targeted"] == len(steady) + 1
            delivered = counts.get("sent", 0) + counts.get("deferred", 0)
            suppressed = sum(v for k, v in counts.items() if k.startswith("suppressed:"))
            assert delivered + suppressed == counts["targeted"] and delivered > 0
            paused = await http.post("/v1/campaigns/quiet-3d/pause", headers=admin)
            assert paused.status_code == 200 and paused.json()["status"] == "paused"
            listed = (await http.get("/v1/campaigns", headers=admin)).json()["campaigns"]
            assert [c["id"] for c in listed] == ["quiet-3d"]

        labels = await read_topic(fresh_kafka, "elimu-risk-labels")
        by_user: dict[str, set[int]] = {}
        for label in labels:
            by_user.setdefault(label["user_id"], set()).add(label["label"])
        assert all(by_user.get(u) == {0} for u in steady & set(by_user))
        assert any(1 in by_user.get(u, set()) for u in dropouts)
        assert not any(1 in by_user.get(u, set()) for u in fading)  # still inside their horizon
        sent = [n for n in await read_topic(fresh_kafka, "notifications") if n.get("notification_id")]
        assert note["id"] in {n["notification_id"] for n in sent}
        assert all(n["channels"] and n["idempotency_key"] for n in sent)
        assert len({n["notification_id"] for n in sent}) == len(sent)  # none sent twice
        scores_topic = await read_topic(fresh_kafka, "risk-scores")
        assert {s["user_id"] for s in scores_topic} == set(last_ts)
    finally:
        api.stop()
        worker.stop()


def _iso(ms: int) -> str:
    return format_ts(ms)


@pytest.mark.timeout(420)
async def test_risk_state_and_the_trained_model_survive_a_worker_killed_with_sigkill(
    fresh_kafka: str, redis_url: str, tmp_path: Path
) -> None:
    """The trainer's model comes back from its checkpoint plus the labels after it, and each
    user's risk state from the changelog: a restarted worker keeps learning where it was."""
    env = stack_env(
        fresh_kafka,
        redis_url,
        tmp_path,
        ELIMU_RISK_RESCORE_MINUTES=str(RESCORE // 60_000),
        ELIMU_SESSION_TIMEOUT="6",
    )
    now = int(time.time() * 1000)
    events, last_ts, _, _, fading = history(now)
    admin = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'ops', 'admin')}"}
    first = start_worker(env, tmp_path / "worker-1.log")
    api, url = start_api(env, tmp_path / "api.log")
    second = None
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def evaluation(evaluated: int) -> Any:
                body = (await http.get("/v1/ops/risk-model", headers=admin)).json()
                return body if body.get("n", 0) >= evaluated and body.get("positives", 0) > 0 else None

            await wait_ready(http, first)
            send(fresh_kafka, "behavior-events", events, "user_id")
            await wait_until(lambda: evaluation(1), timeout=90, what="trainer learnt labels")
            scored = (
                await http.get("/v1/at-risk", params={"threshold": 0, "limit": 500}, headers=admin)
            ).json()
            before = (await http.get("/v1/ops/risk-model", headers=admin)).json()  # the latest report
            first.kill()  # SIGKILL: no commit, no checkpoint, no goodbye

            second = start_worker(env, tmp_path / "worker-2.log")
            # New labels for the restored trainer, as the user partitions send them. (Labels made by
            # users coming back would depend on how the replay was cut into batches: a user's last
            # same-day snapshot is resolved by their next event only if it fell in a later batch.)
            fresh = 30
            await _produce(fresh_kafka, _labels(now - 30 * DAY, fresh))
            after = await wait_until(
                lambda: evaluation(before["n"] + fresh),
                timeout=120,
                what="restored trainer evaluated more",
            )
            assert after["labels_learnt"] >= before["labels_learnt"] > 0  # restored, not retrained
            assert second.alive(), second.tail()
            restored = (
                await http.get("/v1/at-risk", params={"threshold": 0, "limit": 500}, headers=admin)
            ).json()
            assert restored["stats"]["total_students"] == scored["stats"]["total_students"] == len(last_ts)
            ranks = [s["user_id"] for s in restored["students"]]
            assert set(ranks[: len(fading)]) <= fading | {u for u in last_ts if u.startswith("dropout")}
        labels = await read_topic(fresh_kafka, "elimu-risk-labels")
        ids = [(label["user_id"], label["scored_at_ms"]) for label in labels]
        # At-least-once: a label may be sent twice across the crash, never counted twice.
        assert after["n"] <= len(set(ids))
    finally:
        api.stop()
        first.stop()
        if second is not None:
            second.stop()


#: Labels for the chunked-checkpoint test: the first half dropped (learnt at once), the second
#: half retained and scored after the first half resolved, so that they wait in the trainer's
#: book, features and all, for their deadline a week of stream time away. The checkpoint then
#: spans several 192 KiB chunks.
CHUNKED_LABELS = 6000


def _labels(start_ms: int, count: int, offset: int = 0) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Signed labels as the user partitions send them (streams/risk_pipeline.py)."""
    rng = random.Random(11 + offset)
    signer = RecordSigner(TEST_SECRET)
    out = []
    for i in range(offset, offset + count):
        dropped = i < CHUNKED_LABELS // 2
        scored = start_ms + i * 1000 + (0 if dropped else 9 * DAY)
        resolved = scored + (8 * DAY if dropped else HOUR)
        features = {name: round(rng.uniform(0.0, 5.0), rng.randint(1, 6)) for name in FEATURE_NAMES}
        pending = PendingLabel(f"learner-{i:05d}", scored, features, rng.random())
        value = orjson.dumps(resolution_message(Resolution(pending, int(dropped), resolved)))
        key = pending.user_id.encode()
        out.append((key, value, signer.headers(topics.RISK_LABELS, key, value)))
    return out


async def _produce(kafka: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topics.RISK_LABELS, v, key=k, partition=0, headers=h) for k, v, h in records
        ]
        for future in sent:
            await future
    finally:
        await producer.stop()


async def _end_offset(kafka: str, topic: str) -> int:
    """The partition's high watermark as a fetch reports it (Tansu's ListOffsets answers the last
    record batch's base offset + 1: streams/faust_tuning.py, ``_highwaters``)."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, max(0, (await consumer.end_offsets([tp]))[tp] - 1))
        while consumer.highwater(tp) is None:
            await consumer.getmany(tp, timeout_ms=200)
        return int(consumer.highwater(tp) or 0)
    finally:
        await consumer.stop()


async def _checkpoint_on_the_topic(kafka: str) -> tuple[Manifest, bytes] | None:
    """The checkpoint as the broker holds it: every record of `elimu-broadcast`, in order, through
    the same buffer a worker uses; None while it does not join (not there yet, or torn)."""
    tp = TopicPartition(BROADCAST_TOPIC, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        buffer = ChunkBuffer(CHECKPOINT_KEY)
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=200)).get(tp, ()):
                if message.key is not None and buffer.owns(message.key):
                    buffer.on_record(message.key, message.value)
        try:
            return buffer.join()
        except ChunkError:
            return None
    finally:
        await consumer.stop()


async def test_a_checkpoint_of_many_chunks_restores_the_trainer_after_sigkill(
    fresh_kafka: str, redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    """At a size one record could not carry (over the worker's 256 KiB budget), the checkpoint
    goes out as chunks and a manifest through the real broker, and the worker that takes over
    after a SIGKILL restores from it: it replays only the labels after the checkpoint."""
    # A checkpoint every 2 s instead of 30: the test waits for the one after the last label.
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_SESSION_TIMEOUT="6", ELIMU_RISK_CHECKPOINT_S="2")
    first = start_worker(env, tmp_path / "worker-1.log")
    second = None
    start = int(time.time() * 1000) - 30 * DAY
    try:
        await _produce(fresh_kafka, _labels(start, CHUNKED_LABELS))
        # Where the labels end on the broker: a producer retry under load can store a label twice
        # (the trainer drops the copy by its id, but it takes an offset).
        end = await _end_offset(fresh_kafka, topics.RISK_LABELS)
        assert end >= CHUNKED_LABELS

        async def checkpoint_at_the_end() -> tuple[Manifest, bytes] | None:
            assert first.alive(), first.tail()
            joined = await _checkpoint_on_the_topic(fresh_kafka)
            return joined if joined is not None and joined[0].offset == end else None

        # The first checkpoint follows the trainer's first batch, the next one
        # ELIMU_RISK_CHECKPOINT_S later.
        # Waited for on the broker, not in the log: a record handed to the producer is not yet
        # stored, and a SIGKILL before the manifest is stored would be a torn write.
        manifest, value = await wait_until(
            checkpoint_at_the_end, timeout=90, what="a checkpoint of every label"
        )
        assert manifest.chunks >= 2 and manifest.size > 256 * 1024, manifest
        model, next_offset, seen = decode_checkpoint(value)
        assert model.n_learned == model.deferred_count == CHUNKED_LABELS // 2
        assert len(seen) == CHUNKED_LABELS
        assert next_offset == end
        assert "too_large" not in first.tail(400)
        first.kill()  # SIGKILL: the checkpoint on the broadcast topic is all that is left of it

        second = start_worker(env, tmp_path / "worker-2.log")
        await _produce(fresh_kafka, _labels(start, 1, offset=CHUNKED_LABELS))  # a batch: restore

        async def restored() -> str | None:
            assert second is not None and second.alive(), second.tail()
            lines = [line for line in second.tail(400).splitlines() if "risk trainer restored" in line]
            return lines[-1] if lines else None

        line = await wait_until(restored, timeout=90, what="the trainer restored on the second worker")
        # From the checkpoint, not from offset 0 (CHUNKED_LABELS + 1 replayed).
        assert f"replayed from offset {end}" in line
        assert "checkpoint unusable" not in second.tail(400)

        async def evaluated_everything() -> Any:
            raw = await redis.get(keys.RISK_EVALUATION)
            report = orjson.loads(raw) if raw else {}
            return report if report.get("n") == CHUNKED_LABELS + 1 else None

        report = await wait_until(evaluated_everything, timeout=60, what="the restored trainer's report")
        assert report["labels_learnt"] == CHUNKED_LABELS // 2  # the dropped ones; the new one is retained
        assert report["pending_deferred"] == CHUNKED_LABELS // 2 + 1
    finally:
        first.stop()
        if second is not None:
            second.stop()
