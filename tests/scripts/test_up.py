"""`elimu up` as a user runs it: the whole embedded stack, one worker SIGKILLed, then Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.lag import read_offsets
from infra.net import free_port
from infra.topics import BEHAVIOR_EVENTS
from streams.app import APP_ID
from tests.scripts.test_supervisor import running, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"u-up-{i}" for i in range(8)]  # spread over the 4 partitions, so both workers own some


def xp_of(api: str, token: str) -> dict[str, int]:
    got: dict[str, int] = {}
    for user in USERS:
        r = httpx.get(f"{api}/v1/users/{user}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        got[user] = int(r.json()["xp"]) if r.status_code == 200 else 0
    return got


def post_events(api: str, token: str, round_: int) -> None:
    now = int(time.time() * 1000)
    events = [
        {"event_id": f"up-{round_}-{u}", "user_id": u, "type": "lesson_complete", "ts": now} for u in USERS
    ]
    r = httpx.post(f"{api}/v1/events", json=events, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 202, r.text


@pytest.mark.timeout(400)
def test_up_restarts_a_killed_worker_keeps_serving_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELIMU_")}  # embedded everything
    env.update(
        ELIMU_DATA_DIR=str(data),
        ELIMU_API_PORT=str(free_port()),
        ELIMU_PARTITIONS="4",
        ELIMU_SESSION_TIMEOUT="6",  # the killed worker's partitions move on quickly
        ELIMU_SECRET="up-test-secret-0123456789abcdef0123456789",
        PYTHONPATH=str(ROOT),
    )
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        up = subprocess.Popen(
            # Supervision is the subject, not the broker: Tansu, which starts at once (the
            # Apache Kafka path is the restart test below).
            [sys.executable, "-m", "scripts.cli", "up", "--no-demo", "--workers", "2", "--broker", "tansu"],
            env=env,
            cwd=tmp_path,
            stdout=o,
            stderr=e,
        )
    pids: list[int] = []

    def logs() -> str:
        return f"--- stdout\n{out.read_text()}\n--- stderr\n{err.read_text()}"

    def processes() -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((data / "processes.json").read_text())
        return loaded

    try:

        def stack_ready() -> bool:
            assert up.poll() is None, logs()
            return (data / "stack.json").exists()

        wait_for(stack_ready, timeout=180, what="elimu up ready")
        stack = json.loads((data / "stack.json").read_text())
        api, token = stack["api"], stack["admin_token"]
        before = processes()
        assert {n: p["state"] for n, p in before.items()} == dict.fromkeys(
            ("kafka", "redis", "worker-0", "worker-1", "api", "deliver"), "running"
        )
        pids = [p["pid"] for p in before.values()]

        post_events(api, token, 1)

        def all_scored() -> dict[str, int] | None:
            xp = xp_of(api, token)
            return xp if all(v > 0 for v in xp.values()) else None

        first = wait_for(all_scored, timeout=90, what="the first events applied")

        victim = before["worker-0"]["pid"]
        os.kill(victim, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            w = processes()["worker-0"]
            return w if w["restarts"] == 1 and w["state"] == "running" and w["pid"] != victim else None

        worker = wait_for(restarted, timeout=30, what="worker-0 restarted")
        pids.append(worker["pid"])
        assert worker["last_exit"] == -signal.SIGKILL
        assert "worker-0 exited with -9 (SIGKILL)" in err.read_text(), logs()
        assert "restart #1 in 1s" in err.read_text()
        assert "worker-0 restarted (pid" in err.read_text()
        after = processes()
        for other in ("kafka", "redis", "worker-1", "api"):  # nobody else was touched
            assert after[other]["pid"] == before[other]["pid"] and after[other]["restarts"] == 0
        assert up.poll() is None, logs()

        # Still serving: new events for every user (both workers' partitions) are applied.
        post_events(api, token, 2)
        wait_for(
            lambda: all(v > first[u] for u, v in xp_of(api, token).items()),
            timeout=120,
            what="the events after the kill applied",
        )

        # Redis too comes back, on its port and from its AOF: what it served is still there.
        redis_pid = after["redis"]["pid"]
        os.kill(redis_pid, signal.SIGKILL)
        wait_for(lambda: processes()["redis"]["restarts"] == 1, timeout=30, what="redis restarted")
        pids.append(processes()["redis"]["pid"])

        def served_again() -> dict[str, int] | None:
            xp = xp_of(api, token)  # 0 while the API has not reconnected yet
            return xp if all(v > first[u] for u, v in xp.items()) else None

        second = wait_for(served_again, timeout=30, what="the views served again from the AOF")
        post_events(api, token, 3)
        wait_for(
            lambda: all(v > second[u] for u, v in xp_of(api, token).items()),
            timeout=120,
            what="the events after the Redis restart applied",
        )

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0, logs()
        assert "stopped." in out.read_text()
        assert not (data / "stack.json").exists()
        assert not [pid for pid in pids if running(pid)], logs()
        assert {p["state"] for p in processes().values()} == {"stopped"}
    finally:
        _stop_up(up)
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def _stop_up(up: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, so that `elimu up` stops the broker and Redis it started in their own sessions (a
    SIGKILL would leave them running for the rest of the test session); SIGKILL if that hangs."""
    if up.poll() is None:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def _start_up(tmp_path: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / f"{name}.out"
    with open(out, "wb") as o:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", "up", "--no-demo", "--broker", "kafka"],
            env=env,
            cwd=tmp_path,
            stdout=o,
            stderr=subprocess.STDOUT,
        )
    return proc, out


