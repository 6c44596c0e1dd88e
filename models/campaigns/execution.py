"""The execution log of a campaign: `CampaignRun`, its outcomes counted across users."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.campaigns.errors import show

OUTCOMES = frozenset({"evaluated", "targeted", "not_targeted", "sent", "deferred", "failed"})
SUPPRESSED_PREFIX = "suppressed:"
MAX_SUPPRESSION_REASONS = 32
_REASON = re.compile(r"[a-z0-9_]{1,48}", re.ASCII)


@dataclass
class CampaignRun:
    """Aggregated outcomes of one campaign across its users: counts per outcome and the event-time
    span they cover. Counts only, never user ids, so it stays small however large the audience.

    Outcomes are OUTCOMES or "suppressed:<reason>" (reason [a-z0-9_]{1,48}); past
    MAX_SUPPRESSION_REASONS distinct reasons, new ones count as "suppressed:other", so a buggy
    caller cannot grow the record without bound. `first_ms`/`last_ms` are the min/max of the
    recorded instants, so order does not matter and runs from several workers `merge`.
    """

    campaign_id: str
    counts: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None

    def record(self, outcome: str, at_ms: int, n: int = 1) -> None:
        """Count `n` of `outcome` at event time `at_ms`; ValueError for an unknown outcome."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        key = self._key(outcome)
        self.counts[key] = self.counts.get(key, 0) + n
        self.first_ms = at_ms if self.first_ms is None else min(self.first_ms, at_ms)
        self.last_ms = at_ms if self.last_ms is None else max(self.last_ms, at_ms)

    def _key(self, outcome: str) -> str:
        if outcome in OUTCOMES:
            return outcome
        valid = isinstance(outcome, str) and outcome.startswith(SUPPRESSED_PREFIX)
        if not valid or not _REASON.fullmatch(outcome.removeprefix(SUPPRESSED_PREFIX)):
            raise ValueError(
                f"unknown outcome {show(outcome)}; use one of {', '.join(sorted(OUTCOMES))} "
                "or suppressed:<reason>"
            )
        if outcome in self.counts:
            return outcome
        reasons = sum(key.startswith(SUPPRESSED_PREFIX) for key in self.counts)
        return outcome if reasons < MAX_SUPPRESSION_REASONS - 1 else f"{SUPPRESSED_PREFIX}other"

    def merge(self, other: CampaignRun) -> None:
        """Add another worker's counts for the same campaign."""
        if other.campaign_id != self.campaign_id:
            raise ValueError(f"cannot merge the run of {other.campaign_id!r} into {self.campaign_id!r}")
        for outcome, n in other.counts.items():
            key = self._key(outcome)
            self.counts[key] = self.counts.get(key, 0) + n
        spans = [ms for ms in (self.first_ms, other.first_ms) if ms is not None]
        self.first_ms = min(spans) if spans else None
        ends = [ms for ms in (self.last_ms, other.last_ms) if ms is not None]
        self.last_ms = max(ends) if ends else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "counts": dict(self.counts),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CampaignRun:
        return cls(data["campaign_id"], dict(data["counts"]), data.get("first_ms"), data.get("last_ms"))
