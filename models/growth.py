"""Per-user growth state: the rewards ledger, the referral book (this user as a referrer), the
referral that brought this user, today's challenge progress, goals, and recent command answers.

One object per user, on the user's partition, so every command and event about the user is
decided by one worker in order (docs/growth.md). ``answers`` makes every command idempotent by
its id, including the ones whose effects are not idempotent by themselves (a claim, a new goal).

The whole state is one changelog record, so it has a byte budget (``STATE_BUDGET_BYTES``, the
JSON of ``to_dict``) that holds whatever a client sends: every part is bounded by construction
(answers by count and bytes under id digests, the ledger, the referral book, challenge days,
goals; docs/growth.md has the figures), and ``fit_budget`` is the backstop the worker applies
before every write, trimming only what no rule depends on. tests/streams/test_growth.py drives a
state with adversarial input through the worker's code to show the budget holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.challenges import (
    MAX_CHALLENGE_EVENT_IDS,
    MAX_GOAL_EVENT_IDS,
    ChallengeProgress,
    Goal,
    prune_finished_goals,
)
from models.digests import DIGEST_CHARS, id_digest
from models.referrals import ReferrerBook
from models.rewards import Ledger, trim_history

#: 2: answers and event ids are kept as digests (version 1 kept raw ids; read and converted).
GROWTH_STATE_VERSION = 2
#: The most a user's growth state may encode to (orjson of ``to_dict``): far below Kafka's
#: default 1 MiB record limit, so a changelog write can never be refused for its size.
STATE_BUDGET_BYTES = 64 * 1024
#: Command answers remembered per user, by count and by encoded bytes, newest kept. They cover a
#: redelivered command and a client's retry after a lost answer (minutes); an older retry re-runs
#: the command, whose effects are idempotent by themselves except a goal created without a
#: request id (and that has a server id, which no client retries).
MAX_ANSWERS = 200
MAX_ANSWER_BYTES = 4 * 1024
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
    #: command id digest -> the answer given, oldest first.
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

    def answer_to(self, command_id: str) -> dict[str, Any] | None:
        """The answer already given to ``command_id``, if it is still remembered."""
        return self.answers.get(id_digest(command_id))

    def remember_answer(self, command_id: str, answer: dict[str, Any]) -> None:
        self.answers[id_digest(command_id)] = answer
        # Bytes as well as count: answers carry client-chosen text (a goal's id and category).
        size = sum(map(_answer_bytes, self.answers.values()))
        while len(self.answers) > 1 and (len(self.answers) > MAX_ANSWERS or size > MAX_ANSWER_BYTES):
            size -= _answer_bytes(self.answers.pop(next(iter(self.answers))))

    def encoded_size(self) -> int:
        """Bytes of the JSON the table stores for this state (the figure the budget bounds)."""
        return len(orjson.dumps(self.to_dict()))

    def fit_budget(self, budget: int = STATE_BUDGET_BYTES) -> int:
        """Trim the state to ``budget`` encoded bytes if it is over; returns the size.

        The caps keep every state under budget on their own (docs/growth.md); this is the
        backstop that makes the budget a guarantee rather than arithmetic. It halves, in turn,
        only memories no rule reads for correctness: remembered answers (retries fall back on the
        ledger's and goals' own idempotency), the credit history (balances come from lots and
        totals), finished goals, and finished referrals (folded into the book's counts). What is
        left (lots, live goals, open referrals, challenge days) is bounded well under any budget
        this is called with in practice.
        """
        size = self.encoded_size()
        for trim in self._trims():
            while size > budget and trim():
                size = self.encoded_size()
        return size

    def _trims(self) -> list[Callable[[], bool]]:
        """Each call drops the older half of one memory; False when it had nothing left."""

        def answers() -> bool:
            n = len(self.answers)
            for key in list(self.answers)[: (n + 1) // 2]:
                del self.answers[key]
            return n > 0

        def history() -> bool:
            n = len(self.ledger.entries)
            trim_history(self.ledger, n // 2)
            return n > 0

        def goals() -> bool:
            finished = sum(g.status != "active" for g in self.goals.values())
            return prune_finished_goals(self.goals, finished // 2) > 0

        def referrals() -> bool:
            book = self.book
            if book is None:
                return False
            finished = len(book.referrals) - book.open_count()
            return book.archive_finished(finished // 2) > 0

        return [answers, history, goals, referrals]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": GROWTH_STATE_VERSION,
            "user_id": self.user_id,
            "ledger": self.ledger.to_dict(),
            "book": self.book.to_dict() if self.book else None,
            "referred_by": self.referred_by.to_dict() if self.referred_by else None,
            "challenges": {k: c.to_dict() for k, c in self.challenges.items()},
            # A list: each goal names itself, so a map would carry every (client-chosen) id twice.
            "goals": [g.to_dict() for g in self.goals.values()],
            "answers": self.answers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrowthState:
        version = data.get("v")
        if version not in (1, GROWTH_STATE_VERSION):
            raise ValueError(f"unsupported growth state version {version!r}")
        state = cls(
            user_id=data["user_id"],
            book=ReferrerBook.from_dict(data["book"]) if data.get("book") else None,
            referred_by=ReferredBy.from_dict(data["referred_by"]) if data.get("referred_by") else None,
            challenges={k: ChallengeProgress.from_dict(v) for k, v in (data.get("challenges") or {}).items()},
            goals={g.goal_id: g for g in map(Goal.from_dict, _goal_dicts(data.get("goals")))},
            answers=dict(data.get("answers") or {}),
        )
        state.ledger = Ledger.from_dict(data["ledger"])
        if version == 1:
            state._digest_raw_ids()
        return state

    def _digest_raw_ids(self) -> None:
        """Version 1 kept raw command and event ids: digest them, so retries stay recognised."""
        self.answers = {id_digest(k): v for k, v in list(self.answers.items())[-MAX_ANSWERS:]}
        for progress in self.challenges.values():
            progress.event_ids = [id_digest(i) for i in progress.event_ids[-MAX_CHALLENGE_EVENT_IDS:]]
        for goal in self.goals.values():
            goal.event_ids = [id_digest(i) for i in goal.event_ids[-MAX_GOAL_EVENT_IDS:]]

    def growth_view(self) -> dict[str, Any]:
        """The serving view (``keys.user_growth``); goals by id, as the API reads them."""
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


def _answer_bytes(answer: dict[str, Any]) -> int:
    """An answer's share of the state's JSON: the answer, its digest key, quotes, colon, comma."""
    return len(orjson.dumps(answer)) + DIGEST_CHARS + 4


def _goal_dicts(raw: Any) -> list[dict[str, Any]]:
    """Goals as stored: a list since version 2, a map by id in version 1."""
    if isinstance(raw, dict):
        return list(raw.values())
    return list(raw or [])
