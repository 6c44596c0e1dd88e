"""Job-application status tracking: pure functions, no I/O.

The contract's pipeline is

    submitted → viewed → screening → interview_scheduled → interviewed → offer → hired

with `rejected` and `withdrawn` possible from any open state. The rules, and why:

* Forward moves are legal, skipping steps included: employers' systems often report only some
  steps (an invitation to interview without a "viewed" first). Backward moves are illegal.
* `hired`, `rejected` and `withdrawn` are terminal: nothing is legal after them. Re-sending the
  current status is a no-op, not a violation (producers re-send the same fact with a new id).
* An application may begin at any status, because the platform may never send `submitted`;
  its submission time is then the time of its first event.
* Delivery is at-least-once and out of order, so the current status is not "the last event
  received" but a fold of the legality rules over the history ordered by event time (ties by
  pipeline rank, then a digest of event_id). The same set of events therefore gives the same
  application whatever the arrival order, and a redelivered event_id changes nothing.
* An event that is illegal in that fold is kept in the history with `legal: false` rather than
  dropped: it is a fact about the employer's data worth showing, it just never moves the status.
  A late event can also make an earlier-received one illegal (a late `rejected` before an
  `offer`), which is why every update re-folds the whole (small, capped) history.

History cap: at most HISTORY_CAP entries are kept. When over, the oldest entry that is not a
transition (an illegal event or a no-op repeat) is dropped. A transition can never be dropped
(there are at most seven: the pipeline plus one exit), and an entry that is not a transition
never becomes one when more events arrive (the fold's state only advances), so dropping such
entries never changes status, times or facts. The price: a dropped event_id is forgotten, so its
redelivery is re-recorded (and dropped again) instead of being reported as a duplicate.

Size: an application lives in its user's career state (models.career), which has a byte budget.
So an entry keeps a fixed-size digest of its event id (models.digests) rather than the id (up to
128 bytes, 256 of JSON), and its note cut to NOTE_BYTES of JSON; with HISTORY_CAP entries an
application is at most ~11 KB encoded whatever its producer sends. Digests order ties (same time
and status) as ids did: by a value fixed by the event, so the fold stays order-independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from models.digests import id_digest
from models.events import APPLICATION_STATUSES, ApplicationStatusEvent, format_ts
from models.state_budget import clip_optional
from models.time_units import DAY_MS, HOUR_MS

#: Version 1 kept raw event ids and whole notes; it is read and converted (see `from_dict`).
STATE_VERSION = 2
_V1 = 1
#: Entries kept per application: the seven transitions a pipeline can have, plus room for the
#: repeats and illegal events worth showing (employers' systems re-send; a flood is not history).
HISTORY_CAP = 32
#: A note's budget in bytes of JSON (about 250 characters of Latin text): notes are free text of
#: up to 512 characters, which as control characters is 3 KB per entry.
NOTE_BYTES = 256

TERMINAL = frozenset({"hired", "rejected", "withdrawn"})
EXITS = frozenset({"rejected", "withdrawn"})
# Statuses that are not an employer's answer to the application.
_NOT_A_RESPONSE = frozenset({"submitted", "withdrawn"})
_INTERVIEW_OR_LATER = frozenset({"interview_scheduled", "interviewed", "offer", "hired"})
_OFFER_OR_LATER = frozenset({"offer", "hired"})
# Pipeline rank; the exits rank after `hired` only to order same-millisecond events (a
# `viewed` and a `rejected` stamped alike most plausibly happened in that order).
_RANK = {status: rank for rank, status in enumerate(APPLICATION_STATUSES)}

_EPOCH_DATE = date(1970, 1, 1)


def is_legal_transition(current: str | None, new: str) -> bool:
    """Whether `new` may follow `current` (None: the application's first event).

    A repeat of the current status counts as legal: it is a no-op, not a violation.
    """
    if current is None or new == current:
        return True
    if current in TERMINAL:
        return False
    return new in EXITS or _RANK[new] > _RANK[current]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    ts_ms: int
    status: str
    #: `models.digests.id_digest` of the event's id: what deduplicates a redelivery.
    event_digest: str
    note: str | None
    legal: bool

    def sort_key(self) -> tuple[int, int, str]:
        return (self.ts_ms, _RANK[self.status], self.event_digest)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What one event did. `changed`: the current status differs from before; `legal`: the
    event's verdict in the fold (for a duplicate, the verdict on the copy already recorded)."""

    previous_status: str | None
    status: str
    changed: bool
    duplicate: bool
    legal: bool


@dataclass(frozen=True)
class ApplicationFacts:
    """The few facts about one application that the analytics need (join in industry/source)."""

    application_id: str
    submitted_at_ms: int
    first_response_at_ms: int | None
    reached_interview: bool
    reached_offer: bool
    hired: bool
    rejected: bool
    withdrawn: bool
    industry: str | None = None
    source: str | None = None


@dataclass
class Application:
    """One application; every field but the ids is derived from `history` (see _judge).

    `updated_at_ms` is the time of the event that set the current status; `first_response_at_ms`
    that of the first legal status other than submitted/withdrawn (an application that begins at,
    say, `viewed` therefore has a response time of zero: its first event is both).
    """

    application_id: str
    user_id: str
    job_id: str
    status: str
    history: list[HistoryEntry] = field(default_factory=list)
    submitted_at_ms: int = 0
    first_response_at_ms: int | None = None
    updated_at_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and compact (it is written to a changelog on every update): only the ids
        and the history as [ts_ms, status, event digest, note] rows; from_dict re-derives the rest."""
        return {
            "v": STATE_VERSION,
            "id": self.application_id,
            "user": self.user_id,
            "job": self.job_id,
            "h": [[e.ts_ms, e.status, e.event_digest, e.note] for e in self.history],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Application:
        version = data.get("v")
        if version not in (STATE_VERSION, _V1):
            raise ValueError(f"unsupported application state version {version!r}")
        rows = data["h"]
        if version == _V1:  # raw ids and whole notes: digest and cut them as new entries are
            rows = [[ts, status, id_digest(event_id), _note(note)] for ts, status, event_id, note in rows]
        entries = [HistoryEntry(ts, status, digest, note, True) for ts, status, digest, note in rows]
        return _build(data["id"], data["user"], data["job"], _judge(entries))

    def public_view(self) -> dict[str, Any]:
        """The HTTP API's shape: RFC 3339 times; no user or event ids."""
        return {
            "application_id": self.application_id,
            "job_id": self.job_id,
            "status": self.status,
            "submitted_at": format_ts(self.submitted_at_ms),
            "updated_at": format_ts(self.updated_at_ms),
            "history": [
                {"status": e.status, "ts": format_ts(e.ts_ms), "note": e.note, "legal": e.legal}
                for e in self.history
            ],
        }

    def facts(self, industry: str | None = None, source: str | None = None) -> ApplicationFacts:
        # "Reached" counts any legal step, so an application rejected after its interview still
        # counts as having reached the interview.
        reached = {e.status for e in self.history if e.legal}
        return ApplicationFacts(
            application_id=self.application_id,
            submitted_at_ms=self.submitted_at_ms,
            first_response_at_ms=self.first_response_at_ms,
            reached_interview=bool(reached & _INTERVIEW_OR_LATER),
            reached_offer=bool(reached & _OFFER_OR_LATER),
            hired=self.status == "hired",
            rejected=self.status == "rejected",
            withdrawn=self.status == "withdrawn",
            industry=industry,
            source=source,
        )


def apply_status(app: Application | None, event: ApplicationStatusEvent) -> tuple[Application, StatusChange]:
    """Fold one event into an application (None: the first event seen for it).

    Returns a new Application; `app` is not modified. Raises ValueError for an unknown status
    or an event of another application, user or job: those are routing or producer bugs that
    silently merging would hide.
    """
    if event.status not in _RANK:
        raise ValueError(f"unknown application status {event.status!r}")
    previous = None
    digest = id_digest(event.event_id)
    entries = [HistoryEntry(event.ts_ms, event.status, digest, _note(event.note), True)]
    if app is not None:
        _check_same_application(app, event)
        for entry in app.history:
            if entry.event_digest == digest:
                return app, StatusChange(app.status, app.status, False, True, entry.legal)
        previous = app.status
        entries += app.history
    judged = _judge(entries)
    # Looked up before the cap, which may drop this very event (if it is not a transition).
    legal = next(entry.legal for entry, _ in judged if entry.event_digest == digest)
    new = _build(event.application_id, event.user_id, event.job_id, judged)
    return new, StatusChange(previous, new.status, new.status != previous, False, legal)


def _note(note: str | None) -> str | None:
    return clip_optional(note, NOTE_BYTES)


def _check_same_application(app: Application, event: ApplicationStatusEvent) -> None:
    for name, have, got in (
        ("application_id", app.application_id, event.application_id),
        ("user_id", app.user_id, event.user_id),
        ("job_id", app.job_id, event.job_id),
    ):
        if have != got:
            raise ValueError(f"event {event.event_id!r} has {name} {got!r}, the application has {have!r}")


def _judge(entries: Iterable[HistoryEntry]) -> list[tuple[HistoryEntry, bool]]:
    """The fold: entries in event-time order, each with its `legal` flag set and paired with
    whether it is a transition (legal and not a repeat of the current status)."""
    status: str | None = None
    judged = []
    for entry in sorted(entries, key=HistoryEntry.sort_key):
        legal = is_legal_transition(status, entry.status)
        transition = legal and entry.status != status
        if transition:
            status = entry.status
        judged.append((replace(entry, legal=legal), transition))
    return judged


def _build(
    application_id: str, user_id: str, job_id: str, judged: list[tuple[HistoryEntry, bool]]
) -> Application:
    transitions = [entry for entry, transition in judged if transition]
    if not transitions:
        raise ValueError("an application needs at least one event")
    # The cap drops the oldest non-transitions; see the module docstring for why that is safe.
    excess = len(judged) - HISTORY_CAP
    history = []
    for entry, transition in judged:
        if excess > 0 and not transition:
            excess -= 1
        else:
            history.append(entry)
    return Application(
        application_id=application_id,
        user_id=user_id,
        job_id=job_id,
        status=transitions[-1].status,
        history=history,
        submitted_at_ms=transitions[0].ts_ms,
        first_response_at_ms=next((e.ts_ms for e in transitions if e.status not in _NOT_A_RESPONSE), None),
        updated_at_ms=transitions[-1].ts_ms,
    )


# ---------------------------------------------------------------------------------------------
# Analytics


def application_analytics(facts: Iterable[ApplicationFacts], now_ms: int, days: int = 30) -> dict[str, Any]:
    """Response times and funnel rates of the applications SUBMITTED in the last `days` UTC days
    (today included); applications submitted earlier, or on a later day, are left out.

    The whole report covers that one cohort, so `total` is the sum of `by_day[*].submitted` and
    every rate has the same denominator. Rates are fractions of the group's total (0.0 for an
    empty group); response times are in hours, percentiles linearly interpolated.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    today = now_ms // DAY_MS
    first_day = today - days + 1
    cohort = [f for f in facts if first_day <= f.submitted_at_ms // DAY_MS <= today]
    per_day = {day: [0, 0, 0, 0] for day in range(first_day, today + 1)}
    for f in cohort:
        counts = per_day[f.submitted_at_ms // DAY_MS]
        counts[0] += 1
        counts[1] += f.first_response_at_ms is not None
        counts[2] += f.reached_interview
        counts[3] += f.reached_offer
    return {
        "total": len(cohort),
        "response_time_hours": _response_times(cohort),
        **_rates(cohort),
        "by_day": [
            {"day": _iso_day(day), "submitted": s, "responded": r, "interviews": i, "offers": o}
            for day, (s, r, i, o) in per_day.items()
        ],
        "by_industry": _by_group(cohort, lambda f: f.industry),
        "by_source": _by_group(cohort, lambda f: f.source),
    }


def _rates(group: list[ApplicationFacts]) -> dict[str, float]:
    def rate(count: int) -> float:
        return round(count / len(group), 4) if group else 0.0

    return {
        "interview_rate": rate(sum(f.reached_interview for f in group)),
        "offer_rate": rate(sum(f.reached_offer for f in group)),
        "hire_rate": rate(sum(f.hired for f in group)),
    }


def _by_group(
    cohort: list[ApplicationFacts], key: Callable[[ApplicationFacts], str | None]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[ApplicationFacts]] = {}
    for f in cohort:
        groups.setdefault(key(f) or "unknown", []).append(f)
    # Sorted so the report is stable whatever order the facts came in.
    return {name: {"total": len(group), **_rates(group)} for name, group in sorted(groups.items())}


def _response_times(cohort: list[ApplicationFacts]) -> dict[str, Any]:
    hours = sorted(
        (f.first_response_at_ms - f.submitted_at_ms) / HOUR_MS
        for f in cohort
        if f.first_response_at_ms is not None
    )
    if not hours:
        return {"p50": None, "p90": None, "mean": None, "responded": 0}
    return {
        "p50": round(_percentile(hours, 0.5), 2),
        "p90": round(_percentile(hours, 0.9), 2),
        "mean": round(sum(hours) / len(hours), 2),
        "responded": len(hours),
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), defined for one value too."""
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _iso_day(day: int) -> str:
    return (_EPOCH_DATE + timedelta(days=day)).isoformat()
