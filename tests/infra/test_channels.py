"""`infra.channels`: channel history capped in messages and in bytes, large messages replaced by a
marker, and writes Redis refuses reported rather than fatal (real Redis)."""

from __future__ import annotations

from typing import cast

import orjson
import pytest
from redis.asyncio import Redis

from infra import keys
from infra.channels import (
    DEDUP_KEEP,
    HISTORY_BYTES,
    HISTORY_SIZE,
    MAX_MESSAGE_BYTES,
    ChannelLog,
    omitted_marker,
)
from infra.redis_conn import RedisClient
from infra.redis_errors import RefusedWrites
from tests.conftest import max_memory


@pytest.fixture
def redis(either_redis: RedisClient) -> RedisClient:
    """Every test here runs on one Redis and on a Redis Cluster."""
    return either_redis


async def history(redis: Redis, channel: str) -> list[tuple[int, dict[bytes, bytes]]]:
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(keys.channel_log(channel)))
    return [(int(rid.split(b"-")[0]), fields) for rid, fields in rows]


def payload_bytes(fields: dict[bytes, bytes]) -> int:
    return len(fields[b"t"]) + len(fields[b"d"]) + len(fields[b"ts"])


async def test_a_thousand_large_messages_keep_the_history_under_its_byte_cap(redis: Redis) -> None:
    log = ChannelLog(redis)
    channel = "user:flood"
    filler = "x" * 30_000  # just under the per-message limit once encoded
    for i in range(1000):
        await log.publish(channel, "engagement", {"i": i, "filler": filler}, dedup_key=f"e-{i}")

    rows = await history(redis, channel)
    held = sum(payload_bytes(f) for _, f in rows)
    assert held <= HISTORY_BYTES
    # The count beside the log agrees with what the log holds.
    assert await redis.get(keys.channel_bytes(channel)) == f"{held}:{len(rows)}".encode()
    # The cap binds here, not the count: 8 messages of ~30 KB fit in 256 KiB, not 500.
    assert 0 < len(rows) < HISTORY_SIZE and len(rows) == HISTORY_BYTES // (len(filler) + 40)
    # Redis's own accounting of the log stays near the cap (stream nodes, not a leak).
    memory = await redis.memory_usage(keys.channel_log(channel))
    assert memory is not None and memory < 2 * HISTORY_BYTES

    # What remains replays whole; what was dropped answers recovered: false.
    ids = [n for n, _ in rows]
    assert ids == list(range(1001 - len(rows), 1001))
    recovered, msgs = await log.replay(channel, since=ids[0] - 1)
    assert recovered is True and [m.id for m in msgs] == ids
    assert msgs[-1].data == {"i": 999, "filler": filler}
    recovered, msgs = await log.replay(channel, since=ids[2])
    assert recovered is True and [m.id for m in msgs] == ids[3:]
    assert await log.replay(channel, since=ids[0] - 2) == (False, [])
    assert await log.replay(channel, since=0) == (False, [])


async def test_the_count_cap_still_holds_for_small_messages(redis: Redis) -> None:
    log = ChannelLog(redis, history_size=5)
    for i in range(40):
        await log.publish("market", "pulse", {"n": i})
    rows = await history(redis, "market")
    assert [n for n, _ in rows] == [36, 37, 38, 39, 40]
    held = sum(payload_bytes(f) for _, f in rows)
    assert await redis.get(keys.channel_bytes("market")) == f"{held}:5".encode()


