"""Live fan-out of channel messages to this process's websocket connections.

One Redis pub/sub connection per API process, whatever the number of clients: the hub subscribes
to a channel's pub/sub key when its first local subscriber arrives and unsubscribes after the
last one leaves, and a single reader task hands every message to the local subscribers. Handing
over never blocks: each subscriber owns a bounded queue and is disconnected when it overflows, so
one slow client cannot hold up the others.

``subscribe`` returns only once Redis has *confirmed* the subscription. Replay reads history on
another connection, and only after the confirmation is every later publish guaranteed to reach
us live; that is what lets the websocket layer close the replay/live race. Confirmations arrive
in the order the SUBSCRIBE commands were written, so the waiters are kept in a FIFO per key.

If the pub/sub connection breaks (or redis-py silently reconnects it), messages published in the
gap are lost for live delivery. The hub then drops every local subscriber with a ``resync``
error; clients reconnect with ``since`` and recover the gap from the channel history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from api.ws_frames import SharedMessage
from infra import keys

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What the hub needs from a websocket connection. Both calls must not block."""

    def deliver(self, channel: str, msg_id: int, message: SharedMessage) -> None: ...

    def kill(self, code: str, message: str) -> None: ...


class HubUnavailable(Exception):
    """The pub/sub connection is down or did not confirm a subscription in time."""


