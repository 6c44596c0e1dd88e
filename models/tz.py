"""Time-zone lookup shared by profile validation and local-day arithmetic.

Kept apart so that "which names are acceptable time zones" has exactly one answer: a profile
that passes validation can always be converted later, and a bad name never reaches the
filesystem-backed zoneinfo loader with odd characters in it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# IANA names are short ASCII paths ("America/Argentina/Buenos_Aires", "Etc/GMT-14"). Checking the
# shape first keeps absolute paths, "..", NULs and megabyte-long strings away from zoneinfo.
_TZ_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
MAX_TZ_NAME_LEN = 64


@lru_cache(maxsize=1024)
def zone(name: str) -> tzinfo:
    """Resolve an IANA name; raises ValueError for anything zoneinfo cannot load.

    Cached because the hot path converts every event's timestamp with its user's zone.
    """
    if name == "UTC":
        return UTC
    if len(name) > MAX_TZ_NAME_LEN or not _TZ_NAME.fullmatch(name):
        raise ValueError(f"not an IANA time zone name: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError covers names of tzdata directories ("America"), which zoneinfo tries to open.
        raise ValueError(f"unknown time zone: {name!r}") from exc


def is_valid_timezone(name: str) -> bool:
    try:
        zone(name)
    except ValueError:
        return False
    return True


def _offset_s(seconds: int, tz: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(seconds, tz=UTC).astimezone(tz).utcoffset()


def local_instant_ms(day: date, wall: time, tz: tzinfo) -> int:
    """The first instant at which the local clock of `tz` reads `wall` (or later) on `day`.

    Ambiguous wall times (fall-back) give their first occurrence; wall times inside a
    spring-forward gap give the first instant after the gap, found by bisection between the two
    readings PEP 495 offers (fold=1 lies before the transition, fold=0 after it).
    """
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz, fold=0)
    seconds = int(first.timestamp())
    if datetime.fromtimestamp(seconds, tz=UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return seconds * 1000
    # A gap: the transition lies in (lo, hi]; find the first second with the offset after it.
    lo = int(naive.replace(tzinfo=tz, fold=1).timestamp())
    hi = seconds
    after = _offset_s(hi, tz)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_s(mid, tz) == after:
            hi = mid
        else:
            lo = mid
    return hi * 1000
