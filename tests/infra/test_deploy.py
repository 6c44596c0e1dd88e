"""The production compose file and its dashboard stay true to the code (nothing here can run
Docker: these checks are what keeps them correct by reading)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import yaml

from api.metrics import REGISTRY as API_REGISTRY
from infra.topics import INPUT_TOPICS
from streams.metrics import REGISTRY as WORKER_REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def metric_names() -> set[str]:
    names: set[str] = set()
    for registry in (API_REGISTRY, WORKER_REGISTRY):
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    # Families with labels have no samples until first use; their sample names follow the type.
    return names | {f"{n}_total" for n in names} | {f"{n}_bucket" for n in names}


def test_every_dashboard_query_names_a_metric_the_engine_exports() -> None:
    dashboard: dict[str, Any] = orjson.loads((ROOT / "deploy/grafana/dashboards/elimu.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\belimu_[a-z_]+", e)}
    assert used, "the dashboard queries no elimu metric"
    assert used <= metric_names(), f"unknown metrics: {sorted(used - metric_names())}"
    # Lag in offsets and seconds, throughput, p99 latency, dead letters, connections (issue 5).
    for needed in (
        "elimu_consumer_lag",
        "elimu_consumer_lag_seconds",
        "elimu_events_processed_total",
        "elimu_processing_latency_seconds_bucket",
        "elimu_dead_letters_total",
        "elimu_api_ws_connections",
    ):
        assert needed in used


def test_compose_mounts_exist_and_prometheus_scrapes_the_api() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "api", "prometheus", "grafana"} <= set(services)
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == ["api:8000"]


# ---------------------------------------------------------------------------------------------
# Production lockdown (docs/security.md): SASL/SCRAM and ACLs on Kafka, a capped Redis with ACLs

KAFKA_DIR = ROOT / "deploy/kafka"
REQUIRED = re.compile(r"^\$\{([A-Z_]+):\?[^}]+\}$")  # compose refuses to start without it


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def java_properties(path: Path) -> dict[str, str]:
    """key=value lines with ``\\`` continuations (enough for our files; Kafka reads them the same)."""
    props: dict[str, str] = {}
    text = re.sub(r"\\\n\s*", "", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def shell_commands(path: Path, tool: str) -> list[list[str]]:
    """Each invocation of ``tool`` in a bash script, continuations joined, split like a shell."""
    import shlex

    text = re.sub(r"\\\n\s*", " ", path.read_text())
    call = f'"$bin/{tool}"'
    return [shlex.split(line.split(call, 1)[1]) for line in text.splitlines() if call in line]


def test_kafka_accepts_only_scram_clients_and_denies_what_no_acl_allows() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["entrypoint"] == ["/bin/bash", "/deploy/kafka/start.sh"]
    assert "./deploy/kafka:/deploy/kafka:ro" in kafka["volumes"]
    assert "ports" not in kafka  # reachable only inside the compose network
    props = java_properties(KAFKA_DIR / "server.properties")

    listeners = dict(entry.split(":", 1) for entry in props["listener.security.protocol.map"].split(","))
    names = [entry.split("://")[0] for entry in props["listeners"].split(",")]
    assert set(names) == set(listeners) == {"SASL", "CONTROLLER"}
    assert set(listeners.values()) == {"SASL_PLAINTEXT"}  # no PLAINTEXT listener at all
    assert props["listener.name.sasl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["inter.broker.listener.name"] == "SASL"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert "CONTROLLER://127.0.0.1:" in props["listeners"]  # the quorum port stays in the container
    assert props["advertised.listeners"] == "SASL://kafka:9092"
    assert kafka["environment"]["KAFKA_ADMIN_PASSWORD"].startswith("${KAFKA_ADMIN_PASSWORD:?")

    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert set(props["super.users"].split(";")) == {"User:admin", "User:elimu"}
    assert props["auto.create.topics.enable"] == "false"
    # Passwords come from the environment (EnvVarConfigProvider), never from the file.
    jaas = [v for k, v in props.items() if k.endswith("sasl.jaas.config")]
    assert len(jaas) == 2
    for value in jaas:
        assert set(re.findall(r'password="([^"]*)"', value)) == {"${env:KAFKA_ADMIN_PASSWORD}"}
    assert props["config.providers.env.class"].endswith("EnvVarConfigProvider")

    start = (KAFKA_DIR / "start.sh").read_text()
    assert '--add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"' in start
    assert "--ignore-formatted" in start


def test_setup_creates_the_scram_users_and_limits_producers_to_writing_the_input_topics() -> None:
    services = compose()["services"]
    setup = services["kafka-setup"]
    assert setup["entrypoint"] == ["/bin/bash", "/deploy/kafka/setup.sh"]
    assert setup["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for var in ("KAFKA_ADMIN_PASSWORD", "ELIMU_KAFKA_PASSWORD", "KAFKA_PRODUCER_PASSWORD"):
        assert REQUIRED.match(setup["environment"][var]), var
    # Topics are created by the engine's principal after the users and ACLs exist.
    assert services["topics"]["depends_on"] == {
        "kafka-setup": {"condition": "service_completed_successfully"}
    }

    script = KAFKA_DIR / "setup.sh"
    configs = shell_commands(script, "kafka-configs.sh")
    assert len(configs) == 1 and "--entity-type" in configs[0]
    assert "for user in elimu producer; do" in script.read_text()
    assert any(a.startswith("SCRAM-SHA-512=[") for a in configs[0])

    grants: dict[str, set[tuple[str, str, str]]] = {}
    for args in shell_commands(script, "kafka-acls.sh"):
        if "--add" not in args:
            continue
        principal = args[args.index("--allow-principal") + 1]
        ops = [args[i + 1] for i, a in enumerate(args) if a == "--operation"]
        resources = [
            (a, args[i + 1]) for i, a in enumerate(args) if a in ("--topic", "--group", "--transactional-id")
        ]
        resources += [("--cluster", "")] if "--cluster" in args else []
        if principal == "User:producer":
            assert args[args.index("--resource-pattern-type") + 1] == "literal"
        grants.setdefault(principal, set()).update((kind, name, op) for kind, name in resources for op in ops)

    # The loop over topics is one command in the file: expand it the way bash does.
    loop = re.search(r"for topic in ([a-z\- ]+); do", script.read_text())
    assert loop is not None
    assert {name for _, name, _ in grants["User:producer"]} == {"$topic"}  # no grant outside the loop
    producer = {
        (k, t, op)
        for k, name, op in grants["User:producer"]
        for t in loop.group(1).split()
        if name == "$topic"
    }
    assert producer == {("--topic", t, op) for t in INPUT_TOPICS for op in ("Write", "Describe")}
    assert set(grants) == {"User:elimu", "User:producer"}
    assert {("--topic", "*", "All"), ("--group", "*", "All"), ("--transactional-id", "*", "All")} <= grants[
        "User:elimu"
    ]


def test_the_engine_authenticates_with_the_settings_infra_kafka_auth_reads() -> None:
    from infra.kafka_auth import KafkaSecurity

    services = compose()["services"]
    env = services["worker"]["environment"]
    for name in ("worker", "api", "topics"):
        for key in ("ELIMU_KAFKA_SECURITY_PROTOCOL", "ELIMU_KAFKA_USERNAME", "ELIMU_KAFKA_PASSWORD"):
            assert key in services[name]["environment"], (name, key)
    assert REQUIRED.match(env["ELIMU_KAFKA_PASSWORD"])
    resolved = {k: "from-the-env" if REQUIRED.match(str(v)) else str(v) for k, v in env.items()}
    security = KafkaSecurity.from_env(resolved)
    assert (security.protocol, security.mechanism, security.username) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "elimu",
    )


def test_redis_is_capped_evicts_only_what_expires_and_admits_only_the_engine_user() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    assert "ports" not in redis
    command: list[str] = redis["command"]
    assert command[0] == "redis-server"

    def after(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert re.fullmatch(r"\$\{ELIMU_REDIS_MAXMEMORY:-\d+[kmg]b\}", after("--maxmemory"))
    assert after("--maxmemory-policy") == "volatile-lru"
    assert after("--protected-mode") == "yes"
    assert after("--appendonly") == "yes"
    users = [i for i, a in enumerate(command) if a == "--user"]
    assert len(users) == 2
    default = command[users[0] + 1 : users[1]]
    assert default[:2] == ["default", "off"] and "resetpass" in default and "-@all" in default
    elimu = command[users[1] + 1 :]
    assert elimu[:2] == ["elimu", "on"] and elimu[-1] == "-@dangerous"
    assert REQUIRED.match(next(a for a in elimu if a.startswith(">"))[1:])
    url = services["api"]["environment"]["ELIMU_REDIS"]
    assert re.fullmatch(r"redis://elimu:\$\{ELIMU_REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", url)
    assert "--user elimu" in redis["healthcheck"]["test"][1]


def test_no_secret_is_written_in_the_compose_file() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if re.search(r"PASSWORD|SECRET", str(k)):
                    assert REQUIRED.match(str(v)), f"{path}.{k} must come from the environment"
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(compose(), "compose")
