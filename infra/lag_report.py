"""Consumer lag in offsets and in seconds, and a Burrow-style status, from periodic offset samples
(pure: infra/lag.py samples the broker and keeps the history; this turns samples into a report).

Two lessons from the tools operators compare us with (DESIGN.md):

- kafka-lag-exporter: lag in offsets says little on its own (1,000 messages is nothing on a busy
  topic and hours on a quiet one). Sampling a partition's end offset periodically gives a table
  offset -> wall time; the time at which the end offset reached the committed offset, read off
  that table, turns offset lag into seconds.
- Burrow: a single reading of lag cannot tell a slow consumer from a stuck or dead one. Looking at
  a sliding window of readings can: a consumer that caught up once in the window is fine, one
  whose committed offset does not move while messages wait is not. The window must be much wider
  than the consumer's commit interval (Faust commits every 2.8 s), otherwise a healthy consumer
  between two commits looks stalled.

Pure: samples in, numbers and statuses out. ``infra.lag`` takes the samples and stores them.
The rules are documented for operators in docs/operations.md ("Consumer lag").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

#: Default status window: about ten of Faust's 2.8 s commit intervals.
DEFAULT_WINDOW_S = 30.0


class PartitionStatus(StrEnum):
    OK = "OK"
    #: The consumer advances but falls further behind (lag never decreased in the window).
    WARN = "WARN"
    #: The committed offset did not move in the window while new messages kept arriving.
    STALL = "STALL"
    #: The committed offset did not move in the window, messages wait, and none arrive.
    STOP = "STOP"
    #: The committed offset went backwards in the window (offsets reset or a replay).
    REWIND = "REWIND"


class GroupStatus(StrEnum):
    OK = "OK"
    WARN = "WARN"
    #: Some partition is STALL, STOP or REWIND (as in Burrow, only a group is ever ERR).
    ERR = "ERR"


#: The value of the ``elimu_consumer_group_status`` gauge for each group status.
GROUP_STATUS_VALUE: Mapping[GroupStatus, int] = {GroupStatus.OK: 0, GroupStatus.WARN: 1, GroupStatus.ERR: 2}

_ERROR_STATUSES = frozenset({PartitionStatus.STALL, PartitionStatus.STOP, PartitionStatus.REWIND})


@dataclass(frozen=True)
class PartitionSample:
    """One reading of a partition: its end offset and a group's committed offset (``None`` when the
    group had committed nothing there yet) at wall time ``ts_s`` (unix seconds)."""

    ts_s: float
    end: int
    committed: int | None

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(0, self.end - self.committed)


# ---------------------------------------------------------------------------------------------
# Offset -> time (kafka-lag-exporter)


def _end_points(samples: Iterable[PartitionSample]) -> list[tuple[float, int]]:
    """(time, end offset) points, time-ordered, with a non-decreasing end offset.

    An end offset that goes down means the log was recreated (an embedded broker restarted, a
    topic deleted and created again): what came before describes another log and is dropped.
    """
    points: list[tuple[float, int]] = []
    for s in sorted(samples, key=lambda s: s.ts_s):
        if points and s.end < points[-1][1]:
            points = []
        if points and s.ts_s <= points[-1][0]:
            continue
        points.append((s.ts_s, s.end))
    return points


def _seconds_per_offset(a: tuple[float, int], b: tuple[float, int]) -> float:
    return (b[0] - a[0]) / (b[1] - a[1])


def offset_time(samples: Sequence[PartitionSample], offset: int) -> float | None:
    """The wall time at which the partition's end offset reached ``offset``.

    Inside the sampled range: linear interpolation between the last sample whose end was below
    ``offset`` and the first one at or above it (so a flat stretch with no new messages does not
    smear the estimate). Outside: linear extrapolation along the nearest pair of samples whose end
    offsets differ — the oldest such pair for offsets the end had passed before the first sample
    (anchored at the first sample), the newest pair for offsets beyond the last end.

    ``None`` when it cannot be estimated: no samples, or ``offset`` outside the range and the
    end offset never moved across the samples (no rate to extrapolate with).
    """
    points = _end_points(samples)
    if not points:
        return None
    first_t, first_end = points[0]
    if offset <= first_end:
        if offset == first_end:
            # Reached at the latest by the first sample; nothing says how much earlier.
            return first_t
        rising = next(((a, b) for a, b in itertools.pairwise(points) if b[1] > a[1]), None)
        if rising is None:
            return None
        return first_t - (first_end - offset) * _seconds_per_offset(*rising)
    last_t, last_end = points[-1]
    if offset > last_end:
        pairs = list(itertools.pairwise(points))
        rising = next(((a, b) for a, b in reversed(pairs) if b[1] > a[1]), None)
        if rising is None:
            return None
        return last_t + (offset - last_end) * _seconds_per_offset(*rising)
    for a, b in itertools.pairwise(points):
        if a[1] < offset <= b[1]:
            return a[0] + (offset - a[1]) * _seconds_per_offset(a, b)
    raise AssertionError("unreachable: offset lies within the sampled range")  # pragma: no cover


def lag_seconds(samples: Sequence[PartitionSample]) -> float | None:
    """How far behind in time the group is at the newest sample: the sample's time minus the time
    the end offset reached the committed offset. 0 when caught up; ``None`` when unknown."""
    if not samples:
        return None
    newest = max(samples, key=lambda s: s.ts_s)
    if newest.committed is None:
        return None
    if newest.committed >= newest.end:
        return 0.0
    reached = offset_time(samples, newest.committed)
    if reached is None:
        return None
    return max(0.0, newest.ts_s - reached)


# ---------------------------------------------------------------------------------------------
# Status over a sliding window (Burrow)


def status_window(
    samples: Sequence[PartitionSample], window_s: float = DEFAULT_WINDOW_S
) -> tuple[list[PartitionSample], bool]:
    """The newest samples (with a committed offset) spanning at least ``window_s`` seconds, and
    whether the history was long enough to fill such a window."""
    known = sorted((s for s in samples if s.committed is not None), key=lambda s: s.ts_s)
    if not known:
        return [], False
    newest = known[-1].ts_s
    for i in range(len(known) - 1, -1, -1):
        if newest - known[i].ts_s >= window_s:
            return known[i:], True
    return known, False


def partition_status(
    samples: Sequence[PartitionSample], window_s: float = DEFAULT_WINDOW_S
) -> tuple[PartitionStatus, bool]:
    """The partition's status and whether it was judged on a full window.

    Rules, the first that applies wins (docs/operations.md lists them for operators):

    0. the newest lag is 0 → OK (a caught-up consumer is never in trouble);
    1. less than one full window of history → OK, not complete (no judgement yet);
    2. the committed offset decreased between two samples of the window → REWIND;
    3. the lag was 0 at some sample of the window → OK;
    4. the committed offset is the same in every sample of the window → STALL when the end offset
       moved during the window (messages arrive, none is consumed), else STOP (messages wait, the
       consumer has stopped, and nothing new arrives);
    5. the lag never decreased from one sample to the next (Burrow: "fixed or increasing") while
       the committed offset advanced → WARN (the consumer is slower than its producers);
    6. otherwise → OK.
    """
    window, complete = status_window(samples, window_s)
    if not window or window[-1].lag == 0:
        return PartitionStatus.OK, complete
    if not complete:
        return PartitionStatus.OK, False
    committed = [s.committed for s in window if s.committed is not None]
    lags = [s.lag for s in window if s.lag is not None]
    if any(b < a for a, b in itertools.pairwise(committed)):
        return PartitionStatus.REWIND, True
    if 0 in lags:
        return PartitionStatus.OK, True
    if committed[0] == committed[-1]:  # with no decrease, equal ends mean no move at all
        moved = window[-1].end > window[0].end
        return (PartitionStatus.STALL if moved else PartitionStatus.STOP), True
    if all(b >= a for a, b in itertools.pairwise(lags)):
        return PartitionStatus.WARN, True
    return PartitionStatus.OK, True


def group_status(statuses: Iterable[PartitionStatus]) -> GroupStatus:
    """The worst partition decides: any STALL/STOP/REWIND → ERR, else any WARN → WARN, else OK."""
    worst = GroupStatus.OK
    for status in statuses:
        if status in _ERROR_STATUSES:
            return GroupStatus.ERR
        if status is PartitionStatus.WARN:
            worst = GroupStatus.WARN
    return worst


# ---------------------------------------------------------------------------------------------
# Snapshots of a whole cluster, and the report built from their history

#: (topic, partition)
TopicPartition = tuple[str, int]
#: (group, topic, partition)
GroupPartition = tuple[str, str, int]


@dataclass(frozen=True)
class Snapshot:
    """Every group's committed offsets and the end offsets of those partitions, read at ``ts_s``."""

    ts_s: float
    ends: Mapping[TopicPartition, int]
    committed: Mapping[GroupPartition, int]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float | None
    status: PartitionStatus
    #: Whether ``status`` was judged on a full window (Burrow's "complete").
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "lag_seconds": _round(self.lag_seconds),
            "status": self.status.value,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PartitionLag:
        seconds = d.get("lag_seconds")
        return cls(
            str(d["topic"]),
            int(d["partition"]),
            int(d["committed"]),
            int(d["end"]),
            int(d["lag"]),
            None if seconds is None else float(seconds),
            PartitionStatus(d["status"]),
            bool(d.get("complete", True)),
        )


