"""What staff work the at-risk list with (docs/risk.md, "The staff workflow"): the list's filters,
the extra fields of each row, and the bounded memories behind them in the user's risk state.

Pure: no I/O. The worker keeps the memories (`WeeklyScores`, `InterventionLog`) in `RiskState`
and writes the row fields into the risk document it publishes (`row_fields`); the API parses the
filters (`parse_levels`, `parse_signals`), turns levels into score ranges of the index
(`score_ranges`) and checks each document it shows against them (`matches`).

Every memory here is bounded by count and by the size of what it holds, whatever a producer or a
user sends: a display name is user-chosen text, an intervention type comes from the engine's own
list, a week is an integer.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.events import format_ts
from models.interventions.policy import INTERVENTION_TYPES, STAFF_CHANNEL
from models.risk import LEVELS, risk_level
from models.risk_features import FEATURE_NAMES
from models.time_units import DAY_MS, WEEK_MS

#: The risk levels a filter may name (CONTRACT.md §6), highest first.
LEVEL_NAMES: tuple[str, ...] = (*(name for _, name in LEVELS), "low")
#: The signals a filter may name: the features whose contributions the scorer reports as a
#: row's `signals` (models/risk.py `top_signals`).
SIGNAL_NAMES: frozenset[str] = frozenset(FEATURE_NAMES)
#: Values one filter parameter may carry (repeated or comma-separated), and the length of one
#: raw value: far above any honest request (4 levels, ~20 signals), far below a hostile one.
MAX_FILTER_VALUES = 32
MAX_FILTER_CHARS = 512

#: The trend covers this many ISO weeks, the current one last.
TREND_WEEKS = 4
#: Interventions are counted over this window before the row's time ...
INTERVENTION_WINDOW_MS = 28 * DAY_MS
#: ... and at most this many are remembered: the gate lets at most 3 through a day
#: (models/interventions/notifications.py MAX_PER_DAY), 84 in the window; a state never grows
#: past this whatever reaches it.
MAX_INTERVENTIONS = 96
MAX_CHANNEL_CHARS = 16
#: A display name as a row shows it: at most this many characters, after the text is cleaned.
MAX_ROW_NAME_CHARS = 64

_INTERVENTION_TYPES = frozenset(INTERVENTION_TYPES)
#: The Unix epoch (day 0) is a Thursday: day + 3 counts days from a Monday.
_EPOCH_TO_MONDAY = 3


class InvalidFilter(ValueError):
    """A filter value the list does not know (the API answers 400)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


# --- filters ----------------------------------------------------------------------------------


def _values(raw: Iterable[str] | None, field_name: str) -> list[str]:
    """The values of a repeatable, comma-separated parameter, bounded before they are split."""
    out: list[str] = []
    for item in raw or ():
        if len(item) > MAX_FILTER_CHARS:
            raise InvalidFilter(field_name, f"{field_name} is longer than {MAX_FILTER_CHARS} characters")
        out.extend(v.strip() for v in item.split(",") if v.strip())
        if len(out) > MAX_FILTER_VALUES:
            raise InvalidFilter(field_name, f"{field_name} names more than {MAX_FILTER_VALUES} values")
    return out


def _known(values: list[str], known: Iterable[str], field_name: str) -> frozenset[str]:
    allowed = frozenset(known)
    for value in values:
        if value not in allowed:
            # The value is echoed clipped and as a repr: it is the caller's text.
            raise InvalidFilter(field_name, f"unknown {field_name} {value[:64]!r}")
    return frozenset(values)


def parse_levels(raw: Iterable[str] | None) -> frozenset[str]:
    """``level=critical&level=high`` or ``level=critical,high``; empty: every level."""
    return _known(_values(raw, "level"), LEVEL_NAMES, "level")


def parse_signals(raw: Iterable[str] | None) -> frozenset[str]:
    """``signal=recency_d`` (repeatable, comma list): rows with any of these among their signals."""
    return _known(_values(raw, "signal"), SIGNAL_NAMES, "signal")


#: A range of the index, ``(high, low)``: scores s with low <= s < high (high None: no bound).
ScoreRange = tuple[float | None, float]


def score_ranges(levels: frozenset[str], threshold: float) -> list[ScoreRange]:
    """The score ranges of the index a filter covers, highest first, each at or above
    ``threshold``: a level is a range of scores (CONTRACT.md §6), so a level filter is read from
    the score index alone, never by reading documents it would drop."""
    bounds: list[tuple[str, float | None, float]] = []
    upper: float | None = None
    for lower, name in LEVELS:
        bounds.append((name, upper, lower))
        upper = lower
    bounds.append(("low", upper, float("-inf")))
    ranges: list[ScoreRange] = []
    for name, high, low in bounds:
        if levels and name not in levels:
            continue
        if high is not None and high <= threshold:
            continue
        low = max(low, threshold)
        # Adjacent levels form one range: fewer index reads, and the same order.
        if ranges and ranges[-1][1] == high:
            ranges[-1] = (ranges[-1][0], low)
        else:
            ranges.append((high, low))
    return ranges


