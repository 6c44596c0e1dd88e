"""`elimu lag`: consumer lag per group, topic and partition, in offsets and seconds, with a status.

The offsets are read fresh from the broker. Lag in seconds and the status need history: when Redis
is reachable the API's lag sampler has been keeping it (``infra.lag``) and the table uses it; when
it is not (or no API has been sampling), the command takes two samples a few seconds apart itself,
which is enough to estimate seconds but not to judge a status (that takes a full window), and says
so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from infra.lag import LagConfig, load_history, read_offsets
from infra.lag_report import LagReport, Snapshot, build_report, format_ts
from infra.redis_conn import connect
from infra.settings import Settings

#: Spacing of the two samples taken without a sampler history.
OWN_SAMPLE_GAP_S = 3.0


async def _history(redis_url: str | None, max_age_s: float) -> tuple[list[Snapshot], str | None]:
    """The sampler's history when Redis answers and the history is recent; else why not."""
    if not redis_url:
        return [], "Redis is not configured"
    redis = connect(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        history = await load_history(redis)
    except (RedisError, OSError) as exc:
        return [], f"Redis is unreachable ({exc or type(exc).__name__})"
    finally:
        await redis.aclose()
    if not history:
        return [], "no sampler history in Redis (no API is running)"
    if time.time() - history[-1].ts_s > max_age_s:
        return [], f"the sampler history in Redis stopped at {format_ts(history[-1].ts_s)}"
    return history, None


def collect(
    settings: Settings,
    config: LagConfig | None = None,
    read: Callable[[str], Snapshot] = read_offsets,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[LagReport, str]:
    """The report and a line saying where its seconds and statuses come from."""
    config = config or LagConfig.from_env()
    bootstrap = settings.kafka_bootstrap
    history, why_not = asyncio.run(_history(settings.redis, config.stale_after_s))
    if history:
        fresh = read(bootstrap)
        series = [*(s for s in history if s.ts_s < fresh.ts_s), fresh]
        span = series[-1].ts_s - series[0].ts_s
        source = (
            f"seconds and status from the lag sampler's history in Redis "
            f"({len(series)} samples over {span:.0f} s)"
        )
        return build_report(series, config.window_s), source
    first = read(bootstrap)
    sleep(OWN_SAMPLE_GAP_S)
    second = read(bootstrap)
    source = (
        f"{why_not}: took two samples {OWN_SAMPLE_GAP_S:.0f} s apart instead; lag in seconds is "
        f"estimated from them, status needs {config.window_s:.0f} s of history (shown as '-')"
    )
    return build_report([first, second], config.window_s), source


def render(report: LagReport) -> list[str]:
    if not report.groups:
        return ["no consumer group has committed offsets yet"]
    header = (
        f"{'group':<24} {'topic':<36} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8} "
        f"{'lag_s':>9} {'status':<7}"
    )
    lines = [header, "-" * len(header)]
    for g in report.groups:
        for p in g.partitions:
            status = p.status.value if p.complete else "-"
            lines.append(
                f"{g.group:<24} {p.topic:<36} {p.partition:>4} {p.committed:>10} {p.end:>10} {p.lag:>8} "
                f"{_seconds(p.lag_seconds):>9} {status:<7}"
            )
    lines.append("")
    lines.append(f"{'group':<24} {'status':<7} {'lag':>10} {'lag_s':>9}")
    for g in report.groups:
        status = g.status.value if g.complete else "-"
        lines.append(f"{g.group:<24} {status:<7} {g.lag:>10} {_seconds(g.lag_seconds):>9}")
    return lines


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def print_lag(settings: Settings) -> int:
    report, source = collect(settings)
    for line in render(report):
        print(line)
    if report.groups:
        print(f"\nas of {format_ts(report.ts_s)}; {source}")
    return 0