class _Session:
    """State tied to one pub/sub connection; discarded as a whole when that connection breaks."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.members: dict[str, set[Subscriber]] = {}
        #: Confirmation of the channel's current Redis-level subscription (True) or failure (False).
        self.confirmed: dict[str, asyncio.Future[bool]] = {}
        #: Per pub/sub key, the confirmations still expected, in the order SUBSCRIBEs were written.
        self.expected: dict[bytes, deque[asyncio.Future[bool]]] = {}
        self.channel_of: dict[bytes, str] = {}
        #: Serialises SUBSCRIBE/UNSUBSCRIBE writes so their order matches ``expected``.
        self.commands = asyncio.Lock()
        self.broken = False

    def on_reconnect(self, connection: Any) -> None:
        # Registered only after the first connect, so any call is a reconnect: a gap.
        self.broken = True


class Hub:
    def __init__(self, redis: Redis, *, subscribe_timeout_s: float = 5.0, retry_delay_s: float = 1.0) -> None:
        self.redis = redis
        self.subscribe_timeout_s = subscribe_timeout_s
        self.retry_delay_s = retry_delay_s
        #: A private channel kept subscribed so the reader always has something to block on.
        self._control_key = keys.channel_pubsub(f"__hub__:{uuid.uuid4().hex}").encode()
        self._session: _Session | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.broken

    def local_channels(self) -> dict[str, int]:
        """Channels with local subscribers and how many (for diagnostics and tests)."""
        session = self._session
        return {c: len(m) for c, m in session.members.items()} if session else {}

    async def start(self) -> None:
        """Connect now if Redis is up (so the first client need not wait), else keep retrying."""
        with contextlib.suppress(RedisError, OSError):
            self._session = await self._open()
        self._reader = asyncio.create_task(self._run(), name="ws-hub-reader")

    async def stop(self) -> None:
        self._stopping.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._teardown(self._session, "server shutting down")

    async def subscribe(self, subscriber: Subscriber, channel: str) -> None:
        """Register ``subscriber`` and wait until Redis confirmed the channel's subscription.

        The subscriber is registered before the SUBSCRIBE is written, so it is handed every
        message that follows; on failure it is unregistered and ``HubUnavailable`` raised.
        """
        session = self._session
        if session is None or session.broken:
            raise HubUnavailable("live feed is not connected")
        members = session.members.get(channel)
        if members is None:
            members = session.members[channel] = set()
            members.add(subscriber)
            key = keys.channel_pubsub(channel).encode()
            confirmed = asyncio.get_running_loop().create_future()
            session.confirmed[channel] = confirmed
            session.channel_of[key] = channel
            async with session.commands:
                session.expected.setdefault(key, deque()).append(confirmed)
                try:
                    await session.pubsub.subscribe(key)
                except (RedisError, OSError) as exc:
                    session.broken = True
                    if not confirmed.done():
                        confirmed.set_result(False)
                    log.warning("pub/sub SUBSCRIBE failed: %s", exc)
        else:
            members.add(subscriber)
            confirmed = session.confirmed[channel]
        try:
            ok = await asyncio.wait_for(asyncio.shield(confirmed), self.subscribe_timeout_s)
        except TimeoutError:
            ok = False
        if not ok:
            await self.unsubscribe(subscriber, channel)
            raise HubUnavailable(f"could not subscribe to {channel!r}")

    async def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        session = self._session
        if session is None:
            return
        members = session.members.get(channel)
        if not members or subscriber not in members:
            return
        members.discard(subscriber)
        if members:
            return
        del session.members[channel]
        session.confirmed.pop(channel, None)
        key = keys.channel_pubsub(channel).encode()
        # Messages still in flight for this key are dropped (no members); a later subscribe
        # maps it again. Forgetting it keeps the map as small as the live channel set.
        session.channel_of.pop(key, None)
        async with session.commands:
            try:
                await session.pubsub.unsubscribe(key)
            except (RedisError, OSError) as exc:
                session.broken = True
                log.warning("pub/sub UNSUBSCRIBE failed: %s", exc)

    async def _open(self) -> _Session:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self._control_key)
        except BaseException:
            await pubsub.aclose()
            raise
        session = _Session(pubsub)
        assert pubsub.connection is not None
        pubsub.connection.register_connect_callback(session.on_reconnect)
        return session

    async def _run(self) -> None:
        while not self._stopping.is_set():
            session = self._session
            if session is None:
                try:
                    session = self._session = await self._open()
                except (RedisError, OSError) as exc:
                    log.warning("live feed: cannot connect to Redis pub/sub: %s", exc)
                    await self._pause()
                    continue
                log.info("live feed: pub/sub connected")
            try:
                await self._read(session)
                reason = "live feed reconnected; messages may have been missed"
            except (RedisError, OSError) as exc:
                reason = f"live feed lost: {exc}"
            log.warning("%s; dropping local subscribers so they resync", reason)
            await self._teardown(session, reason)
            await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.retry_delay_s)

    async def _read(self, session: _Session) -> None:
        while not session.broken:
            message = await session.pubsub.get_message(timeout=None)
            if session.broken:
                return
            if message is not None:
                self._handle(session, message)

    def _handle(self, session: _Session, message: dict[str, Any]) -> None:
        kind = message["type"]
        key = message["channel"]
        if kind == "subscribe":
            expected = session.expected.get(key)
            if expected:
                future = expected.popleft()
                if not future.done():
                    future.set_result(True)
                if not expected:
                    del session.expected[key]
            return
        if kind != "message":
            return
        channel = session.channel_of.get(key)
        members = session.members.get(channel) if channel is not None else None
        if not members:
            return
        data = message["data"]
        try:
            msg_id = int(orjson.loads(data)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("dropping malformed message on %r", key)
            return
        # One message object for every subscriber: its frames are built once (api/ws_frames.py).
        shared = SharedMessage(data.decode() if isinstance(data, bytes) else str(data))
        assert channel is not None
        for subscriber in list(members):
            try:
                subscriber.deliver(channel, msg_id, shared)
            except Exception:  # one connection's failure must not stop the others' feed
                log.exception("delivering to a subscriber of %r failed; dropping it", channel)
                subscriber.kill("internal_error", "delivery failed")

    async def _teardown(self, session: _Session, reason: str) -> None:
        if self._session is session:
            self._session = None
        session.broken = True
        for expected in session.expected.values():
            for future in expected:
                if not future.done():
                    future.set_result(False)
        session.expected.clear()
        subscribers = {s for members in session.members.values() for s in members}
        session.members.clear()
        for subscriber in subscribers:
            subscriber.kill("resync", reason)
        if session.pubsub.connection is not None:
            # The connection goes back to the pool; it must not keep reporting to this session.
            session.pubsub.connection.deregister_connect_callback(session.on_reconnect)
        with contextlib.suppress(RedisError, OSError):
            await session.pubsub.aclose()
