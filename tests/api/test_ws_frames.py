"""Frames built once per channel message (api/ws_frames.py, api/ws_protocol.py): the bytes are
what a websocket client reads, compressed or not, and one message is framed once per variant
whatever the number of its subscribers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from api.ws_frames import SharedMessage
from infra.channels import ChannelLog
from tests.api.conftest import LiveServer, recv_json, send_json


def parse(data: bytes, extensions: list[Any] | None = None) -> Frame:
    """One frame, with websockets' own parser (server frames are not masked); ``extensions``
    decode the payload as a client that negotiated them would."""
    reader = Frame.parse(_Reader(data).read, mask=False, extensions=extensions)
    try:
        next(reader)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int) -> Any:
        chunk, self.data = self.data[:n], self.data[n:]
        if len(chunk) < n:
            raise AssertionError(f"short frame: wanted {n} bytes, {len(chunk)} left")
        return chunk
        yield  # a generator, as websockets' parsers expect


@given(text=st.text(max_size=300) | st.sampled_from(["x" * 125, "x" * 126, "é" * 40_000, "y" * 70_000]))
def test_frames_decode_to_the_text(text: str) -> None:
    message = SharedMessage(text)
    plain = parse(message.frame(None))
    assert (plain.opcode, plain.fin, bytes(plain.data)) == (Opcode.TEXT, True, text.encode())
    assert message.frame(12)[0] == 0xC1  # FIN, RSV1 (compressed), text
    # What a client that negotiated permessage-deflate (server_no_context_takeover, 12-bit
    # window, as api/ws_protocol.py answers) reads.
    client_side = PerMessageDeflate(
        remote_no_context_takeover=True,
        local_no_context_takeover=False,
        remote_max_window_bits=12,
        local_max_window_bits=12,
    )
    deflated = parse(message.frame(12), [client_side])
    assert (deflated.opcode, deflated.fin, bytes(deflated.data)) == (Opcode.TEXT, True, text.encode())
    # Built once per variant: the same bytes object every time.
    assert message.frame(12) is message.frame(12)


@pytest.fixture
def frame_builds(monkeypatch: pytest.MonkeyPatch) -> Counter[int | None]:
    """How often each frame variant is built (not served from a message's cache)."""
    builds: Counter[int | None] = Counter()
    original = SharedMessage.frame

    def counted(self: SharedMessage, window_bits: int | None) -> bytes:
        if window_bits not in self._frames:
            builds[window_bits] += 1
        return original(self, window_bits)

    monkeypatch.setattr(SharedMessage, "frame", counted)
    return builds


async def test_one_message_is_framed_once_per_variant_for_all_subscribers(
    server: LiveServer, redis: Redis, frame_builds: Counter[int | None]
) -> None:
    log = ChannelLog(redis)
    async with (
        server.connect_as("u-1") as deflate_1,
        server.connect_as("u-2") as deflate_2,
        server.connect_as("u-3", compression=None) as plain,
    ):
        clients = (deflate_1, deflate_2, plain)
        for ws in clients:
            await send_json(ws, {"op": "subscribe", "channel": "market"})
            assert (await recv_json(ws))["op"] == "subscribed"
        big = {"blob": "ab" * 7_500}  # a 16-bit length (under the channel cap), compressible
        await log.publish("market", "pulse", {"n": 1})
        await log.publish("market", "pulse", big)
        for ws in clients:
            assert [(m["id"], m["data"]) for m in [await recv_json(ws), await recv_json(ws)]] == [
                (1, {"n": 1}),
                (2, big),
            ]
    # Two messages, each compressed once for both deflate clients and framed once plain.
    assert frame_builds == Counter({12: 2, None: 2})
