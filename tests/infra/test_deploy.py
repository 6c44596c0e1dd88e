"""The production compose file and its dashboard stay true to the code (nothing here can run
Docker: these checks are what keeps them correct by reading)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import yaml

from api.metrics import REGISTRY as API_REGISTRY
from streams.metrics import REGISTRY as WORKER_REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def metric_names() -> set[str]:
    names: set[str] = set()
    for registry in (API_REGISTRY, WORKER_REGISTRY):
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    # Families with labels have no samples until first use; their sample names follow the type.
    return names | {f"{n}_total" for n in names} | {f"{n}_bucket" for n in names}


def test_every_dashboard_query_names_a_metric_the_engine_exports() -> None:
    dashboard: dict[str, Any] = orjson.loads((ROOT / "deploy/grafana/dashboards/elimu.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\belimu_[a-z_]+", e)}
    assert used, "the dashboard queries no elimu metric"
    assert used <= metric_names(), f"unknown metrics: {sorted(used - metric_names())}"
    # Lag in offsets and seconds, throughput, p99 latency, dead letters, connections (issue 5).
    for needed in (
        "elimu_consumer_lag",
        "elimu_consumer_lag_seconds",
        "elimu_events_processed_total",
        "elimu_processing_latency_seconds_bucket",
        "elimu_dead_letters_total",
        "elimu_api_ws_connections",
    ):
        assert needed in used


def test_compose_mounts_exist_and_prometheus_scrapes_the_api() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "api", "prometheus", "grafana"} <= set(services)
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == ["api:8000"]
