"""Quiet hours in the user's timezone: when an interrupting notification may be delivered."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo

from models.tz import local_instant_ms, zone

# ---------------------------------------------------------------------------------------------
# Quiet hours

_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def _parse_hhmm(value: object) -> time | None:
    if not isinstance(value, str):
        return None
    match = _HHMM.fullmatch(value.strip())
    return time(int(match.group(1)), int(match.group(2))) if match else None


def parse_quiet_hours(quiet_hours: object) -> tuple[time, time] | None:
    """(start, end) from ["HH:MM", "HH:MM"]; None when absent, malformed or empty (start == end)."""
    if not isinstance(quiet_hours, list | tuple) or len(quiet_hours) != 2:
        return None
    start, end = _parse_hhmm(quiet_hours[0]), _parse_hhmm(quiet_hours[1])
    if start is None or end is None or start == end:
        return None
    return start, end


def _zone_or_utc(tz: str) -> tzinfo:
    try:
        return zone(tz)
    except ValueError:
        return UTC  # profiles are validated upstream; an odd stored value must not stop delivery


def quiet_until(now_ms: int, tz: str, quiet_hours: Sequence[str] | None) -> int | None:
    """When the user's quiet window containing `now_ms` ends (epoch ms); None outside it.

    The window is `[start, end)` on the user's local clock; start > end wraps midnight. None as
    well for absent, malformed or empty quiet hours. An end already passed on the local clock's
    first reading (the repeated hour after a fall-back) means the window is over: None.
    """
    window = parse_quiet_hours(quiet_hours)
    if window is None:
        return None
    start, end = window
    tzi = _zone_or_utc(tz)
    local = datetime.fromtimestamp(now_ms // 1000, tz=UTC).astimezone(tzi)
    now_of_day = (local.hour * 3600 + local.minute * 60 + local.second) * 1000 + now_ms % 1000
    start_ms = (start.hour * 60 + start.minute) * 60_000
    end_ms = (end.hour * 60 + end.minute) * 60_000
    if start_ms < end_ms:
        if not start_ms <= now_of_day < end_ms:
            return None
        end_day = local.date()
    elif now_of_day >= start_ms:
        end_day = local.date() + timedelta(days=1)
    elif now_of_day < end_ms:
        end_day = local.date()
    else:
        return None
    until = local_instant_ms(end_day, end, tzi)
    return until if until > now_ms else None
