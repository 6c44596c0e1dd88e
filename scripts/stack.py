"""`elimu up`: the whole stack on one machine, as `make run` starts it.

Embedded broker and Redis unless ELIMU_KAFKA / ELIMU_REDIS point elsewhere, then N workers,
the API and (unless --no-demo) the traffic simulator, each a child process. Ctrl-C stops them
in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from api.auth import issue_token
from infra.kafka import ensure_topics
from infra.settings import Settings
from scripts.embedded import Service, start_broker, start_redis

READY_TIMEOUT_S = 120.0


def _elimu(*args: str) -> list[str]:
    return [sys.executable, "-m", "scripts.cli", *args]


def _describe(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return " ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{_describe(p)} exited with {p.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"the stack was not ready within {timeout}s ({url}/readyz)")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def up(settings: Settings, workers: int = 1, demo: bool = True, users: int = 200, rate: float = 20.0) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    services: list[Service] = []
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        kafka = settings.kafka
        if not kafka:
            broker = start_broker(log_path=logs / "kafka.log")
            services.append(broker)
            kafka = broker.address
        redis_url = settings.redis
        if not redis_url:
            redis = start_redis(data_dir / "redis", log_path=logs / "redis.log")
            services.append(redis)
            redis_url = redis.address
        asyncio.run(ensure_topics(kafka, settings.partitions))
        secret = settings.secret()
        env = dict(
            os.environ,
            ELIMU_KAFKA=kafka,
            ELIMU_REDIS=redis_url,
            ELIMU_DATA_DIR=str(data_dir),
            ELIMU_SECRET=secret,
            ELIMU_API_PORT=str(settings.api_port),
        )
        for i in range(workers):
            with open(logs / f"worker-{i}.log", "ab") as out:
                children.append(
                    subprocess.Popen(_elimu("worker"), env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        with open(logs / "api.log", "ab") as out:
            children.append(
                subprocess.Popen(
                    _elimu("api"), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        api_url = f"http://127.0.0.1:{settings.api_port}"
        _wait_ready(api_url, children, READY_TIMEOUT_S)
        admin_token = issue_token(secret, "admin", "admin", ttl_s=30 * 86400)
        stack = {"kafka": kafka, "redis": redis_url, "api": api_url, "admin_token": admin_token}
        (data_dir / "stack.json").write_text(json.dumps(stack, indent=2))
        if demo:
            with open(logs / "simulator.log", "ab") as out:
                children.append(
                    subprocess.Popen(
                        _elimu("simulate", "--users", str(users), "--rate", str(rate)),
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        plural = "s" if workers != 1 else ""
        print(f"Elimu Pulse is up ({workers} worker{plural}{', demo traffic on' if demo else ''})")
        print(f"  API        {api_url}   (OpenAPI: {api_url}/docs)")
        print(f"  WebSocket  {api_url.replace('http', 'ws')}/v1/ws?token=…")
        print(f"  Kafka      {kafka}")
        print(f"  Redis      {redis_url}")
        print(f"  Logs       {logs}")
        print(f"  Stack file {data_dir / 'stack.json'}")
        print(f"  Admin token:\n{admin_token}")
        print("Ctrl-C stops everything.", flush=True)
        while not stopping:
            for p in children:
                if p.poll() is not None and not stopping:
                    print(f"{_describe(p)} exited with {p.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"elimu up failed: {exc} (see {logs})", file=sys.stderr)
        return 1
    finally:
        for p in reversed(children):
            _stop(p)
        for s in reversed(services):
            s.stop()
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "stack.json").unlink()
        print("stopped.", flush=True)


def stack_file(settings: Settings) -> dict[str, str]:
    path = Path(settings.data_dir) / "stack.json"
    if not path.exists():
        return {}
    data: dict[str, str] = json.loads(path.read_text())
    return data
