"""The interventions' Redis views come back after a wipe (streams/interventions.py, real Redis):
campaign definitions from the broadcast view every worker holds, never over a later one; the
analytics and run logs from the ledger table, by its owner."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from infra import keys
from infra.channels import ChannelLog
from infra.settings import DEFAULT_RULES
from models.campaigns.parsing import parse_campaign
from models.campaigns.records import Campaign
from models.outcome_ledger import OutcomeLedger
from models.rules import Rules
from streams.broadcast import Broadcasts, campaign_key
from streams.interventions import LEDGER_KEY, AnalyticsSlice
from streams.serving import ServingWriter
from streams.tables import TableStore
from tests.streams.test_broadcast import processor

CREATED = 1_772_352_000_000  # 2026-03-01T08:00:00Z


class LedgerStore:
    """The one-key analytics table."""

    def __init__(self) -> None:
        self.data: dict[str, OutcomeLedger] = {}

    def get(self, key: str) -> OutcomeLedger | None:
        return self.data.get(key)

    def put(self, key: str, ledger: OutcomeLedger) -> None:
        self.data[key] = ledger

    async def flush(self) -> None:
        return None


async def no_send(topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> None:
    return None


def campaign(campaign_id: str, updated_ms: int = CREATED, name: str = "Come back") -> Campaign:
    c = parse_campaign(
        {
            "name": name,
            "schedule": {"kind": "one_time", "at": CREATED + 86_400_000},
            "target": {"kind": "all"},
            "intervention": "gentle_reminder",
        },
        campaign_id,
        CREATED,
    )
    return dataclasses.replace(c, updated_ms=updated_ms)


def ledger() -> OutcomeLedger:
    book = OutcomeLedger()
    book.apply(
        {"id": "r1", "kind": "campaign", "campaign_id": "c1", "outcome": "evaluated", "at_ms": CREATED}
    )
    book.apply({"id": "r2", "kind": "campaign", "campaign_id": "c1", "outcome": "targeted", "at_ms": CREATED})
    book.apply(
        {"id": "r3", "kind": "campaign", "campaign_id": "c2", "outcome": "evaluated", "at_ms": CREATED}
    )
    book.apply(
        {"id": "r4", "kind": "stage", "stage": "sent", "type": "gentle_reminder", "channel": "IN_APP",
         "template": "gentle_reminder", "variant": "a"}
    )  # fmt: skip
    return book


@pytest.fixture
def analytics(redis: Redis) -> AnalyticsSlice:
    serving = ServingWriter(redis, ChannelLog(redis), Rules.from_toml(DEFAULT_RULES.read_text()))
    store = LedgerStore()
    store.put(LEDGER_KEY, ledger())
    return AnalyticsSlice(cast(TableStore[OutcomeLedger], store), serving, no_send, redis)


def feed(b: Broadcasts, *campaigns: Campaign) -> None:
    for c in campaigns:
        b.on_record(campaign_key(c.id), orjson.dumps(c.to_dict()), 0)


async def held(redis: Redis) -> dict[str, Any]:
    rows = cast(dict[bytes, bytes], await redis.hgetall(keys.CAMPAIGNS))
    return {k.decode(): orjson.loads(v) for k, v in rows.items()}


async def test_a_wiped_redis_gets_campaigns_runs_and_analytics_back(
    redis: Redis, analytics: AnalyticsSlice
) -> None:
    b = Broadcasts(processor())
    feed(b, campaign("c1"), campaign("c2"))
    await analytics.reproject(b"epoch-1", True, b)
    before = (
        await held(redis),
        await redis.hgetall(keys.CAMPAIGN_RUNS),
        await redis.get(keys.INTERVENTION_ANALYTICS),
    )
    assert set(before[0]) == {"c1", "c2"} and set(before[1]) == {b"c1", b"c2"} and before[2]

    await redis.flushall()
    await analytics.reproject(b"epoch-1", True, b)  # same epoch: nothing to redo
    assert await redis.exists(keys.CAMPAIGNS, keys.CAMPAIGN_RUNS, keys.INTERVENTION_ANALYTICS) == 0
    await analytics.reproject(b"epoch-2", True, b)  # the wipe's new epoch

    after = (
        await held(redis),
        await redis.hgetall(keys.CAMPAIGN_RUNS),
        await redis.get(keys.INTERVENTION_ANALYTICS),
    )
    assert after == before
    assert orjson.loads(after[1][b"c1"])["counts"] == {"evaluated": 1, "targeted": 1}


async def test_only_the_ledgers_owner_writes_its_views_but_every_worker_mirrors_campaigns(
    redis: Redis, analytics: AnalyticsSlice
) -> None:
    b = Broadcasts(processor())
    feed(b, campaign("c1"))
    await analytics.reproject(b"e", False, b)
    assert set(await held(redis)) == {"c1"}
    assert await redis.exists(keys.CAMPAIGN_RUNS, keys.INTERVENTION_ANALYTICS) == 0
    # Gaining the ledger's partition later, in the same epoch, still writes its views.
    await analytics.reproject(b"e", True, b)
    assert await redis.exists(keys.CAMPAIGN_RUNS, keys.INTERVENTION_ANALYTICS) == 2


async def test_a_campaign_arriving_after_the_wipe_is_mirrored_at_the_next_check(
    redis: Redis, analytics: AnalyticsSlice
) -> None:
    b = Broadcasts(processor())
    await analytics.reproject(b"e", False, b)
    assert await held(redis) == {}
    feed(b, campaign("late"))
    await analytics.reproject(b"e", False, b)
    assert set(await held(redis)) == {"late"}


async def test_an_older_definition_never_replaces_a_later_one(
    redis: Redis, analytics: AnalyticsSlice
) -> None:
    """A worker whose feed lags must not undo an admin's edit the API has already mirrored."""
    newer = campaign("c1", updated_ms=CREATED + 5000, name="Paused by an admin")
    await redis.hset(keys.CAMPAIGNS, "c1", orjson.dumps(newer.to_dict()))
    lagging = Broadcasts(processor())
    feed(lagging, campaign("c1", updated_ms=CREATED))
    await analytics.reproject(b"e", False, lagging)
    assert (await held(redis))["c1"]["name"] == "Paused by an admin"
    # A later one does replace it (and an unreadable one is replaced too).
    feed(lagging, campaign("c1", updated_ms=CREATED + 9000, name="Edited again"))
    await redis.hset(keys.CAMPAIGNS, "c2", b"not json")
    feed(lagging, campaign("c2"))
    await analytics.reproject(b"e", False, lagging)
    mirrored = await held(redis)
    assert mirrored["c1"]["name"] == "Edited again" and mirrored["c2"]["id"] == "c2"