def matches(document: Mapping[str, Any], levels: frozenset[str], signals: frozenset[str]) -> bool:
    """Whether a risk document as read belongs in a filtered list (the index may lag it)."""
    score = document.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        return False
    if levels and risk_level(float(score)) not in levels:
        return False
    if signals:
        shown = document.get("signals")
        if not isinstance(shown, list) or not signals.intersection(s for s in shown if isinstance(s, str)):
            return False
    return True


def filter_scope(threshold: float, levels: frozenset[str], signals: frozenset[str]) -> str:
    """A short tag of a list's filters, carried in its cursors: a cursor continues only the list
    it came from (another filter's cursor is refused, not silently re-read)."""
    # + 0.0: a threshold of -0 is the list of 0, and names the same scope.
    canonical = f"{threshold + 0.0!r}|{','.join(sorted(levels))}|{','.join(sorted(signals))}"
    return hashlib.blake2b(canonical.encode(), digest_size=6).hexdigest()


# --- the weekly trend -------------------------------------------------------------------------


def iso_week(ts_ms: int) -> int:
    """The ISO week (Monday 00:00 UTC) holding ``ts_ms``, as a week count since the epoch's."""
    return (ts_ms // DAY_MS + _EPOCH_TO_MONDAY) // 7


def week_label(week: int) -> str:
    """``2026-W49`` for a week of `iso_week`."""
    monday = datetime.fromtimestamp((week * WEEK_MS - _EPOCH_TO_MONDAY * DAY_MS) / 1000, UTC).date()
    year, number, _ = monday.isocalendar()
    return f"{year}-W{number:02d}"


@dataclass
class WeeklyScores:
    """The last score of each of the latest `TREND_WEEKS` ISO weeks a user was scored in, kept
    by the stream as it scores (one entry per week, at most `TREND_WEEKS`): the trend is read
    from it, never recomputed from history."""

    #: (week, score), oldest first.
    weeks: list[tuple[int, float]] = field(default_factory=list)

    def record(self, ts_ms: int, score: float) -> None:
        week = iso_week(ts_ms)
        if self.weeks and self.weeks[-1][0] > week:
            return  # a score older than the newest week kept (stream time never goes back)
        if self.weeks and self.weeks[-1][0] == week:
            self.weeks[-1] = (week, score)
        else:
            self.weeks.append((week, score))
        del self.weeks[: max(0, len(self.weeks) - TREND_WEEKS)]

    def trend(self, as_of_ms: int) -> list[float | None]:
        """The last score of each of the `TREND_WEEKS` weeks up to ``as_of_ms``'s, oldest first;
        None for a week without a score (the current week's is the latest score so far)."""
        current = iso_week(as_of_ms)
        kept = dict(self.weeks)
        return [kept.get(week) for week in range(current - TREND_WEEKS + 1, current + 1)]

    def to_rows(self) -> list[list[float]]:
        return [[week, score] for week, score in self.weeks]

    @classmethod
    def from_rows(cls, rows: Any) -> WeeklyScores:
        """Rows as `to_rows` writes them; anything else is dropped, never trusted (an older
        state has none: an empty trend, filled as the user is scored)."""
        weeks: list[tuple[int, float]] = []
        for row in rows if isinstance(rows, list) else ():
            if not (isinstance(row, list) and len(row) == 2):
                continue
            week, score = row
            if isinstance(week, bool) or not isinstance(week, int) or not _is_score(score):
                continue
            if weeks and week <= weeks[-1][0]:
                continue
            weeks.append((week, float(score)))
        return cls(weeks[-TREND_WEEKS:])


def _is_score(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0.0 <= value <= 100.0


# --- interventions received -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    at_ms: int
    type: str
    channel: str

    def public(self) -> dict[str, Any]:
        return {"type": self.type, "channel": self.channel, "at": format_ts(self.at_ms)}


@dataclass
class InterventionLog:
    """The interventions (CONTRACT.md §6 types) delivered to a user over the last
    `INTERVENTION_WINDOW_MS`, at most `MAX_INTERVENTIONS`, oldest first; the newest is kept even
    once it is older than the window (it is the row's `last_intervention`)."""

    entries: list[Received] = field(default_factory=list)

    def record(self, at_ms: int, type_: str, channel: str) -> bool:
        """Remember one delivered notification; False for types that are not interventions
        (career news) and for a delivery already remembered (a replay)."""
        if type_ not in _INTERVENTION_TYPES:
            return False
        entry = Received(at_ms, type_, channel[:MAX_CHANNEL_CHARS])
        if entry in self.entries:
            return False
        self.entries.append(entry)
        self.entries.sort(key=lambda e: e.at_ms)
        self._prune()
        return True

    def _prune(self) -> None:
        newest = self.entries[-1].at_ms
        recent = [e for e in self.entries if e.at_ms > newest - INTERVENTION_WINDOW_MS]
        self.entries = recent[-MAX_INTERVENTIONS:]

    @property
    def last(self) -> Received | None:
        return self.entries[-1] if self.entries else None

    def count(self, as_of_ms: int) -> int:
        """Interventions delivered in the window ending at ``as_of_ms`` (later ones included:
        a notification deferred by quiet hours is counted once delivered)."""
        return sum(1 for e in self.entries if e.at_ms > as_of_ms - INTERVENTION_WINDOW_MS)

    def to_rows(self) -> list[list[Any]]:
        return [[e.at_ms, e.type, e.channel] for e in self.entries]

    @classmethod
    def from_rows(cls, rows: Any) -> InterventionLog:
        entries: list[Received] = []
        for row in rows if isinstance(rows, list) else ():
            if not (isinstance(row, list) and len(row) == 3):
                continue
            at, type_, channel = row
            if isinstance(at, bool) or not isinstance(at, int) or type_ not in _INTERVENTION_TYPES:
                continue
            if not isinstance(channel, str):
                continue
            entries.append(Received(at, type_, channel[:MAX_CHANNEL_CHARS]))
        log = cls(sorted(entries, key=lambda e: e.at_ms))
        if log.entries:
            log._prune()
        return log


def channel_of(channels: Sequence[str]) -> str:
    """A notification's channel as a row shows it: the first it went on (STAFF for a task)."""
    return channels[0] if channels else STAFF_CHANNEL


# --- the row ----------------------------------------------------------------------------------


def row_display_name(name: Any) -> str | None:
    """A display name as an at-risk row shows it: user-chosen text, so only printable
    characters (no control or format characters such as bidi overrides, which would reorder what
    staff read around it), spaces collapsed, at most `MAX_ROW_NAME_CHARS`; None when nothing is
    left. JSON encoding and the dashboard's `textContent` do the rest: it is never markup."""
    if not isinstance(name, str):
        return None
    text = unicodedata.normalize("NFC", name[: MAX_ROW_NAME_CHARS * 4])
    kept = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] not in "CZ"
    )
    # Category Z other than spaces (line/paragraph separators) and C (control, format,
    # surrogates, private use, unassigned) are dropped; runs of spaces collapse.
    cleaned = " ".join(kept.split())[:MAX_ROW_NAME_CHARS].strip()
    return cleaned or None


