"""Worker metrics relayed through Redis to the API's ``/metrics``.

Workers are many and move (scale-out, restarts); operators want one scrape target that shows
them all. Each worker writes its Prometheus text to a Redis hash every few seconds; the API
merges the snapshots of live workers (heartbeat younger than ``max_age_s``) into its own output,
with a ``worker`` label on every sample. Per-worker ``/metrics`` pages stay available for a
Prometheus that scrapes workers directly (docker-compose does).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from infra import keys
from infra.redis_conn import RedisClient


async def publish_snapshot(redis: RedisClient, worker_id: str, registry: CollectorRegistry) -> None:
    await redis.hset(keys.WORKER_METRICS, worker_id, generate_latest(registry))


def merge_snapshots(snapshots: dict[str, str]) -> list[Metric]:
    """One family per metric name, each sample labelled with the worker it came from."""
    families: dict[str, Metric] = {}
    for worker_id, text in sorted(snapshots.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples.extend(
                Sample(s.name, {**s.labels, "worker": worker_id}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            )
    return list(families.values())


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def render_live_workers(redis: RedisClient, max_age_s: float) -> bytes:
    """Prometheus text for every worker (and delivery service) whose heartbeat is younger than
    ``max_age_s``."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.WORKER_METRICS)
        pipe.hgetall(keys.WORKER_HEARTBEATS)
        pipe.hgetall(keys.SERVICE_HEARTBEATS)
        raw_snapshots, raw_beats, raw_services = await pipe.execute()
    raw_beats = {**raw_beats, **raw_services}
    now = time.time()
    live = {k.decode() for k, v in raw_beats.items() if now - float(v) <= max_age_s}
    snapshots = {k.decode(): v.decode() for k, v in raw_snapshots.items() if k.decode() in live}
    if not snapshots:
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merge_snapshots(snapshots)))
    return generate_latest(registry)
