"""Tunables of the HTTP/websocket layer.

They are separate from ``infra.settings.Settings`` because only the API process reads them and
tests need to shrink them (short auth timeouts, tiny rate limits) without touching the shared
settings. Every value has a production default; the few an operator may want to change are read
from optional ``ELIMU_API_*`` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiConfig:
    #: Topic that ``POST /v1/events`` produces to (tests point it at a unique topic).
    events_topic: str = "behavior-events"
    #: Largest request body accepted; bigger ones get 413 before they are read into memory.
    max_body_bytes: int = 1024 * 1024
    #: Largest array accepted by ``POST /v1/events``.
    max_batch: int = 1000
    #: Token bucket per principal on ``POST /v1/events``: sustained requests per second and burst.
    #: ``rate_per_s <= 0`` switches the limit off.
    rate_per_s: float = 50.0
    rate_burst: int = 100
    #: How long a produce may take before the request fails with 503 (the broker is unwell).
    produce_timeout_s: float = 15.0
    #: Budget for each dependency probe in ``/readyz``.
    ready_probe_timeout_s: float = 2.0
    #: A worker whose heartbeat is older than this is considered dead.
    heartbeat_max_age_s: float = 15.0
    #: A websocket that has not authenticated within this time is closed.
    ws_auth_timeout_s: float = 5.0
    ws_max_subscriptions: int = 100
    #: Largest client frame; the server's own frames are bounded by what the workers publish.
    ws_max_message_bytes: int = 4096
    #: Channel messages waiting for one slow client before it is disconnected.
    ws_queue_size: int = 1000
    #: How long one frame may take to go out before the client counts as stuck.
    ws_send_timeout_s: float = 10.0
    #: How long a subscribe waits for Redis to confirm the pub/sub subscription.
    ws_subscribe_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        e = os.environ if env is None else env
        base = cls()
        return cls(
            rate_per_s=float(e.get("ELIMU_API_RATE") or base.rate_per_s),
            rate_burst=int(e.get("ELIMU_API_BURST") or base.rate_burst),
            max_body_bytes=int(e.get("ELIMU_API_MAX_BODY") or base.max_body_bytes),
        )
