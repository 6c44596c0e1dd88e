"""Creating the engine's topics (infra/topics.py declares them), for the launcher, the CLI and the tests."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.kafka_auth import client_security
from infra.topics import TOPOLOGY


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1, timeout: float = 30.0) -> None:
    """Create every engine topic that is missing (idempotent, safe to race)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **client_security()
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(t.name, t.partitions(partitions), replication, topic_configs=t.config)
            for t in TOPOLOGY
            if t.name not in existing
        ]
        for topic in new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()
