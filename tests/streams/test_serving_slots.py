"""Serving writes on one Redis and on a Redis Cluster (real redis-servers): a batch that spans
users, channels and a leaderboard lands whole on both, split by hash slot on the cluster."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from infra import keys
from infra.channels import ChannelLog, Outgoing
from infra.redis_conn import RedisClient, by_slot, connect_pubsub, mget, slot
from infra.settings import DEFAULT_RULES
from models.channels import user_channel
from models.rules import Rules
from streams.serving import ServingWriter

USERS = [f"slot-user-{i}" for i in range(300)] + ["{brace", "a}b", "ü-ñ", "user:x"]


@pytest.fixture
def redis(either_redis: RedisClient) -> RedisClient:
    return either_redis


@pytest.fixture
async def serving(redis: RedisClient) -> ServingWriter:
    writer = ServingWriter(redis, ChannelLog(redis), Rules.from_toml(DEFAULT_RULES.read_text()))
    await writer.start()
    return writer


async def write_batch(serving: ServingWriter, tag: str) -> None:
    sets = [(keys.user_state(u), orjson.dumps({"user_id": u, "tag": tag}).decode()) for u in USERS]
    hsets = [(keys.APPLICATION_FACTS, f"app-{u}", tag) for u in USERS[:20]]
    board = [x for i, u in enumerate(USERS) for x in (str(i), u)]
    messages = [Outgoing(user_channel(u), "engagement", {"tag": tag}, f"{tag}-{u}") for u in USERS]
    messages.append(Outgoing("market", "market_pulse", {"tag": tag}, f"{tag}-market"))
    await serving.write_documents(sets, hsets, messages, [(keys.leaderboard("all_time", "all"), board)])


async def test_a_batch_across_users_lands_whole(redis: RedisClient, serving: ServingWriter) -> None:
    await write_batch(serving, "one")
    views = await mget(redis, [keys.user_state(u) for u in USERS])
    assert [orjson.loads(v) for v in views] == [{"user_id": u, "tag": "one"} for u in USERS]
    assert await redis.zcard(keys.leaderboard("all_time", "all")) == len(USERS)
    assert len(await redis.hgetall(keys.APPLICATION_FACTS)) == 20  # type: ignore[misc]
    log = serving.channels
    for channel in [*(user_channel(u) for u in USERS), "market"]:
        recovered, msgs = await log.replay(channel, 0)
        assert recovered and [(m.id, m.data) for m in msgs] == [(1, {"tag": "one"})], channel
    # The same batch again (a redelivery) changes nothing: every push is deduplicated.
    await write_batch(serving, "one")
    assert await log.last_id(user_channel(USERS[0])) == 1


async def test_what_one_call_writes_shares_a_slot_on_a_cluster(redis: RedisClient) -> None:
    user = "amina"
    user_keys = [keys.user_state(user), keys.user_risk(user), keys.channel_seq(user_channel(user))]
    user_keys += [keys.channel_log(user_channel(user)), keys.channel_dedup(user_channel(user))]
    assert len({slot(k) for k in user_keys}) == 1
    assert len({slot(k) for k in (keys.LAG_SAMPLER_LOCK, keys.LAG_SAMPLES, keys.LAG_REPORT)}) == 1
    groups = by_slot(redis, [keys.user_state(u) for u in USERS])
    if isinstance(redis, RedisCluster):
        assert len(groups) > 100  # spread over the slots, so over the three masters
    else:
        assert groups == {0: list(range(len(USERS)))}


async def test_a_node_that_lost_its_scripts_gets_them_again(
    redis: RedisClient, serving: ServingWriter
) -> None:
    await write_batch(serving, "one")
    await redis.script_flush()  # on a cluster, redis-py sends it to every master
    await write_batch(serving, "two")
    views = await mget(redis, [keys.user_state(u) for u in USERS])
    assert {orjson.loads(v)["tag"] for v in views} == {"two"}
    assert await serving.channels.last_id(user_channel(USERS[-1])) == 2


async def test_a_subscriber_on_one_node_hears_pushes_written_on_any(
    redis: RedisClient, serving: ServingWriter, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(
        "redis_cluster_url" if isinstance(redis, RedisCluster) else "redis_url"
    )
    listener = connect_pubsub(url)
    pubsub = listener.pubsub()
    try:
        await pubsub.psubscribe(keys.PUBSUB_PATTERN)
        await write_batch(serving, "live")
        heard: set[str] = set()
        async with asyncio.timeout(10):
            while len(heard) < len(USERS) + 1:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg is not None:
                    heard.add(orjson.loads(msg["data"])["channel"])
        assert heard == {*(user_channel(u) for u in USERS), "market"}
    finally:
        await pubsub.aclose()
        await listener.aclose()
