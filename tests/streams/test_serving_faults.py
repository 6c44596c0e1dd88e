"""Redis refusals of serving-view writes (real redis-server): what a retry can fix is retried,
what it cannot (a key of the wrong type) is reported and skipped, and the batch goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from infra import keys
from infra.channels import ChannelLog, Outgoing
from infra.redis_conn import RedisClient
from infra.redis_errors import RefusedWrites
from infra.settings import DEFAULT_RULES
from models.rules import Rules
from streams import metrics
from streams.delivery import write_until_redis_answers
from streams.serving import ServingWriter
from tests.conftest import max_memory, wait_until


@pytest.fixture
def redis(either_redis: RedisClient) -> RedisClient:
    """Every test here runs on one Redis and on a Redis Cluster."""
    return either_redis


def failures(kind: str, action: str) -> float:
    return float(metrics.SERVING_FAILURES.labels(kind, action)._value.get())


@pytest.fixture
def serving(redis: Redis) -> ServingWriter:
    return ServingWriter(redis, ChannelLog(redis), Rules.from_toml(DEFAULT_RULES.read_text()))


async def test_a_key_of_the_wrong_type_skips_that_write_and_the_batch_goes_on(
    redis: Redis, serving: ServingWriter, caplog: pytest.LogCaptureFixture
) -> None:
    # The collision the old layout allowed: a user named "books" made the shared hash of
    # referral books a string (SET replaces any type; HSET onto a string is WRONGTYPE).
    await redis.set(keys.REFERRAL_BOOKS, '{"user_id": "books"}')
    before = failures("wrongtype", "skipped")
    sets = [(keys.user_state(u), f'{{"user_id": "{u}"}}') for u in ("amina", "zawadi")]
    hsets = [(keys.REFERRAL_BOOKS, "amina", "{}"), (keys.APPLICATION_FACTS, "app-1", "{}")]
    messages = [Outgoing(f"user:{u}", "engagement", {"u": u}, f"e-{u}") for u in ("amina", "zawadi")]

    with caplog.at_level(logging.ERROR):
        async with asyncio.timeout(10):  # finishes: no retry loop
            await write_until_redis_answers(lambda: serving.write_documents(sets, hsets, messages))

    # Every other write of the call was made, before and after the refused key.
    assert await redis.get(keys.user_state("amina")) == b'{"user_id": "amina"}'
    assert await redis.get(keys.user_state("zawadi")) == b'{"user_id": "zawadi"}'
    assert await redis.hget(keys.APPLICATION_FACTS, "app-1") == b"{}"
    assert await redis.get(keys.REFERRAL_BOOKS) == b'{"user_id": "books"}'
    assert await serving.channels.last_id("user:zawadi") == 1
    # Reported once, as skipped, with the key and Redis's reason.
    assert failures("wrongtype", "skipped") == before + 1
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(keys.REFERRAL_BOOKS in m and "WRONGTYPE" in m for m in logged), logged


async def test_a_wrong_type_on_a_channel_key_skips_only_that_push(
    redis: Redis, serving: ServingWriter
) -> None:
    await redis.hset(keys.channel_seq("user:bad"), "x", "1")
    before = failures("wrongtype", "skipped")
    messages = [Outgoing("user:bad", "x", {}), Outgoing("user:ok", "x", {})]
    async with asyncio.timeout(10):
        await write_until_redis_answers(lambda: serving.write_documents([], [], messages))
    assert await serving.channels.last_id("user:ok") == 1
    assert failures("wrongtype", "skipped") == before + 1


async def test_an_error_reply_outside_the_scripts_is_skipped_too(redis: Redis) -> None:
    await redis.hset("elimu:test:hash", "f", "v")
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        async with redis.pipeline() as pipe:
            pipe.set("elimu:test:ok", "1")
            pipe.incr("elimu:test:hash")
            await pipe.execute()

    before = failures("wrongtype", "skipped")
    async with asyncio.timeout(10):
        await write_until_redis_answers(write)
    assert calls == 1 and failures("wrongtype", "skipped") == before + 1


async def test_a_lost_connection_is_retried_until_redis_answers() -> None:
    attempts: list[int] = []

    async def write() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RedisConnectionError("Connection refused")

    before = failures("connection", "retried")
    await write_until_redis_answers(write)
    assert len(attempts) == 3 and failures("connection", "retried") == before + 2


async def test_out_of_memory_holds_the_write_loudly_until_memory_is_freed(
    redis: Redis, serving: ServingWriter, caplog: pytest.LogCaptureFixture
) -> None:
    """OOM says nothing about the write: it is retried (an error logged and counted each time),
    never skipped, and lands once Redis has room again."""
    await serving.start()
    before = failures("oom", "retried")
    sets = [(keys.user_state("amina"), '{"xp": 50}')]
    messages = [Outgoing("user:amina", "engagement", {"xp": 50}, "e-1")]
    async with max_memory(redis, 1):
        with caplog.at_level(logging.ERROR):
            task = asyncio.create_task(
                write_until_redis_answers(lambda: serving.write_documents(sets, [], messages))
            )
            await wait_until(
                lambda: asyncio.sleep(0, failures("oom", "retried") >= before + 2), what="OOM retried"
            )
            assert not task.done()
            assert await redis.get(keys.user_state("amina")) is None
    async with asyncio.timeout(15):
        await task
    assert await redis.get(keys.user_state("amina")) == b'{"xp": 50}'
    assert await serving.channels.last_id("user:amina") == 1
    assert any("out of memory" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_refusal_a_retry_fixes_is_raised_to_the_caller(redis: Redis, serving: ServingWriter) -> None:
    await serving.start()
    async with max_memory(redis, 1):
        with pytest.raises(RefusedWrites) as info:
            await serving.write_documents([(keys.user_state("x"), "{}")], [], [])
    assert info.value.kind == "oom"
