"""The delivery service's Prometheus metrics, relayed to the API's /metrics like a worker's
(infra/metrics_relay.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Counter(
    "elimu_deliveries_total",
    "Sends by channel and result (sent, delivered, bounced, failed) and the failure's reason",
    ["channel", "result", "reason"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "elimu_delivery_attempts_total",
    "Attempts at a send: ok, or a transient or permanent failure",
    ["channel", "outcome"],
    registry=REGISTRY,
)
SUPPRESSED = Counter(
    "elimu_delivery_suppressed_total",
    "Sends not made because the user turned the channel or the notification's kind off since",
    ["channel"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "elimu_delivery_duplicates_total",
    "Redelivered notifications whose send had already happened (skipped)",
    ["channel"],
    registry=REGISTRY,
)
SEND_SECONDS = Histogram(
    "elimu_delivery_send_seconds",
    "Time a provider took to accept a send",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "elimu_dead_letters_total",
    "Messages sent to dead-letter, by source topic and reason",
    ["topic", "reason"],
    registry=REGISTRY,
)
RECEIPTS = Counter(
    "elimu_delivery_receipts_total",
    "Providers' later words on sends (bounces by mail; docs/notifications.md): reported "
    "(delivered, bounced, failed), pending, unknown, duplicate, refused, or sends not_indexed",
    ["channel", "outcome"],
    registry=REGISTRY,
)
PARKED = Counter(
    "elimu_delivery_parked_total",
    "Sends held back because the user was in their quiet hours when they were due (sent after)",
    ["channel"],
    registry=REGISTRY,
)
