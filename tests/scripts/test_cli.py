"""The `elimu` CLI as a user runs it: a real process, a real broker, configuration from the env."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from api.auth import AuthError, verify_token
from streams.records import owner_partition
from tests.conftest import wait_until

PARTITIONS = 4  # fresh_kafka creates the engine's topics with 4 partitions
SECRET = "cli-test-secret-0123456789abcdef0123456789"
INPUT_TOPICS = ("behavior-events", "user-profiles", "job-postings", "application-status")


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without any ELIMU_* setting, then ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELIMU_")}
    env["ELIMU_DATA_DIR"] = str(tmp_path / "data")
    env.update(settings)
    return env


def elimu(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "scripts.cli", *args],
        env=env,
        cwd=cwd,  # away from the repository's own .elimu/stack.json
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"elimu {' '.join(args)} exited {done.returncode}\n{done.stderr}"
    return done


async def read_all(kafka: str, topics: Iterable[str], expected: int) -> list[Any]:
    """Every record of ``topics`` from the beginning, once ``expected`` of them have arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[Any] = []

        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            got.extend(m for msgs in batch.values() for m in msgs)
            return len(got) >= expected

        await wait_until(enough, timeout=20, what=f"{expected} records on {list(topics)}")
        await enough()  # and whatever else is there, so callers can check nothing more was sent
        return got
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------------
# a. elimu token


def test_token_is_signed_with_elimu_secret_and_carries_role_and_ttl(tmp_path: Path) -> None:
    env = cli_env(tmp_path, ELIMU_SECRET=SECRET)
    before = int(time.time())
    admin = elimu(env, "token", "u-1", "--admin", "--ttl", "60", cwd=tmp_path).stdout.strip()
    user = elimu(env, "token", "u-1", cwd=tmp_path).stdout.strip()

    principal = verify_token(SECRET, admin)
    assert (principal.sub, principal.role) == ("u-1", "admin")
    claims = jwt.decode(admin, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60
    assert before <= claims["iat"] <= int(time.time())

    principal = verify_token(SECRET, user)
    assert (principal.sub, principal.role) == ("u-1", "user")
    assert not principal.is_admin
    with pytest.raises(AuthError):
        verify_token("some-other-secret-0123456789abcdef0123456789", admin)


def test_token_without_elimu_secret_uses_one_generated_secret_kept_in_the_data_dir(tmp_path: Path) -> None:
    env = cli_env(tmp_path)  # no ELIMU_SECRET
    first = elimu(env, "token", "u-1", "--admin", cwd=tmp_path).stdout.strip()
    secret_file = tmp_path / "data" / "secret"
    assert secret_file.exists()
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) & 0o077 == 0  # not readable by others
    second = elimu(env, "token", "u-2", cwd=tmp_path).stdout.strip()

    assert secret_file.read_text().strip() == secret  # generated once, then reused
    assert verify_token(secret, first).role == "admin"
    assert verify_token(secret, second).sub == "u-2"


# ---------------------------------------------------------------------------------------------
# b. elimu produce


