"""Prometheus metric objects of the API process.

They live on a registry of their own (not the global default) so that importing the worker's
metrics in the same interpreter, as the tests do, can never clash with ours, and so that
``/metrics`` exposes exactly the API's series.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "elimu_api_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "elimu_api_http_request_duration_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
WS_CONNECTIONS = Gauge(
    "elimu_api_ws_connections", "Open, authenticated websocket connections", registry=REGISTRY
)
WS_MESSAGES_SENT = Counter(
    "elimu_api_ws_messages_sent_total",
    "Websocket frames sent: kind=message for channel messages, control for replies and errors",
    ["kind"],
    registry=REGISTRY,
)
WS_COALESCED = Counter(
    "elimu_api_ws_coalesced_total",
    "Leaderboard snapshots replaced in a client's queue by a newer one before they were sent",
    registry=REGISTRY,
)
WS_DISCONNECTS = Counter(
    "elimu_api_ws_forced_disconnects_total",
    "Websocket connections closed by the server, by reason",
    ["reason"],
    registry=REGISTRY,
)
WS_REFUSED = Counter(
    "elimu_api_ws_refused_total",
    "Websocket connections refused at the handshake or at first-message auth, by reason",
    ["reason"],
    registry=REGISTRY,
)
EVENTS_ACCEPTED = Counter(
    "elimu_api_events_accepted_total", "Behavior events accepted and produced to Kafka", registry=REGISTRY
)
EVENTS_REJECTED = Counter(
    "elimu_api_events_rejected_total",
    "Behavior events refused by POST /v1/events, by reason",
    ["reason"],
    registry=REGISTRY,
)

TRACKING_IGNORED = Counter(
    "elimu_api_tracking_ignored_total",
    "Opens and clicks through tracking links set aside as a machine's (models/scanners.py), by why",
    ["kind", "why"],
    registry=REGISTRY,
)

DELIVERY_RECEIPTS = Counter(
    "elimu_api_delivery_receipts_total",
    "SMS delivery reports posted to the webhooks, by provider and outcome: reported (delivered, "
    "bounced, failed), pending, unknown (no send of that id), duplicate, or refused",
    ["provider", "outcome"],
    registry=REGISTRY,
)

WORKER_METRICS_UNAVAILABLE = Counter(
    "elimu_api_worker_metrics_unavailable_total",
    "Scrapes of /metrics that could not read the workers' snapshots from Redis",
    registry=REGISTRY,
)

# Consumer lag, set by the lag sampler (infra/lag.py) every tick in every API process: the
# process holding the sampler lock from its own reading, the others from the report it stored.
CONSUMER_LAG = Gauge(
    "elimu_consumer_lag",
    "Consumer lag in offsets (end offset minus committed offset) per group, topic and partition",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = Gauge(
    "elimu_consumer_lag_seconds",
    "Consumer lag in seconds (end-offset samples interpolated, kafka-lag-exporter style); NaN while unknown",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_GROUP_STATUS = Gauge(
    "elimu_consumer_group_status",
    "Burrow-style consumer group status: 0 OK, 1 WARN, 2 ERR (a partition STALL, STOP or REWIND)",
    ["group"],
    registry=REGISTRY,
)