def row_fields(
    display_name: str | None, log: InterventionLog, weeks: WeeklyScores, as_of_ms: int
) -> dict[str, Any]:
    """The workflow fields of a risk document (written by the worker at ``as_of_ms``)."""
    last = log.last
    current = iso_week(as_of_ms)
    return {
        "display_name": row_display_name(display_name),
        "last_intervention": last.public() if last is not None else None,
        "interventions": log.count(as_of_ms),
        "interventions_window_days": INTERVENTION_WINDOW_MS // DAY_MS,
        "trend": weeks.trend(as_of_ms),
        "trend_weeks": [week_label(w) for w in range(current - TREND_WEEKS + 1, current + 1)],
    }


#: Row fields a document written before them reads as (unknown, not zero).
EMPTY_ROW_FIELDS: dict[str, Any] = {
    "display_name": None,
    "last_intervention": None,
    "interventions": None,
    "trend": [None] * TREND_WEEKS,
    "trend_weeks": [None] * TREND_WEEKS,
}


def row_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow fields as a row shows them, from a stored document (older documents lack
    them; a name is cleaned again on the way out, whoever wrote it)."""
    trend = document.get("trend")
    if not (isinstance(trend, list) and len(trend) == TREND_WEEKS):
        trend = EMPTY_ROW_FIELDS["trend"]
    weeks = document.get("trend_weeks")
    if not (isinstance(weeks, list) and len(weeks) == TREND_WEEKS and all(isinstance(w, str) for w in weeks)):
        trend, weeks = EMPTY_ROW_FIELDS["trend"], EMPTY_ROW_FIELDS["trend_weeks"]
    interventions = document.get("interventions")
    last = document.get("last_intervention")
    return {
        "display_name": row_display_name(document.get("display_name")),
        "last_intervention": last if isinstance(last, dict) else None,
        "interventions": interventions if isinstance(interventions, int) else None,
        "trend": [v if _is_score(v) else None for v in trend],
        # Which ISO weeks the trend covers: a document is as of its score, not of the request.
        "trend_weeks": weeks,
    }


def republish_for_row(previous: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """Whether a document must be rewritten for its row fields alone: the name changed, or a
    week went by (the trend shifted). The current week's value follows the score, which
    publishes on its own terms (models.risk_state.worth_publishing)."""
    if previous is None:
        return True
    return bool(
        previous.get("display_name") != fields["display_name"]
        or previous.get("trend_weeks") != fields["trend_weeks"]
    )
