"""The websocket protocol against a real uvicorn server and the real Redis."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from api import metrics
from infra import keys
from infra.channels import ChannelLog
from tests.api.conftest import LiveServer, recv_json, send_json, token
from tests.conftest import wait_until


async def subscribe(ws: ClientConnection, channel: str, since: int | str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if since is not None:
        op["since"] = since
    await send_json(ws, op)
    reply: dict[str, Any] = await recv_json(ws)
    return reply


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Everything the server sends before answering a ping: proves nothing else is pending."""
    await send_json(ws, {"op": "ping"})
    seen: list[dict[str, Any]] = []
    while (message := await recv_json(ws)) != {"op": "pong"}:
        seen.append(message)
    return seen


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return info.value.rcvd.code if info.value.rcvd else None


async def test_subscribe_then_receive_live(server: LiveServer, redis: Redis) -> None:
    log = ChannelLog(redis)
    async with server.connect_as("u-1") as ws:
        assert await subscribe(ws, "user:u-1") == {
            "op": "subscribed",
            "channel": "user:u-1",
            "recovered": False,
        }
        await log.publish("user:u-1", "xp", {"xp": 50}, ts_ms=1234)
        message = await recv_json(ws)
        assert message == {"channel": "user:u-1", "id": 1, "type": "xp", "data": {"xp": 50}, "ts": 1234}
        await log.publish("user:u-2", "xp", {"xp": 1})  # someone else's channel: not delivered
        await log.publish("user:u-1", "badge", {"id": "b"})
        assert (await recv_json(ws))["id"] == 2
        assert await until_pong(ws) == []


async def test_auth_by_first_message(server: LiveServer, redis: Redis) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"op": "auth", "token": token("u-1")})
        assert (await subscribe(ws, "market"))["op"] == "subscribed"
        await ChannelLog(redis).publish("market", "pulse", {"new_jobs_today": 3})
        assert (await recv_json(ws))["data"] == {"new_jobs_today": 3}


@pytest.mark.parametrize(
    ("query", "first", "code"),
    [
        ("", {"op": "subscribe", "channel": "market"}, "unauthorized"),
        ("", {"op": "auth", "token": "forged"}, "unauthorized"),
        ("", None, "auth_timeout"),  # says nothing: closed after the (0.5 s) auth timeout
    ],
)
async def test_unauthenticated_connections_are_closed_with_an_error(
    server: LiveServer, query: str, first: dict[str, Any] | None, code: str
) -> None:
    async with server.connect(query) as ws:
        if first is not None:
            await send_json(ws, first)
        error = await recv_json(ws)
        assert error["op"] == "error" and error["code"] == code and error["message"]
        assert await closed_with(ws) == 1008


async def test_expired_token_by_first_message_is_refused(server: LiveServer) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"op": "auth", "token": token("u-1", ttl_s=-10)})
        assert (await recv_json(ws))["code"] == "unauthorized"
        assert await closed_with(ws) == 1008


async def test_channel_authorisation(server: LiveServer) -> None:
    async with server.connect_as("u-1") as user:
        for channel in ("user:u-2", "admin:at-risk", "ops:lag"):
            reply = await subscribe(user, channel)
            assert reply["op"] == "error" and reply["code"] == "forbidden", channel
        for channel in (
            "user:u-1",
            "leaderboard:daily",
            "leaderboard:weekly",
            "leaderboard:all_time",
            "market",
        ):
            assert (await subscribe(user, channel))["op"] == "subscribed", channel
        for channel in ("leaderboard:monthly", "nope", "user:", "admin:other"):
            reply = await subscribe(user, channel)
            assert reply["code"] == "unknown_channel", channel
        assert (await subscribe(user, "market"))["code"] == "already_subscribed"
    async with server.connect_as("ops", "admin") as admin:
        for channel in ("user:u-2", "admin:at-risk", "ops:lag"):
            assert (await subscribe(admin, channel))["op"] == "subscribed", channel


async def test_protocol_errors_keep_the_connection_open(server: LiveServer) -> None:
    async with server.connect_as("u-1") as ws:
        await ws.send("{not json")
        assert (await recv_json(ws))["code"] == "bad_json"
        await send_json(ws, {"op": "dance"})
        assert (await recv_json(ws))["code"] == "unknown_op"
        await send_json(ws, ["subscribe"])
        assert (await recv_json(ws))["code"] == "bad_request"
        await send_json(ws, {"op": "subscribe", "channel": "market", "since": "abc"})
        assert (await recv_json(ws))["code"] == "bad_request"
        await send_json(ws, {"op": "unsubscribe", "channel": "market"})
        assert (await recv_json(ws))["code"] == "not_subscribed"
        assert await until_pong(ws) == []


