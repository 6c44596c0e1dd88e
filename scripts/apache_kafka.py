"""Apache Kafka on this machine: KRaft nodes started from the official jars (scripts/kafka_dist.py).

One node (`start_kafka`) is the embedded default of `elimu up`; three (`start_cluster`) are the
cluster of the slow tests. Each node keeps everything under its own directory:

    <dir>/server.properties  rendered at every start (ports, paths, overrides)
    <dir>/node.json          the node's ports and the cluster id, reused by the next start so that
                             `stack.json`, clients and the quorum keep their addresses
    <dir>/logs/              the log dirs (formatted once; meta.properties holds the cluster id)

A restart finds the formatted directory and keeps every topic, committed offset and changelog.
The ports are reused when free; a node whose ports were taken meanwhile starts on new ones (the
quorum's voters are static configuration, so a new controller port is only a new config line).

`overrides` replace or add broker settings: the production test passes the compose file's
SASL/SCRAM and ACL settings this way, with SCRAM users created at format time (`scram`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.net import free_port, port_is_free, wait_for_port
from scripts.kafka_dist import Distribution, distribution
from scripts.service import Service, launch

#: Single-node defaults; a cluster sets the replication factors to its size.
BASE_SETTINGS: dict[str, str] = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "1",
    "auto.create.topics.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "8",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # A group forms as soon as its first member joins (the default waits 3 s for more).
    "group.initial.rebalance.delay.ms": "0",
    # Small segments and index files: a laptop's stack and a test's broker hold little data.
    "log.segment.bytes": str(64 * 1024 * 1024),
    "log.index.size.max.bytes": str(1024 * 1024),
    "num.network.threads": "2",
    "num.io.threads": "4",
}
#: A start-up takes 3–10 s on two loaded cores; the first one after formatting a little more.
START_TIMEOUT_S = 90.0
DEFAULT_HEAP = "512m"


def new_cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding, never
    starting with '-' (it would read as a command-line option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class NodeSpec:
    node_id: int
    port: int
    controller_port: int
    directory: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.controller_port}"


def _load_node(directory: Path, node_id: int, cluster_id: str | None) -> tuple[NodeSpec, str]:
    """The node's previous ports and cluster id if it has run here before, else fresh ones."""
    saved_path = directory / "node.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    port = saved.get("port")
    controller_port = saved.get("controller_port")
    if not (isinstance(port, int) and port_is_free(port)):
        port = free_port()
    if not (isinstance(controller_port, int) and controller_port != port and port_is_free(controller_port)):
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
    cid = saved.get("cluster_id") or cluster_id or new_cluster_id()
    return NodeSpec(node_id, port, controller_port, directory), cid


