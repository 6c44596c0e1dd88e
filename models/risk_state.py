"""One user's drop-off risk in the engine: activity profile, pending labels, the last score,
and the nudges acting on it (notification book, campaign and streak-warning marks, used by
`models.nudges`): everything the retention sweep reads and writes for a user, in one record.

`RiskModel` (models.risk) keeps a book of pending labels for every user it scores, which suits
one process replaying a history. The engine splits that book by user instead: each user's
pending labels live in the user's own state, on the partition that owns the user, so they
recover with it and are resolved by the same worker that sees the user's events. What resolves
there is sent to a single trainer (see models.risk's docstring); what scores there is the latest
model the trainer broadcast. The functions below are that per-user half, pure and in event time.

When a user is scored:
- in the event path, at the user's newest event time, when the activity takes a label snapshot
  or the user was never scored or is at risk (`score_where_it_happens`);
- by the sweep, when stream time passes `next_due(state)`: at once after other activity worth a
  score (`rescore_on_activity`: 15 minutes of event time after the last score), every
  `rescore_ms` (default 1 hour), and just after a pending label's deadline (plus grace), so a
  user who sends nothing is still re-scored as their silence grows, and their label resolves as
  dropped on time.
A score snapshots a pending label at most once per `snapshot_gap_ms` and only for a *live* user
(seen within the horizon): a user gone for longer is already dropped, and labelling them again
every day would flood training with easy positives (the benchmark scores live users only too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.campaigns.looks import CampaignLooks
from models.career_notices import MatchNews
from models.events import BehaviorEvent, is_valid_id
from models.interventions import NotificationBook
from models.match_digests import from_rows, to_rows
from models.risk import (
    DEFAULT_HORIZON_MS,
    PendingLabel,
    Resolution,
    RiskModel,
    RiskScore,
    resolve_expired,
    resolve_seen,
)
from models.risk_features import ActivityProfile, features, feedback_only, observe
from models.risk_workflow import InterventionLog, WeeklyScores
from models.time_units import DAY_MS, HOUR_MS

RISK_STATE_VERSION = 1
#: A change smaller than this (in points of the 0-100 score) is not published again, unless the
#: level changes: re-scoring every hour must not rewrite every user's view every hour.
PUBLISH_DELTA = 1.0
REPUBLISH_MS = 6 * HOUR_MS
#: Scores from here up (medium, CONTRACT §6) count as at risk.
AT_RISK_FROM = 40.0
#: Pending labels kept per user. With the default settings a user has at most 8 at once (one
#: snapshot a day, each resolved within the 7-day horizon plus grace), but the event path only
#: resolves labels the user's activity proves retained; expiry waits for the sweep. A producer
#: sending back-dated events 8 days apart (each past the last label's horizon) snapshots one
#: label per event until then: 1,000 such events made 800 KB of state. Beyond the cap the oldest
#: label is dropped unresolved (one training example lost, never a wrong one).
MAX_PENDING_LABELS = 16
#: Jobs a user saved (``job_save`` with ``props.job_id``), remembered for the deadline reminder;
#: the most recent beyond this are kept.
MAX_SAVED_JOBS = 20
#: The type of the event that saves a job.
JOB_SAVE = "job_save"


@dataclass(frozen=True, slots=True)
class RiskSettings:
    horizon_ms: int = DEFAULT_HORIZON_MS
    #: Allowed lateness: a label resolves as dropped only once stream time is this far past its
    #: deadline, so an event up to this late can still count as "seen".
    grace_ms: int = HOUR_MS
    snapshot_gap_ms: int = DAY_MS
    rescore_ms: int = HOUR_MS
    #: An active user not at risk is re-scored on activity at most this often (event time): their
    #: score barely moves between two lessons. A user at risk (medium or worse) is re-scored after
    #: any activity, so their return shows at once.
    activity_rescore_ms: int = 15 * 60_000
    #: The trainer checkpoints at most this often (wall clock, ``ELIMU_RISK_CHECKPOINT_S``).
    checkpoint_s: float = 30.0


@dataclass
class RiskState:
    user_id: str
    activity: ActivityProfile = field(default_factory=ActivityProfile)
    pending: list[PendingLabel] = field(default_factory=list)
    scored_at_ms: int | None = None
    #: When the last pending label was snapshotted (labels resolve, so the pending list alone
    #: cannot say: one label per `snapshot_gap_ms` per user).
    snapshot_at_ms: int | None = None
    #: The last published risk document (what Redis, `risk-scores` and the at-risk list show).
    last: dict[str, Any] | None = None
    notifications: NotificationBook = field(default_factory=NotificationBook)
    #: Stream time up to which campaigns were evaluated for this user (None: never).
    campaigns_checked_ms: int | None = None
    #: The local day (ordinal) whose streak warning was already considered.
    streak_warned_day: int | None = None
    #: Saved job id -> when it was saved (models/career_notices.py reminds before it closes).
    saved_jobs: dict[str, int] = field(default_factory=dict)
    #: Matches held for the user's daily or weekly digest (models/match_digests.py).
    digest: list[MatchNews] = field(default_factory=list)
    #: The campaign occurrences (and manual sends) already looked at within the lookback
    #: (models/campaigns/looks.py); None in a state written before they were remembered.
    campaign_looks: CampaignLooks | None = None
    #: The last score of each recent ISO week (the at-risk row's `trend`; models/risk_workflow.py).
    weekly: WeeklyScores = field(default_factory=WeeklyScores)
    #: The interventions delivered recently (the row's `last_intervention` and `interventions`).
    received: InterventionLog = field(default_factory=InterventionLog)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": RISK_STATE_VERSION,
            "user_id": self.user_id,
            "activity": self.activity.to_dict(),
            "pending": [p.to_dict() for p in self.pending],
            "scored_at": self.scored_at_ms,
            "snapshot_at": self.snapshot_at_ms,
            "last": self.last,
            "notifications": self.notifications.to_dict(),
            "campaigns_at": self.campaigns_checked_ms,
            "streak_warned": self.streak_warned_day,
            **({"saved": self.saved_jobs} if self.saved_jobs else {}),
            **({"digest": to_rows(self.digest)} if self.digest else {}),
            **({"looks": self.campaign_looks.to_dict()} if self.campaign_looks is not None else {}),
            # Optional keys: a state written before them decodes with empty memories.
            **({"weeks": self.weekly.to_rows()} if self.weekly.weeks else {}),
            **({"received": self.received.to_rows()} if self.received.entries else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskState:
        if data.get("v") != RISK_STATE_VERSION:
            raise ValueError(f"unsupported risk state version {data.get('v')!r}")
        return cls(
            user_id=data["user_id"],
            activity=ActivityProfile.from_dict(data["activity"]),
            pending=[PendingLabel.from_dict(p) for p in data.get("pending") or ()][-MAX_PENDING_LABELS:],
            scored_at_ms=data.get("scored_at"),
            snapshot_at_ms=data.get("snapshot_at"),
            last=data.get("last"),
            notifications=NotificationBook.from_dict(data["notifications"])
            if data.get("notifications")
            else NotificationBook(),
            campaigns_checked_ms=data.get("campaigns_at"),
            streak_warned_day=data.get("streak_warned"),
            saved_jobs={str(k): int(v) for k, v in list((data.get("saved") or {}).items())[-MAX_SAVED_JOBS:]},
            digest=from_rows(data.get("digest"), data["user_id"]),
            campaign_looks=CampaignLooks.from_dict(data.get("looks")),
            weekly=WeeklyScores.from_rows(data.get("weeks")),
            received=InterventionLog.from_rows(data.get("received")),
        )


def remember_saved_job(state: RiskState, event: BehaviorEvent) -> None:
    """Keep the job a ``job_save`` event names (an id like any other: bounded, printable)."""
    job_id = event.props.get("job_id")
    if event.type != JOB_SAVE or not isinstance(job_id, str) or not is_valid_id(job_id):
        return
    saved = state.saved_jobs
    saved.pop(job_id, None)
    saved[job_id] = event.ts_ms
    while len(saved) > MAX_SAVED_JOBS:
        del saved[next(iter(saved))]


def observe_activity(
    state: RiskState, event: BehaviorEvent, xp: float | None, settings: RiskSettings
) -> list[Resolution]:
    """Fold an (already deduplicated) event in; pendings it proves retained resolve as 0
    (a tracked open or click proves nothing: `feedback_only`)."""
    observe(state.activity, event, xp)
    if feedback_only(event):
        return []
    state.pending, retained = resolve_seen(state.pending, event.ts_ms, settings.horizon_ms)
    return [Resolution(p, 0, event.ts_ms) for p in retained]


def expire(state: RiskState, now_ms: int, settings: RiskSettings) -> list[Resolution]:
    """Pendings whose deadline + grace passed in stream time with no activity resolve as 1."""
    state.pending, dropped = resolve_expired(state.pending, now_ms, settings.horizon_ms, settings.grace_ms)
    return [Resolution(p, 1, now_ms) for p in dropped]


def is_live(state: RiskState, now_ms: int, settings: RiskSettings) -> bool:
    last = state.activity.last_event_ms
    return last is not None and now_ms - last <= settings.horizon_ms


def rescore(
    state: RiskState, model: RiskModel, now_ms: int, streak: int | None, settings: RiskSettings
) -> RiskScore:
    """Score at stream time `now_ms` with `model`; snapshot a pending label when one is due."""
    x = features(state.activity, now_ms, streak)
    result = model.assess(state.user_id, x, now_ms)
    if is_live(state, now_ms, settings) and snapshot_due(state, now_ms, settings):
        state.pending.append(
            PendingLabel(state.user_id, now_ms, x, result.probability, result.model_probability)
        )
        del state.pending[:-MAX_PENDING_LABELS]
        state.snapshot_at_ms = now_ms
    state.scored_at_ms = now_ms
    state.weekly.record(now_ms, result.score)
    return result


def snapshot_due(state: RiskState, now_ms: int, settings: RiskSettings) -> bool:
    return state.snapshot_at_ms is None or now_ms - state.snapshot_at_ms >= settings.snapshot_gap_ms


def score_where_it_happens(state: RiskState, settings: RiskSettings) -> bool:
    """Whether new activity must be scored in the event path rather than by the next sweep:
    when it takes a label snapshot (so labels do not depend on how fast the sweep keeps up with
    stream time, as it may not in a replay), and for a user never scored or at risk (their
    score matters now). Other activity is scored by the sweep (`rescore_on_activity`)."""
    last = state.activity.last_event_ms
    if last is None:
        return False
    if state.scored_at_ms is None:
        return True
    if last <= state.scored_at_ms:
        return False
    return snapshot_due(state, last, settings) or _at_risk(state)


def _at_risk(state: RiskState) -> bool:
    return state.last is not None and float(state.last.get("score", 0.0)) >= AT_RISK_FROM


def rescore_on_activity(state: RiskState, settings: RiskSettings) -> bool:
    """Whether activity since the last score is worth a score now (see `activity_rescore_ms`):
    a user never scored, a user at risk who came back, or anyone active `activity_rescore_ms`
    after their last score."""
    last = state.activity.last_event_ms
    if last is None:
        return False
    if state.scored_at_ms is None:
        return True
    if last <= state.scored_at_ms:
        return False
    return _at_risk(state) or last - state.scored_at_ms >= settings.activity_rescore_ms


def next_due(state: RiskState, settings: RiskSettings) -> int | None:
    """Stream time at which this user's risk needs a look: at once after activity worth a score
    (`rescore_on_activity`), else the next re-score or label deadline (None: no activity yet)."""
    if rescore_on_activity(state, settings):
        return state.activity.last_event_ms
    if state.scored_at_ms is None:
        return None
    due = state.scored_at_ms + settings.rescore_ms
    for pending in state.pending:
        due = min(due, pending.scored_at_ms + settings.horizon_ms + settings.grace_ms + 1)
    return due


def worth_publishing(previous: dict[str, Any] | None, score: RiskScore) -> bool:
    """Whether `score` differs enough from the last published one to publish it: another level,
    a move of `PUBLISH_DELTA` points, or the published one is `REPUBLISH_MS` old (so an
    `updated_at` on the at-risk list is never much older than the score behind it)."""
    if previous is None:
        return True
    if previous.get("level") != score.level:
        return True
    if abs(float(previous.get("score", 0.0)) - score.score) >= PUBLISH_DELTA:
        return True
    return score.scored_at_ms - int(previous.get("scored_at_ms", 0)) >= REPUBLISH_MS
