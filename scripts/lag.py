"""`elimu lag`: committed vs end offsets per consumer group, topic and partition.

Offsets only for now; lag in seconds and a Burrow-style status come with the operations work.
kafka-python's admin client is used because aiokafka's OffsetFetch decoding fails against
the embedded broker (Tansu), while kafka-python's works against both it and Apache Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import OffsetSpec

from infra.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def read_lag(bootstrap: str) -> list[PartitionLag]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="elimu-lag")
    try:
        rows: list[PartitionLag] = []
        for g in sorted(admin.list_groups(), key=lambda g: g["group_id"]):
            group = g["group_id"]
            committed = {
                tp: meta.offset
                for tp, meta in admin.list_group_offsets(group).get(group, {}).items()
                if meta.offset >= 0
            }
            if not committed:
                continue
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in committed})
            rows.extend(
                PartitionLag(group, tp.topic, tp.partition, off, ends[tp].offset)
                for tp, off in sorted(committed.items())
            )
        return rows
    finally:
        admin.close()


def print_lag(settings: Settings) -> int:
    rows = read_lag(settings.kafka_bootstrap)
    if not rows:
        print("no consumer group has committed offsets yet")
        return 0
    header = f"{'group':<24} {'topic':<36} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.group:<24} {r.topic:<36} {r.partition:>4} {r.committed:>10} {r.end:>10} {r.lag:>8}")
    return 0
