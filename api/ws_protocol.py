"""uvicorn's websocket protocol (websockets, sans-I/O), able to send a shared frame.

Two changes to ``WebSocketsSansIOProtocol``, both for fan-out (api/ws_frames.py):

* permessage-deflate is negotiated *without server context takeover* (RFC 7692 allows the server
  to require it whatever the client offered), so every message the server sends is compressed on
  its own and a frame built once can go to every connection with the same window size. The other
  parameters are uvicorn's (12-bit windows, ``memLevel`` 5).
* the ASGI scope's extensions carry ``SHARED_FRAMES`` (``api.ws_frames.SharedFrames``), which
  writes a message's prebuilt frame for this connection's compression straight to the
  transport: at once when its buffer has room (no task wakes up per frame), or after the same
  flow control as a normal send (wait while the transport's buffer is full).

Frames written this way and frames the library writes (replies, pings, close) are each written
whole and in order, and with no context takeover neither depends on what the other compressed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from api.ws_frames import MEM_LEVEL, SharedMessage

#: The scope extension under which a connection offers ``send_shared``.
SHARED_FRAMES = "elimu.shared_frames"
WINDOW_BITS = 12


class SharedFrameProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if self.config.ws_per_message_deflate:
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        server_max_window_bits=WINDOW_BITS,
                        client_max_window_bits=WINDOW_BITS,
                        compress_settings={"memLevel": MEM_LEVEL},
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=self.conn.logger,
            )
        #: The deflate window size of this connection's frames (None: uncompressed).
        self._window_bits: int | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The handshake is accepted (its extensions negotiated) but not yet sent: the app sends
        # it with ``websocket.accept``.
        if self.response.status_code == 101 and not self.close_sent:
            shared, self._window_bits = _variant(self.conn.extensions)
            if shared:
                # The ASGI task starts on the next loop turn and reads this same scope.
                extensions: dict[str, Any] = self.scope["extensions"]
                extensions[SHARED_FRAMES] = _Shared(self)

    def is_open(self) -> bool:
        """Accepted, and neither closing nor closed: data frames may be written."""
        return (
            not (self.disconnected or self.close_sent or self.transport.is_closing())
            and self.conn.state is State.OPEN
        )

    def has_room(self) -> bool:
        """The transport's buffer is under its high-water mark (uvicorn's flow control)."""
        return self.writable.is_set()

    async def wait_for_room(self) -> None:
        await self.writable.wait()

    def write_shared(self, message: SharedMessage) -> None:
        self.transport.write(message.frame(self._window_bits))


class _Shared:
    """``SharedFrames`` for one connection (offered only where frames can be shared: no
    extension, or permessage-deflate without server context takeover)."""

    def __init__(self, protocol: SharedFrameProtocol) -> None:
        self.protocol = protocol

    def write_now(self, message: SharedMessage) -> bool:
        p = self.protocol
        if not (p.has_room() and p.is_open()):
            return False
        p.write_shared(message)
        return True

    async def send(self, message: SharedMessage) -> None:
        p = self.protocol
        await p.wait_for_room()
        if not p.is_open():
            raise ClientDisconnected()
        p.write_shared(message)


def _variant(extensions: list[Any]) -> tuple[bool, int | None]:
    """(shared frames apply, the deflate window size or None) for the negotiated extensions."""
    if not extensions:
        return True, None
    if len(extensions) == 1 and isinstance(extensions[0], PerMessageDeflate):
        deflate = extensions[0]
        if deflate.local_no_context_takeover:
            return True, int(deflate.local_max_window_bits or 15)
    return False, None
