"""What a user hears about their own career (CONTRACT §7: application status changes and perfect
matches are notified on the channels the user's settings enable, in-app always), without I/O.

- A status change of one of their applications: one ``application_update``, keyed by the
  application and the status, so a redelivered or repeated status notifies once. Submitting is
  the user's own act: no news.
- New matches: a perfect match is one ``job_match``; three or more new matches at once (a
  profile update, a burst of postings) become one ``match_digest`` ("7 new job matches in
  Nairobi") instead of a burst of messages. A lone match that is not perfect stays where it is
  today: the websocket alert and the matches list.

The words come from the job (title, company, place) and the user's own data; the notification
gate (models/interventions/notifications.py ``decide``) then applies opt-outs and quiet hours.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta

from models.events import format_ts
from models.streaks import local_day
from models.time_units import HOUR_MS
from models.tz import local_instant_ms, zone

#: A batch's new matches for one user from which one digest replaces the single messages.
DIGEST_FROM = 3
#: Statuses worth a message, with a headline and the sentence's end.
STATUS_WORDS: Mapping[str, tuple[str, str]] = {
    "viewed": ("viewed by the employer", "was viewed by the employer"),
    "screening": ("in screening", "is being screened"),
    "interview_scheduled": ("interview scheduled", "has an interview scheduled"),
    "interviewed": ("interview done", "is past the interview: the decision comes next"),
    "offer": ("you have an offer", "turned into an offer. Congratulations"),
    "hired": ("you're hired", "ended in a hire. Congratulations"),
    "rejected": ("not this time", "was not taken further. Keep going: new matches come every day"),
    "withdrawn": ("withdrawn", "was withdrawn"),
}
#: Statuses marked high urgency (the notification says so; quiet hours still hold it back).
URGENT_STATUSES = frozenset({"interview_scheduled", "offer", "hired"})


@dataclass(frozen=True, slots=True)
class Notice:
    """One career notification to decide on: its type, dedup key, variables and time."""

    type: str
    key: str
    variables: Mapping[str, object]
    at_ms: int
    urgency: str = "medium"
    #: The matches a ``job_match`` or ``match_digest`` is about: a user who asked for a daily or
    #: weekly digest gets them in that instead (models/match_digests.py).
    matches: tuple[MatchNews, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusNews:
    user_id: str
    application_id: str
    status: str
    at_ms: int
    job_title: str | None = None
    company: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class MatchNews:
    user_id: str
    job_id: str
    title: str
    company: str | None
    match_score: int
    is_perfect: bool
    at_ms: int
    location: str | None = None
    deadline_ms: int | None = None


def status_notice(news: StatusNews) -> Notice | None:
    words = STATUS_WORDS.get(news.status)
    if words is None:
        return None
    headline, text = words
    note = (news.note or "").strip()
    variables: dict[str, object] = {
        "status_headline": headline,
        "status_text": text,
        "note": f" Note: {note[:200]}" if note else "",
    }
    if news.job_title:
        variables["job_title"] = news.job_title
        variables["about"] = f"{news.job_title} at {news.company}" if news.company else news.job_title
    return Notice(
        type="application_update",
        key=f"app:{news.application_id}:{news.status}",
        variables=variables,
        at_ms=news.at_ms,
        urgency="high" if news.status in URGENT_STATUSES else "medium",
    )


def match_notices(matches: Sequence[MatchNews]) -> list[Notice]:
    """The notices for one user's new matches of one batch."""
    if len(matches) >= DIGEST_FROM:
        ids = ",".join(sorted(m.job_id for m in matches))
        digest = hashlib.sha256(ids.encode()).hexdigest()[:16]
        return [digest_notice(matches, f"digest:{digest}", max(m.at_ms for m in matches))]
    return [match_notice(m) for m in matches if m.is_perfect]


def digest_notice(matches: Sequence[MatchNews], key: str, at_ms: int) -> Notice:
    """One ``match_digest`` of ``matches`` ("7 new job matches in Nairobi", the best one named)."""
    best = max(matches, key=lambda m: (m.match_score, m.job_id))
    places = Counter(m.location for m in matches if m.location)
    # The most common place, ties to the first in order of name (whatever the batch order).
    place = min(places, key=lambda p: (-places[p], p)) if places else None
    where = ""
    if place is not None:
        where = f" in {place}" if places[place] == len(matches) else f" in {place} and elsewhere"
    variables: dict[str, object] = {"count": len(matches), "place": where, "job_title": best.title}
    if best.company:
        variables["company"] = best.company
    return Notice("match_digest", key, variables, at_ms, matches=tuple(matches))


def match_notice(m: MatchNews) -> Notice:
    variables: dict[str, object] = {
        "job_title": m.title,
        "match_pct": m.match_score,
        "place": f" in {m.location}" if m.location else "",
        "deadline": f" Apply by {format_ts(m.deadline_ms)[:10]}." if m.deadline_ms else "",
    }
    if m.company:
        variables["company"] = m.company
    return Notice("job_match", f"match:{m.job_id}", variables, m.at_ms, urgency="high", matches=(m,))


# ---------------------------------------------------------------------------------------------
# Deadline reminders

#: A matched job still open, not applied for: a reminder this long before its deadline...
REMINDER_LEAD_MS = 48 * HOUR_MS
#: ... at this local hour (not at 3 a.m. because a deadline falls at 3 a.m. two days on) ...
REMINDER_AT = time(9, 0)
#: ... unless that leaves less than this before the deadline: too late to be useful.
MIN_LEFT_MS = 2 * HOUR_MS
#: Closing jobs a user's context carries (their best matches first).
MAX_CLOSING = 20


@dataclass(frozen=True, slots=True)
class ClosingJob:
    job_id: str
    title: str
    company: str | None
    deadline_ms: int


def reminder_instant(job: ClosingJob, timezone: str) -> int | None:
    """When to remind of ``job``: the first REMINDER_AT local at or after deadline - 48 h; None
    when that comes too close to the deadline."""
    tz = zone(timezone)
    start = job.deadline_ms - REMINDER_LEAD_MS
    day = date.fromordinal(local_day(start, timezone))
    at = local_instant_ms(day, REMINDER_AT, tz)
    if at < start:
        at = local_instant_ms(day + timedelta(days=1), REMINDER_AT, tz)
    return at if job.deadline_ms - at >= MIN_LEFT_MS else None


def deadline_notices(jobs: Sequence[ClosingJob], timezone: str, now_ms: int) -> list[Notice]:
    """The reminders due at ``now_ms`` (keyed by job: once each)."""
    out: list[Notice] = []
    for job in jobs:
        at = reminder_instant(job, timezone)
        if at is None or not at <= now_ms < job.deadline_ms:
            continue
        hours = max(1, round((job.deadline_ms - now_ms) / HOUR_MS))
        variables: dict[str, object] = {
            "job_title": job.title,
            "closing": f"in {hours} hours" if hours <= 36 else "in two days",
        }
        if job.company:
            variables["company"] = job.company
        out.append(Notice("deadline_reminder", f"deadline:{job.job_id}", variables, now_ms, urgency="high"))
    return out


def next_reminder(jobs: Sequence[ClosingJob], timezone: str, after_ms: int) -> int | None:
    """The next reminder instant after ``after_ms`` (for the sweep's agenda)."""
    instants = [at for job in jobs if (at := reminder_instant(job, timezone)) is not None and at > after_ms]
    return min(instants, default=None)
