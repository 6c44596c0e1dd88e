"""Worker metric snapshots merged into one Prometheus exposition, against a real Redis."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from infra import keys
from infra.metrics_relay import publish_snapshot, render_live_workers


def _registry(processed: int) -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("elimu_events_processed_total", "x", ["agent"], registry=reg).labels("engagement").inc(processed)
    Histogram("elimu_processing_latency_seconds", "y", registry=reg).observe(0.02)
    return reg


async def test_live_workers_are_merged_with_a_worker_label_and_dead_ones_left_out(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        now = int(time.time())
        await redis.hset(keys.WORKER_HEARTBEATS, mapping={"w1": now, "w2": now, "dead": now - 3600})
        for worker, n in (("w1", 5), ("w2", 7), ("dead", 100)):
            await publish_snapshot(redis, worker, _registry(n))

        text = (await render_live_workers(redis, max_age_s=15)).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        processed = {
            s.labels["worker"]: s.value
            for s in families["elimu_events_processed"].samples
            if s.name == "elimu_events_processed_total"
        }
        assert processed == {"w1": 5.0, "w2": 7.0}
        # One family per name (valid exposition), histograms intact.
        assert text.count("# TYPE elimu_processing_latency_seconds histogram") == 1
        counts = [
            s for s in families["elimu_processing_latency_seconds"].samples if s.name.endswith("_count")
        ]
        assert sorted(s.labels["worker"] for s in counts) == ["w1", "w2"]
    finally:
        await redis.aclose()


async def test_no_live_worker_renders_nothing(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        assert await render_live_workers(redis, max_age_s=15) == b""
    finally:
        await redis.aclose()