def _committed(kafka: str, group: str, topic: str) -> int:
    """What ``group`` committed on ``topic``, summed over partitions, as `elimu lag` reads it."""
    snapshot = read_offsets(kafka)
    return sum(offset for (g, t, _), offset in snapshot.committed.items() if g == group and t == topic)


def _caught_up(kafka: str, group: str, topic: str) -> int | None:
    """The sum of ``group``'s committed offsets on ``topic`` once it has committed up to the end
    of every partition (as `elimu lag` reads it: transaction markers are not lag), else None."""
    snapshot = read_offsets(kafka)
    ours = {(t, p): c for (g, t, p), c in snapshot.committed.items() if g == group and t == topic}
    ends = {tp: end for tp, end in snapshot.ends.items() if tp[0] == topic}
    if not ours or any(ours.get(tp, 0) < end for tp, end in ends.items()):
        return None
    return sum(ours.values())


@pytest.mark.apache_kafka  # runs beside the Apache Kafka tests (tests/conftest.py)
@pytest.mark.timeout(400)
def test_up_on_apache_kafka_keeps_every_state_and_offset_across_a_restart(tmp_path: Path) -> None:
    """Stop `make run` and start it again: the broker comes back from its log dirs on the same
    port with the workers' changelogs and committed offsets, so even with Redis emptied in
    between, every user's XP is what it was and an old event is not applied twice."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELIMU_")}
    env.update(
        ELIMU_DATA_DIR=str(data),
        ELIMU_API_PORT=str(free_port()),
        ELIMU_PARTITIONS="4",
        ELIMU_SESSION_TIMEOUT="6",
        ELIMU_SECRET="up-test-secret-0123456789abcdef0123456789",
        PYTHONPATH=str(ROOT),
    )
    up, out = _start_up(tmp_path, env, "first")
    try:
        wait_for(lambda: up.poll() is None and (data / "stack.json").exists(), timeout=180, what="first up")
        assert "broker: Apache Kafka" in out.read_text() and "data is durable" in out.read_text()
        first_stack = json.loads((data / "stack.json").read_text())
        api, token = first_stack["api"], first_stack["admin_token"]
        post_events(api, token, 1)
        post_events(api, token, 2)

        # Once the worker has committed everything on behavior-events (16 events, and on days
        # one lesson completes the daily challenge, its derived events), their effects are in the
        # state it keeps.
        committed = wait_for(
            lambda: _caught_up(first_stack["kafka"], APP_ID, BEHAVIOR_EVENTS),
            timeout=90,
            what="both rounds applied and committed",
        )
        before = xp_of(api, token)
        assert all(v > 0 for v in before.values()), before
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, out.read_text()
    finally:
        _stop_up(up)

    # Redis's AOF would hand the views back by itself: remove it, so that what is served after
    # the restart can only come from the broker's changelogs.
    shutil.rmtree(data / "redis")
    up, out = _start_up(tmp_path, env, "second")
    try:
        wait_for(lambda: up.poll() is None and (data / "stack.json").exists(), timeout=180, what="second up")
        stack = json.loads((data / "stack.json").read_text())
        assert stack["kafka"] == first_stack["kafka"]  # same port: clients keep their address
        # The worker group's offsets on behavior-events survived the restart.
        assert _committed(stack["kafka"], APP_ID, BEHAVIOR_EVENTS) == committed >= 2 * len(USERS)
        api, token = stack["api"], stack["admin_token"]
        wait_for(
            lambda: xp_of(api, token) == before, timeout=90, what="the views rebuilt from the changelogs"
        )
        post_events(api, token, 2)  # round 2 again: a duplicate of an applied event changes nothing
        post_events(api, token, 3)
        wait_for(lambda: all(v > before[u] for u, v in xp_of(api, token).items()), timeout=90, what="round 3")
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, out.read_text()
    finally:
        _stop_up(up)
