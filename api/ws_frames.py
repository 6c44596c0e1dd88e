"""Websocket frames built once per channel message, for every connection that receives it.

A channel message goes to every local subscriber of its channel: one leaderboard push can be
10,000 frames. Framing (and permessage-deflate) per connection made the API write ~10k frames/s
on one core (docs/benchmarks.md). Server-to-client frames are not masked, so the bytes on the wire
are the same for every connection that negotiated the same compression, provided each message is
compressed on its own: the API negotiates permessage-deflate *without server context takeover*
(api/ws_protocol.py), and then one compressed frame per window size serves them all.
"""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

#: FIN + text opcode; with RSV1 set, the payload is permessage-deflate compressed (RFC 7692).
_TEXT = 0x81
_TEXT_DEFLATED = 0xC1
#: What a sync flush ends with, removed from a compressed message (RFC 7692 section 7.2.1).
_SYNC_TAIL = b"\x00\x00\xff\xff"
#: The compressor settings of the negotiated extension (uvicorn's, kept by api/ws_protocol.py).
MEM_LEVEL = 5


def frame_header(first_byte: int, length: int) -> bytes:
    """An unmasked frame header for a payload of ``length`` bytes (RFC 6455 section 5.2)."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first_byte, 126, length)
    return struct.pack("!BBQ", first_byte, 127, length)


def deflate(payload: bytes, window_bits: int) -> bytes:
    """``payload`` compressed as one permessage-deflate message without context takeover."""
    compressor = zlib.compressobj(wbits=-window_bits, memLevel=MEM_LEVEL)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


class SharedMessage:
    """One channel message as text, and its frames, each built the first time a connection asks
    for it (uncompressed, or compressed with a given window size)."""

    __slots__ = ("_frames", "_payload", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._payload: bytes | None = None
        self._frames: dict[int | None, bytes] = {}

    def frame(self, window_bits: int | None) -> bytes:
        """The whole frame: uncompressed for ``None``, else deflated with ``window_bits``."""
        frame = self._frames.get(window_bits)
        if frame is None:
            if self._payload is None:
                self._payload = self.text.encode()
            if window_bits is None:
                frame = frame_header(_TEXT, len(self._payload)) + self._payload
            else:
                data = deflate(self._payload, window_bits)
                frame = frame_header(_TEXT_DEFLATED, len(data)) + data
            self._frames[window_bits] = frame
        return frame


class SharedFrames(Protocol):
    """What a server connection offers for shared frames (api/ws_protocol.py)."""

    def write_now(self, message: SharedMessage) -> bool:
        """Write ``message``'s frame at once if the connection can take it without waiting;
        False when it cannot (its buffer is full, or it is closing): then ``send`` it."""
        ...

    async def send(self, message: SharedMessage) -> None:
        """Write ``message``'s frame once the connection can take it."""
        ...
