"""Worker metrics (Prometheus conventions: base units, ``_total`` counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EVENTS_PROCESSED = Counter(
    "elimu_events_processed_total",
    "Input messages processed, by agent and topic",
    ["agent", "topic"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "elimu_events_duplicate_total",
    "Events skipped because their event_id was already applied",
    ["agent"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "elimu_dead_letters_total",
    "Messages sent to dead-letter, by source topic and reason",
    ["topic", "reason"],
    registry=REGISTRY,
)
MISROUTED = Counter(
    "elimu_misrouted_total",
    "Messages re-routed to the partition that owns their key",
    ["topic"],
    registry=REGISTRY,
)
PROCESSING_LATENCY = Histogram(
    "elimu_processing_latency_seconds",
    "Time from a message's Kafka timestamp to its effects being written (state, Redis, pushes)",
    ["agent"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_DURATION = Histogram(
    "elimu_batch_duration_seconds",
    "Wall time to process one batch",
    ["agent"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "elimu_batch_size",
    "Messages per processed batch",
    ["agent"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    registry=REGISTRY,
)
SERVING_REBUILDS = Counter(
    "elimu_serving_rebuilds_total", "Times this worker re-projected its state into Redis", registry=REGISTRY
)
USERS_ERASED = Counter(
    "elimu_users_erased_total", "Users erased on request (DELETE /v1/users/{id})", registry=REGISTRY
)
WORKER_STALLED = Gauge(
    "elimu_worker_stalled_seconds",
    "How long this worker's oldest batch has been in flight past the stall threshold (0 = progressing)",
    registry=REGISTRY,
)
USERS_IN_STATE = Gauge("elimu_users_in_state", "Users held in this worker's state table", registry=REGISTRY)
SERVING_ERRORS = Counter(
    "elimu_serving_errors_total",
    "Failed Redis writes of the serving view (every kind; see elimu_serving_failures_total)",
    registry=REGISTRY,
)
SERVING_FAILURES = Counter(
    "elimu_serving_failures_total",
    "Failed Redis writes of the serving view by kind (connection, timeout, readonly, busy, "
    "noscript, oom: retried; wrongtype, response, data: skipped, never retried) and action",
    ["kind", "action"],
    registry=REGISTRY,
)
INPUT_OFFSET_GAPS = Counter(
    "elimu_input_offset_gaps_total",
    "Jumps in consumed offsets (expected on compacted topics and after transaction markers; "
    "anywhere else they mean skipped records)",
    ["topic"],
    registry=REGISTRY,
)
MATCH_ALERTS = Counter(
    "elimu_match_alerts_total", "Job match alerts sent (one per user and job)", registry=REGISTRY
)
MARKET_PULSES = Counter(
    "elimu_market_pulses_total", "Market pulses published (at most one per second)", registry=REGISTRY
)
RISK_SCORES = Counter(
    "elimu_risk_scores_total",
    "Drop-off risk scores computed, by trigger (an event, or the stream-time sweep)",
    ["trigger"],
    registry=REGISTRY,
)
RISK_LABELS = Counter(
    "elimu_risk_labels_total",
    "Risk labels resolved on user partitions (1 = dropped: horizon passed; 0 = seen again)",
    ["label"],
    registry=REGISTRY,
)
RISK_SWEEP_DUE = Gauge(
    "elimu_risk_sweep_due",
    "Users on this worker's sweep agenda (re-score or label deadline)",
    registry=REGISTRY,
)
BROADCAST_APPLIED = Counter(
    "elimu_broadcast_applied_total",
    "Records of elimu-broadcast this worker applied, by kind (campaign, template, stats, model)",
    ["kind"],
    registry=REGISTRY,
)
RISK_MODEL_LABELS = Gauge(
    "elimu_risk_model_labels",
    "Labels the risk model has learnt (the trainer's count; also the broadcast model's version)",
    registry=REGISTRY,
)
RISK_AUC = Gauge(
    "elimu_risk_roc_auc",
    "Exact prequential ROC AUC over the last resolved labels: the online model, and the "
    "recency-only baseline on the same labels",
    ["model"],
    registry=REGISTRY,
)
RISK_BRIER = Gauge(
    "elimu_risk_brier",
    "Prequential Brier score of the online risk model (lower is better)",
    registry=REGISTRY,
)
NOTIFICATIONS_SENT = Counter(
    "elimu_notifications_sent_total",
    "Interventions delivered (published on `notifications`), by type and first channel",
    ["type", "channel"],
    registry=REGISTRY,
)
