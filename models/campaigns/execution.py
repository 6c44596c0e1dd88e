"""The execution log of a campaign: `CampaignRun`, its outcomes counted across users, its funnel
(sent, opened, clicked, converted) and a bounded log of its runs, one per occurrence key.

A "run" is one occurrence key across users: "once", a local date ("2026-11-22": everyone's
09:00 of that date, whatever their zone), a drip step ("d3", "h2": each user's own, from their
signup) or a manual send ("s-<id>"). The log keeps the MAX_RUN_LOG most recent runs (by their
latest instant); an older one is forgotten, its counts staying in the campaign's totals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.campaigns.errors import show
from models.interventions import STAGES

OUTCOMES = frozenset({"evaluated", "targeted", "not_targeted", "sent", "deferred", "failed"})
SUPPRESSED_PREFIX = "suppressed:"
MAX_SUPPRESSION_REASONS = 32
MAX_RUN_LOG = 30
MAX_OCCURRENCE_KEY_LEN = 80
_REASON = re.compile(r"[a-z0-9_]{1,48}", re.ASCII)
_OCCURRENCE_KEY = re.compile(rf"[A-Za-z0-9._\-]{{1,{MAX_OCCURRENCE_KEY_LEN}}}", re.ASCII)
_RATES = (("opened", "open_rate"), ("clicked", "click_rate"), ("converted", "conversion_rate"))


def _outcome_key(counts: Mapping[str, int], outcome: str) -> str:
    """The key `outcome` is counted under in `counts`; ValueError for an unknown outcome."""
    if outcome in OUTCOMES:
        return outcome
    valid = isinstance(outcome, str) and outcome.startswith(SUPPRESSED_PREFIX)
    if not valid or not _REASON.fullmatch(outcome.removeprefix(SUPPRESSED_PREFIX)):
        raise ValueError(
            f"unknown outcome {show(outcome)}; use one of {', '.join(sorted(OUTCOMES))} "
            "or suppressed:<reason>"
        )
    if outcome in counts:
        return outcome
    reasons = sum(key.startswith(SUPPRESSED_PREFIX) for key in counts)
    return outcome if reasons < MAX_SUPPRESSION_REASONS - 1 else f"{SUPPRESSED_PREFIX}other"


def _count(counts: dict[str, int], outcome: str, n: int) -> None:
    key = _outcome_key(counts, outcome)
    counts[key] = counts.get(key, 0) + n


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {show(stage)}; use one of {', '.join(STAGES)}")


def _check_occurrence(key: str) -> None:
    if not isinstance(key, str) or not _OCCURRENCE_KEY.fullmatch(key):
        raise ValueError(f"occurrence key {show(key)} is not 1..{MAX_OCCURRENCE_KEY_LEN} of [A-Za-z0-9._-]")


def funnel_view(funnel: Mapping[str, int]) -> dict[str, int | float]:
    """Sent, opened, clicked and converted with their rates per send (0 before any send)."""
    view: dict[str, int | float] = {stage: funnel.get(stage, 0) for stage in STAGES}
    sent = funnel.get("sent", 0)
    for stage, rate in _RATES:
        view[rate] = round(funnel.get(stage, 0) / sent, 4) if sent else 0
    return view


def _read_funnel(data: Any) -> dict[str, int]:
    raw = data if isinstance(data, Mapping) else {}
    return {stage: int(raw[stage]) for stage in STAGES if raw.get(stage)}


def _span(first: int | None, last: int | None, at_ms: int) -> tuple[int, int]:
    return (at_ms if first is None else min(first, at_ms), at_ms if last is None else max(last, at_ms))


@dataclass
class RunLog:
    """One run of a campaign (one occurrence key across users): outcome counts, funnel, span."""

    key: str
    counts: dict[str, int] = field(default_factory=dict)
    funnel: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "counts": dict(self.counts),
            "funnel": funnel_view(self.funnel),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunLog:
        return cls(
            str(data["key"]),
            dict(data.get("counts") or {}),
            _read_funnel(data.get("funnel")),
            data.get("first_ms"),
            data.get("last_ms"),
        )


@dataclass
class CampaignRun:
    """Aggregated outcomes of one campaign across its users: counts per outcome, the event-time
    span they cover, the funnel of its notifications, and the log of its recent runs. Counts
    only, never user ids, so it stays small however large the audience.

    Outcomes are OUTCOMES or "suppressed:<reason>" (reason [a-z0-9_]{1,48}); past
    MAX_SUPPRESSION_REASONS distinct reasons, new ones count as "suppressed:other", so a buggy
    caller cannot grow the record without bound. `first_ms`/`last_ms` are the min/max of the
    recorded instants, so order does not matter and runs from several workers `merge`.
    """

    campaign_id: str
    counts: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None
    #: Stage -> notifications of the campaign that reached it (sent, opened, clicked, converted).
    funnel: dict[str, int] = field(default_factory=dict)
    #: Occurrence key -> its run, at most MAX_RUN_LOG (the most recent).
    runs: dict[str, RunLog] = field(default_factory=dict)

    def record(self, outcome: str, at_ms: int, n: int = 1, occurrence: str | None = None) -> None:
        """Count `n` of `outcome` at event time `at_ms`, in the run of `occurrence` too when given;
        ValueError for an unknown outcome or a malformed occurrence key (nothing counted)."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        key = _outcome_key(self.counts, outcome)
        if occurrence is not None:
            _check_occurrence(occurrence)
        self.counts[key] = self.counts.get(key, 0) + n
        self.first_ms, self.last_ms = _span(self.first_ms, self.last_ms, at_ms)
        run = self._run(occurrence, at_ms) if occurrence is not None else None
        if run is not None:
            _count(run.counts, outcome, n)

    def record_stage(self, stage: str, occurrence: str | None = None, at_ms: int | None = None) -> None:
        """Count one notification of the campaign reaching `stage`, in the run of `occurrence` too
        when given (a run is started only with `at_ms`, the notification's delivery: a late open
        of a forgotten run counts in the totals only)."""
        _check_stage(stage)
        if occurrence is not None:
            _check_occurrence(occurrence)
        self.funnel[stage] = self.funnel.get(stage, 0) + 1
        if occurrence is None:
            return
        run = self._run(occurrence, at_ms) if at_ms is not None else self.runs.get(occurrence)
        if run is not None:
            run.funnel[stage] = run.funnel.get(stage, 0) + 1

    def _run(self, key: str, at_ms: int) -> RunLog | None:
        """The run of `key`, its span stretched to `at_ms`; started if new, unless the log is full
        of runs more recent than it (then None)."""
        run = self.runs.get(key)
        if run is None:
            if len(self.runs) >= MAX_RUN_LOG:
                oldest = min(self.runs.values(), key=lambda r: (r.last_ms or 0, r.key))
                if (at_ms, key) < (oldest.last_ms or 0, oldest.key):
                    return None
                del self.runs[oldest.key]
            run = self.runs[key] = RunLog(key)
        run.first_ms, run.last_ms = _span(run.first_ms, run.last_ms, at_ms)
        return run

    def merge(self, other: CampaignRun) -> None:
        """Add another worker's counts for the same campaign."""
        if other.campaign_id != self.campaign_id:
            raise ValueError(f"cannot merge the run of {other.campaign_id!r} into {self.campaign_id!r}")
        for outcome, n in other.counts.items():
            _count(self.counts, outcome, n)
        spans = [ms for ms in (self.first_ms, other.first_ms) if ms is not None]
        self.first_ms = min(spans) if spans else None
        ends = [ms for ms in (self.last_ms, other.last_ms) if ms is not None]
        self.last_ms = max(ends) if ends else None
        for stage, n in other.funnel.items():
            self.funnel[stage] = self.funnel.get(stage, 0) + n
        for theirs in other.runs.values():
            times = [ms for ms in (theirs.first_ms, theirs.last_ms) if ms is not None]
            mine = self.runs.get(theirs.key)
            for at_ms in times:
                mine = self._run(theirs.key, at_ms)
            if mine is None or not times:
                continue
            for outcome, n in theirs.counts.items():
                _count(mine.counts, outcome, n)
            for stage, n in theirs.funnel.items():
                mine.funnel[stage] = mine.funnel.get(stage, 0) + n

    def recent_runs(self) -> list[RunLog]:
        """The logged runs, most recent first."""
        return sorted(self.runs.values(), key=lambda r: (r.last_ms or 0, r.key), reverse=True)

    def to_dict(self) -> dict[str, Any]:
        """The stored form, also what the admin routes show as "executions" (the funnel with its
        rates, the runs most recent first)."""
        return {
            "campaign_id": self.campaign_id,
            "counts": dict(self.counts),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "funnel": funnel_view(self.funnel),
            "runs": [run.to_dict() for run in self.recent_runs()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CampaignRun:
        runs = (RunLog.from_dict(run) for run in data.get("runs") or ())
        return cls(
            data["campaign_id"],
            dict(data["counts"]),
            data.get("first_ms"),
            data.get("last_ms"),
            _read_funnel(data.get("funnel")),
            {run.key: run for run in runs},
        )
