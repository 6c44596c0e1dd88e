"""When a campaign fires for a user: its occurrences in a span of stream time (`occurrences`,
`next_occurrence`) and, gated by the campaign's status, what is due (`due`, `next_due`).

Kinds
  * one_time: a single UTC instant (`schedule.at`), the same moment for everyone.
  * recurring: "daily", "weekly" (on one `weekday` or several `weekdays`, 0 = Monday) or
    "monthly" (on `day_of_month`; a month shorter than it uses its last day, so "31" means "the
    last day" in April and February), at `local_time` (HH:MM) in EACH USER's time zone: 09:00 is
    09:00 in Nairobi and in New York.
  * drip: a sequence of steps after the user's signup. A step `offset_days` after it (0 = the
    signup day) fires at `local_time` on the user's LOCAL date signup-date + offset; a day-0 step
    whose local time had already passed when the user signed up fires at the signup instant
    instead (otherwise anyone signing up after 09:00 would silently miss the welcome step). A
    step `delay_hours` after it fires exactly that long after the signup instant. Steps fire in
    time order, each with its own template and type when it names them. No signup, no drip.

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
  "2026-11-22" (recurring), "d3" / "h2" (the drip step's delay) or "s-<id>" (an admin's manual
  send, `sends_due`). The delivery key is
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
import heapq
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, tzinfo
from itertools import islice

from models.campaigns.records import Campaign, DripStep, ManualSend, Occurrence, Schedule
from models.events import MAX_TS_MS
from models.streaks import local_day
from models.time_units import DAY_MS, HOUR_MS
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
        days = s.days_of_week
        assert days
        # date.fromordinal(1) is a Monday, so an ordinal's weekday is (ordinal - 1) % 7: a week
        # at a time from the Monday on or before `first`, its days in order.
        for monday in range(first - (first - 1) % 7, last + 1, 7):
            for weekday in days:
                if first <= monday + weekday <= last:
                    yield monday + weekday
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


def _step_instant(step: DripStep, signup_ms: int, signup_day: int, minute: int, tz: tzinfo) -> int | None:
    """When a drip step fires for a user who signed up at `signup_ms` (local day `signup_day`);
    None beyond year 9999."""
    if step.delay_hours is not None:
        at_ms = signup_ms + step.delay_hours * HOUR_MS
        return at_ms if at_ms <= MAX_TS_MS else None
    offset = step.offset_days or 0
    if signup_day + offset > _MAX_ORDINAL:
        return None
    instant = _local_instant(signup_day + offset, minute, tz)
    return None if instant is None else max(instant, signup_ms)  # day 0 after its local time: at signup


def _drip_sequence(
    steps: Sequence[tuple[int, DripStep]], signup_ms: int, signup_day: int, minute: int, tz: tzinfo, high: int
) -> Iterator[tuple[int, int, DripStep]]:
    """(at_ms, listed position, step) of `steps`, whose instants do not decrease, up to `high`."""
    for index, step in steps:
        at_ms = _step_instant(step, signup_ms, signup_day, minute, tz)
        if at_ms is None or at_ms > high:
            return  # later steps are later still
        yield at_ms, index, step


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
        # Day steps fire in the order of their offsets and hour steps in the order of their
        # delays, so each sequence stops at its first step past `high`; merged in time order
        # (a tie in the order the admin listed the steps).
        steps = list(enumerate(s.drip_steps))
        by_days = sorted((i for i in steps if i[1].delay_hours is None), key=lambda i: i[1].offset_days or 0)
        by_hours = sorted(
            (i for i in steps if i[1].delay_hours is not None), key=lambda i: i[1].delay_hours or 0
        )
        sequences = [
            _drip_sequence(seq, signup_ms, signup_day, minute, zone_info, high) for seq in (by_days, by_hours)
        ]
        for at_ms, _, step in heapq.merge(*sequences):
            if at_ms > low:
                yield Occurrence(c.id, step.key, at_ms, step.intervention, step.template)
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


def next_run(c: Campaign, now_ms: int) -> int | str | None:
    """What the admin routes show as a campaign's next run after `now_ms`: the instant of its next
    occurrence for a user in UTC (a recurring campaign fires at its local time in each user's
    zone, so the instant differs per zone), "per user" for a drip that can still fire (it depends
    on each user's signup), or None when it will not fire (not active, or past its end)."""
    if c.status != "active" or c.activated_ms is None:
        return None
    if c.schedule.kind == "drip":
        return "per user" if c.end_ms is None or c.end_ms > now_ms else None
    return next_due(c, "UTC", None, now_ms)


def sends_due(
    c: Campaign, user_id: str, since_ms: int | None, until_ms: int
) -> list[tuple[ManualSend, Occurrence]]:
    """The campaign's manual sends (`models.campaigns.sends`) to fire for `user_id` when the
    watermark reaches `until_ms`, having looked up to `since_ms` (None: never looked): each send
    with since < at_ms <= until that is for everyone it targets or for this user, oldest first,
    with its occurrence (key "s-<id>", the campaign's type and template). A send is an admin's
    explicit act: it fires whatever the campaign's status, schedule and window, and the caller
    checks the send's audience (`target`, or the campaign's when it has neither target nor user)."""
    low = -1 if since_ms is None else since_ms
    return [
        (send, Occurrence(c.id, send.key, send.at_ms))
        for send in sorted(c.sends, key=lambda s: (s.at_ms, s.id))
        if low < send.at_ms <= until_ms and (send.user_id is None or send.user_id == user_id)
    ]


def next_send(c: Campaign, user_id: str, after_ms: int) -> int | None:
    """The first manual send for `user_id` (`sends_due`) after `after_ms`, or None."""
    return min(
        (s.at_ms for s in c.sends if s.at_ms > after_ms and (s.user_id is None or s.user_id == user_id)),
        default=None,
    )
