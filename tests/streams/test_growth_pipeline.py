"""The growth pipeline's delivery order and its serving view, on a recording producer, a store that
plays the changelog, and the real Redis.

Crash ordering: a record the state marks as done (a redeemed perk's fulfilment, a referral message,
a milestone action) must be acked by Kafka before the changelog write that marks it done; a crash
between the two then replays the command on the old state, which sends the record again under
the same id for its consumer to drop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from infra import keys, topics
from infra.channels import ChannelLog
from infra.settings import DEFAULT_RULES
from infra.topics import NOTIFICATIONS as NOTIFICATIONS_TOPIC
from models.growth import GrowthState
from models.referrals import referral_code
from models.rules import Rules
from streams.growth import GrowthOutcome, GrowthProcessor
from streams.growth_pipeline import GrowthSlice
from streams.records import Record
from streams.serving import ServingWriter
from streams.tables import TableStore
from tests.streams.test_growth import NOW, PARTS, command

SECRET = b"pipeline-test-secret"


class Crash(Exception):
    """The worker dies here (SIGKILL): nothing after this point happens."""


class Changelog:
    """A store whose writes become durable only when flushed, like the table's changelog; a
    restarted worker sees only what was flushed (``restart``)."""

    def __init__(self, journal: list[str], committed: dict[str, dict[str, Any]] | None = None) -> None:
        self.journal = journal
        self.committed: dict[str, dict[str, Any]] = committed if committed is not None else {}
        self.data = {k: GrowthState.from_dict(v) for k, v in self.committed.items()}
        self.pending: set[str] = set()
        self.crash_on_flush = False

    def get(self, key: str) -> GrowthState | None:
        return self.data.get(key)

    def put(self, key: str, state: GrowthState) -> None:
        self.data[key] = state
        self.pending.add(key)

    def states_of(self, partitions: AbstractSet[int]) -> list[GrowthState]:
        return list(self.data.values())

    async def flush(self, durable: bool = False) -> None:
        if self.crash_on_flush:
            raise Crash
        self.journal.append("changelog")
        for key in self.pending:
            self.committed[key] = orjson.loads(orjson.dumps(self.data[key].to_dict()))
        self.pending.clear()

    def restart(self) -> Changelog:
        return Changelog(self.journal, self.committed)


class Producer:
    """``send`` hands back a delivery future the broker completes a moment later; the journal
    shows when each record was acked."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.sent: list[tuple[str, bytes | None, dict[str, Any]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> Any:
        self.sent.append((topic, key, orjson.loads(value or b"null")))
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ack() -> None:
            self.journal.append(f"ack {topic}")
            acked.set_result(None)

        asyncio.get_running_loop().call_soon(ack)
        return acked

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [value for t, _, value in self.sent if t == topic]


@pytest.fixture(scope="module")
def rules() -> Rules:
    return Rules.from_toml(DEFAULT_RULES.read_text())


def pipeline(rules: Rules, store: Changelog, producer: Producer, redis: Redis | None = None) -> GrowthSlice:
    serving = ServingWriter(cast(Redis, redis), ChannelLog(cast(Redis, redis)), rules)
    processor = GrowthProcessor(rules, lambda t: PARTS, code_of=lambda uid: referral_code(SECRET, uid))
    return GrowthSlice(processor, cast(TableStore[GrowthState], store), serving, producer.send, PARTS)


async def persist(growth: GrowthSlice, records: list[Record]) -> GrowthOutcome:
    """The slice's first two phases, as the runner runs them for a batch with no events."""
    outcome = growth.process(records, {})
    assert outcome is not None
    await growth.persist(outcome)
    return outcome


async def handle(growth: GrowthSlice, records: list[Record]) -> GrowthOutcome:
    outcome = await persist(growth, records)
    await growth.deliver(records, outcome)
    return outcome


async def test_a_fulfilment_is_acked_before_the_state_that_marks_it_done(rules: Rules, redis: Redis) -> None:
    journal: list[str] = []
    store, producer = Changelog(journal), Producer(journal)
    grant = command("ann", "grant", "ann:grant:g1", grant_id="g1", amount=400, reason="welcome")
    await persist(pipeline(rules, store, producer, redis), [grant])
    journal.clear()

    redeem = command("ann", "redeem", "ann:r1", perk_id="discount_10")
    store.crash_on_flush = True
    with pytest.raises(Crash):
        await persist(pipeline(rules, store, producer, redis), [redeem])
    # Killed between the two: the fulfilment is in Kafka, the state never recorded the spend.
    assert journal == [f"ack {NOTIFICATIONS_TOPIC}"]
    (first,) = producer.on(NOTIFICATIONS_TOPIC)
    assert first == {
        "type": "reward_redeemed",
        "redemption_id": "ann:r1",
        "user_id": "ann",
        "perk_id": "discount_10",
        "cost": 300,
        "at_ms": NOW,
        "idempotency_key": "redeem:ann:r1",
    }

    # The restarted worker replays the command on the state it recovers: the same fulfilment
    # again, same id, for the consumer to apply once; now the spend is recorded after it.
    store = store.restart()
    await persist(pipeline(rules, store, producer, redis), [redeem])
    assert journal == [f"ack {NOTIFICATIONS_TOPIC}", f"ack {NOTIFICATIONS_TOPIC}", "changelog"]
    assert producer.on(NOTIFICATIONS_TOPIC) == [first, first]
    assert GrowthState.from_dict(store.committed["ann"]).ledger.spent == 300

    # A retry after that is answered from the state and fulfils nothing more.
    again = await persist(pipeline(rules, store, producer, redis), [redeem])
    assert again.answers[0][1]["duplicate"] is True and len(producer.on(NOTIFICATIONS_TOPIC)) == 2


async def test_referral_messages_and_actions_are_acked_before_the_changelog(
    rules: Rules, redis: Redis
) -> None:
    journal: list[str] = []
    store, producer = Changelog(journal), Producer(journal)
    claim = command("uma", "referral_claim", "uma:c1", referrer_id="rita")
    goal = command(
        "uma", "goal_create", "uma:goal:g1", kind="practice_frequency", target=2, deadline_ms=NOW + 1
    )
    await persist(pipeline(rules, store, producer, redis), [claim, goal])
    assert journal[-1] == "changelog"
    assert sorted(journal[:-1]) == sorted([f"ack {topics.REFERRALS}", "ack behavior-events"])


async def test_a_wiped_redis_gets_its_referral_codes_back_from_the_table(rules: Rules, redis: Redis) -> None:
    journal: list[str] = []
    store, producer = Changelog(journal), Producer(journal)
    code = referral_code(SECRET, "rita")
    grow = pipeline(rules, store, producer, redis)
    await handle(grow, [command("rita", "referral_generate", "rita:c1", code=code, device_id="d-1")])
    assert await redis.get(keys.referral_code(code)) == b"rita"
    await handle(grow, [command("uma", "referral_claim", "uma:c1", referrer_id="rita")])
    (message,) = producer.on(topics.REFERRALS)
    assert message["referrer_id"] == "rita"

    await redis.flushall()
    await grow.project(store.states_of({0, 1, 2, 3}))
    assert await redis.get(keys.referral_code(code)) == b"rita"
    assert await redis.hget(keys.REFERRAL_BOOKS, "rita") is not None
    # The first owner of a code keeps it: a projection never takes a code over.
    await redis.set(keys.referral_code(code), "someone-first")
    await grow.project(store.states_of({0, 1, 2, 3}))
    assert await redis.get(keys.referral_code(code)) == b"someone-first"