async def test_limits(make_server: Callable[..., Any]) -> None:
    server: LiveServer = await make_server(ws_max_subscriptions=2, ws_max_message_bytes=200)
    async with server.connect_as("u-1") as ws:
        assert (await subscribe(ws, "market"))["op"] == "subscribed"
        assert (await subscribe(ws, "leaderboard:daily"))["op"] == "subscribed"
        assert (await subscribe(ws, "leaderboard:weekly"))["code"] == "too_many_subscriptions"
        await send_json(ws, {"op": "ping", "pad": "x" * 300})
        assert (await recv_json(ws))["code"] == "message_too_large"
        assert await closed_with(ws) == 1009


async def test_unsubscribe_stops_delivery(server: LiveServer, redis: Redis) -> None:
    log = ChannelLog(redis)
    async with server.connect_as("u-1") as ws:
        await subscribe(ws, "market")
        await subscribe(ws, "leaderboard:daily")
        await send_json(ws, {"op": "unsubscribe", "channel": "market"})
        await log.publish("market", "pulse", {})
        await log.publish("leaderboard:daily", "top", {})
        assert (await recv_json(ws))["channel"] == "leaderboard:daily"
        assert await until_pong(ws) == []


async def test_two_connections_share_one_redis_subscription(server: LiveServer, redis: Redis) -> None:
    log = ChannelLog(redis)
    key = keys.channel_pubsub("leaderboard:weekly")

    async def redis_subscribers() -> int:
        counts = await redis.pubsub_numsub(key)
        return int(counts[0][1])

    async with server.connect_as("u-1") as a, server.connect_as("u-2") as b:
        await subscribe(a, "leaderboard:weekly")
        await subscribe(b, "leaderboard:weekly")
        assert await redis_subscribers() == 1
        assert server.state.hub.local_channels() == {"leaderboard:weekly": 2}
        await log.publish("leaderboard:weekly", "top", {"n": 1})
        assert (await recv_json(a))["data"] == {"n": 1}
        assert (await recv_json(b))["data"] == {"n": 1}
        await a.close()
        await log.publish("leaderboard:weekly", "top", {"n": 2})
        assert (await recv_json(b))["data"] == {"n": 2}
        await wait_until(lambda: _eq(server.state.hub.local_channels(), {"leaderboard:weekly": 1}))
    await wait_until(lambda: _eq(server.state.hub.local_channels(), {}), what="hub emptied")
    await wait_until(lambda: _is_zero(redis_subscribers()), what="redis unsubscribed")


async def _eq(a: object, b: object) -> bool:
    return a == b


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_reconnect_with_since_gets_exactly_the_missed_messages(
    server: LiveServer, redis: Redis
) -> None:
    log = ChannelLog(redis)
    async with server.connect_as("u-1") as ws:
        await subscribe(ws, "user:u-1")
        for n in range(3):
            await log.publish("user:u-1", "xp", {"n": n})
        last = [(await recv_json(ws))["id"] for _ in range(3)][-1]
        assert last == 3
    for n in range(3, 6):  # published while the client was away
        await log.publish("user:u-1", "xp", {"n": n})
    async with server.connect_as("u-1") as ws:
        reply = await subscribe(ws, "user:u-1", since=str(last))
        assert reply == {"op": "subscribed", "channel": "user:u-1", "recovered": True}
        missed = await until_pong(ws)
        assert [(m["id"], m["data"]["n"]) for m in missed] == [(4, 3), (5, 4), (6, 5)]
        await log.publish("user:u-1", "xp", {"n": 6})
        assert (await recv_json(ws))["id"] == 7
    async with server.connect_as("u-1") as ws:  # nothing missed: recovered, nothing replayed
        assert (await subscribe(ws, "user:u-1", since=7))["recovered"] is True
        assert await until_pong(ws) == []


async def test_trimmed_history_is_not_recovered(server: LiveServer, redis: Redis) -> None:
    small = ChannelLog(redis, history_size=3)
    for n in range(10):
        await small.publish("market", "pulse", {"n": n})
    async with server.connect_as("u-1") as ws:
        assert (await subscribe(ws, "market", since=2)) == {
            "op": "subscribed",
            "channel": "market",
            "recovered": False,
        }
        assert await until_pong(ws) == []
        await small.publish("market", "pulse", {"n": 10})
        assert (await recv_json(ws))["id"] == 11
    async with server.connect_as("u-1") as ws:  # still inside the kept history: recovered
        assert (await subscribe(ws, "market", since=8))["recovered"] is True
        assert [m["id"] for m in await until_pong(ws)] == [9, 10, 11]


