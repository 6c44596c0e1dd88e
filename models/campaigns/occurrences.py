"""When a campaign fires for a user: its occurrences in a span of stream time (`occurrences`,
`next_occurrence`) and, gated by the campaign's status, what is due (`due`, `next_due`).

Kinds
  * one_time: a single UTC instant (`schedule.at`), the same moment for everyone.
  * recurring: "daily", "weekly" (on `weekday`, 0 = Monday) or "monthly" (on `day_of_month`; a
    month shorter than it uses its last day, so "31" means "the last day" in April and February),
    at `local_time` (HH:MM) in EACH USER's time zone: 09:00 is 09:00 in Nairobi and in New York.
  * drip: a sequence of steps `offsets_days` after the user's signup (0 = the signup day), each at
    `local_time` on the user's LOCAL date signup-date + offset. A day-0 step whose local time had
    already passed when the user signed up fires at the signup instant instead (otherwise anyone
    signing up after 09:00 would silently miss the welcome step). No signup, no drip.

Stream time
  Nothing here reads a clock. A campaign is evaluated on the worker that owns the user, and an
  occurrence fires when the event-time watermark passes its `at_ms`: the caller asks for the
  occurrences in (last look, watermark]. Because they are a pure function of the campaign, the
  user's zone and signup, and the two bounds, a replay of the history fires exactly the same
  occurrences as the live run, and splitting a span anywhere gives the same occurrences as
  the whole span (the properties the tests check). `due` adds the campaign's own gating: only an
  active campaign fires, and only occurrences after its latest activation (`activated_ms`, the
  admin's clock when it was activated or resumed), so what a draft or paused campaign skipped is
  not caught up later, in a replay or live.

Idempotency
  Each occurrence has a `key`, stable across replays: "once" (one_time), the user's local date
  "2026-11-22" (recurring) or "d3" (the drip step's offset). The delivery key is
  f"campaign:{campaign_id}:{key}"; keying recurring occurrences by local date also means a user
  who changes time zone gets at most one per local date. Campaign ids are restricted to
  [A-Za-z0-9._-] so that key splits unambiguously and is safe in URLs and Redis keys.

DST
  Local times are converted with the user's IANA zone day by day. A local time that does not
  exist (the spring-forward gap: 02:30 on 2026-03-08 in New York) fires at the first valid
  instant after it, the end of the gap (03:00 EDT); an ambiguous one (fall-back: 01:30 on
  2026-11-01 happens twice) fires once, at its first occurrence (fold=0, the daylight one).
  Iteration is over local days (weekly jumps a week, monthly a month), never minutes, and
  `occurrences` returns at most MAX_OCCURRENCES (400, time-ordered): a caller that needs more asks
  again from the last one's `at_ms`.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, tzinfo
from itertools import islice

from models.campaigns.records import Campaign, Occurrence, Schedule
from models.events import MAX_TS_MS
from models.streaks import local_day
from models.time_units import DAY_MS
from models.tz import local_instant_ms, zone

MAX_OCCURRENCES = 400

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_ORDINAL = date.max.toordinal()


def _epoch_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _minutes(local_time: str) -> int:
    hours, minutes = local_time.split(":")
    return int(hours) * 60 + int(minutes)


def _local_instant(ordinal: int, minute: int, tz: tzinfo) -> int | None:
    """Epoch ms of wall time `minute` on local day `ordinal` (DST rules in the module docstring);
    None beyond year 9999."""
    try:
        return local_instant_ms(date.fromordinal(ordinal), time(minute // 60, minute % 60), tz)
    except (OverflowError, ValueError):
        return None


def _utc_ordinal(ms: int) -> int:
    return _EPOCH_ORDINAL + ms // DAY_MS


def _recurring_days(s: Schedule, first: int, last: int) -> Iterator[int]:
    """Ordinals in first..last on which a recurring schedule fires, in order."""
    if s.every == "daily":
        yield from range(first, last + 1)
    elif s.every == "weekly":
        assert s.weekday is not None
        # date.fromordinal(1) is a Monday, so an ordinal's weekday is (ordinal - 1) % 7.
        yield from range(first + (s.weekday - (first - 1)) % 7, last + 1, 7)
    elif s.every == "monthly":
        assert s.day_of_month is not None
        day = date.fromordinal(first)
        year, month = day.year, day.month
        while year <= date.max.year:
            length = calendar.monthrange(year, month)[1]
            ordinal = date(year, month, min(s.day_of_month, length)).toordinal()
            if ordinal > last:
                return
            if ordinal >= first:
                yield ordinal
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _iter_occurrences(
    c: Campaign, tz: str, signup_ms: int | None, low: int, high: int
) -> Iterator[Occurrence]:
    """Occurrences with low < at_ms <= high, in time order (bounds already include the window)."""
    s = c.schedule
    if low >= high:
        return
    if s.kind == "one_time":
        if s.at_ms is not None and low < s.at_ms <= high:
            yield Occurrence(c.id, "once", s.at_ms)
        return
    zone_info, minute = zone(tz), _minutes(s.local_time)
    if s.kind == "drip":
        if signup_ms is None:
            return
        signup_day = local_day(signup_ms, tz)
        for offset in s.offsets_days:
            if signup_day + offset > _MAX_ORDINAL:
                return
            instant = _local_instant(signup_day + offset, minute, zone_info)
            if instant is None or max(instant, signup_ms) > high:
                return  # later steps are later still
            at_ms = max(instant, signup_ms)  # day 0 after its local time: at signup
            if at_ms > low:
                yield Occurrence(c.id, f"d{offset}", at_ms)
        return
    # Local dates are within a day of UTC dates (offsets are under 24 h), hence the margins.
    first, last = max(1, _utc_ordinal(low) - 1), min(_MAX_ORDINAL, _utc_ordinal(high) + 1)
    for ordinal in _recurring_days(s, first, last):
        moment = _local_instant(ordinal, minute, zone_info)
        if moment is None or moment > high:
            return  # instants increase with the local date
        if moment > low:
            yield Occurrence(c.id, date.fromordinal(ordinal).isoformat(), moment)


def _bounds(c: Campaign, start_ms: int, end_ms: int) -> tuple[int, int]:
    """(low, high] narrowed to the campaign's inclusive window and to representable instants."""
    low = max(start_ms, -1 if c.start_ms is None else c.start_ms - 1)
    high = min(end_ms, MAX_TS_MS if c.end_ms is None else c.end_ms)
    return low, high


