"""The outbound side of one websocket client: per-channel cursors, a bounded queue, one writer.

Every channel a client subscribes to has a cursor. While the subscription is being set up
(pub/sub confirmation, then history replay) the cursor *buffers* live messages; once the replay
has been sent, ``go_live`` releases the buffered messages whose id is beyond what the replay
delivered. From then on a live message is queued only if its id is greater than the last one
sent on that channel, so the client sees each id at most once and in order even though the same
message can reach us both through replay and through pub/sub.

``deliver`` is called by the hub's reader and must never block: when the queue (or a setup
buffer) is full the client is too slow and is disconnected instead.

The connection also holds the principal it was authenticated as, and ``watch_expiry`` kills it
when that token's ``exp`` passes: a token checked only at connect would be checked never. A
fresh token for the same user and role (``renew``) moves the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket

from api import metrics
from api.auth import Principal
from api.ws_frames import SharedFrames, SharedMessage
from api.ws_protocol import SHARED_FRAMES
from models.channels import is_snapshot_channel


@dataclass(eq=False)
class _Cursor:
    channel: str
    live: bool = False
    last_id: int = 0
    #: Live messages that arrived while the subscription was being set up.
    pending: list[tuple[int, SharedMessage]] = field(default_factory=list)
    #: A snapshot channel (``is_snapshot_channel``) keeps at most one message in the queue:
    #: this one, replaced by each newer snapshot until the writer takes it.
    coalesce: bool = False
    newest: SharedMessage | None = None


class Connection:
    def __init__(
        self, websocket: WebSocket, principal: Principal, *, queue_size: int, send_timeout_s: float
    ) -> None:
        self.websocket = websocket
        self.principal = principal
        self.send_timeout_s = send_timeout_s
        self._queue_size = queue_size
        #: (cursor, message); None: the cursor's ``newest`` snapshot, read when it is sent.
        self._queue: asyncio.Queue[tuple[_Cursor, SharedMessage | None]] = asyncio.Queue(maxsize=queue_size)
        #: The server's shared frames for this connection (api/ws_protocol.py), if it has them.
        extensions = getattr(websocket, "scope", {}).get("extensions", {})
        self._shared: SharedFrames | None = extensions.get(SHARED_FRAMES)
        #: The writer holds a message it took from the queue (sent, or about to be).
        self._writing = False
        #: Sends started and not finished (waiting for the lock included): a frame written
        #: directly must not overtake any of them.
        self._sends = 0
        self._cursors: dict[str, _Cursor] = {}
        self._send_lock = asyncio.Lock()
        #: Set when the server decided to drop this client; ``close_reason`` says why.
        self.killed = asyncio.Event()
        self.close_reason: tuple[str, str] | None = None
        self._renewed = asyncio.Event()

    # -- called by the hub (synchronous, never blocks) ------------------------------------------

    def deliver(self, channel: str, msg_id: int, message: SharedMessage) -> None:
        cursor = self._cursors.get(channel)
        if cursor is None:
            return
        if not cursor.live:
            if not self._may_send():
                return
            if len(cursor.pending) >= self._queue_size:
                self.kill("slow_consumer", "too many messages pending while subscribing")
                return
            cursor.pending.append((msg_id, message))
            return
        self._enqueue(cursor, msg_id, message)  # checks _may_send itself (go_live comes here too)

    def _may_send(self) -> bool:
        """Not killed and the token still valid (the expiry watcher's timer may be late:
        nothing goes out on an expired token whatever path it takes)."""
        if self.killed.is_set():
            return False
        if time.time() >= self.principal.expires_at:
            self.kill("token_expired", "token expired")
            return False
        return True

    def kill(self, code: str, message: str) -> None:
        if self.close_reason is None:
            self.close_reason = (code, message)
            metrics.WS_DISCONNECTS.labels(code).inc()
        self.killed.set()

    def _enqueue(self, cursor: _Cursor, msg_id: int, message: SharedMessage) -> None:
        if msg_id <= cursor.last_id or not self._may_send():
            return  # already delivered (by replay or an earlier live copy), or not allowed
        if cursor.coalesce and cursor.newest is not None:
            # A snapshot is still queued unsent: the newer one takes its place (ids stay
            # increasing; a leaderboard's older top is of no use to a client that is behind).
            cursor.newest, cursor.last_id = message, msg_id
            metrics.WS_COALESCED.inc()
            return
        if (
            self._shared is not None
            and self._queue.empty()
            and not self._writing
            and not self._sends
            and self._shared.write_now(message)
        ):
            # Nothing is queued or being sent, and the socket has room: written in order, now,
            # without waking this connection's writer (the fan-out's common case).
            cursor.last_id = msg_id
            metrics.WS_MESSAGES_SENT.labels("message").inc()
            return
        try:
            self._queue.put_nowait((cursor, None if cursor.coalesce else message))
        except asyncio.QueueFull:
            self.kill("slow_consumer", "client is not reading fast enough")
            return
        if cursor.coalesce:
            cursor.newest = message
        cursor.last_id = msg_id

    # -- authentication lifetime ------------------------------------------------------------------

    def renew(self, principal: Principal) -> None:
        """Adopt a fresh token of the same user and role: the later expiry wins."""
        assert (principal.sub, principal.role) == (self.principal.sub, self.principal.role)
        if principal.expires_at > self.principal.expires_at:
            self.principal = principal
            self._renewed.set()

    async def watch_expiry(self) -> None:
        """Return after killing the connection with ``token_expired`` once its token expires."""
        while True:
            remaining = self.principal.expires_at - time.time()
            if remaining <= 0:
                self.kill("token_expired", "token expired")
                return
            self._renewed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(remaining) else remaining):
                    await self._renewed.wait()

    # -- subscription lifecycle (called by the protocol handler) --------------------------------

    def open_cursor(self, channel: str) -> None:
        self._cursors[channel] = _Cursor(channel, coalesce=is_snapshot_channel(channel))

    def close_cursor(self, channel: str) -> None:
        self._cursors.pop(channel, None)

    def go_live(self, channel: str, delivered_up_to: int) -> None:
        """Switch ``channel`` to live delivery after everything up to ``delivered_up_to`` was sent."""
        cursor = self._cursors.get(channel)
        if cursor is None:
            return
        cursor.last_id = delivered_up_to
        pending, cursor.pending = cursor.pending, []
        cursor.live = True
        for msg_id, message in pending:
            self._enqueue(cursor, msg_id, message)

    # -- sending ---------------------------------------------------------------------------------

    async def send_text(self, text: str, kind: str) -> None:
        await self._send(lambda: self.websocket.send_text(text), kind)

    async def _send(self, send: Callable[[], Awaitable[Any]], kind: str) -> None:
        self._sends += 1
        try:
            async with self._send_lock:
                try:
                    # asyncio.timeout, not wait_for: no task per frame (measured with
                    # `elimu bench fanout`, docs/benchmarks.md).
                    async with asyncio.timeout(self.send_timeout_s):
                        await send()
                except TimeoutError:
                    self.kill("slow_consumer", "client is not reading")
                    raise
        finally:
            self._sends -= 1
        metrics.WS_MESSAGES_SENT.labels(kind).inc()

    async def _send_message(self, message: SharedMessage) -> None:
        """A channel message: its shared frame when the server offers one, else as text."""
        shared = self._shared
        if shared is None:
            await self.send_text(message.text, "message")
        else:
            await self._send(lambda: shared.send(message), "message")

    async def send_control(self, payload: dict[str, Any]) -> None:
        await self.send_text(orjson.dumps(payload).decode(), "control")

    async def send_error(self, code: str, message: str) -> None:
        await self.send_control({"op": "error", "code": code, "message": message})

    async def run_writer(self) -> None:
        """Send queued live messages until cancelled or the client goes away."""
        while True:
            cursor, queued = await self._queue.get()
            self._writing = True
            try:
                await self._write(cursor, queued)
            finally:
                self._writing = False

    async def _write(self, cursor: _Cursor, queued: SharedMessage | None) -> None:
        # Skip what was queued for a subscription that has since been dropped or replaced:
        # a re-subscribe replays on its own and must not see stale copies after that replay.
        if self._cursors.get(cursor.channel) is not cursor or not self._may_send():
            return
        message = queued if queued is not None else cursor.newest
        if queued is None:
            cursor.newest = None
        if message is not None:
            await self._send_message(message)
