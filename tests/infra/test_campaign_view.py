"""The campaigns view keeps each campaign's newest definition, whoever writes last: a worker
whose broadcast feed lags, or an API process overtaken by another admin's edit (real Redis)."""

from __future__ import annotations

import dataclasses

import orjson
from redis.asyncio import Redis

from infra import keys
from infra.campaign_view import mirror_campaigns
from models.campaigns.records import Campaign, Schedule, Target

NOW = 1_790_000_000_000


def campaign(campaign_id: str, updated_ms: int, status: str = "draft") -> Campaign:
    return Campaign(
        id=campaign_id,
        name="Come back",
        schedule=Schedule("one_time", at_ms=NOW + 86_400_000),
        target=Target("inactive", inactive_days=3),
        intervention="gentle_reminder",
        status=status,
        created_ms=NOW,
        updated_ms=updated_ms,
    )


async def held(redis: Redis, campaign_id: str) -> Campaign:
    raw = await redis.hget(keys.CAMPAIGNS, campaign_id)
    assert raw is not None
    return Campaign.from_dict(orjson.loads(raw))


async def test_an_older_definition_never_replaces_a_newer_one(redis: Redis) -> None:
    newer = campaign("quiet-3d", NOW + 2, "active")
    older = dataclasses.replace(newer, status="paused", updated_ms=NOW + 1)
    await mirror_campaigns(redis, [newer])
    await mirror_campaigns(redis, [older])  # the overtaken write lands last
    assert await held(redis, "quiet-3d") == newer
    newest = dataclasses.replace(newer, status="paused", updated_ms=NOW + 3)
    await mirror_campaigns(redis, [newest, campaign("other", NOW)])
    assert await held(redis, "quiet-3d") == newest
    assert (await held(redis, "other")).updated_ms == NOW
