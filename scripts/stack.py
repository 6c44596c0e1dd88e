"""`elimu up`: the whole stack on one machine, as `make run` starts it.

Embedded broker (Apache Kafka where Java 17+ runs, else Tansu; `--broker` forces one) and
Redis unless ELIMU_KAFKA / ELIMU_REDIS point elsewhere, then N workers,
the API and (unless --no-demo) the traffic simulator, each a supervised child process
(scripts/supervisor.py): once the stack is ready, a child that dies is restarted with backoff
while the rest keep serving. Ctrl-C or SIGTERM stops them all, the app before the broker and
Redis; a second Ctrl-C kills what is still stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

from api.auth import issue_token
from infra.kafka import ensure_topics
from infra.settings import Settings
from scripts.embedded import start_broker, start_redis
from scripts.kafka_dist import BrokerKind, choose_broker
from scripts.service import Service
from scripts.supervisor import ChildSpec, Supervisor, write_json_atomically

READY_TIMEOUT_S = 120.0
#: How long a child may take to stop on SIGTERM before it is killed (a worker leaves its
#: group and flushes its producer; uvicorn closes its websockets).
STOP_GRACE_S = 15.0
#: The embedded broker and Redis stop after the app (tier 1), which flushes to them on the way out.
INFRA_TIER, APP_TIER = 0, 1
#: Written next to stack.json: every child's pid, state, restart count and last exit code.
PROCESSES_FILE = "processes.json"


def _elimu(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "scripts.cli", *args)


def _wait_ready(url: str, supervisor: Supervisor, stop: threading.Event, timeout: float) -> bool:
    """True once the API answers /readyz; False when asked to stop first. A child exiting
    meanwhile is a start-up failure (wrong settings, a port in use): reported, not retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.is_set():
            return False
        reason = supervisor.poll()
        if reason is not None:
            raise RuntimeError(reason)
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
            if r.status == 200:
                return True
        stop.wait(0.25)
    raise TimeoutError(f"the stack was not ready within {timeout}s ({url}/readyz)")


def _adopt(supervisor: Supervisor, service: Service, log_path: Path, restartable: bool) -> None:
    argv = tuple(map(str, service.proc.args)) if isinstance(service.proc.args, list | tuple) else ()
    spec = ChildSpec(service.name, argv, log_path=log_path, restartable=restartable, tier=INFRA_TIER)
    supervisor.adopt(spec, service.proc)


def up(
    settings: Settings,
    workers: int = 1,
    demo: bool = True,
    users: int = 200,
    rate: float = 20.0,
    broker: BrokerKind | None = None,
) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    stop = threading.Event()
    hurry = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor(status_path=data_dir / PROCESSES_FILE)
    supervisor.restarting = False  # until ready: an exit during start-up is reported, not retried
    try:
        kafka = settings.kafka
        if not kafka:
            kind, why = choose_broker(broker)
            print(f"broker: {why}", flush=True)
            service = start_broker(kind, data_dir, log_path=logs / "kafka.log")
            # Apache Kafka restarts from its log dirs with everything kept. Tansu is
            # memory-only: restarted, it would come back without topics, offsets or changelogs,
            # so its death stops the stack instead of silently losing every state.
            _adopt(supervisor, service, logs / "kafka.log", restartable=kind == "kafka")
            kafka = service.address
        redis_url = settings.redis
        if not redis_url:
            redis = start_redis(data_dir / "redis", log_path=logs / "redis.log")
            # Restarted on the same port from its AOF: the clients reconnect and nothing is lost.
            _adopt(supervisor, redis, logs / "redis.log", restartable=True)
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
            # A stable name: the restarted worker takes over its predecessor's transactional ids
            # and aborts its open transactions at once (streams/transactions.py).
            named = {**env, "ELIMU_WORKER_NAME": f"worker-{i}"}
            supervisor.start(ChildSpec(f"worker-{i}", _elimu("worker"), named, logs / f"worker-{i}.log"))
        supervisor.start(ChildSpec("api", _elimu("api"), env, logs / "api.log"))
        # Mail, push and SMS: sends only what its settings configure (docs/notifications.md).
        supervisor.start(ChildSpec("deliver", _elimu("deliver"), env, logs / "deliver.log"))
        api_url = f"http://127.0.0.1:{settings.api_port}"
        if not _wait_ready(api_url, supervisor, stop, READY_TIMEOUT_S):
            return 0
        supervisor.restarting = True
        admin_token = issue_token(secret, "admin", "admin", ttl_s=30 * 86400)
        stack = {"kafka": kafka, "redis": redis_url, "api": api_url, "admin_token": admin_token}
        write_json_atomically(data_dir / "stack.json", stack)
        if demo:
            sim = _elimu("simulate", "--users", str(users), "--rate", str(rate))
            supervisor.start(ChildSpec("simulator", sim, env, logs / "simulator.log"))
        plural = "s" if workers != 1 else ""
        print(f"Elimu Pulse is up ({workers} worker{plural}{', demo traffic on' if demo else ''})")
        print(f"  API        {api_url}   (OpenAPI: {api_url}/docs)")
        print(f"  WebSocket  {api_url.replace('http', 'ws')}/v1/ws?token=…")
        print(f"  Kafka      {kafka}")
        print(f"  Redis      {redis_url}")
        print(f"  Logs       {logs}")
        print(f"  Stack file {data_dir / 'stack.json'}")
        print(f"  Admin token:\n{admin_token}")
        print("A process that dies is restarted. Ctrl-C stops everything.", flush=True)
        reason = supervisor.run(stop)
        if reason is not None:
            print(f"elimu up: {reason}; stopping (see {logs})", file=sys.stderr)
            return 1
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"elimu up failed: {exc} (see {logs})", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "stack.json").unlink()  # first: nobody should find a stack that is going
        supervisor.stop(STOP_GRACE_S, hurry)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped.", flush=True)


def stack_file(settings: Settings) -> dict[str, str]:
    path = Path(settings.data_dir) / "stack.json"
    if not path.exists():
        return {}
    data: dict[str, str] = json.loads(path.read_text())
    return data