def server_properties(
    node: NodeSpec, voters: Sequence[NodeSpec], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    props = dict(BASE_SETTINGS)
    replicas = str(min(3, len(voters)))
    if len(voters) > 1:
        for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
            props[key] = replicas
        props["transaction.state.log.min.isr"] = "2"
        props["share.coordinator.state.topic.replication.factor"] = replicas
        props["default.replication.factor"] = replicas
        props["min.insync.replicas"] = "2"
    props.update(
        {
            "node.id": str(node.node_id),
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.quorum.voters": ",".join(v.voter() for v in voters),
            "log.dirs": str(node.logs.resolve()),
        }
    )
    for key, value in (overrides or {}).items():
        props[key] = value.replace("{port}", str(node.port)).replace(
            "{controller_port}", str(node.controller_port)
        )
    return props


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    # Java properties: a backslash in a value would start an escape. Ours are paths, ports and
    # words; a caller passing a JAAS line passes it on one line, without continuation backslashes.
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def format_storage(
    dist: Distribution, node: NodeSpec, config: Path, cluster_id: str, scram: Sequence[str] = ()
) -> None:
    """Format the node's log dir once (``--ignore-formatted`` keeps an existing one as it is).
    ``scram`` entries are ``SCRAM-SHA-512=[name=…,password=…]``: SCRAM credentials live in the
    cluster metadata, so the broker's own must exist before it can authenticate to itself."""
    args = ["format", "--ignore-formatted", "--cluster-id", cluster_id, "--config", str(config)]
    for entry in scram:
        args += ["--add-scram", entry]
    done = subprocess.run(
        dist.command("kafka.tools.StorageTool", *args, heap="128m"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"formatting {node.logs} failed: {(done.stdout + done.stderr).strip()[-500:]}")


def wait_serving(bootstrap: str, timeout: float, expect_brokers: int = 1, **security: object) -> None:
    """Until the cluster answers metadata with ``expect_brokers`` brokers: the listener accepts
    TCP connections before the broker has caught up with the metadata log."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **security)
        try:
            await asyncio.wait_for(admin.start(), 10)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
            return len(cluster.get("brokers", [])) >= expect_brokers
        except Exception:
            return False
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"Apache Kafka at {bootstrap} did not serve metadata within {timeout}s")


def _start_nodes(
    directories: Sequence[Path],
    log_paths: Sequence[Path | None],
    overrides: Mapping[str, str] | None,
    scram: Sequence[str],
    heap: str,
    probe_security: Mapping[str, object],
) -> list[Service]:
    dist = distribution()
    loaded = [_load_node(d, i + 1, None) for i, d in enumerate(directories)]
    cluster_id = loaded[0][1]
    nodes = [node for node, _ in loaded]
    services: list[Service] = []
    try:
        for node, log_path in zip(nodes, log_paths, strict=True):
            node.directory.mkdir(parents=True, exist_ok=True)
            config = node.directory / "server.properties"
            _write_properties(config, server_properties(node, nodes, overrides))
            format_storage(dist, node, config, cluster_id, scram)
            (node.directory / "node.json").write_text(
                json.dumps(
                    {"port": node.port, "controller_port": node.controller_port, "cluster_id": cluster_id}
                )
            )
            proc = launch(dist.command("kafka.Kafka", str(config), heap=heap), log_path)
            services.append(
                Service(f"kafka-{node.node_id}" if len(nodes) > 1 else "kafka", proc, node.address)
            )
        # A quorum of several needs a majority up before any node serves: wait after starting all.
        for node, service in zip(nodes, services, strict=True):
            wait_for_port(node.port, timeout=START_TIMEOUT_S, proc=service.proc)
        wait_serving(
            ",".join(n.address for n in nodes), START_TIMEOUT_S, expect_brokers=len(nodes), **probe_security
        )
    except BaseException:
        for service in services:
            service.stop()
        raise
    return services


def start_kafka(
    directory: Path,
    log_path: Path | None = None,
    overrides: Mapping[str, str] | None = None,
    scram: Sequence[str] = (),
    heap: str = DEFAULT_HEAP,
    probe_security: Mapping[str, object] | None = None,
) -> Service:
    """One combined broker+controller node keeping its data under ``directory``."""
    (service,) = _start_nodes([directory], [log_path], overrides, scram, heap, probe_security or {})
    return service


def start_cluster(
    directory: Path, size: int = 3, heap: str = "384m", log_dir: Path | None = None
) -> list[Service]:
    """``size`` combined nodes forming one KRaft quorum (replication factor min(3, size))."""
    dirs = [directory / f"node-{i + 1}" for i in range(size)]
    logs = [(log_dir or d) / f"kafka-{i + 1}.log" for i, d in enumerate(dirs)]
    return _start_nodes(dirs, logs, None, (), heap, {})


def restart_node(service: Service, directory: Path, log_path: Path | None, heap: str = "384m") -> Service:
    """Start a stopped cluster node again from its own directory, as it was configured."""
    dist = distribution(resolve=False)
    proc = launch(dist.command("kafka.Kafka", str(directory / "server.properties"), heap=heap), log_path)
    return Service(service.name, proc, service.address)
