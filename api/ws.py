"""``GET /v1/ws``: the websocket protocol of CONTRACT.md §8.

One handler per connection runs three things until the first ends: the receive loop (client
ops, handled one at a time), the writer (live messages from the hub) and a watch on the
connection's ``killed`` event (slow client, lost live feed). On the way out the connection leaves
every hub channel, so the hub can drop Redis subscriptions nobody needs.

Subscribing closes the replay/live race in this order: register with the hub and wait for Redis
to confirm the pub/sub subscription, *then* read the channel position and replay from history,
send the replay, and only then release live messages whose id is beyond the last one delivered.
Anything published during the replay is therefore either in the replay or released afterwards,
never lost, and never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api import channel_access, metrics
from api.auth import AuthError, Principal, verify_token
from api.channel_access import Access
from api.config import ApiConfig
from api.hub import Hub, HubUnavailable
from api.state import AppState, app_state
from api.ws_connection import Connection
from infra.channels import ChannelLog, Message

log = logging.getLogger(__name__)

router = APIRouter()

# Close codes (RFC 6455 §7.4.1).
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
CLOSE_CODES = {
    "slow_consumer": TRY_AGAIN_LATER,
    "resync": SERVICE_RESTART,
    "message_too_large": MESSAGE_TOO_BIG,
}

_CLOSE_TIMEOUT_S = 2.0


class _Disconnected(Exception):
    """The client closed the connection."""


#: How a connection normally ends, seen from the server: not worth a log line.
_QUIET_ENDINGS = (_Disconnected, WebSocketDisconnect, TimeoutError, OSError, RuntimeError)


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = app_state(websocket)
    await websocket.accept()
    principal = await _authenticate(websocket, state)
    if principal is None:
        return
    conn = Connection(
        websocket,
        principal,
        queue_size=state.config.ws_queue_size,
        send_timeout_s=state.config.ws_send_timeout_s,
    )
    session = _Session(conn, state.hub, state.channels, state.config)
    metrics.WS_CONNECTIONS.inc()
    try:
        await _run_until_first_done(session.receive_loop(), conn.run_writer(), conn.killed.wait())
    finally:
        metrics.WS_CONNECTIONS.dec()
        await session.leave_all()
        if conn.close_reason is not None:
            code, message = conn.close_reason
            await _close_with_error(websocket, code, message, CLOSE_CODES.get(code, POLICY_VIOLATION))


async def _run_until_first_done(*coros: Any) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None and not isinstance(exc, _QUIET_ENDINGS):
            log.warning("websocket handler failed: %r", exc)


async def _authenticate(websocket: WebSocket, state: AppState) -> Principal | None:
    """``?token=`` or a first ``{"op": "auth", "token": ...}`` within the auth timeout."""
    token = websocket.query_params.get("token")
    if token is None:
        try:
            async with asyncio.timeout(state.config.ws_auth_timeout_s):
                raw = await _receive_text(websocket)
        except TimeoutError:
            await _close_with_error(websocket, "auth_timeout", "authenticate first", POLICY_VIOLATION)
            return None
        except _Disconnected:
            return None
        message = _loads(raw)
        token = message.get("token") if isinstance(message, dict) and message.get("op") == "auth" else None
        if not isinstance(token, str):
            await _close_with_error(
                websocket,
                "unauthorized",
                'the first message must be {"op": "auth", "token": ...}',
                POLICY_VIOLATION,
            )
            return None
    try:
        return verify_token(state.secret, token)
    except AuthError as exc:
        await _close_with_error(websocket, "unauthorized", f"invalid token: {exc}", POLICY_VIOLATION)
        return None


async def _receive_text(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise _Disconnected
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes") or b""
    return data.decode("utf-8", errors="replace")


def _loads(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


async def _close_with_error(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    """Best effort: the client may be gone or stuck, which must not hold the handler."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await websocket.send_text(
                orjson.dumps({"op": "error", "code": code, "message": message}).decode()
            )
            metrics.WS_MESSAGES_SENT.labels("control").inc()
            await websocket.close(close_code, reason=code)