def occurrences(
    c: Campaign, tz: str, signup_ms: int | None, start_ms: int, end_ms: int, limit: int = MAX_OCCURRENCES
) -> list[Occurrence]:
    """The user's occurrences with start_ms < at_ms <= end_ms inside the campaign's window, in time
    order, at most `limit` (capped at MAX_OCCURRENCES): the earliest ones, so a caller that gets a
    full list continues from the last `at_ms`. Ignores the status (see `due`); `tz` must be an
    IANA name (ValueError otherwise; only one_time ignores it)."""
    low, high = _bounds(c, start_ms, end_ms)
    return list(islice(_iter_occurrences(c, tz, signup_ms, low, high), max(0, min(limit, MAX_OCCURRENCES))))


def next_occurrence(c: Campaign, tz: str, signup_ms: int | None, after_ms: int) -> int | None:
    """The first occurrence's at_ms > after_ms, or None (one_time passed, drip exhausted or
    without a signup, end passed); when to look at this user again. Ignores the status."""
    low, high = _bounds(c, after_ms, MAX_TS_MS)
    first = next(_iter_occurrences(c, tz, signup_ms, low, high), None)
    return None if first is None else first.at_ms


def due(c: Campaign, tz: str, signup_ms: int | None, since_ms: int | None, until_ms: int) -> list[Occurrence]:
    """What to fire for a user when the watermark reaches `until_ms`, having looked up to
    `since_ms` before (None: never looked). Only an active campaign fires, and only occurrences
    after its latest activation (module docstring); the caller then checks `targets` and sends
    each with its idempotency key."""
    if c.status != "active" or c.activated_ms is None:
        return []
    low = c.activated_ms if since_ms is None else max(since_ms, c.activated_ms)
    return occurrences(c, tz, signup_ms, low, until_ms)


def next_due(c: Campaign, tz: str, signup_ms: int | None, after_ms: int) -> int | None:
    """`next_occurrence` with `due`'s gating: None unless active, never at or before activation."""
    if c.status != "active" or c.activated_ms is None:
        return None
    return next_occurrence(c, tz, signup_ms, max(after_ms, c.activated_ms))
