"""Job match news in a daily or weekly digest, for users who asked for one (the ``digest``
notification setting: ``off``, ``daily`` or ``weekly``), without I/O.

With ``off`` (the default) a perfect match or a burst of matches is news at once, on every channel
the user allows (models/career_notices.py). With ``daily`` or ``weekly`` the user asked to be
interrupted less: each match still lands in the in-app inbox at once (silent), and is held
(``RiskState.digest``) for one ``match_digest`` on their other channels at ``DIGEST_AT`` on their
own clock — the next morning, or the next Monday morning. Held matches are bounded
(``MAX_HELD``, the best kept) and deduplicated by job. Status changes and deadline reminders are
never held: they are about something the user has already done or must do now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, time, timedelta
from typing import Any

from models.career_notices import MatchNews, Notice, digest_notice, match_notice
from models.streaks import local_day
from models.tz import local_instant_ms, zone

#: The kinds a digest holds.
HELD_KINDS = frozenset({"job_match", "match_digest"})
FREQUENCIES = frozenset({"daily", "weekly"})
#: When a digest goes out, on the user's clock; weekly ones on Mondays.
DIGEST_AT = time(9, 0)
#: Matches held for one digest: the best by score.
MAX_HELD = 30


def frequency(prefs: Mapping[str, Any]) -> str | None:
    """``daily`` or ``weekly`` when the user asked for a digest, else None (news at once)."""
    value = prefs.get("digest")
    return value if isinstance(value, str) and value in FREQUENCIES else None


def hold(held: list[MatchNews], notices: Sequence[Notice]) -> list[MatchNews]:
    """``held`` with the matches of ``notices`` added: one per job (the newest news of it), the
    ``MAX_HELD`` best kept."""
    by_job = {m.job_id: m for m in held}
    for notice in notices:
        for m in notice.matches:
            by_job[m.job_id] = m
    kept = sorted(by_job.values(), key=lambda m: (-m.match_score, m.job_id))[:MAX_HELD]
    return sorted(kept, key=lambda m: (m.at_ms, m.job_id))


def due_at(held: Sequence[MatchNews], timezone: str, how_often: str) -> int | None:
    """When the digest of ``held`` goes out: the first ``DIGEST_AT`` local after the oldest
    held match (daily), on a Monday (weekly). None when nothing is held."""
    if not held:
        return None
    first = min(m.at_ms for m in held)
    tz = zone(timezone)
    day = date.fromordinal(local_day(first, timezone))
    at = local_instant_ms(day, DIGEST_AT, tz)
    while at <= first or (how_often == "weekly" and day.weekday() != 0):
        day += timedelta(days=1)
        at = local_instant_ms(day, DIGEST_AT, tz)
    return at


def the_digest(user_id: str, held: Sequence[MatchNews], due_ms: int) -> Notice:
    """The one ``match_digest`` of what was held, keyed by its instant (sent once)."""
    key = f"digest:{user_id}:{due_ms}"
    if len(held) == 1:  # "1 new job matches" reads badly: one match is told as a match
        one = match_notice(held[0])
        return Notice(one.type, key, one.variables, due_ms, matches=one.matches)
    return digest_notice(held, key, due_ms)


def to_rows(held: Sequence[MatchNews]) -> list[list[Any]]:
    return [[m.job_id, m.title, m.company, m.match_score, m.is_perfect, m.at_ms, m.location] for m in held]


def from_rows(rows: object, user_id: str) -> list[MatchNews]:
    """Held matches from state; malformed rows are dropped (state is ours, but stays bounded)."""
    out: list[MatchNews] = []
    if not isinstance(rows, list):
        return out
    for row in rows[:MAX_HELD]:
        try:
            job_id, title, company, score, perfect, at_ms, location = row
            news = MatchNews(
                user_id=user_id,
                job_id=str(job_id),
                title=str(title),
                company=_text(company),
                match_score=int(score),
                is_perfect=bool(perfect),
                at_ms=int(at_ms),
                location=_text(location),
            )
            out.append(news)
        except (TypeError, ValueError):
            continue
    return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
