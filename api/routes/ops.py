"""``GET /v1/ops/lag`` (admin): consumer lag per group, topic and partition, in offsets and seconds,
with a Burrow-style status (``infra.lag_report``, docs/operations.md "Consumer lag").

The answer is the report the lag sampler stored on its last tick, so every API process answers
the same thing without touching the broker. When there is none, or it is stale (no process has
sampled for a while), the route computes one from the stored history and a fresh read.

``export_lag_gauges`` is the sampler's report hook in the API: it keeps the ``elimu_consumer_*``
gauges equal to the latest report and drops the series of partitions and groups that left it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from fastapi import APIRouter
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from api import metrics
from api.deps import PrincipalDep, StateDep
from api.errors import ApiError
from api.responses import OrjsonResponse
from infra.lag import LagConfig, read_lag_report, stored_report
from infra.lag_report import GROUP_STATUS_VALUE, LagReport, parse_ts

router = APIRouter(tags=["operations"])


@router.get(
    "/v1/ops/lag",
    responses={
        403: {"description": "not an admin"},
        503: {"description": "no stored report and the broker could not be read"},
    },
)
async def get_lag(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "consumer lag is for admins only")
    config = LagConfig.from_env()
    report = await stored_report(state.redis)
    if report is None or _age_s(report) > config.stale_after_s:
        try:
            async with asyncio.timeout(config.read_timeout_s + 1):
                fresh = await read_lag_report(
                    state.redis,
                    state.settings.kafka_bootstrap,
                    window_s=config.window_s,
                    timeout_s=config.read_timeout_s,
                )
            report = fresh.as_dict()
        except (TimeoutError, KafkaError, RedisError, OSError) as exc:
            if report is None:
                raise ApiError(
                    503, "unavailable", f"consumer offsets unavailable: {exc or type(exc).__name__}"
                ) from exc
            # A stale report (its ``updated_at`` says how stale) beats no answer.
    return OrjsonResponse(report)


def _age_s(report: dict[str, Any]) -> float:
    updated = report.get("updated_at")
    if not isinstance(updated, str):
        return math.inf
    try:
        return time.time() - parse_ts(updated)
    except ValueError:
        return math.inf


#: Label sets currently exported, so series of groups and partitions that left are removed.
_exported_partitions: set[tuple[str, str, str]] = set()
_exported_groups: set[str] = set()


def export_lag_gauges(report: LagReport) -> None:
    """Set ``elimu_consumer_lag``, ``elimu_consumer_lag_seconds`` and ``elimu_consumer_group_status``
    from ``report``; a partition whose lag in seconds is unknown shows NaN."""
    partitions: set[tuple[str, str, str]] = set()
    groups: set[str] = set()
    for group in report.groups:
        groups.add(group.group)
        metrics.CONSUMER_GROUP_STATUS.labels(group.group).set(GROUP_STATUS_VALUE[group.status])
        for p in group.partitions:
            labels = (group.group, p.topic, str(p.partition))
            partitions.add(labels)
            metrics.CONSUMER_LAG.labels(*labels).set(p.lag)
            metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(
                math.nan if p.lag_seconds is None else p.lag_seconds
            )
    for labels in _exported_partitions - partitions:
        metrics.CONSUMER_LAG.remove(*labels)
        metrics.CONSUMER_LAG_SECONDS.remove(*labels)
    for name in _exported_groups - groups:
        metrics.CONSUMER_GROUP_STATUS.remove(name)
    _exported_partitions.clear()
    _exported_partitions.update(partitions)
    _exported_groups.clear()
    _exported_groups.update(groups)
