"""What the nudges know about a user, gathered from the tables of the user's partition: the
timezone, streak and level (user-state), the notification preferences and profile fields
(career-state), and activity instants (risk-state). All on the worker that owns the user."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from models.boards import Standing, WeekBoards, standing_of, week_scores
from models.campaigns.records import UserFacts
from models.career import CareerState
from models.career_notices import MAX_CLOSING, ClosingJob
from models.events import InvalidEvent, JobPosting, parse_ts
from models.gamification import UserState, weakest_category
from models.interventions import UserContext
from models.leaderboard import bucket
from models.levels import level_for_xp
from models.peers import active_share
from models.risk_state import RiskState
from models.rules import Rules
from models.streaks import local_day, streak_as_of


class PeerActivity:
    """The share of this worker's learners who practised this week (models/peers.py), for the
    nudges' ``{peer_pct}``: recomputed from the risk states by the sweep, at most every
    ``REFRESH_S`` (a pass over every owned user is cheap, but not per nudge)."""

    REFRESH_S = 600.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.pct: float | None = None
        self._refreshed: float | None = None

    def refresh(self, states: Iterable[RiskState], now_ms: int) -> None:
        now = self.clock()
        if self._refreshed is not None and now - self._refreshed < self.REFRESH_S:
            return
        self._refreshed = now
        self.pct = active_share((s.activity.last_event_ms for s in states), now_ms)


class BoardStanding:
    """The weekly boards of this worker's learners (their sorted scores, global and per school
    and cohort: models/boards.py ``week_scores``), for the peer comparison's real percentile.
    Rebuilt from the engagement states by the sweep, at most every ``REFRESH_S``, like
    ``PeerActivity``: the scores are the ones the weekly boards show (period XP, listed users
    only), over the users this worker holds, which is everyone on one worker and a hash-spread
    sample of everyone on several."""

    REFRESH_S = 600.0

    def __init__(
        self,
        states_of: Callable[[AbstractSet[int]], Iterable[UserState]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.states_of = states_of
        self.clock = clock
        self.week: str | None = None
        self.boards = WeekBoards()
        self._refreshed: float | None = None

    def refresh(self, partitions: AbstractSet[int], now_ms: int) -> None:
        now = self.clock()
        week = f"weekly:{bucket('weekly', now_ms)}"
        if self._refreshed is not None and now - self._refreshed < self.REFRESH_S and week == self.week:
            return
        self._refreshed = now
        self.week = week
        self.boards = week_scores(
            (state.user_id, state.boards, state.period_xp[week][0])
            for state in self.states_of(partitions)
            if week in state.period_xp
        )

    def standing(self, state: UserState) -> Standing | None:
        if self.week is None:
            return None
        held = state.period_xp.get(self.week)
        return standing_of(state.user_id, state.boards, held[0] if held else None, self.boards)


@functools.lru_cache(maxsize=1 << 14)
def _deadline_ms(text: str) -> int:
    """A match's stored deadline (RFC 3339) as epoch ms. Cached: a user's context is built after
    every batch that touches them, and the same few thousand open postings' deadlines recur."""
    return parse_ts(text)


def closing_jobs(
    career: CareerState,
    now_ms: int,
    saved: Mapping[str, int] | None = None,
    posting_of: Callable[[str], JobPosting | None] = lambda job_id: None,
) -> tuple[ClosingJob, ...]:
    """The user's matched and saved jobs still open and not applied for, best matches first,
    then the saved ones, most recent first (bounded)."""
    applied = {a.job_id for a in career.applications.values()}
    found: list[tuple[int, ClosingJob]] = []
    for rank, job_id in enumerate(reversed(list(saved or {})), start=1):  # after every match
        posting = posting_of(job_id)
        if job_id in career.matches or job_id in applied or posting is None:
            continue
        if posting.deadline_ms is not None and posting.deadline_ms > now_ms:
            found.append((rank, ClosingJob(job_id, posting.title, posting.company, posting.deadline_ms)))
    for entry in career.matches.values():
        deadline = entry.get("deadline")
        if not deadline or entry["job_id"] in applied:
            continue
        try:
            deadline_ms = _deadline_ms(deadline)
        except InvalidEvent:
            continue
        if deadline_ms > now_ms:
            job = ClosingJob(
                entry["job_id"], str(entry.get("title") or ""), entry.get("company"), deadline_ms
            )
            found.append((-int(entry.get("match_score") or 0), job))
    found.sort(key=lambda pair: (pair[0], pair[1].job_id))
    return tuple(job for _, job in found[:MAX_CLOSING])


class UserDirectory:
    def __init__(
        self,
        rules: Rules,
        user_state: Callable[[str], UserState | None],
        career_state: Callable[[str], CareerState | None],
        peers: PeerActivity | None = None,
        posting_of: Callable[[str], JobPosting | None] = lambda job_id: None,
        standings: BoardStanding | None = None,
    ) -> None:
        self.rules = rules
        self.user_state = user_state
        self.career_state = career_state
        self.peers = peers or PeerActivity()
        #: An open posting by id (the career slice's index), for the saved jobs' deadlines.
        self.posting_of = posting_of
        #: The weekly boards' scores, for the peer comparison (None: no percentile is quoted).
        self.standings = standings

    def streak_of(self, user_id: str, now_ms: int) -> int | None:
        """The user's streak as of stream time `now_ms`, in their timezone (freezes included)."""
        state = self.user_state(user_id)
        if state is None:
            return None
        today = local_day(now_ms, state.timezone)
        return streak_as_of(state.streak, today, self.rules.max_held_freezes).current

    def context(self, state: RiskState, now_ms: int) -> tuple[UserContext, UserFacts]:
        uid = state.user_id
        user = self.user_state(uid)
        career = self.career_state(uid)
        timezone = user.timezone if user else career.timezone if career else "UTC"
        profile: dict[str, object] = {"timezone": timezone}
        if career is not None:
            profile["interests"] = list(career.interests)
            if career.candidate is not None:
                profile.update(career.candidate.to_dict())
        activity = state.activity
        ctx = UserContext(
            user_id=uid,
            timezone=timezone,
            prefs=career.notification_prefs if career else {},
            display_name=career.display_name if career else None,
            streak=self.streak_of(uid, now_ms) or 0,
            level=level_for_xp(user.xp, self.rules.levels).level if user else 1,
            last_active_ms=activity.last_event_ms,
            signup_ms=activity.first_seen_ms,
            weakest_category=weakest_category(user) if user else None,
            discount_pct=self.rules.discount_pct,
            peer_pct=self.peers.pct,
            standing=self.standings.standing(user) if self.standings and user else None,
            closing_jobs=closing_jobs(career, now_ms, state.saved_jobs, self.posting_of) if career else (),
        )
        score = state.last.get("score") if state.last else None
        facts = UserFacts(
            user_id=uid,
            timezone=timezone,
            signup_ms=activity.first_seen_ms,
            last_active_ms=activity.last_event_ms,
            risk_score=float(score) if isinstance(score, int | float) else None,
            profile=profile,
        )
        return ctx, facts
