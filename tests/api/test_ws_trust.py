"""The websocket as a hostile client meets it: authentication before accept, expiry, budgets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api import metrics
from api.auth import issue_token
from infra.channels import ChannelLog
from tests.api.conftest import LiveServer, recv_json, send_json, token
from tests.api.test_ws import subscribe
from tests.conftest import wait_until


async def until_closed(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes: (close code, close reason, every frame read before it)."""
    frames: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                frames.append(orjson.loads(await ws.recv()))
    assert info.value.rcvd is not None, "the server did not send a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason, frames


async def refused(server: LiveServer, query: str) -> tuple[int, dict[str, Any]]:
    """Open a socket that must be refused at the handshake: (HTTP status, JSON error)."""
    with pytest.raises(InvalidStatus) as info:
        async with server.connect(query):
            pass
    response = info.value.response
    return response.status_code, orjson.loads(response.body or b"{}")["error"]


def refusals(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("elimu_api_ws_refused_total", {"reason": reason}) or 0.0


async def budget_empty(server: LiveServer) -> bool:
    budget = server.state.ws_budget
    return budget.total == 0 and budget.unauthenticated == 0 and budget.per_user == {}


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-token",
        token("u-1", ttl_s=-10),  # expired
        issue_token("another-secret-0123456789abcdef0123456789", "u-1"),  # forged
        token("u-\x01"),  # a subject that no id may be
    ],
    ids=["malformed", "expired", "forged", "bad-sub"],
)
async def test_bad_token_in_the_url_is_refused_before_accept(server: LiveServer, bad: str) -> None:
    before = refusals("unauthorized")
    status, error = await refused(server, f"token={bad}")
    assert status == 403
    assert error["code"] == "unauthorized" and error["message"].startswith("invalid token")
    assert refusals("unauthorized") == before + 1
    assert await budget_empty(server)  # a refused handshake holds nothing


async def test_socket_closes_when_its_token_expires(server: LiveServer, redis: Redis) -> None:
    log = ChannelLog(redis)
    short = token("u-1", ttl_s=2)
    expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]
    async with server.connect(f"token={short}") as ws:
        await subscribe(ws, "user:u-1")
        await log.publish("user:u-1", "xp", {"n": 1})
        assert (await recv_json(ws))["data"] == {"n": 1}
        code, reason, frames = await until_closed(ws, timeout=5)
        closed_at = time.time()
    assert (code, reason) == (4001, "token_expired")
    assert frames == [{"op": "error", "code": "token_expired", "message": "token expired"}]
    assert closed_at >= expires_at  # not before exp
    # Published after the close: nobody on this process listens to the channel any more.
    await wait_until(lambda: _eq(server.state.hub.local_channels(), {}), what="channel released")
    assert await budget_empty(server)


async def test_first_message_auth_expires_too(server: LiveServer) -> None:
    async with server.connect() as ws:
        await send_json(ws, {"op": "auth", "token": token("u-1", ttl_s=1)})
        code, reason, _ = await until_closed(ws, timeout=5)
    assert (code, reason) == (4001, "token_expired")


async def test_reauth_with_a_fresh_token_extends_the_connection(server: LiveServer) -> None:
    async with server.connect(f"token={token('u-1', ttl_s=2)}") as ws:
        # A token for someone else, or a bad one, is refused; the connection keeps its identity.
        await send_json(ws, {"op": "auth", "token": token("u-2", ttl_s=3600)})
        assert (await recv_json(ws))["code"] == "forbidden"
        await send_json(ws, {"op": "auth", "token": token("u-1", "admin", ttl_s=3600)})
        assert (await recv_json(ws))["code"] == "forbidden"
        await send_json(ws, {"op": "auth", "token": "garbage"})
        assert (await recv_json(ws))["code"] == "unauthorized"
        await send_json(ws, {"op": "auth", "token": token("u-1", ttl_s=3600)})
        await send_json(ws, {"op": "ping"})
        assert await recv_json(ws) == {"op": "pong"}  # the auth op was handled, silently
        # Past the first token's expiry, the connection is still open and answering.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), timeout=2.5)
        await send_json(ws, {"op": "ping"})
        assert await recv_json(ws) == {"op": "pong"}
        assert (await subscribe(ws, "user:u-2"))["code"] == "forbidden"  # still u-1, still a user


