"""Kafka edges shared by the launcher, the CLI and the tests: topic names and creation."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

INPUT_TOPICS = ("behavior-events", "job-postings", "application-status", "user-profiles")
OUTPUT_TOPICS = ("engagement-updates", "notifications", "risk-scores", "market-pulse", "match-alerts")
DEAD_LETTER = "dead-letter"
COMPACTED = frozenset({"user-profiles"})

#: The message key of each input topic (CONTRACT.md §4).
KEY_FIELD = {
    "behavior-events": "user_id",
    "job-postings": "job_id",
    "application-status": "user_id",
    "user-profiles": "user_id",
}


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1, timeout: float = 30.0) -> None:
    """Create every engine topic that is missing (idempotent, safe to race)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [*INPUT_TOPICS, *OUTPUT_TOPICS]
        new = [
            NewTopic(
                t,
                partitions,
                replication,
                topic_configs={"cleanup.policy": "compact"} if t in COMPACTED else {},
            )
            for t in wanted
            if t not in existing
        ]
        if DEAD_LETTER not in existing:
            new.append(NewTopic(DEAD_LETTER, 1, replication))
        for topic in new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()
