"""Time-zone lookup shared by profile validation and local-day arithmetic.

Kept apart so that "which names are acceptable time zones" has exactly one answer: a profile
that passes validation can always be converted later, and a bad name never reaches the
filesystem-backed zoneinfo loader with odd characters in it.
"""

from __future__ import annotations

import re
from datetime import UTC, tzinfo
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
