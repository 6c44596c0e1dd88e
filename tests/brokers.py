"""Emptying the session's Apache Kafka between tests that run the engine on it (fresh_kafka).

The engine's topic and group names are fixed, so such a test needs a broker where no earlier
test's topics, changelogs, committed offsets or group members remain. Deleting the topics removes
their data and the offsets committed on them; waiting for every group to be empty first makes
sure no member of an earlier test's worker (a SIGKILLed one stays until its session times out)
joins the next test's rebalance. Deleting the groups then leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorNotAvailableError
from kafka import KafkaAdminClient

from infra.kafka import ensure_topics

#: The longest session timeout any test gives its workers (the default is 30 s), plus slack.
GROUPS_EMPTY_TIMEOUT_S = 60.0


def _wait_groups_empty(admin: KafkaAdminClient, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        groups = [g["group_id"] for g in admin.list_groups()]
        described = admin.describe_groups(groups) if groups else {}
        busy = [name for name, group in described.items() if group["members"]]
        if not busy:
            return groups
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumer groups still have members after {timeout}s: {busy}")
        time.sleep(0.2)


async def stable_members(bootstrap: str, group: str) -> int:
    """How many members the group has once it is Stable (0 while it is rebalancing or absent).

    aiokafka's raw DescribeGroups, because kafka-python's admin fails to decode the authorized
    operations Apache Kafka 4 returns for a group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-group-state")
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    except CoordinatorNotAvailableError:  # no member has joined yet
        return 0
    finally:
        await admin.close()
    for response in responses:
        for described in response.groups:
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            if described[1] == group and described[0] == 0 and described[2] == "Stable":
                return len(described[5])
    return 0


def reset_kafka(bootstrap: str, partitions: int = 4) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-reset")
    try:
        groups = _wait_groups_empty(admin, GROUPS_EMPTY_TIMEOUT_S)
        if groups:
            admin.delete_groups(groups)
        topics = [t for t in admin.list_topics() if not t.startswith("__")]
        if topics:
            admin.delete_topics(topics, timeout_ms=30_000)
        deadline = time.monotonic() + 30
        while set(admin.list_topics()) & set(topics):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"topics not deleted within 30 s: {set(admin.list_topics()) & set(topics)}"
                )
            time.sleep(0.1)
    finally:
        admin.close()
    asyncio.run(ensure_topics(bootstrap, partitions))
