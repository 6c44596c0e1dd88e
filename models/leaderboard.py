"""Leaderboard periods and the Redis sorted-set score encoding.

Periods are cut on UTC boundaries: a shared board needs one clock for everybody, whereas
streaks follow each user's own calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache

from models.time_units import DAY_MS, SECOND_MS, WEEK_MS

PERIODS = ("daily", "weekly", "all_time")

# Score = xp * 2^31 + (2^31 - 1 - seconds since 2020-01-01 UTC). A double holds integers exactly
# up to 2^53, which leaves 22 bits for xp: xp at or above 2^22 (about 4.2 million) is clamped.
_TIME_BITS = 31
_TIME_SPAN = 1 << _TIME_BITS
MAX_EXACT_XP = (1 << 22) - 1
_EPOCH_2020_S = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


#: How long period leaderboards outlive their period in Redis, so "yesterday" can still be read.
BUCKET_TTL_S = {"daily": 9 * DAY_MS // SECOND_MS, "weekly": 6 * WEEK_MS // SECOND_MS}


def live_buckets(now_ms: int) -> list[tuple[str, str]]:
    """Every (period, bucket) whose board can still exist at ``now_ms``: each period's buckets back
    to its expiry (all-time has one). What a user's erasure and export visit."""
    found: set[tuple[str, str]] = set()
    for period in PERIODS:
        ttl_ms = BUCKET_TTL_S.get(period, 0) * SECOND_MS
        for back in range(-(-ttl_ms // DAY_MS) + 1):
            found.add((period, bucket(period, now_ms - back * DAY_MS)))
    return sorted(found)


def bucket(period: str, ts_ms: int) -> str:
    """The period bucket an instant falls in: "2026-11-22", ISO week "2026-W47", or "all"."""
    if period == "all_time":
        return "all"
    return _bucket_of_day(period, ts_ms // DAY_MS)


@lru_cache(maxsize=4096)
def _bucket_of_day(period: str, utc_day: int) -> str:
    # Every instant of a UTC day shares its buckets; this runs several times per event.
    day = date.fromordinal(_EPOCH_ORDINAL + utc_day)
    if period == "daily":
        return day.isoformat()
    if period == "weekly":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    raise ValueError(f"unknown leaderboard period {period!r}; expected one of {PERIODS}")


def period_keys(ts_ms: int) -> tuple[str, ...]:
    """The "period:bucket" keys an instant's XP counts towards, in PERIODS order."""
    return _period_keys_of_day(ts_ms // DAY_MS)


@lru_cache(maxsize=4096)
def _period_keys_of_day(utc_day: int) -> tuple[str, ...]:
    # Every instant of a UTC day shares its buckets; this runs once per event on the hot path.
    ts_ms = utc_day * DAY_MS
    return tuple(f"{period}:{bucket(period, ts_ms)}" for period in PERIODS)


def encode_score(xp: int, reached_at_ms: int) -> float:
    """Higher xp ranks first; on equal xp, whoever reached it earlier ranks first.

    Redis orders ties by member name, which would favour alphabetically later user ids, so
    the time tie-break is folded into the score itself. Times before 2020 or after 2088 are
    clamped; only the tie-break loses precision there, never the xp.
    """
    xp = min(max(xp, 0), MAX_EXACT_XP)
    seconds = min(max(reached_at_ms // 1000 - _EPOCH_2020_S, 0), _TIME_SPAN - 1)
    return float(xp * _TIME_SPAN + (_TIME_SPAN - 1 - seconds))


def decode_score(score: float) -> int:
    """The xp part of an encoded score (what leaderboards display)."""
    return int(score) // _TIME_SPAN
