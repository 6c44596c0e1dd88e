"""Real worker and API processes for integration tests, started the way `elimu up` starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infra.net import free_port, wait_for_port
from tests.conftest import wait_until

TEST_SECRET = "integration-test-secret-0123456789abcdef"


@dataclass
class Proc:
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> Proc:
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", *self.args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def stack_env(kafka: str, redis: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ELIMU_KAFKA=kafka,
        ELIMU_REDIS=redis,
        ELIMU_DATA_DIR=str(data_dir),
        ELIMU_SECRET=TEST_SECRET,
        ELIMU_PARTITIONS="4",
        ELIMU_LOG_LEVEL="info",
        # A single-member group joins in ~3 s instead of ~15 s on Tansu (the join waits on the
        # session timeout there), and a killed worker's partitions move on quickly.
        ELIMU_SESSION_TIMEOUT="6",
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log: Path) -> Proc:
    """A worker named after its log file and its test's directory, unless ``env`` names it: a
    worker restarted with the same log takes over its predecessor's transactions
    (streams/transactions.py), and no two tests share a transactional id on the session's
    broker (a SIGKILLed worker's open transaction, on topics the next test's reset deleted, would
    hold up the next worker of that name)."""
    name = f"{log.parent.name}-{log.stem}"
    return Proc(["worker"], {"ELIMU_WORKER_NAME": name, **env}, log).start()


def start_api(env: dict[str, str], log: Path) -> tuple[Proc, str]:
    port = free_port()
    p = Proc(["api"], {**env, "ELIMU_API_PORT": str(port)}, log).start()
    assert p.proc is not None
    wait_for_port(port, timeout=30, proc=p.proc)
    return p, f"http://127.0.0.1:{port}"


def wait_exit(p: Proc, timeout: float = 30) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.alive():
        time.sleep(0.05)
    return None if p.proc is None else p.proc.poll()


async def wait_ready(http: httpx.AsyncClient, worker: Proc, timeout: float = 60) -> None:
    """Until the API answers /readyz 200 (broker, Redis and a live worker); fails at once with
    the worker's log tail if the worker died meanwhile."""

    async def ready() -> bool:
        assert worker.alive(), worker.tail()
        return (await http.get("/readyz")).status_code == 200

    await wait_until(ready, timeout=timeout, what="/readyz")
