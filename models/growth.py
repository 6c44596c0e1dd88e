"""Per-user growth state: the rewards ledger, the referral book (this user as a referrer), the
referral that brought this user, today's challenge progress, goals, and recent command answers.

One object per user, on the user's partition, so every command and event about the user is
decided by one worker in order (docs/growth.md). ``answers`` makes every command idempotent by
its id, including the ones whose effects are not idempotent by themselves (a claim, a new goal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.challenges import ChallengeProgress, Goal
from models.referrals import ReferrerBook
from models.rewards import Ledger

GROWTH_STATE_VERSION = 1
#: Command answers remembered per user; older retries re-run the command, whose effects are
#: idempotent anyway except for goal creation (a client retrying a day later is not a retry).
MAX_ANSWERS = 200
#: Days of challenge progress kept (by local date): more than the 7-day dedup window, so an event
#: late by up to that window still counts toward its own day's challenge, whatever the order.
CHALLENGE_DAYS = 8


@dataclass
class ReferredBy:
    """The claim that brought this user (kept on their side, so their lessons can complete it)."""

    referrer_id: str
    claimed_at_ms: int
    completion_sent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "referrer_id": self.referrer_id,
            "claimed_at_ms": self.claimed_at_ms,
            "sent": self.completion_sent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferredBy:
        return cls(data["referrer_id"], data["claimed_at_ms"], data.get("sent", False))


@dataclass
class GrowthState:
    user_id: str
    ledger: Ledger = field(init=False)
    book: ReferrerBook | None = None
    referred_by: ReferredBy | None = None
    #: challenge id (the local ISO date) -> progress, the newest CHALLENGE_DAYS days.
    challenges: dict[str, ChallengeProgress] = field(default_factory=dict)
    goals: dict[str, Goal] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.user_id)

    def challenge_progress(self, challenge_id: str) -> ChallengeProgress | None:
        return self.challenges.get(challenge_id)

    def keep_challenge(self, progress: ChallengeProgress) -> bool:
        """Store a day's progress; False for a day older than every kept one (nothing stored)."""
        if progress.challenge_id not in self.challenges and len(self.challenges) >= CHALLENGE_DAYS:
            oldest = min(self.challenges)
            if progress.challenge_id < oldest:
                return False
            del self.challenges[oldest]
        self.challenges[progress.challenge_id] = progress
        return True

    @property
    def latest_challenge(self) -> ChallengeProgress | None:
        return self.challenges[max(self.challenges)] if self.challenges else None

    def remember_answer(self, command_id: str, answer: dict[str, Any]) -> None:
        self.answers[command_id] = answer
        while len(self.answers) > MAX_ANSWERS:
            del self.answers[next(iter(self.answers))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": GROWTH_STATE_VERSION,
            "user_id": self.user_id,
            "ledger": self.ledger.to_dict(),
            "book": self.book.to_dict() if self.book else None,
            "referred_by": self.referred_by.to_dict() if self.referred_by else None,
            "challenges": {k: c.to_dict() for k, c in self.challenges.items()},
            "goals": {k: g.to_dict() for k, g in self.goals.items()},
            "answers": self.answers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrowthState:
        if data.get("v") != GROWTH_STATE_VERSION:
            raise ValueError(f"unsupported growth state version {data.get('v')!r}")
        state = cls(
            user_id=data["user_id"],
            book=ReferrerBook.from_dict(data["book"]) if data.get("book") else None,
            referred_by=ReferredBy.from_dict(data["referred_by"]) if data.get("referred_by") else None,
            challenges={k: ChallengeProgress.from_dict(v) for k, v in (data.get("challenges") or {}).items()},
            goals={k: Goal.from_dict(v) for k, v in (data.get("goals") or {}).items()},
            answers=dict(data.get("answers") or {}),
        )
        state.ledger = Ledger.from_dict(data["ledger"])
        return state

    def growth_view(self) -> dict[str, Any]:
        latest = self.latest_challenge
        return {
            "challenge": latest.to_dict() if latest else None,
            "challenges": {k: c.to_dict() for k, c in self.challenges.items()},
            "goals": {k: g.to_dict() for k, g in self.goals.items()},
        }

    def referrals_view(self) -> dict[str, Any]:
        return {
            "book": self.book.to_dict() if self.book else None,
            "referred_by": self.referred_by.to_dict() if self.referred_by else None,
        }
