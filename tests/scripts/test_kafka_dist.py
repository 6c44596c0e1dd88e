"""Choosing the embedded broker, and the Apache Kafka node configuration (no JVM started here)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from scripts.apache_kafka import NodeSpec, new_cluster_id, server_properties
from scripts.kafka_dist import DistributionUnavailable, choose_broker, java_major


def fake_java(tmp_path: Path, version_line: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return home


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_java_major_reads_every_version_style(tmp_path: Path, line: str, major: int) -> None:
    assert java_major(str(fake_java(tmp_path, line) / "bin" / "java")) == major


def test_java_major_is_none_when_java_cannot_run(tmp_path: Path) -> None:
    assert java_major(str(tmp_path / "missing")) is None


def test_tansu_when_asked_for_says_it_is_memory_only() -> None:
    kind, why = choose_broker("tansu")
    assert kind == "tansu" and "memory-only" in why


def test_old_java_falls_back_to_tansu_with_the_reason_unless_kafka_is_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'openjdk version "11.0.2"')))
    kind, why = choose_broker(None)
    assert kind == "tansu"
    assert "Java 11" in why and "17+" in why
    with pytest.raises(DistributionUnavailable, match="Java 11"):
        choose_broker("kafka")


def test_no_java_at_all_falls_back_to_tansu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    kind, why = choose_broker(None)
    assert kind == "tansu" and "no Java runtime" in why


def test_cluster_ids_are_kafka_uuids() -> None:
    for _ in range(200):
        cid = new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_one_node_and_three_node_settings(tmp_path: Path) -> None:
    one = NodeSpec(1, 9092, 9093, tmp_path / "n1")
    props = server_properties(one, [one])
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["log.dirs"] == str((tmp_path / "n1" / "logs").resolve())

    nodes = [NodeSpec(i, 9000 + 2 * i, 9001 + 2 * i, tmp_path / f"n{i}") for i in (1, 2, 3)]
    props = server_properties(nodes[1], nodes)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9003,2@127.0.0.1:9005,3@127.0.0.1:9007"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2" and props["default.replication.factor"] == "3"


def test_overrides_may_name_the_nodes_ports(tmp_path: Path) -> None:
    node = NodeSpec(1, 9092, 9093, tmp_path)
    props = server_properties(
        node, [node], {"listeners": "SASL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"}
    )
    assert props["listeners"] == "SASL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