class _Session:
    """The client→server ops of one authenticated connection."""

    def __init__(self, conn: Connection, hub: Hub, channels: ChannelLog, config: ApiConfig) -> None:
        self.conn = conn
        self.hub = hub
        self.channels = channels
        self.config = config
        self.subscriptions: set[str] = set()

    async def receive_loop(self) -> None:
        while True:
            raw = await _receive_text(self.conn.websocket)
            if len(raw.encode()) > self.config.ws_max_message_bytes:
                self.conn.kill(
                    "message_too_large", f"messages are limited to {self.config.ws_max_message_bytes} bytes"
                )
                return
            await self.handle(raw)

    async def handle(self, raw: str) -> None:
        message = _loads(raw)
        if message is None and raw.strip() != "null":
            await self.conn.send_error("bad_json", "message is not JSON")
            return
        if not isinstance(message, dict):
            await self.conn.send_error("bad_request", "message must be a JSON object with an op")
            return
        op = message.get("op")
        if op == "ping":
            await self.conn.send_control({"op": "pong"})
        elif op == "subscribe":
            await self.subscribe(message)
        elif op == "unsubscribe":
            await self.unsubscribe(message)
        elif op == "auth":
            await self.conn.send_error("bad_request", "already authenticated")
        else:
            await self.conn.send_error("unknown_op", f"unknown op {op!r}; use subscribe, unsubscribe or ping")

    async def subscribe(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if not isinstance(channel, str):
            await self.conn.send_error("bad_request", "channel must be a string")
            return
        try:
            since = parse_since(message.get("since"))
        except ValueError as exc:
            await self.conn.send_error("bad_request", str(exc))
            return
        access = channel_access.check(self.conn.principal, channel)
        if access is Access.UNKNOWN:
            await self.conn.send_error("unknown_channel", f"no such channel {channel[:140]!r}")
            return
        if access is Access.FORBIDDEN:
            await self.conn.send_error("forbidden", f"you may not subscribe to {channel!r}")
            return
        if channel in self.subscriptions:
            await self.conn.send_error("already_subscribed", f"already subscribed to {channel!r}")
            return
        if len(self.subscriptions) >= self.config.ws_max_subscriptions:
            await self.conn.send_error(
                "too_many_subscriptions",
                f"at most {self.config.ws_max_subscriptions} channels per connection",
            )
            return

        self.subscriptions.add(channel)
        self.conn.open_cursor(channel)
        try:
            await self.hub.subscribe(self.conn, channel)
            # The position is read after the pub/sub confirmation: every later message comes live.
            position = await self.channels.last_id(channel)
            missed: list[Message] = []
            if since is None:
                recovered = False
            else:
                recovered, missed = await self.channels.replay(channel, since)
        except (HubUnavailable, RedisError, OSError) as exc:
            await self._drop(channel)
            await self.conn.send_error("unavailable", f"cannot subscribe to {channel!r} right now: {exc}")
            return
        if missed:
            delivered_up_to = missed[-1].id
        elif recovered and since is not None:
            delivered_up_to = since
        else:
            delivered_up_to = position
        await self.conn.send_control({"op": "subscribed", "channel": channel, "recovered": recovered})
        for m in missed:
            await self.conn.send_text(orjson.dumps(m.as_dict()).decode(), "message")
        self.conn.go_live(channel, delivered_up_to)

    async def unsubscribe(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if not isinstance(channel, str) or channel not in self.subscriptions:
            await self.conn.send_error("not_subscribed", f"not subscribed to {str(channel)[:140]!r}")
            return
        await self._drop(channel)

    async def _drop(self, channel: str) -> None:
        self.subscriptions.discard(channel)
        self.conn.close_cursor(channel)
        await self.hub.unsubscribe(self.conn, channel)

    async def leave_all(self) -> None:
        for channel in list(self.subscriptions):
            with contextlib.suppress(Exception):
                await self._drop(channel)


def parse_since(value: Any) -> int | None:
    """``since`` is the last id the client saw: a non-negative integer or its decimal string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("since must be a message id")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        result = int(value)
    else:
        raise ValueError("since must be a message id (a non-negative integer)")
    if result < 0:
        raise ValueError("since must be a message id (a non-negative integer)")
    return result
