"""The interventions' global tallies: funnel counts and campaign execution logs, kept by the
single analytics agent (streams/interventions.py) from the outcomes user partitions report. A
campaign's notifications (source "campaign:<id>") also count in its own funnel and run log.

Reports arrive at least once (a user partition that crashed after sending them but before
recording them sends them again), so each carries an id and the ledger remembers the most recent
`MAX_SEEN` ids: a repeat can only come from the replay of a crashed batch, seconds later.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from models.campaigns.execution import CampaignRun
from models.events import MAX_ID_LEN
from models.interventions import STAGES, InterventionStats

LEDGER_VERSION = 1
MAX_SEEN = 5000
#: A campaign notification's source is "campaign:<id>" (models/nudges.py).
CAMPAIGN_SOURCE = "campaign:"


@dataclass
class OutcomeLedger:
    stats: InterventionStats = field(default_factory=InterventionStats)
    runs: dict[str, CampaignRun] = field(default_factory=dict)
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_SEEN))

    def apply(self, report: dict[str, Any]) -> str | None:
        """Count one report; returns the campaign id it changed (None otherwise). Raises
        ValueError/KeyError for a malformed report; a repeated id changes nothing."""
        report_id = str(report["id"])
        if report_id in self.seen:
            return None
        kind = report["kind"]
        if kind == "stage":
            stage = str(report["stage"])
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}")
            where = (
                str(report["type"]),
                str(report["channel"]),
                str(report["template"]),
                str(report["variant"]),
            )
            changed = self._campaign_stage(report, stage)
            self.stats.record(stage, *where)
        elif kind == "delivery":
            self.stats.record_delivery(
                str(report["result"]), str(report["channel"]), str(report["template"]), str(report["variant"])
            )
            changed = None
        elif kind == "campaign":
            campaign_id = str(report["campaign_id"])
            outcome, at_ms = str(report["outcome"]), int(report["at_ms"])
            occurrence = report.get("occurrence")
            # Recorded on a scratch run first: a malformed outcome raises before any run exists.
            run = self.runs.get(campaign_id) or CampaignRun(campaign_id)
            run.record(outcome, at_ms, occurrence=None if occurrence is None else str(occurrence))
            self.runs[campaign_id] = run
            changed = campaign_id
        else:
            raise ValueError(f"unknown report kind {kind!r}")
        self.seen.append(report_id)
        return changed

    def _campaign_stage(self, report: dict[str, Any], stage: str) -> str | None:
        """A campaign notification's funnel step, counted in its campaign's run (and in the run of
        its occurrence: the notification's key is "campaign:<id>:<occurrence>"); returns the
        campaign id, None for a notification of another source. Raises ValueError (nothing
        counted) for a malformed one."""
        source = report.get("source")
        if not isinstance(source, str) or not source.startswith(CAMPAIGN_SOURCE):
            return None
        campaign_id = source[len(CAMPAIGN_SOURCE) :]
        if not campaign_id or len(campaign_id) > MAX_ID_LEN:
            raise ValueError(f"source {source[:160]!r} names no campaign")
        key = str(report.get("key") or "")
        prefix = f"{CAMPAIGN_SOURCE}{campaign_id}:"
        occurrence = key[len(prefix) :] if key.startswith(prefix) else None
        at_ms = report.get("at_ms")
        run = self.runs.get(campaign_id) or CampaignRun(campaign_id)
        run.record_stage(stage, occurrence, None if at_ms is None else int(at_ms))
        self.runs[campaign_id] = run
        return campaign_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": LEDGER_VERSION,
            "stats": self.stats.to_dict(),
            "runs": {k: r.to_dict() for k, r in self.runs.items()},
            "seen": list(self.seen),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutcomeLedger:
        if data.get("v") != LEDGER_VERSION:
            raise ValueError(f"unsupported outcome ledger version {data.get('v')!r}")
        return cls(
            stats=InterventionStats.from_dict(data["stats"]),
            runs={k: CampaignRun.from_dict(v) for k, v in data["runs"].items()},
            seen=deque(data["seen"], maxlen=MAX_SEEN),
        )