async def test_a_message_over_the_limit_is_replaced_by_a_marker_with_its_id(redis: Redis) -> None:
    log = ChannelLog(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.channel_pubsub("user:big"))
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    huge = {"event_ids": ["\u0001" * 128] * 1000}  # ~730 KB of escaped control characters
    size = len(orjson.dumps(huge))
    assert size > MAX_MESSAGE_BYTES

    first = await log.publish("user:big", "engagement", huge)
    second = await log.publish("user:big", "engagement", {"xp": 5})

    assert (first, second) == (1, 2)
    marker = omitted_marker(size, MAX_MESSAGE_BYTES)
    recovered, msgs = await log.replay("user:big", since=0)
    assert recovered is True
    assert [(m.id, m.type, m.data) for m in msgs] == [(1, "engagement", marker), (2, "engagement", {"xp": 5})]
    live = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    assert live is not None and orjson.loads(live["data"])["data"] == marker
    await pubsub.aclose()


async def test_a_republished_message_is_still_a_no_op(redis: Redis) -> None:
    log = ChannelLog(redis)
    assert await log.publish("user:d", "x", {"a": 1}, dedup_key="k:" + "\u0001" * 500) == 1
    assert await log.publish("user:d", "x", {"a": 1}, dedup_key="k:" + "\u0001" * 500) == 0
    assert await log.publish("user:d", "x", {"a": 2}, dedup_key="k2") == 2


async def test_a_log_without_its_byte_count_restarts_its_history(redis: Redis) -> None:
    """A history written before the byte count existed has an unknown size: it is dropped (its
    clients resync) rather than read whole, and the channel goes on from there."""
    log = ChannelLog(redis)
    channel = "user:old"
    for i in range(3):
        await redis.xadd(
            keys.channel_log(channel), {"t": "x", "d": orjson.dumps({"i": i}), "ts": "1"}, id=f"{i + 1}-1"
        )
    await redis.set(keys.channel_seq(channel), 3)

    assert await log.publish(channel, "x", {"i": 3}) == 4

    assert [n for n, _ in await history(redis, channel)] == [4]
    assert await log.replay(channel, since=1) == (False, [])
    recovered, msgs = await log.replay(channel, since=3)
    assert recovered is True and [m.data for m in msgs] == [{"i": 3}]


async def test_a_key_of_the_wrong_type_is_refused_and_reported_not_fatal(redis: Redis) -> None:
    log = ChannelLog(redis)
    await redis.hset(keys.channel_seq("user:bad"), "f", "v")  # WRONGTYPE for INCR

    with pytest.raises(RefusedWrites) as info:
        await log.publish("user:bad", "x", {})

    assert info.value.kind == "wrongtype"
    assert keys.channel_seq("user:bad") in str(info.value)
    # Other channels are untouched by it.
    assert await log.publish("user:good", "x", {}) == 1


async def test_out_of_memory_refuses_the_message_and_says_so(redis: Redis) -> None:
    log = ChannelLog(redis)
    await log.ensure_loaded()
    async with max_memory(redis, 1):
        with pytest.raises(RefusedWrites) as info:
            await log.publish("user:oom", "x", {"a": 1}, dedup_key="once")
    assert info.value.kind == "oom"
    # Nothing was written, so the same publish goes through once memory is back.
    assert await log.publish("user:oom", "x", {"a": 1}, dedup_key="once") == 1


async def test_the_dedup_memory_is_bounded_per_channel_and_dedups_recent_repeats(redis: Redis) -> None:
    log = ChannelLog(redis)
    for i in range(1000):
        assert await log.publish("user:flood", "engagement", {"i": i}, dedup_key=f"batch-{i}") == i + 1
    assert await redis.zcard(keys.channel_dedup("user:flood")) == DEDUP_KEEP
    # A redelivered batch re-publishes recent messages: they are no-ops.
    assert await log.publish("user:flood", "engagement", {"i": 999}, dedup_key="batch-999") == 0
    assert await log.publish("user:flood", "engagement", {"i": 800}, dedup_key="batch-800") == 0
    assert await log.last_id("user:flood") == 1000
    # No per-message keys are left behind: the channel holds a fixed number of keys.
    channel_keys = [
        k async for k in redis.scan_iter(match=keys.channel_seq("user:flood").removesuffix("seq") + "*")
    ]
    assert len(channel_keys) == 4  # seq, log, bytes, dedup
