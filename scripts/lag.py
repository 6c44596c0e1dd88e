"""`elimu lag`: committed vs end offsets per consumer group, topic and partition.

Offsets only for now; lag in seconds and Burrow-style status come with the operations work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

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


async def read_lag(bootstrap: str) -> list[PartitionLag]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        groups = [g[0] if isinstance(g, tuple) else g.group_id for g in await admin.list_consumer_groups()]
        rows: list[PartitionLag] = []
        for group in sorted(groups):
            offsets = await admin.list_consumer_group_offsets(group)
            tps = [tp for tp, meta in offsets.items() if meta.offset >= 0]
            ends = await consumer.end_offsets(tps) if tps else {}
            rows.extend(
                PartitionLag(group, tp.topic, tp.partition, offsets[tp].offset, ends.get(tp, 0))
                for tp in sorted(tps)
            )
        return rows
    finally:
        await consumer.stop()
        await admin.close()


def print_lag(settings: Settings) -> int:
    rows = asyncio.run(read_lag(settings.kafka_bootstrap))
    if not rows:
        print("no consumer group has committed offsets yet")
        return 0
    header = f"{'group':<24} {'topic':<36} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.group:<24} {r.topic:<36} {r.partition:>4} {r.committed:>10} {r.end:>10} {r.lag:>8}")
    return 0
