"""Kafka edges shared by the launcher, the CLI and the tests: topic names and creation."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.kafka_auth import client_security
from infra.topics import BROADCAST as BROADCAST_TOPIC
from infra.topics import DEAD_LETTER, INPUT_TOPICS, INTERNAL_TOPICS, OUTPUT_TOPICS, RISK_LABELS

__all__ = ["BROADCAST_TOPIC", "DEAD_LETTER", "INPUT_TOPICS", "INTERNAL_TOPICS", "OUTPUT_TOPICS"]
COMPACTED = frozenset({"user-profiles", BROADCAST_TOPIC})
#: Topics with one partition: one worker owns the whole market, the risk trainer and the
#: interventions analytics; the broadcast is read whole by every worker; dead letters are few.
SINGLE_PARTITION = frozenset(
    {"elimu-market", "elimu-risk-labels", "elimu-intervention-outcomes", BROADCAST_TOPIC, DEAD_LETTER}
)

#: Topic configurations beyond the broker's defaults. The risk labels are the trainer's whole
#: history: a new trainer whose checkpoint is unusable relearns them from offset 0, so they are
#: kept for good (the default 7 days would silently drop what the model learnt from).
#: The broadcast takes a ~3 MB risk checkpoint every 30 s under a handful of keys: compaction
#: only cleans closed segments, so short segments and an eager cleaner keep what a starting
#: worker reads to the latest values instead of hours of superseded checkpoints.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    **{t: {"cleanup.policy": "compact"} for t in COMPACTED},
    BROADCAST_TOPIC: {
        "cleanup.policy": "compact",
        "segment.ms": str(10 * 60 * 1000),
        "segment.bytes": str(64 * 1024 * 1024),
        "min.cleanable.dirty.ratio": "0.1",
    },
    RISK_LABELS: {"retention.ms": "-1"},
}

#: The message key of each input topic (CONTRACT.md §4).
KEY_FIELD = {
    "behavior-events": "user_id",
    "job-postings": "job_id",
    "application-status": "user_id",
    "user-profiles": "user_id",
}


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1, timeout: float = 30.0) -> None:
    """Create every engine topic that is missing (idempotent, safe to race)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **client_security()
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [*INPUT_TOPICS, *OUTPUT_TOPICS, *INTERNAL_TOPICS, DEAD_LETTER]
        new = [
            NewTopic(
                t,
                1 if t in SINGLE_PARTITION else partitions,
                replication,
                topic_configs=TOPIC_CONFIGS.get(t, {}),
            )
            for t in wanted
            if t not in existing
        ]
        for topic in new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()
