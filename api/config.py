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

from infra import topics


@dataclass(frozen=True)
class ApiConfig:
    #: Topic that ``POST /v1/events`` produces to (tests point it at a unique topic).
    events_topic: str = topics.BEHAVIOR_EVENTS
    #: Topic that the profile and notification-settings PUTs produce to.
    profiles_topic: str = topics.USER_PROFILES
    #: Topic a contact verification's code goes out on (the delivery services send it).
    notifications_topic: str = topics.NOTIFICATIONS
    #: Topic an unsubscribe's report goes to (the interventions analytics read it).
    outcomes_topic: str = topics.INTERVENTION_OUTCOMES
    #: Largest request body accepted; bigger ones get 413 before they are read into memory.
    max_body_bytes: int = 1024 * 1024
    #: Largest array accepted by ``POST /v1/events``.
    max_batch: int = 1000
    #: Token bucket per user on ``POST /v1/events``, counted in *events* (a batch of n costs n):
    #: sustained events per second and burst. The burst is also the largest batch a user may post,
    #: so it is at least what an offline client syncing a day of activity needs.
    #: ``rate_per_s <= 0`` switches the limit off.
    rate_per_s: float = 10.0
    rate_burst: int = 1000
    #: The same per admin principal (imports and replays post for many users at once).
    admin_rate_per_s: float = 2000.0
    admin_rate_burst: int = 20_000
    #: How long a produce may take before the request fails with 503 (the broker is unwell).
    produce_timeout_s: float = 15.0
    #: Budget for each dependency probe in ``/readyz``.
    ready_probe_timeout_s: float = 2.0
    #: A worker whose heartbeat is older than this is considered dead.
    heartbeat_max_age_s: float = 15.0
    #: A websocket that has not authenticated within this time is closed.
    ws_auth_timeout_s: float = 5.0
    #: Websockets one API process holds at once, authenticated or not; more are refused (503).
    ws_max_connections: int = 10_000
    #: Of those, sockets still waiting for their first-message auth: a small budget, so that
    #: clients that never authenticate cannot hold the process's capacity.
    ws_max_unauthenticated: int = 128
    #: Websockets one user (token ``sub``) may hold on one API process; more are refused (429).
    ws_max_connections_per_user: int = 16
    ws_max_subscriptions: int = 100
    #: Token bucket on client ops per connection (every frame counts): sustained ops per second
    #: and burst. An op over the limit is answered ``rate_limited`` and not executed.
    ws_op_rate_per_s: float = 20.0
    ws_op_burst: int = 40
    #: A connection with more refused ops than this in about ten seconds is closed (4029).
    ws_op_abuse_limit: int = 40
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
            admin_rate_per_s=float(e.get("ELIMU_API_ADMIN_RATE") or base.admin_rate_per_s),
            admin_rate_burst=int(e.get("ELIMU_API_ADMIN_BURST") or base.admin_rate_burst),
            ws_max_connections=int(e.get("ELIMU_API_WS_MAX_CONNECTIONS") or base.ws_max_connections),
            ws_max_connections_per_user=int(
                e.get("ELIMU_API_WS_MAX_PER_USER") or base.ws_max_connections_per_user
            ),
            max_body_bytes=int(e.get("ELIMU_API_MAX_BODY") or base.max_body_bytes),
        )