async def test_no_gap_and_no_duplicate_while_publishing_during_replay(
    server: LiveServer, redis: Redis
) -> None:
    """The replay/live race: messages keep coming while the client subscribes with ``since``;
    it must see every id after ``since`` exactly once, in order."""
    log = ChannelLog(redis)
    for n in range(50):
        await log.publish("user:u-1", "xp", {"n": n})
    total = 400

    async def publisher() -> None:
        for n in range(50, total):
            await log.publish("user:u-1", "xp", {"n": n})

    async with server.connect_as("u-1") as ws:
        task = asyncio.create_task(publisher())
        assert (await subscribe(ws, "user:u-1", since=20))["recovered"] is True
        ids: list[int] = []
        while not ids or ids[-1] < total:
            ids.append((await recv_json(ws))["id"])
        await task
        assert ids == list(range(21, total + 1))


async def test_ping_pong(server: LiveServer) -> None:
    async with server.connect_as("u-1") as ws:
        await send_json(ws, {"op": "ping"})
        assert await recv_json(ws) == {"op": "pong"}


async def test_connection_gauge_and_message_counter(server: LiveServer, redis: Redis) -> None:
    def sent() -> float:
        return (
            metrics.REGISTRY.get_sample_value("elimu_api_ws_messages_sent_total", {"kind": "message"}) or 0.0
        )

    connections_before = metrics.REGISTRY.get_sample_value("elimu_api_ws_connections") or 0.0
    before = sent()
    async with server.connect_as("u-1") as ws:
        await subscribe(ws, "market")
        assert metrics.REGISTRY.get_sample_value("elimu_api_ws_connections") == connections_before + 1
        await ChannelLog(redis).publish("market", "pulse", {})
        await recv_json(ws)
        assert sent() == before + 1

    async def gauge_back() -> bool:
        return metrics.REGISTRY.get_sample_value("elimu_api_ws_connections") == connections_before

    await wait_until(gauge_back, what="gauge decremented")


async def test_slow_client_is_dropped_without_holding_up_others(
    make_server: Callable[..., Any], redis: Redis
) -> None:
    server: LiveServer = await make_server(ws_queue_size=4, ws_send_timeout_s=1.0)
    log = ChannelLog(redis)
    # Incompressible, whatever the extensions, and under the channel log's per-message cap.
    payload = {"blob": os.urandom(12_000).hex()}
    count = 750  # ~18 MB: more than the socket buffers of a client that never reads

    def dropped() -> float:
        return (
            metrics.REGISTRY.get_sample_value(
                "elimu_api_ws_forced_disconnects_total", {"reason": "slow_consumer"}
            )
            or 0.0
        )

    before = dropped()
    async with (
        server.connect_as("u-1", max_queue=1, compression=None) as slow,
        server.connect_as("u-2") as fast,
    ):
        await subscribe(slow, "market")
        await subscribe(fast, "market")
        # Lockstep: the fast client reads each message before the next is published, so it is
        # never behind; the slow one never reads at all.
        for n in range(1, count + 1):
            await log.publish("market", "pulse", payload)
            message = await recv_json(fast, timeout=10)
            assert message.get("id") == n, {k: str(v)[:80] for k, v in message.items()}

        async def slow_dropped() -> bool:
            return dropped() > before and server.state.hub.local_channels() == {"market": 1}

        await wait_until(slow_dropped, timeout=15, what="slow client dropped")
        # The slow client finds an error after what was already buffered for it, then the close.
        codes: list[str] = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    message = orjson.loads(await slow.recv())
                    if message.get("op") == "error":
                        codes.append(message["code"])
        assert codes in ([], ["slow_consumer"])


async def test_lost_live_feed_makes_clients_resync(server: LiveServer, redis: Redis) -> None:
    """Messages published while the hub's pub/sub connection is down would be lost silently, so
    the hub drops its clients with ``resync``; they come back with ``since`` and lose nothing."""
    log = ChannelLog(redis)
    async with server.connect_as("u-1") as ws:
        await subscribe(ws, "user:u-1")
        await log.publish("user:u-1", "xp", {"n": 1})
        assert (await recv_json(ws))["id"] == 1
        await redis.client_kill_filter(_type="pubsub")
        error = await recv_json(ws)
        assert error["op"] == "error" and error["code"] == "resync"
        assert await closed_with(ws) == 1012
    await log.publish("user:u-1", "xp", {"n": 2})  # while the client is away

    async def hub_back() -> bool:
        return server.state.hub.connected

    await wait_until(hub_back, what="hub reconnected")
    async with server.connect_as("u-1") as ws:
        assert (await subscribe(ws, "user:u-1", since=1))["recovered"] is True
        assert (await recv_json(ws))["id"] == 2
        await log.publish("user:u-1", "xp", {"n": 3})
        assert (await recv_json(ws))["id"] == 3
