"""The compose file's Kafka, for real: deploy/kafka/server.properties (KRaft, SASL/SCRAM, deny-by-
default ACLs), started by deploy/kafka/start.sh and provisioned by deploy/kafka/setup.sh, run from
the same official jars as the embedded broker with only the addresses and the data dir changed.

Worker and API connect as the engine's principal `elimu`; an outside producer authenticates as
`producer` and may write the public input topics and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from api.auth import issue_token
from infra.kafka import ensure_topics
from infra.net import free_port, wait_for_port
from infra.topics import BEHAVIOR_EVENTS, ENGAGEMENT_UPDATES, USER_COMMANDS
from scripts.apache_kafka import new_cluster_id, wait_serving
from scripts.kafka_dist import distribution, write_tools
from scripts.service import Service, launch
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.apache_kafka, pytest.mark.timeout(300)]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
PASSWORDS = {"admin": "admin-pw-0123456789", "elimu": "elimu-pw-0123456789", "producer": "producer-pw-0123"}


def sasl(user: str) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": PASSWORDS[user],
    }


def render(port: int, controller_port: int, data: Path) -> str:
    """The compose broker's settings with this machine's addresses and data dir, nothing else."""
    text = (DEPLOY / "server.properties").read_text()
    for key, value in {
        "listeners": f"SASL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL://127.0.0.1:{port}",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "log.dirs": str(data),
    }.items():
        text, n = re.subn(rf"^{re.escape(key)}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert n == 1, f"{key} not in server.properties"
    return text


@pytest.fixture(scope="module")
def production_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prod-kafka")
    home = write_tools(distribution())
    port, controller_port = free_port(), free_port()
    config = root / "server.properties"
    config.write_text(render(port, controller_port, root / "data"))
    env = dict(
        os.environ,
        KAFKA_HOME=str(home),
        KAFKA_CONFIG=str(config),
        KAFKA_CLUSTER_ID=new_cluster_id(),
        KAFKA_ADMIN_PASSWORD=PASSWORDS["admin"],
        KAFKA_HEAP_OPTS="-Xmx512m",
    )
    proc = launch(["bash", str(DEPLOY / "start.sh")], root / "kafka.log", env)
    broker = Service("kafka", proc, f"127.0.0.1:{port}")
    try:
        wait_for_port(port, timeout=90, proc=proc)
        wait_serving(broker.address, 90, **sasl("admin"))
        setup = subprocess.run(
            ["bash", str(DEPLOY / "setup.sh")],
            env=dict(
                env,
                KAFKA_BOOTSTRAP=broker.address,
                KAFKA_ADMIN_CONFIG=str(DEPLOY / "admin.properties"),
                ELIMU_KAFKA_PASSWORD=PASSWORDS["elimu"],
                KAFKA_PRODUCER_PASSWORD=PASSWORDS["producer"],
            ),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        assert "User:producer" in setup.stdout  # the final --list shows the grants
        yield broker.address
    finally:
        broker.stop(timeout=30)


def engine_env() -> dict[str, str]:
    return {
        "ELIMU_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "ELIMU_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "ELIMU_KAFKA_USERNAME": "elimu",
        "ELIMU_KAFKA_PASSWORD": PASSWORDS["elimu"],
    }


async def test_the_compose_kafka_runs_the_engine_and_keeps_outside_producers_to_the_inputs(
    production_kafka: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in engine_env().items():
        monkeypatch.setenv(name, value)
    await ensure_topics(production_kafka, 8)  # as `elimu` (the compose service kafka-topics)
    env = stack_env(production_kafka, redis_url, tmp_path, ELIMU_PARTITIONS="8", **engine_env())
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    user = "prod-student"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker, timeout=120)

            # An outside producer's event is applied.
            producer = AIOKafkaProducer(bootstrap_servers=production_kafka, **sasl("producer"))
            await producer.start()
            try:
                event = {
                    "event_id": "prod-1",
                    "user_id": user,
                    "type": "lesson_complete",
                    "ts": int(time.time() * 1000),
                }
                await producer.send_and_wait(BEHAVIOR_EVENTS, orjson.dumps(event), key=user.encode())
                # ... but it cannot write the engine's own topics (a forged command, say).
                with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
                    await producer.send_and_wait(USER_COMMANDS, b"{}", key=user.encode())
            finally:
                await producer.stop()
            headers = {"Authorization": f"Bearer {issue_token(TEST_SECRET, user)}"}

            async def scored() -> bool:
                assert worker.alive(), worker.tail()
                r = await http.get(f"/v1/users/{user}", headers=headers)
                return r.status_code == 200 and r.json()["xp"] > 0

            await wait_until(scored, timeout=90, what="the outside producer's event applied")

        # Nor read the outputs.
        reader = AIOKafkaConsumer(
            ENGAGEMENT_UPDATES, bootstrap_servers=production_kafka, group_id="snoop", **sasl("producer")
        )
        try:
            with pytest.raises(KafkaError, match="AuthorizationFailed"):
                await reader.start()
                await asyncio.wait_for(reader.getmany(timeout_ms=5000), 30)
        finally:
            await reader.stop()
        # Transactions work under the ACLs: the worker runs exactly-once.
        assert "processing guarantee: exactly-once" in (tmp_path / "worker.log").read_text()
    finally:
        api.stop()
        worker.stop()