@dataclass(frozen=True)
class GroupLag:
    group: str
    status: GroupStatus
    #: Sum over the group's partitions.
    lag: int
    #: The largest over the group's partitions (``None`` when none is known).
    lag_seconds: float | None
    partitions: tuple[PartitionLag, ...]

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "status": self.status.value,
            "lag": self.lag,
            "lag_seconds": _round(self.lag_seconds),
            "complete": self.complete,
            "partitions": [p.as_dict() for p in self.partitions],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupLag:
        seconds = d.get("lag_seconds")
        return cls(
            str(d["group"]),
            GroupStatus(d["status"]),
            int(d["lag"]),
            None if seconds is None else float(seconds),
            tuple(PartitionLag.from_dict(p) for p in d["partitions"]),
        )


@dataclass(frozen=True)
class LagReport:
    """The lag of every group as of the newest snapshot (``ts_s``; ``None`` when there is none)."""

    ts_s: float | None
    groups: tuple[GroupLag, ...]
    #: How many snapshots the report was computed from, and the window it judged statuses on.
    samples: int = 0
    window_s: float = DEFAULT_WINDOW_S

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /v1/ops/lag`` and of the ``ops:lag`` channel."""
        return {"groups": [g.as_dict() for g in self.groups], "updated_at": format_ts(self.ts_s)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LagReport:
        updated = d.get("updated_at")
        return cls(
            None if updated is None else parse_ts(str(updated)),
            tuple(GroupLag.from_dict(g) for g in d.get("groups", ())),
        )


def build_report(history: Iterable[Snapshot], window_s: float = DEFAULT_WINDOW_S) -> LagReport:
    """Lag, lag in seconds and status of every (group, topic, partition) in the newest snapshot,
    judged on the whole history (oldest snapshots first or not: they are ordered by time here)."""
    snapshots = _ordered(history)
    if not snapshots:
        return LagReport(None, (), 0, window_s)
    newest = snapshots[-1]
    by_group: dict[str, list[PartitionLag]] = {}
    for key in sorted(newest.committed):
        group, topic, partition = key
        tp = (topic, partition)
        if tp not in newest.ends:
            continue  # the end offset could not be read this time
        series = [
            PartitionSample(s.ts_s, s.ends[tp], s.committed.get(key)) for s in snapshots if tp in s.ends
        ]
        status, complete = partition_status(series, window_s)
        current = series[-1]
        assert current.committed is not None and current.lag is not None
        by_group.setdefault(group, []).append(
            PartitionLag(
                topic,
                partition,
                current.committed,
                current.end,
                current.lag,
                lag_seconds(series),
                status,
                complete,
            )
        )
    groups = tuple(_group(group, tuple(parts)) for group, parts in by_group.items())
    return LagReport(newest.ts_s, groups, len(snapshots), window_s)


def _group(group: str, partitions: tuple[PartitionLag, ...]) -> GroupLag:
    lag = sum(p.lag for p in partitions)
    known = [p.lag_seconds for p in partitions if p.lag_seconds is not None]
    seconds = max(known) if known else (0.0 if lag == 0 else None)
    return GroupLag(group, group_status(p.status for p in partitions), lag, seconds, partitions)


def _ordered(history: Iterable[Snapshot]) -> list[Snapshot]:
    """Time order, one snapshot per instant (the later one read wins)."""
    by_ts: dict[float, Snapshot] = {}
    for s in history:
        by_ts[s.ts_s] = s
    return [by_ts[ts] for ts in sorted(by_ts)]


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def format_ts(ts_s: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-22T08:15:00.250Z``."""
    if ts_s is None:
        return None
    return datetime.fromtimestamp(ts_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
