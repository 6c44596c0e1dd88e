"""One client's outbound queue (api/ws_connection.py), without a server: a socket whose sends
wait until the test lets them through stands for a client that is behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from starlette.websockets import WebSocket

from api.auth import Principal
from api.ws_connection import Connection
from api.ws_frames import SharedMessage
from tests.conftest import wait_until


class GatedSocket:
    """``send_text`` records the text, then waits for the gate."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        await self.gate.wait()


def live(conn: Connection, *channels: str) -> None:
    for channel in channels:
        conn.open_cursor(channel)
        conn.go_live(channel, 0)


async def test_a_client_behind_gets_only_the_newest_leaderboard_snapshot() -> None:
    socket = GatedSocket()
    conn = Connection(cast(WebSocket, socket), Principal("u-1", "user"), queue_size=4, send_timeout_s=30)
    live(conn, "leaderboard:daily", "user:u-1")
    writer = asyncio.create_task(conn.run_writer())
    try:
        conn.deliver("leaderboard:daily", 1, SharedMessage("board-1"))

        async def first_in_flight() -> bool:
            return socket.sent == ["board-1"]

        await wait_until(first_in_flight, what="the first snapshot is being sent")
        # Six more snapshots while the client is behind: more than its queue of 4 holds.
        for n in range(2, 8):
            conn.deliver("leaderboard:daily", n, SharedMessage(f"board-{n}"))
        # A user's channel is not a snapshot: every message counts.
        conn.deliver("user:u-1", 1, SharedMessage("xp-1"))
        conn.deliver("user:u-1", 2, SharedMessage("xp-2"))
        socket.gate.set()

        async def drained() -> Any:
            return len(socket.sent) == 4 and socket.sent

        await wait_until(drained, what="the queue drained")
        assert socket.sent == ["board-1", "board-7", "xp-1", "xp-2"]
        assert conn.close_reason is None
        # Once sent, the next snapshot is queued again, and an old id is still refused.
        conn.deliver("leaderboard:daily", 7, SharedMessage("board-7 again"))
        conn.deliver("leaderboard:daily", 8, SharedMessage("board-8"))

        async def next_sent() -> bool:
            return socket.sent[-1:] == ["board-8"]

        await wait_until(next_sent, what="the next snapshot sent")
        assert socket.sent == ["board-1", "board-7", "xp-1", "xp-2", "board-8"]
    finally:
        writer.cancel()


async def test_a_client_behind_on_a_user_channel_is_still_dropped() -> None:
    socket = GatedSocket()
    conn = Connection(cast(WebSocket, socket), Principal("u-1", "user"), queue_size=2, send_timeout_s=30)
    live(conn, "user:u-1")
    writer = asyncio.create_task(conn.run_writer())
    try:
        conn.deliver("user:u-1", 1, SharedMessage("xp-1"))

        async def first_in_flight() -> bool:
            return socket.sent == ["xp-1"]

        await wait_until(first_in_flight, what="the first message is being sent")
        for n in range(2, 5):
            conn.deliver("user:u-1", n, SharedMessage(f"xp-{n}"))
        assert conn.close_reason == ("slow_consumer", "client is not reading fast enough")
    finally:
        writer.cancel()


async def test_messages_held_while_subscribing_are_not_sent_once_the_token_expired() -> None:
    socket = GatedSocket()
    conn = Connection(cast(WebSocket, socket), Principal("u-1", "user"), queue_size=4, send_timeout_s=30)
    conn.open_cursor("user:u-1")
    conn.deliver("user:u-1", 1, SharedMessage("xp-1"))  # held: the replay is not sent yet
    # The token's expiry passes before the expiry watcher's timer fires.
    conn.principal = Principal("u-1", "user", expires_at=time.time() - 1)
    conn.go_live("user:u-1", 0)
    assert conn.close_reason == ("token_expired", "token expired")
    assert socket.sent == []