async def test_connections_per_user_and_per_process(make_server: Callable[..., Any]) -> None:
    server: LiveServer = await make_server(ws_max_connections_per_user=2, ws_max_connections=3)
    async with server.connect_as("u-1") as a, server.connect_as("u-1") as b:
        status, error = await refused(server, f"token={token('u-1')}")
        assert (status, error["code"]) == (429, "too_many_connections")
        async with server.connect_as("u-2") as c:
            status, error = await refused(server, f"token={token('u-3')}")
            assert (status, error["code"]) == (503, "server_busy")
            for ws in (a, b, c):  # the admitted ones are unaffected
                await send_json(ws, {"op": "ping"})
                assert await recv_json(ws) == {"op": "pong"}
        await wait_until(lambda: _eq(server.state.ws_budget.total, 2), what="u-2's slot released")
        async with server.connect_as("u-3") as d:
            await send_json(d, {"op": "ping"})
            assert await recv_json(d) == {"op": "pong"}
        # The per-user limit holds for first-message auth too, after accept: closed with 4008.
        async with server.connect() as e:
            await send_json(e, {"op": "auth", "token": token("u-1")})
            code, reason, frames = await until_closed(e)
            assert (code, reason) == (4008, "too_many_connections")
            assert [f["code"] for f in frames] == ["too_many_connections"]
    await wait_until(lambda: budget_empty(server), what="every slot released")


async def test_unauthenticated_sockets_have_a_small_budget(make_server: Callable[..., Any]) -> None:
    server: LiveServer = await make_server(ws_max_unauthenticated=2, ws_auth_timeout_s=5.0)
    async with server.connect() as a, server.connect() as b:
        await wait_until(lambda: _eq(server.state.ws_budget.unauthenticated, 2), what="two waiting")
        status, error = await refused(server, "")
        assert (status, error["code"]) == (503, "server_busy")
        # A client with ?token= does not need that budget.
        async with server.connect_as("u-9") as c:
            await send_json(c, {"op": "ping"})
            assert await recv_json(c) == {"op": "pong"}
        await send_json(a, {"op": "auth", "token": token("u-1")})
        await send_json(a, {"op": "ping"})
        assert await recv_json(a) == {"op": "pong"}
        async with server.connect() as d:  # a's authentication freed its place
            await send_json(d, {"op": "auth", "token": token("u-2")})
            await send_json(d, {"op": "ping"})
            assert await recv_json(d) == {"op": "pong"}
        del b
    await wait_until(lambda: budget_empty(server), what="every slot released")


async def test_ops_over_the_rate_are_refused_then_the_abuser_is_closed(
    make_server: Callable[..., Any],
) -> None:
    # Practically no refill during the test: 3 ops, then refusals; the 6th refusal closes.
    server: LiveServer = await make_server(ws_op_rate_per_s=0.001, ws_op_burst=3, ws_op_abuse_limit=5)
    before = (
        metrics.REGISTRY.get_sample_value("elimu_api_ws_forced_disconnects_total", {"reason": "rate_limited"})
        or 0.0
    )
    async with server.connect_as("u-1") as ws:
        for _ in range(3):
            await send_json(ws, {"op": "ping"})
            assert await recv_json(ws) == {"op": "pong"}
        await send_json(ws, {"op": "subscribe", "channel": "market"})
        limited = await recv_json(ws)
        assert limited["op"] == "error" and limited["code"] == "rate_limited"
        assert server.state.hub.local_channels() == {}  # the refused op was not executed
        for _ in range(10):
            await send_json(ws, {"op": "ping"})
        code, reason, frames = await until_closed(ws)
    assert (code, reason) == (4029, "rate_limited")
    # Four more refusals answered, then the closing error: never a pong past the burst.
    assert [f.get("code") for f in frames] == ["rate_limited"] * 5
    after = metrics.REGISTRY.get_sample_value(
        "elimu_api_ws_forced_disconnects_total", {"reason": "rate_limited"}
    )
    assert after == before + 1


async def test_an_oversized_first_message_is_not_an_auth(make_server: Callable[..., Any]) -> None:
    server: LiveServer = await make_server(ws_max_message_bytes=200)
    async with server.connect() as ws:
        await send_json(ws, {"op": "auth", "token": token("u-1"), "pad": "x" * 300})
        code, _, frames = await until_closed(ws)
    assert code == 1008 and frames[0]["code"] == "unauthorized"


async def test_a_user_channel_must_name_a_valid_id(server: LiveServer) -> None:
    async with server.connect_as("ops", "admin") as ws:
        for channel in ("user:" + "u" * 129, "user:u-\x01", "user:" + "é" * 65):
            assert (await subscribe(ws, channel))["code"] == "unknown_channel"


async def _eq(a: object, b: object) -> bool:
    return a == b
