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
from models.boards import group_digest
from models.channels import user_channel
from models.events import UserProfile
from models.gamification import UserState, apply_profile
from models.leaderboard import bucket, period_keys
from models.rules import Rules
from streams.engagement import BatchOutcome
from streams.serving import ServingWriter

T0 = 1_796_000_000_000

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


# ---------------------------------------------------------------------------------------------
# People on the boards: a profile moves, hides and restores a user on every board it touches.


def boarded(user_id: str, xp: int, **profile: object) -> UserState:
    state = UserState(user_id)
    apply_profile(state, UserProfile(user_id, **profile))  # type: ignore[arg-type]
    state.period_xp = {key: [xp, T0] for key in period_keys(T0)}
    return state


def school_board(name: str, period: str = "weekly") -> str:
    return keys.group_leaderboard("school", group_digest("school", name), period, bucket(period, T0))


async def members(redis: RedisClient, key: str) -> list[str]:
    return [m.decode() for m in await redis.zrevrange(key, 0, -1)]


async def profiled(serving: ServingWriter, *states: UserState) -> None:
    """A batch holding these users' profile records (their boards are re-projected whole)."""
    outcome = BatchOutcome(touched={s.user_id: s for s in states}, profiled={s.user_id for s in states})
    await serving.write(outcome, {})


async def test_profiles_move_hide_and_restore_users_on_the_boards(
    redis: RedisClient, serving: ServingWriter
) -> None:
    weekly = keys.leaderboard("weekly", bucket("weekly", T0))
    amina = boarded("amina", 300, display_name="Amina", school="Alliance")
    baraka = boarded("baraka", 200, school="alliance", leaderboard_visible=False)
    await profiled(serving, amina, baraka)
    assert await members(redis, weekly) == ["amina"]
    assert await members(redis, school_board("Alliance")) == ["amina"]
    card = orjson.loads(await redis.get(keys.user_board("baraka")))  # type: ignore[arg-type]
    assert card["listed"] is False and card["periods"] == baraka.period_xp  # their own rank's
    # Amina moves school: off Alliance's boards (all periods), on Moi's with her period XP.
    apply_profile(amina, UserProfile("amina", display_name="Amina", school="Moi"))
    await profiled(serving, amina)
    for period in ("daily", "weekly", "all_time"):
        assert not await redis.exists(school_board("Alliance", period))  # its last member left
        assert await members(redis, school_board("Moi", period)) == ["amina"]
    # The same profile again (a replay after a crash before Redis): the same boards.
    await profiled(serving, amina)
    assert await members(redis, school_board("Moi")) == ["amina"]
    # Baraka opts back in: listed again with the XP he earned while hidden.
    apply_profile(baraka, UserProfile("baraka", school="alliance"))
    await profiled(serving, baraka)
    assert await members(redis, weekly) == ["amina", "baraka"]
    assert await members(redis, school_board("ALLIANCE")) == ["baraka"]
    assert orjson.loads(await redis.get(keys.user_board("baraka")))["periods"] == {}  # type: ignore[arg-type]
    # Only the global board is pushed on a timer; a group's changes do not mark it.
    assert serving.dirty_buckets["weekly"] == {bucket("weekly", T0)}


async def test_thousands_of_schools_make_boards_that_go_when_their_pupils_do(
    redis: RedisClient, serving: ServingWriter
) -> None:
    # Hostile names: long, alike after normalisation, shaped like other keys.
    names = [f"school {i} " + ":}{" * 10 for i in range(2000)]
    states = [boarded(f"u-{i}", i, school=name) for i, name in enumerate(names)]
    states.append(boarded("u-alike", 5, school=names[0].upper().replace(" ", "  ")))
    await profiled(serving, *states)
    assert len(await members(redis, school_board(names[0]))) == 2  # u-0 and u-alike: one board
    assert await redis.zcard(keys.leaderboard("all_time", "all")) == len(states)
    # Each user is on one school board per period: the boards are bounded by the users.
    for state in states:
        apply_profile(
            state, UserProfile(state.user_id, school=state.boards.listing.school, leaderboard_visible=False)
        )
    await profiled(serving, *states)
    assert await redis.zcard(keys.leaderboard("all_time", "all")) == 0
    assert not any([await redis.exists(school_board(name, "all_time")) for name in names[:50]])


async def test_the_pushed_top_shows_names_and_leaves_hidden_users_out(
    redis: RedisClient, serving: ServingWriter
) -> None:
    amina = boarded("amina", 300, display_name="Amina", school="Alliance", cohort="2027")
    baraka = boarded("baraka", 400, display_name="Baraka", leaderboard_visible=False)
    chebet = boarded("chebet", 200)  # no name: nulls
    await profiled(serving, amina, baraka, chebet)
    current = {p: bucket(p, T0) for p in ("daily", "weekly", "all_time")}
    await serving.push_leaderboards(current)
    recovered, pushed = await serving.channels.replay("leaderboard:weekly", 0)
    assert recovered
    entries = pushed[-1].data["entries"]
    assert [tuple(e.values()) for e in entries] == [
        (1, "amina", 300, "Amina", "Alliance", "2027"),
        (2, "chebet", 200, None, None, None),
    ]
    assert list(entries[0]) == ["rank", "user_id", "score", "display_name", "school", "cohort"]
