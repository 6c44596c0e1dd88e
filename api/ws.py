"""``GET /v1/ws``: the websocket protocol of CONTRACT.md §8.

Authentication comes first. A ``?token=`` is checked *before* the handshake is accepted: a bad or
expired token gets an HTTP 403 and never a socket. Without one, the socket is accepted but must
send ``{"op": "auth", "token": ...}`` as its first message within ``ws_auth_timeout_s``; until
then it counts against a small per-process budget of unauthenticated sockets. Either way the
token keeps being checked: the connection is closed when its ``exp`` passes, unless the client
sent ``{"op": "auth"}`` with a fresh token for the same user and role, which moves the deadline.

Limits (``api.config.ApiConfig``; counted per API process, ``api.ws_limits``): sockets per
process (10,000) and per user (16), unauthenticated sockets (128), subscriptions per connection
(100), client frame size (4 KiB), and a token bucket on client ops per connection (20/s, burst 40;
every frame counts). An op over the rate is answered ``rate_limited`` and not executed; more than
40 such refusals in about ten seconds close the connection.

Refusals before the handshake is accepted (HTTP status, JSON error body ``{"error": {"code",
"message"}}`` where the server supports denial responses, as uvicorn does; a bare 403 otherwise):

  =====  ======================  ==========================================================
  403    unauthorized            ``?token=`` missing its signature, malformed or expired
  429    too_many_connections    the user holds ``ws_max_connections_per_user`` here already
  503    server_busy             the process is full, or its unauthenticated budget is spent
  =====  ======================  ==========================================================

After accept, the server sends ``{"op": "error", "code", "message"}``; for the codes below it
then closes with the close code shown (and the error code as the close reason):

  =====  ======================  ==========================================================
  1008   unauthorized            the first message was not a valid ``op: auth``
  1008   auth_timeout            no first message within ``ws_auth_timeout_s``
  1009   message_too_large       a client frame over ``ws_max_message_bytes``
  1012   resync                  the live feed was lost; reconnect with ``since``
  1013   slow_consumer           the client does not read fast enough
  4001   token_expired           the token's ``exp`` passed (reconnect with a fresh token)
  4008   too_many_connections    (first-message auth) the user holds too many sockets here
  4029   rate_limited            ops over the rate limit, persistently
  =====  ======================  ==========================================================

Errors that leave the connection open: ``rate_limited`` (one op refused), ``bad_json``,
``bad_request``, ``unknown_op``, ``unknown_channel``, ``forbidden`` (a channel, or a re-auth
as someone else), ``already_subscribed``, ``not_subscribed``, ``too_many_subscriptions``,
``unavailable``, ``unauthorized`` (a re-auth with a bad token: the current one stays in force).

One handler per connection runs four things until the first ends: the receive loop (client ops,
handled one at a time), the writer (live messages from the hub), the token's expiry watch and a
watch on the connection's ``killed`` event (slow client, lost live feed, expiry, abuse). On the
way out the connection leaves every hub channel, so the hub can drop Redis subscriptions nobody
needs.

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
from api.errors import error_response
from api.hub import Hub, HubUnavailable
from api.state import AppState, app_state
from api.ws_connection import Connection
from api.ws_limits import SERVER_BUSY, TOO_MANY_CONNECTIONS, OpRateLimit, OverBudget, Verdict
from infra.channels import ChannelLog, Message

log = logging.getLogger(__name__)

router = APIRouter()

# Close codes (RFC 6455 §7.4.1; 4000-4999 are ours).
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
TOKEN_EXPIRED = 4001
TOO_MANY_CONNECTIONS_CLOSE = 4008
RATE_LIMITED_CLOSE = 4029
CLOSE_CODES = {
    "unauthorized": POLICY_VIOLATION,
    "auth_timeout": POLICY_VIOLATION,
    "message_too_large": MESSAGE_TOO_BIG,
    "resync": SERVICE_RESTART,
    "slow_consumer": TRY_AGAIN_LATER,
    "token_expired": TOKEN_EXPIRED,
    TOO_MANY_CONNECTIONS: TOO_MANY_CONNECTIONS_CLOSE,
    "rate_limited": RATE_LIMITED_CLOSE,
}
#: HTTP status of a handshake refused for a budget (``OverBudget.code``).
REFUSAL_STATUS = {SERVER_BUSY: 503, TOO_MANY_CONNECTIONS: 429}

_CLOSE_TIMEOUT_S = 2.0


class _Disconnected(Exception):
    """The client closed the connection."""


#: How a connection normally ends, seen from the server: not worth a log line.
_QUIET_ENDINGS = (_Disconnected, WebSocketDisconnect, TimeoutError, OSError, RuntimeError)


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = app_state(websocket)
    principal: Principal | None = None
    token = websocket.query_params.get("token")
    if token is not None:
        try:
            principal = verify_token(state.secret, token)
        except AuthError as exc:
            await _refuse(websocket, 403, "unauthorized", f"invalid token: {exc}")
            return
    try:
        slot = state.ws_budget.admit(principal.sub if principal else None)
    except OverBudget as exc:
        await _refuse(websocket, REFUSAL_STATUS[exc.code], exc.code, exc.message)
        return
    try:
        await websocket.accept()
        if principal is None:
            principal = await _authenticate(websocket, state)
            if principal is None:
                return
            try:
                slot.authenticate(principal.sub)
            except OverBudget as exc:
                metrics.WS_REFUSED.labels(exc.code).inc()
                await _close_with_error(websocket, exc.code, exc.message, CLOSE_CODES[exc.code])
                return
        await _serve(websocket, state, principal)
    finally:
        slot.release()


async def _serve(websocket: WebSocket, state: AppState, principal: Principal) -> None:
    config = state.config
    conn = Connection(
        websocket,
        principal,
        queue_size=config.ws_queue_size,
        send_timeout_s=config.ws_send_timeout_s,
    )
    ops = OpRateLimit(config.ws_op_rate_per_s, config.ws_op_burst, config.ws_op_abuse_limit)
    session = _Session(conn, state.hub, state.channels, config, state.secret, ops)
    metrics.WS_CONNECTIONS.inc()
    try:
        await _run_until_first_done(
            session.receive_loop(), conn.run_writer(), conn.killed.wait(), conn.watch_expiry()
        )
    finally:
        metrics.WS_CONNECTIONS.dec()
        await session.leave_all()
        if conn.close_reason is not None:
            code, message = conn.close_reason
            await _close_with_error(websocket, code, message, CLOSE_CODES.get(code, POLICY_VIOLATION))


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake: an HTTP answer with our error body where the server can send one."""
    metrics.WS_REFUSED.labels(code).inc()
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        await websocket.send_denial_response(error_response(status, code, message, headers=headers))
    else:
        await websocket.close(POLICY_VIOLATION)  # closed before accept: the server answers 403


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
    """A first ``{"op": "auth", "token": ...}`` within the auth timeout; None if refused."""
    try:
        async with asyncio.timeout(state.config.ws_auth_timeout_s):
            raw = await _receive_text(websocket)
    except TimeoutError:
        await _refuse_after_accept(websocket, "auth_timeout", "authenticate first")
        return None
    except _Disconnected:
        return None
    message = _loads(raw) if len(raw.encode()) <= state.config.ws_max_message_bytes else None
    token = message.get("token") if isinstance(message, dict) and message.get("op") == "auth" else None
    if not isinstance(token, str):
        await _refuse_after_accept(
            websocket, "unauthorized", 'the first message must be {"op": "auth", "token": ...}'
        )
        return None
    try:
        return verify_token(state.secret, token)
    except AuthError as exc:
        await _refuse_after_accept(websocket, "unauthorized", f"invalid token: {exc}")
        return None


