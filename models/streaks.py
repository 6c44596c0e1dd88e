"""Streak arithmetic over days in the user's local calendar.

Days are `date.toordinal()` integers of the user's local date, so consecutive days differ by
one whatever DST does to the length of the day in between. The streak is a pure function of
the SET of active days (and of the days freezes were bought on): the walk below always visits
them in ascending order, which is what makes late and re-delivered events harmless.

Freezes are earned at milestones (at most `max_freezes` held that way) or bought with credits
(the `streak_freeze` perk, models/rewards.py), which may lift what is held up to `max_held`. A
bought freeze protects the days from its purchase on: it never mends a streak that had already
ended before it was bought.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from models.time_units import DAY_MS
from models.tz import zone

_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def local_day(ts_ms: int, tz: str) -> int:
    """The user's local calendar day of an instant; raises ValueError for an unknown zone."""
    if tz == "UTC":
        return _EPOCH_ORDINAL + ts_ms // DAY_MS
    # Whole seconds suffice: zone offsets are whole minutes, so the date changes on a second.
    return datetime.fromtimestamp(ts_ms // 1000, tz=UTC).astimezone(zone(tz)).date().toordinal()


@dataclass(frozen=True)
class StreakState:
    """The walk's running state after its last active day.

    `current` counts active days in the running streak (days covered by a freeze keep it alive
    but do not lengthen it); `freezes_used` is cumulative, including freezes lost to a gap they
    could not cover.
    """

    current: int = 0
    longest: int = 0
    freezes: int = 0
    last_active_day: int | None = None
    freezes_used: int = 0


EMPTY_STREAK = StreakState()


def extend_streak(state: StreakState, day: int, milestones: Collection[int], max_freezes: int) -> StreakState:
    """One step of the walk: `day` must be later than `state.last_active_day`.

    Exposed so the engine can append today's day in O(1) instead of re-walking the history;
    compute_streak is defined as a fold of this step, so the two can never disagree.
    """
    last = state.last_active_day
    if last is not None and day <= last:
        raise ValueError(f"extend_streak needs a day after {last}, got {day}")
    freezes, used = state.freezes, state.freezes_used
    missed = 0 if last is None else day - last - 1
    if last is None:
        current = 1
    elif missed <= freezes:
        freezes -= missed
        used += missed
        current = state.current + 1
    else:
        # The held freezes are spent trying to bridge the gap, then the streak starts over.
        used += freezes
        freezes = 0
        current = 1
    if current in milestones and freezes < max_freezes:
        # Earned freezes stop at max_freezes; bought ones above it are kept, not taken back.
        freezes += 1
    return StreakState(
        current=current,
        longest=max(state.longest, current),
        freezes=freezes,
        last_active_day=day,
        freezes_used=used,
    )


def buy_freeze(state: StreakState, day: int, max_held: int) -> StreakState:
    """One bought freeze, on the user's local `day` (on or after their last active day's walk).

    A streak that had already ended before `day` (more days missed than freezes held) ends
    first, so the new freeze covers only days from `day` on. Past `max_held` it is not kept."""
    last = state.last_active_day
    if last is not None and day - last - 1 > state.freezes:
        state = StreakState(0, state.longest, 0, None, state.freezes_used + state.freezes)
    return StreakState(
        current=state.current,
        longest=state.longest,
        freezes=min(max_held, state.freezes + 1),
        last_active_day=state.last_active_day,
        freezes_used=state.freezes_used,
    )


def compute_streak(
    active_days: Iterable[int],
    milestones: Collection[int],
    max_freezes: int,
    bought_days: Iterable[int] = (),
    max_held: int | None = None,
) -> StreakState:
    """The walk over the active days, with each bought freeze taken on its day before that
    day's activity (bought in the morning, it already covers the gap that activity closes)."""
    milestone_set = frozenset(milestones)
    held = max_freezes if max_held is None else max_held
    bought = sorted(bought_days)
    state = EMPTY_STREAK
    i = 0
    for day in sorted(set(active_days)):
        while i < len(bought) and bought[i] <= day:
            state = buy_freeze(state, bought[i], held)
            i += 1
        state = extend_streak(state, day, milestone_set, max_freezes)
    for day in bought[i:]:
        state = buy_freeze(state, day, held)
    return state


def streak_as_of(state: StreakState, today: int, max_freezes: int) -> StreakState:
    """The streak as the user should see it on `today` (their local day).

    Days strictly between the last active day and today are missed; today itself is still
    open, so not being active yet is not a miss. Nothing is stored: once the user is active
    again compute_streak reaches the same freeze arithmetic on its own.
    """
    last = state.last_active_day
    freezes = min(state.freezes, max_freezes)  # the most a user may hold (`Rules.max_held_freezes`)
    if last is None or today <= last + 1:
        return StreakState(state.current, state.longest, freezes, last, state.freezes_used)
    missed = today - last - 1
    if missed <= freezes:
        return StreakState(state.current, state.longest, freezes - missed, last, state.freezes_used + missed)
    return StreakState(0, state.longest, 0, last, state.freezes_used + freezes)


def is_streak_at_risk(state: StreakState, today: int) -> bool:
    """Active yesterday but not yet today: the moment a streak_warning helps."""
    return state.current > 0 and state.last_active_day == today - 1