@pytest.mark.integration
async def test_produce_publishes_every_line_keyed_by_user_id_and_the_invalid_one_unkeyed(
    fresh_kafka: str, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    valid = [
        {"event_id": "p-1", "user_id": "u-p1", "type": "lesson_complete", "ts": now},
        {"event_id": "p-2", "user_id": "u-p2", "type": "quiz_complete", "ts": now, "props": {"score": 9}},
        {"event_id": "p-3", "user_id": "u-p1", "type": "assessment_complete", "ts": now},
    ]
    invalid = '{"event_id": "p-4", "user_id": "u-p1", "type": "lesson_c'  # truncated JSON
    lines = [orjson.dumps(valid[0]).decode(), invalid, "", *(orjson.dumps(v).decode() for v in valid[1:])]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")

    done = elimu(
        cli_env(tmp_path, ELIMU_KAFKA=fresh_kafka), "produce", "behavior-events", str(src), cwd=tmp_path
    )
    assert "published 4 message(s) to behavior-events (1 without a key)" in done.stderr

    records = await read_all(fresh_kafka, ["behavior-events"], 4)
    assert len(records) == 4
    unkeyed = [r for r in records if r.key is None]
    assert [r.value for r in unkeyed] == [invalid.encode()]
    keyed = sorted((r for r in records if r.key is not None), key=lambda r: (r.partition, r.offset))
    by_event = {orjson.loads(r.value)["event_id"]: r for r in keyed}
    assert set(by_event) == {"p-1", "p-2", "p-3"}
    for v in valid:
        r = by_event[v["event_id"]]
        assert r.key == v["user_id"].encode()
        assert orjson.loads(r.value) == v
        # Kafka's default partitioner: the partition that owns the user's state.
        assert r.partition == owner_partition(r.key, PARTITIONS)
    assert by_event["p-1"].offset < by_event["p-3"].offset  # one user's events stay in file order


# ---------------------------------------------------------------------------------------------
# c. elimu lag


@pytest.mark.integration
@pytest.mark.parametrize(
    "batched",
    [
        pytest.param(False, id="one-record-per-produce"),
        # The embedded broker answers ListOffsets(latest) with the last batch's base offset + 1;
        # `elimu lag` must still show the real end of a partition written in one produce batch.
        pytest.param(True, id="one-produce-batch"),
    ],
)
async def test_lag_prints_committed_end_and_lag_for_a_group_that_committed(
    fresh_kafka: str, redis_url: str, tmp_path: Path, batched: bool
) -> None:
    group = "lag-test-group"
    tp = TopicPartition("behavior-events", 2)
    producer = AIOKafkaProducer(bootstrap_servers=fresh_kafka, acks="all", linger_ms=100)
    await producer.start()
    try:
        for i in range(7):
            sent = await producer.send(tp.topic, b'{"n": %d}' % i, key=b"k", partition=tp.partition)
            if not batched:
                await sent  # delivered before the next one is handed over: a batch each
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=fresh_kafka, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: 3})
    finally:
        await consumer.stop()

    env = cli_env(tmp_path, ELIMU_KAFKA=fresh_kafka, ELIMU_REDIS=redis_url)
    out = elimu(env, "lag", cwd=tmp_path).stdout
    rows = [line.split() for line in out.splitlines()]
    ours = [r for r in rows if r[:1] == [group] and len(r) >= 6 and r[1] == tp.topic]
    # group, topic, partition, committed, end, lag (then seconds and status)
    assert [r[:6] for r in ours] == [[group, "behavior-events", "2", "3", "7", "4"]], out


# ---------------------------------------------------------------------------------------------
# d. elimu simulate


@pytest.mark.integration
async def test_simulate_publishes_one_profile_per_user_then_paced_behaviour_events(
    fresh_kafka: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, ELIMU_KAFKA=fresh_kafka)
    done = elimu(env, "simulate", "--users", "5", "--rate", "50", "--duration", "1", cwd=tmp_path)
    reported = re.search(r"published (\d+) message\(s\)", done.stderr)
    assert reported, done.stderr

    # Counted by reading them back (the embedded broker's ListOffsets undercounts batched records).
    records = await read_all(fresh_kafka, INPUT_TOPICS, int(reported.group(1)))
    counts = Counter(r.topic for r in records)
    assert sum(counts.values()) == int(reported.group(1))
    assert counts["user-profiles"] == 5
    assert 25 <= counts["behavior-events"] <= 75  # ~50 a second, a few of them jobs/applications

    profiles = [r for r in records if r.topic == "user-profiles"]
    assert sorted(r.key for r in profiles) == [f"u-{i}".encode() for i in range(5)]
    assert all(orjson.loads(r.value)["user_id"] == r.key.decode() for r in profiles)
    for r in records:
        if r.topic == "behavior-events":
            assert r.key == orjson.loads(r.value)["user_id"].encode()
            assert r.partition == owner_partition(r.key, PARTITIONS)
