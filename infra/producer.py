"""The JSON Kafka producer of the API (``POST /v1/events``, commands, profiles) and of the
delivery services (outcome events, dead letters).

It starts lazily and retries its start on the next use, so the API comes up (and answers
``/healthz``) while the broker is still starting or briefly gone; ingest then fails with 503
instead of the process dying. ``acks="all"`` because a 202 promises the event is durable in
Kafka; a small linger batches the records of one request (and of concurrent requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from infra.kafka_auth import client_security
from infra.signing import RecordSigner

log = logging.getLogger(__name__)


class ProducerUnavailable(Exception):
    """The broker could not be reached or did not acknowledge in time."""


def _key(value: str) -> bytes:
    return value.encode("utf-8")


class EventProducer:
    """Produces JSON records; records for the engine's internal topics (commands, campaigns) are
    signed with ``signer`` (infra/signing.py), without which the workers refuse them."""

    def __init__(
        self,
        bootstrap: str,
        *,
        signer: RecordSigner | None = None,
        linger_ms: int = 5,
        request_timeout_ms: int = 10_000,
    ) -> None:
        self.bootstrap = bootstrap
        self._signer = signer
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Try to start now; a failure is logged and retried on first use."""
        try:
            await self._ensure()
        except ProducerUnavailable as exc:
            log.warning("Kafka producer not started yet: %s", exc)

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=self._linger_ms,
                request_timeout_ms=self._request_timeout_ms,
                **client_security(),
            )
            try:
                await producer.start()
            except BaseException as exc:
                # A failed (or timed-out) start leaves the client half-open; stop it, and retry
                # later with a fresh instance.
                with contextlib.suppress(Exception):
                    await producer.stop()
                if isinstance(exc, Exception):
                    raise ProducerUnavailable(f"cannot connect to Kafka at {self.bootstrap}: {exc}") from exc
                raise
            self._producer = producer
            return producer

    async def send_all(self, topic: str, records: Sequence[tuple[str, Any]], timeout_s: float) -> None:
        """Produce ``(key, value)`` records and wait until the broker acknowledged every one.

        On failure some records may already be written; that is safe because ``event_id`` makes
        a retried request idempotent downstream (CONTRACT.md §4).
        """
        producer = await self._ensure()
        try:
            async with asyncio.timeout(timeout_s):
                futures = [await self._send(producer, topic, key, value) for key, value in records]
                await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise ProducerUnavailable(f"Kafka did not acknowledge within {timeout_s}s") from exc
        except Exception as exc:
            raise ProducerUnavailable(f"Kafka produce failed: {exc}") from exc

    async def _send(self, producer: AIOKafkaProducer, topic: str, key: str, value: Any) -> Any:
        key_bytes = _key(key)
        # A None value is a tombstone (deleting a compacted key), not the JSON `null`.
        value_bytes = None if value is None else orjson.dumps(value)
        headers = self._signer.headers(topic, key_bytes, value_bytes) if self._signer else []
        return await producer.send(topic, value=value_bytes, key=key_bytes, headers=headers or None)

    async def probe(self, topic: str) -> dict[str, Any]:
        """Readiness check: the broker answers a metadata request and ``topic`` exists.

        Asks for all-topic metadata rather than for ``topic`` itself: brokers with topic
        auto-creation (Tansu) would otherwise create it with the wrong partition count.
        """
        producer = await self._ensure()
        cluster = await producer.client.fetch_all_metadata()
        brokers = len(cluster.brokers())
        has_topic = topic in cluster.topics()
        return {
            "ok": brokers > 0 and has_topic,
            "brokers": brokers,
            "topic": topic,
            "topic_exists": has_topic,
        }

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()
