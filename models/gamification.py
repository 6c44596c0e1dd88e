"""The engagement engine: folds one behaviour event into a user's state and reports what changed.

Design constraints, all coming from at-least-once delivery of out-of-order events:

* Idempotent: event ids applied within the dedup window are remembered; a repeat changes
  nothing. An event older than (newest event time − window) is refused as `too_late`, because
  its id may already have been forgotten.
* Order independent: for a fixed time zone, the same set of events, in any order, ends with
  the same xp, active days, streak, badges, counters and all-time score. That is why the daily
  cap limits the SUM of a day's action XP (min(cap, Σ) whatever the order), once-only actions
  have no bonuses and skip the cap, level bonuses are paid for every level at or below the
  current one, and the leaderboard tie-break time is the newest event time of any event the
  rules know (not of the ones that happened to earn XP after the cap). Which daily/weekly
  bucket receives a daily-first, badge or level bonus does depend on order (it goes to the
  event that triggered it). Known limit: filling in a missed day can shorten the longest
  streak (it changes which milestones grant freezes), so a longest_streak badge (or recurring
  reward, models/achievements.py) can depend on order in rare histories; badges are never
  revoked, and a recurring reward never pays the same multiple twice.
* Cheap per event: dictionary updates only; the streak is re-walked only when a day is added
  before the newest active day, and bounded maps are pruned only when they gain a key.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
from array import array
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from models.achievements import pay_recurring
from models.boards import DEFAULT_SEAT, BoardSeat, listing_of
from models.events import BehaviorEvent, InvalidEvent, UserProfile, format_ts
from models.leaderboard import bucket, period_keys
from models.levels import level_for_xp, level_progress
from models.rules import BadgeDef, Rules, XpRule
from models.stats import MIN_CATEGORY_SESSIONS, WeeklyStats
from models.streaks import EMPTY_STREAK, StreakState, compute_streak, extend_streak, local_day, streak_as_of
from models.time_units import DAY_MS
from models.tz import is_valid_timezone

STATE_VERSION = 2
#: Version 1 kept raw event ids in `seen`; it is read and converted (see `UserState.from_dict`).
_V1 = 1
PERFECT_SCORE = 100
# Bounds on what event props can make a user's state grow by.
MAX_CATEGORIES = 32
MAX_CATEGORY_LEN = 64
MAX_SCORE = 1_000_000
MAX_EVENT_DURATION_S = 86_400
# Minimum retention of the per-day / per-week maps, relative to the newest key (see UserState).
PRACTICE_DAYS_KEPT = 7
DAILY_BUCKETS_KEPT = 8
WEEKLY_BUCKETS_KEPT = 5

#: Event-id digests remembered per user (16 bytes each encoded: ~87 KB of changelog at most).
#: A user who sends more within the dedup window moves their own dedup floor forward instead
#: of growing state: events older than the oldest digest forgotten are refused as too_late.
MAX_SEEN = 4096
#: Purchase days of freezes kept (a year of one a day; credits make far fewer possible).
MAX_BOUGHT = 366
#: The platform event growth writes when a user redeemed the streak_freeze perk (streams/growth.py):
#: the freeze is added on the stream, once per redemption (its event id is the redemption's).
FREEZE_BOUGHT = "streak_freeze_bought"
#: How many of the oldest digests one eviction drops (amortises the sort).
_SEEN_EVICT = MAX_SEEN // 8


def seen_digest(event_id: str) -> int:
    """The 64-bit digest under which an event id is remembered. Whatever the id (up to 128
    bytes), it costs the same; a collision among 4096 remembered ids is ~2^-41 likely and would
    only make one new event look like a repeat."""
    raw = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "big")


def _pack_seen(seen: dict[int, int]) -> str:
    """Digests and event times as base64 of two uint64/int64 arrays: 16 bytes an entry, and
    (de)coded in C rather than as a JSON object of thousands of keys."""
    digests = array("Q", seen.keys())
    times = array("q", seen.values())
    return base64.b64encode(digests.tobytes() + times.tobytes()).decode("ascii")


def _unpack_seen(packed: str) -> dict[int, int]:
    raw = base64.b64decode(packed)
    half = len(raw) // 2
    if len(raw) % 16 or half // 8 > MAX_SEEN:
        raise ValueError("malformed seen memory")
    digests, times = array("Q"), array("q")
    digests.frombytes(raw[:half])
    times.frombytes(raw[half:])
    return dict(zip(digests, times, strict=True))


@dataclass
class UserState:
    """Everything the engine keeps per user; the Faust table value (see to_dict).

    The per-day and per-week maps keep 7 practice days / 8 UTC days / 5 ISO weeks back from
    their newest key, widened to the dedup window plus two days when that is longer: any event
    still accepted (not too_late) must find its day's cap and practice totals intact, or late
    delivery would change the outcome. `seen` holds the ids inside the dedup window and
    dominates the encoded size (about 25 bytes per event), so the window drives changelog cost.
    `updated_at_ms` is the newest applied event time; a caller may stamp wall-clock time instead.
    """

    user_id: str
    xp: int = 0
    active_days: list[int] = field(default_factory=list)
    streak: StreakState = EMPTY_STREAK
    badges: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    # category -> [sessions, score_sum, high_scores]
    category_stats: dict[str, list[int]] = field(default_factory=dict)
    daily_practice_s: dict[int, int] = field(default_factory=dict)
    # "daily:2026-11-22" / "weekly:2026-W47" / "all_time:all" -> [xp, reached_at_ms]
    period_xp: dict[str, list[int]] = field(default_factory=dict)
    daily_action_xp: dict[str, int] = field(default_factory=dict)
    #: digest of event id (`seen_digest`) -> event time, within the dedup window, at most MAX_SEEN.
    seen: dict[int, int] = field(default_factory=dict)
    #: Events before this time are refused as too_late: the memory forgot ids older than it.
    seen_floor_ms: int = 0
    watermark_ms: int = 0
    timezone: str = "UTC"
    updated_at_ms: int = 0
    #: The local days freezes were bought on (the streak_freeze perk), sorted: the streak walk
    #: takes them on their days (models/streaks.py `compute_streak`), newest MAX_BOUGHT kept.
    bought_freezes: list[int] = field(default_factory=list)
    #: Scores, practice and XP per UTC ISO week, 52 weeks at most, and all-time (models/stats.py).
    weekly: WeeklyStats = field(default_factory=WeeklyStats)
    #: Who the user is on the public leaderboards (profile: name, school, cohort, visibility).
    boards: BoardSeat = DEFAULT_SEAT
    #: Recurring reward id -> multiples of its `every` already paid (models/achievements.py).
    recurring: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; compact because it is written to a changelog on every update.

        Active days are stored as runs [first_day, length] (streaky users have few runs) and
        the streak as a 5-item list.
        """
        s = self.streak
        return {
            "v": STATE_VERSION,
            "user_id": self.user_id,
            "xp": self.xp,
            "days": _to_runs(self.active_days),
            "streak": [s.current, s.longest, s.freezes, s.last_active_day, s.freezes_used],
            "badges": self.badges,
            "counters": self.counters,
            "categories": self.category_stats,
            "practice": {str(day): seconds for day, seconds in self.daily_practice_s.items()},
            "periods": self.period_xp,
            "action_xp": self.daily_action_xp,
            "seen": _pack_seen(self.seen),
            "floor": self.seen_floor_ms,
            "wm": self.watermark_ms,
            "tz": self.timezone,
            "updated": self.updated_at_ms,
            **({"bought": self.bought_freezes} if self.bought_freezes else {}),
            **({"wk": self.weekly.encode()} if self.weekly else {}),
            **({"boards": self.boards.to_dict()} if self.boards != DEFAULT_SEAT else {}),
            **({"recurring": self.recurring} if self.recurring else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserState:
        version = data.get("v")
        if version not in (STATE_VERSION, _V1):
            raise ValueError(f"unsupported user state version {version!r}")
        if version == _V1:
            raw_ids: dict[str, int] = data["seen"]
            seen = {seen_digest(event_id): ts for event_id, ts in raw_ids.items()}
        else:
            seen = _unpack_seen(data["seen"])
        current, longest, freezes, last, used = data["streak"]
        return cls(
            user_id=data["user_id"],
            xp=data["xp"],
            active_days=_from_runs(data["days"]),
            streak=StreakState(current, longest, freezes, last, used),
            badges=dict(data["badges"]),
            counters=dict(data["counters"]),
            category_stats={k: list(v) for k, v in data["categories"].items()},
            daily_practice_s={int(day): seconds for day, seconds in data["practice"].items()},
            period_xp={k: list(v) for k, v in data["periods"].items()},
            daily_action_xp=dict(data["action_xp"]),
            seen=seen,
            seen_floor_ms=int(data.get("floor", 0)),
            watermark_ms=data["wm"],
            timezone=data["tz"],
            updated_at_ms=data["updated"],
            bought_freezes=sorted(int(day) for day in data.get("bought") or ())[-MAX_BOUGHT:],
            weekly=WeeklyStats.decode(data.get("wk")),
            boards=BoardSeat.from_dict(data.get("boards")),
            recurring={str(k): int(v) for k, v in (data.get("recurring") or {}).items()},
        )


def _to_runs(days: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for day in days:
        if runs and runs[-1][0] + runs[-1][1] == day:
            runs[-1][1] += 1
        else:
            runs.append([day, 1])
    return runs


def _from_runs(runs: list[list[int]]) -> list[int]:
    return [start + i for start, length in runs for i in range(length)]


@dataclass(frozen=True)
class Effects:
    """What one event did, for the sink (leaderboards) and the notifier (user messages)."""

    event_id: str
    duplicate: bool
    xp_gained: int
    breakdown: tuple[tuple[str, int], ...]
    level_before: int
    level_after: int
    new_badges: tuple[BadgeDef, ...]
    streak_before: StreakState
    streak_after: StreakState
    touched_periods: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """Whether there is anything to tell the user (leaderboard stamps alone are not)."""
        return not self.duplicate and (
            self.xp_gained > 0
            or bool(self.new_badges)
            or self.level_after != self.level_before
            or self.streak_after != self.streak_before
        )


def _no_effects(state: UserState, event: BehaviorEvent, rules: Rules, *, duplicate: bool) -> Effects:
    level = level_for_xp(state.xp, rules.levels).level
    return Effects(event.event_id, duplicate, 0, (), level, level, (), state.streak, state.streak, ())


# ---------------------------------------------------------------------------------------------
# The fold


def apply_event(state: UserState, event: BehaviorEvent, rules: Rules, dedup_window_ms: int) -> Effects:
    """Fold one event into `state` (mutated in place) and describe the effects.

    Events of types the rules do not know award nothing, but they are deduplicated like the
    rest (their activity feeds risk and challenges downstream, where a replay must not count
    twice); the memory is bounded (MAX_SEEN digests), so analytics traffic cannot bloat state.
    """
    if event.user_id != state.user_id:
        raise ValueError(f"event for user {event.user_id!r} applied to the state of {state.user_id!r}")
    digest = seen_digest(event.event_id)
    if digest in state.seen:
        return _no_effects(state, event, rules, duplicate=True)
    if event.ts_ms < max(state.watermark_ms - dedup_window_ms, state.seen_floor_ms):
        raise InvalidEvent(
            "too_late",
            f"event time is more than {dedup_window_ms} ms before the user's newest event, or before "
            "the oldest event id this user's dedup memory still holds; it can no longer be told "
            "apart from a duplicate",
        )
    if event.type == FREEZE_BOUGHT:
        _remember(state, digest, event.ts_ms, dedup_window_ms)
        streak_before = state.streak
        _buy_freeze(state, local_day(event.ts_ms, state.timezone), rules)
        level = level_for_xp(state.xp, rules.levels).level
        return Effects(event.event_id, False, 0, (), level, level, (), streak_before, state.streak, ())
    if event.type not in rules.known_types:
        _remember(state, digest, event.ts_ms, dedup_window_ms)
        return _no_effects(state, event, rules, duplicate=False)
    horizon_days = math.ceil(max(dedup_window_ms, 0) / DAY_MS) + 2
    level_before = level_for_xp(state.xp, rules.levels).level
    streak_before = state.streak
    gains: list[tuple[str, int]] = []

    _remember(state, digest, event.ts_ms, dedup_window_ms)
    state.updated_at_ms = max(state.updated_at_ms, event.ts_ms)
    rule = rules.actions.get(event.type)
    count_key = f"count:{event.type}"
    first_time = state.counters.get(count_key, 0) == 0
    if event.type in rules.counted_types:
        state.counters[count_key] = state.counters.get(count_key, 0) + 1
    if rule is not None:
        _action_xp(state, event, rule, rules, first_time, gains, horizon_days)
    _record_scores(state, event, rules, rule is not None)
    practiced = 0
    if event.type in rules.streak_qualifying:
        day = local_day(event.ts_ms, state.timezone)
        practiced = _record_practice(state, event, day, horizon_days)
        if _add_active_day(state, day, rules):
            _gain(state, gains, "daily_first", rules.daily_first_event_xp)
    new_badges = _award_badges(state, event, rules, gains)
    for reason, xp in pay_recurring(rules.recurring, state.recurring, lambda m: metric_value(state, m)):
        _gain(state, gains, reason, xp)
    level_after = _level_ups(state, rules, level_before, gains)
    xp_gained = sum(xp for _, xp in gains)
    touched = _credit_periods(state, event.ts_ms, xp_gained, horizon_days)
    score = _number(event.props.get("score")) if rule is not None else None
    state.weekly.record(event.ts_ms, score, practiced, xp_gained)
    return Effects(
        event_id=event.event_id,
        duplicate=False,
        xp_gained=xp_gained,
        breakdown=tuple(gains),
        level_before=level_before,
        level_after=level_after,
        new_badges=new_badges,
        streak_before=streak_before,
        streak_after=state.streak,
        touched_periods=touched,
    )


def _gain(state: UserState, gains: list[tuple[str, int]], reason: str, xp: int) -> None:
    if xp > 0:
        gains.append((reason, xp))
        state.xp += xp


def _remember(state: UserState, digest: int, ts_ms: int, window_ms: int) -> None:
    """Record the digest and forget those that fell out of the window, or the oldest ones when
    the memory is full (moving the floor past them).

    Digests are mostly inserted in time order, so expired ones are popped from the front
    (amortised O(1)); a full sweep for out-of-order stragglers runs once per UTC day of
    watermark progress.
    """
    old_watermark = state.watermark_ms
    state.seen[digest] = ts_ms
    state.watermark_ms = max(old_watermark, ts_ms)
    cutoff = state.watermark_ms - window_ms
    seen = state.seen
    expired = []
    for key, ts in seen.items():
        if ts >= cutoff:
            break
        expired.append(key)
    for key in expired:
        del seen[key]
    if state.watermark_ms // DAY_MS != old_watermark // DAY_MS:
        state.seen = seen = {k: ts for k, ts in seen.items() if ts >= cutoff}
    if len(seen) > MAX_SEEN:
        oldest = sorted(seen.items(), key=lambda item: item[1])[:_SEEN_EVICT]
        for key, _ in oldest:
            del seen[key]
        # Anything at or before the newest forgotten time may be one of the forgotten ids.
        state.seen_floor_ms = max(state.seen_floor_ms, oldest[-1][1] + 1)


def _action_xp(
    state: UserState,
    event: BehaviorEvent,
    rule: XpRule,
    rules: Rules,
    first_time: bool,
    gains: list[tuple[str, int]],
    horizon_days: int,
) -> None:
    if rule.once:
        # Not capped: it cannot be farmed, and capping it would make the total order dependent.
        if first_time:
            _gain(state, gains, f"action:{rule.action}", rule.base_xp(event.props))
        return
    day_key = bucket("daily", event.ts_ms)
    used = state.daily_action_xp.get(day_key, 0)
    remaining = max(0, rules.daily_xp_cap - used)
    wanted = [(f"action:{rule.action}", rule.base_xp(event.props))]
    wanted += [(f"bonus:{rule.action}:{b.prop}", b.xp) for b in rule.bonuses if b.applies(event.props)]
    granted_total = 0
    for reason, xp in wanted:
        granted = min(xp, remaining - granted_total)
        _gain(state, gains, reason, granted)
        granted_total += granted
    if granted_total:
        is_new = day_key not in state.daily_action_xp
        state.daily_action_xp[day_key] = used + granted_total
        if is_new:
            _prune_dated(state.daily_action_xp, max(DAILY_BUCKETS_KEPT, horizon_days))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def weakest_category(state: UserState) -> str | None:
    """The practice category with the lowest mean score (at least MIN_CATEGORY_SESSIONS scored
    sessions; ties to the name first in order), the topic a personalised nudge suggests."""
    scored = [
        (stats[1] / stats[0], category)
        for category, stats in state.category_stats.items()
        if stats[0] >= MIN_CATEGORY_SESSIONS
    ]
    return min(scored)[1] if scored else None


def _record_scores(state: UserState, event: BehaviorEvent, rules: Rules, is_action: bool) -> None:
    score = _number(event.props.get("score"))
    if score is None:
        return
    if is_action and score == PERFECT_SCORE:
        state.counters["perfect_scores"] = state.counters.get("perfect_scores", 0) + 1
    category = event.props.get("category")
    if event.type not in rules.category_types or not isinstance(category, str):
        return
    if not category or len(category) > MAX_CATEGORY_LEN:
        return
    stats = state.category_stats.get(category)
    if stats is None:
        if len(state.category_stats) >= MAX_CATEGORIES:
            return
        stats = state.category_stats[category] = [0, 0, 0]
    stats[0] += 1
    stats[1] += round(min(max(score, -MAX_SCORE), MAX_SCORE))
    stats[2] += score >= rules.high_score


def _record_practice(state: UserState, event: BehaviorEvent, day: int, horizon_days: int) -> int:
    """Add the event's practice seconds to its local day; returns them (0 if none) for the
    weekly statistics, which count the same validated, clamped seconds."""
    duration = _number(event.props.get("duration_s"))
    if duration is None or duration <= 0:
        return 0
    seconds = int(min(duration, MAX_EVENT_DURATION_S))
    practice = state.daily_practice_s
    is_new = day not in practice
    practice[day] = practice.get(day, 0) + seconds
    if is_new:
        keep_from = max(practice) - max(PRACTICE_DAYS_KEPT, horizon_days) + 1
        for old in [d for d in practice if d < keep_from]:
            del practice[old]
    return seconds


def _add_active_day(state: UserState, day: int, rules: Rules) -> bool:
    days = state.active_days
    i = bisect.bisect_left(days, day)
    if i < len(days) and days[i] == day:
        return False
    if i == len(days) and not (state.bought_freezes and state.bought_freezes[-1] > day):
        state.streak = extend_streak(state.streak, day, rules.streak_milestones, rules.max_freezes)
        days.append(day)
    else:
        # A day before the newest one (a late event), or before a freeze bought later: the walk
        # over everything gives the order the live steps would not.
        days.insert(i, day)
        _rewalk(state, rules)
    return True


def _buy_freeze(state: UserState, day: int, rules: Rules) -> None:
    bisect.insort(state.bought_freezes, day)
    del state.bought_freezes[:-MAX_BOUGHT]
    _rewalk(state, rules)


def _rewalk(state: UserState, rules: Rules) -> None:
    state.streak = compute_streak(
        state.active_days,
        rules.streak_milestones,
        rules.max_freezes,
        state.bought_freezes,
        rules.max_held_freezes,
    )


def metric_value(state: UserState, metric: str) -> int:
    """The current value of a badge metric (names validated by models.rules)."""
    kind, _, arg = metric.partition(":")
    if kind == "count":
        return state.counters.get(metric, 0)
    if kind == "longest_streak":
        return state.streak.longest
    if kind == "perfect_scores":
        return state.counters.get("perfect_scores", 0)
    if kind == "category_high_scores":
        stats = state.category_stats.get(arg)
        return stats[2] if stats else 0
    if kind == "max_daily_practice_minutes":
        return max(state.daily_practice_s.values(), default=0) // 60
    if kind == "high_score_categories":
        return sum(1 for stats in state.category_stats.values() if stats[2] > 0)
    raise ValueError(f"unknown badge metric {metric!r}")


def _award_badges(
    state: UserState, event: BehaviorEvent, rules: Rules, gains: list[tuple[str, int]]
) -> tuple[BadgeDef, ...]:
    awarded: list[BadgeDef] = []
    for badge in rules.badges_by_type.get(event.type, ()):
        if badge.id not in state.badges and metric_value(state, badge.metric) >= badge.threshold:
            state.badges[badge.id] = event.ts_ms
            _gain(state, gains, f"badge:{badge.id}", badge.xp)
            awarded.append(badge)
    return tuple(awarded)


def _level_ups(state: UserState, rules: Rules, level_before: int, gains: list[tuple[str, int]]) -> int:
    """Pay every level newly reached; a level bonus may itself reach the next level."""
    level = level_before
    while (reached := level_for_xp(state.xp, rules.levels).level) > level:
        for number in range(level + 1, reached + 1):
            _gain(state, gains, f"level:{number}", rules.level_up_xp_per_level * number)
        level = reached
    return level


def _credit_periods(state: UserState, ts_ms: int, xp: int, horizon_days: int) -> tuple[str, ...]:
    """Add the event's XP to its UTC day, ISO week and all-time buckets.

    Every known event stamps reached_at, even at 0 XP: whether an event earns XP can depend on
    arrival order (the cap, once-only actions), its time must not.
    """
    touched: list[str] = []
    created = False
    for key in period_keys(ts_ms):
        entry = state.period_xp.get(key)
        if entry is None:
            entry = state.period_xp[key] = [0, 0]
            created = True
        new_xp, new_at = entry[0] + xp, max(entry[1], ts_ms)
        if (new_xp, new_at) != (entry[0], entry[1]):
            entry[0], entry[1] = new_xp, new_at
            touched.append(key)
    if created:
        _prune_periods(state.period_xp, horizon_days)
    return tuple(touched)


def _prune_dated(buckets: dict[str, Any], kept_days: int, prefix: str = "") -> None:
    """Drop keys "<prefix>YYYY-MM-DD" more than kept_days−1 days before the newest one."""
    dated = [key for key in buckets if key.startswith(prefix)]
    if len(dated) <= kept_days:
        return
    newest = date.fromisoformat(max(dated)[len(prefix) :])
    cutoff = prefix + (newest - timedelta(days=kept_days - 1)).isoformat()
    for key in dated:
        if key < cutoff:
            del buckets[key]


def _prune_periods(period_xp: dict[str, list[int]], horizon_days: int) -> None:
    _prune_dated(period_xp, max(DAILY_BUCKETS_KEPT, horizon_days), "daily:")
    kept_weeks = max(WEEKLY_BUCKETS_KEPT, horizon_days // 7 + 2)
    weeks = [key for key in period_xp if key.startswith("weekly:")]
    if len(weeks) <= kept_weeks:
        return
    # "weekly:YYYY-Www" sorts chronologically; compare ISO Mondays to count weeks across years.
    newest_year, newest_week = max(weeks)[len("weekly:") :].split("-W")
    newest_monday = date.fromisocalendar(int(newest_year), int(newest_week), 1)
    cutoff_day = newest_monday - timedelta(weeks=kept_weeks - 1)
    iso = cutoff_day.isocalendar()
    cutoff = f"weekly:{iso.year}-W{iso.week:02d}"
    for key in weeks:
        if key < cutoff:
            del period_xp[key]


# ---------------------------------------------------------------------------------------------
# Profiles and views


def apply_profile(state: UserState, profile: UserProfile) -> bool:
    """Adopt the profile's time zone for events processed from now on, and its leaderboard
    listing (models/boards.py); True if either changed.

    Days already counted are never recomputed: re-deriving history in a new zone would let a
    user manufacture (or lose) an old streak by changing their profile.
    """
    if profile.user_id != state.user_id:
        raise ValueError(f"profile of {profile.user_id!r} applied to the state of {state.user_id!r}")
    if not is_valid_timezone(profile.timezone):
        raise InvalidEvent("bad_timezone", f"unknown IANA time zone: {profile.timezone[:64]!r}")
    seat = state.boards.moved_to(listing_of(profile))
    changed = profile.timezone != state.timezone or seat != state.boards
    state.timezone = profile.timezone
    state.boards = seat
    return changed


def public_view(state: UserState, rules: Rules, today_local: int | None = None) -> dict[str, Any]:
    """The `GET /v1/users/{id}` body without `risk` (the API adds that from the risk model).

    With `today_local` the streak is shown as of that day, so a user who stopped three days ago
    does not keep seeing yesterday's number.
    """
    streak = (
        state.streak
        if today_local is None
        else streak_as_of(state.streak, today_local, rules.max_held_freezes)
    )
    catalogue = rules.badge_by_id
    badges = []
    for badge_id, earned_at in sorted(state.badges.items(), key=lambda item: (item[1], item[0])):
        known = catalogue.get(badge_id)
        badges.append(
            {
                "id": badge_id,
                # A badge dropped from the rule book stays earned; show what we still know.
                "name": known.name if known else badge_id,
                "rarity": known.rarity if known else "common",
                "earned_at": format_ts(earned_at),
            }
        )
    last = streak.last_active_day
    return {
        "user_id": state.user_id,
        "xp": state.xp,
        "level": dict(level_progress(state.xp, rules.levels)),
        "streak": {
            "current": streak.current,
            "longest": streak.longest,
            "freezes": streak.freezes,
            "last_active_day": None if last is None else date.fromordinal(last).isoformat(),
        },
        "badges": badges,
        "counters": dict(state.counters),
        # What every badge and recurring reward reads, so the API shows progress without
        # knowing how a metric is measured (models/achievements.py).
        "metrics": {metric: metric_value(state, metric) for metric in rules.metrics},
        "timezone": state.timezone,
        "updated_at": format_ts(state.updated_at_ms) if state.updated_at_ms else None,
    }