async def _refuse_after_accept(websocket: WebSocket, code: str, message: str) -> None:
    metrics.WS_REFUSED.labels(code).inc()
    await _close_with_error(websocket, code, message, CLOSE_CODES[code])


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

    def __init__(
        self,
        conn: Connection,
        hub: Hub,
        channels: ChannelLog,
        config: ApiConfig,
        secret: str,
        ops: OpRateLimit,
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.channels = channels
        self.config = config
        self.secret = secret
        self.ops = ops
        self.subscriptions: set[str] = set()

    async def receive_loop(self) -> None:
        while True:
            raw = await _receive_text(self.conn.websocket)
            if len(raw.encode()) > self.config.ws_max_message_bytes:
                self.conn.kill(
                    "message_too_large", f"messages are limited to {self.config.ws_max_message_bytes} bytes"
                )
                return
            verdict = self.ops.take()
            if verdict is Verdict.ABUSIVE:
                self.conn.kill("rate_limited", "too many ops over the rate limit")
                return
            if verdict is Verdict.LIMITED:
                await self.conn.send_error(
                    "rate_limited",
                    f"at most {self.config.ws_op_rate_per_s:g} ops per second "
                    f"(burst {self.config.ws_op_burst}); this op was not executed",
                )
                continue
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
            await self.reauth(message)
        else:
            await self.conn.send_error(
                "unknown_op", f"unknown op {str(op)[:64]!r}; use subscribe, unsubscribe, ping or auth"
            )

    async def reauth(self, message: dict[str, Any]) -> None:
        """A fresh token for the same user and role extends the connection's life; nothing else
        changes (no reply on success, as for the first auth)."""
        token = message.get("token")
        if not isinstance(token, str):
            await self.conn.send_error("bad_request", "auth needs a token")
            return
        try:
            principal = verify_token(self.secret, token)
        except AuthError as exc:
            await self.conn.send_error("unauthorized", f"invalid token: {exc}; the current one still holds")
            return
        current = self.conn.principal
        if (principal.sub, principal.role) != (current.sub, current.role):
            # Subscriptions were authorised for the current identity: a new one needs a new socket.
            await self.conn.send_error("forbidden", "a connection cannot change its user or role")
            return
        self.conn.renew(principal)

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
