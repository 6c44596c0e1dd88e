"""Leaderboards with people on them: who a user is on the public boards (name, school, cohort,
visibility), which boards they belong on, and where they stand among the others. Pure.

Schools and cohorts are user-chosen text, so they are bounded (``MAX_GROUP_LEN`` printable
characters) and a board is named by a digest of the name's canonical form (NFKC, case-folded,
inner whitespace collapsed): "Nairobi High" and " nairobi   HIGH" are one board, and no name,
however hostile ("daily:all", "}", 64 characters of anything), can shape or meet another key
(infra/keys.py ``group_leaderboard``).

How many boards can exist is bounded by the users: each user is on at most one school board and
one cohort board per period bucket; a user who moves (or hides) is removed from the old ones,
and a sorted set that loses its last member is gone. Daily and weekly boards also expire with
their period (streams/serving.py ``BUCKET_TTL_S``). So there are at most 2 x (users with a
school or cohort) group boards per bucket, however many distinct names are sent.
"""

from __future__ import annotations

import bisect
import hashlib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from models.contact import safe_display_name

if TYPE_CHECKING:
    from models.events import UserProfile

#: The two kinds of group board (the words are part of the board's key and of the API's query).
GROUP_KINDS = ("school", "cohort")
#: Characters of a school or cohort name (after trimming).
MAX_GROUP_LEN = 64
#: Characters of a display name shown on a public board; a longer one shows as null.
MAX_BOARD_NAME_LEN = 64
#: Former groups remembered for removal (see ``BoardSeat.left``): a user who moves more often
#: than this between two projections may stay on an old board until that board's bucket expires.
MAX_LEFT = 4


class InvalidGroup(ValueError):
    """A school or cohort name the engine will not key a board on; ``reason`` as in events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def checked_group(value: str, name: str) -> str | None:
    """``value`` trimmed if it can name a board, None when blank. Refused: longer than
    ``MAX_GROUP_LEN`` characters, control or other non-printable characters, or a name whose
    canonical form is empty (only format characters)."""
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_GROUP_LEN:
        raise InvalidGroup("id_too_long", f"{name} is longer than {MAX_GROUP_LEN} characters")
    if not text.isprintable():
        raise InvalidGroup("bad_id", f"{name} holds control or non-printable characters")
    if not canonical_group(text):
        raise InvalidGroup("bad_id", f"{name} has no visible characters")
    return text


def canonical_group(name: str) -> str:
    """The form two spellings of one school share: NFKC (full-width and compatibility forms
    folded), case-folded, whitespace runs made one space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


@lru_cache(maxsize=1 << 14)
def group_digest(kind: str, name: str) -> str:
    """The fixed-size id of a group board (32 hex digits): the kind is hashed in, so a school and
    a cohort of the same name are different boards."""
    if kind not in GROUP_KINDS:
        raise ValueError(f"unknown group kind {kind!r}; expected one of {GROUP_KINDS}")
    return hashlib.sha256(f"{kind}\x00{canonical_group(name)}".encode()).hexdigest()[:32]


_HEX = frozenset("0123456789abcdef")


def is_group_digest(value: object) -> bool:
    """Whether ``value`` is what ``group_digest`` makes (32 lower-case hex digits)."""
    return isinstance(value, str) and len(value) == 32 and _HEX.issuperset(value)


def board_name(display_name: str | None) -> str | None:
    """A display name as a public board shows it, or None: longer than ``MAX_BOARD_NAME_LEN``,
    non-printable, or reading like a link (the rule the messages follow,
    ``models.contact.safe_display_name``). Shown as null rather than cut: a cut name can read as
    something its owner never wrote."""
    if not display_name:
        return None
    name = display_name.strip()
    if not name or len(name) > MAX_BOARD_NAME_LEN or not name.isprintable():
        return None
    return safe_display_name(name)


#: A board a user is on: None for the global one, else (kind, digest).
Scope = tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class Listing:
    """What the public boards show of a user, from their profile."""

    display_name: str | None = None
    school: str | None = None
    cohort: str | None = None
    visible: bool = True

    @property
    def groups(self) -> tuple[tuple[str, str], ...]:
        """The user's group boards, (kind, digest) per school and cohort set."""
        named = (("school", self.school), ("cohort", self.cohort))
        return tuple((kind, group_digest(kind, name)) for kind, name in named if name)

    def card(self) -> dict[str, Any]:
        """The fields a board entry shows (``display_name``, ``school``, ``cohort``). School and
        cohort are shown as the user wrote them, unless they read like links."""
        return {
            "display_name": board_name(self.display_name),
            "school": safe_display_name(self.school),
            "cohort": safe_display_name(self.cohort),
        }


DEFAULT_LISTING = Listing()

#: What a board entry shows of its user, beside rank, user_id and score.
CARD_FIELDS = ("display_name", "school", "cohort")


def shown_card(card: dict[str, Any] | None) -> dict[str, Any]:
    """The entry fields of a user's board card (``keys.user_board``): all null without one."""
    return {name: (card or {}).get(name) for name in CARD_FIELDS}


def listing_of(profile: UserProfile) -> Listing:
    """The listing a profile asks for (its fields already validated by models/events.py). Only
    the name a board may show is kept (bounded state: at most ``MAX_BOARD_NAME_LEN``)."""
    return Listing(
        board_name(profile.display_name), profile.school, profile.cohort, profile.leaderboard_visible
    )


@dataclass(frozen=True, slots=True)
class BoardSeat:
    """A user's place on the boards, kept in their engagement state: the listing, and the group
    boards they left that may still hold them (removed on every full projection; idempotent, so a
    crash between the state and Redis is mended by the replay)."""

    listing: Listing = DEFAULT_LISTING
    left: tuple[tuple[str, str], ...] = field(default=())

    def moved_to(self, listing: Listing) -> BoardSeat:
        """The seat after a profile: groups given up join ``left`` (newest first, bounded); a
        group rejoined leaves it."""
        now = listing.groups
        gone = [g for g in self.listing.groups if g not in now]
        left = tuple(dict.fromkeys([*gone, *(g for g in self.left if g not in now)]))[:MAX_LEFT]
        return replace(self, listing=listing, left=left)

    def scopes(self) -> tuple[Scope, ...]:
        """The boards the user belongs on: the global one and their groups, or none when hidden."""
        if not self.listing.visible:
            return ()
        return (None, *self.listing.groups)

    def removals(self) -> tuple[Scope, ...]:
        """The boards that must not list the user: groups left, and when hidden all of theirs."""
        if self.listing.visible:
            return self.left
        return (None, *self.listing.groups, *self.left)

    def to_dict(self) -> dict[str, Any]:
        ls = self.listing
        return {
            "name": ls.display_name,
            "school": ls.school,
            "cohort": ls.cohort,
            "visible": ls.visible,
            "left": [list(g) for g in self.left],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BoardSeat:
        if not data:
            return DEFAULT_SEAT
        listing = Listing(
            data.get("name"), data.get("school"), data.get("cohort"), bool(data.get("visible", True))
        )
        # Only what names a board (a state is trusted, but a key built from it must not fail).
        left = tuple(
            (str(kind), str(digest))
            for kind, digest in data.get("left") or ()
            if kind in GROUP_KINDS and is_group_digest(digest)
        )[:MAX_LEFT]
        return cls(listing, left)


DEFAULT_SEAT = BoardSeat()


# ---------------------------------------------------------------------------------------------
# Standing among the others


#: Below this many learners on a board, a percentile is not a fact worth quoting (three people).
MIN_BOARD_PEERS = 20


def percent_ahead(sorted_scores: Sequence[int], score: int, own: int | None = None) -> float | None:
    """The share (0-100, one decimal) of the *other* learners on a board whose score is below
    ``score``. ``sorted_scores`` holds every listed learner's score; ``own`` is the user's own
    score among them (a snapshot may hold an older one than ``score``), None when they are not
    listed. None below ``MIN_BOARD_PEERS`` others. Equal scores are not counted as beaten:
    "ahead of" must hold whoever reached the score first."""
    below = bisect.bisect_left(sorted_scores, score)
    others = len(sorted_scores)
    if own is not None:
        others -= 1
        below -= own < score  # their own older score is not someone they are ahead of
    if others < MIN_BOARD_PEERS:
        return None
    return round(100.0 * below / others, 1)


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a user stands on a weekly board: the percent of learners they are ahead of, and the
    school or cohort name when the board is a group's (None: all learners)."""

    ahead_pct: float
    group_name: str | None = None


#: What the peer comparison says when the percentile is unknown (too few learners, no score).
STANDING_UNKNOWN = "Every session you complete this week moves you up the weekly leaderboard."


def standing_sentence(standing: Standing | None) -> str:
    """The peer comparison's sentence: the user's real percentile, or, unknown, a true sentence
    without a number (what a weekly board always is)."""
    if standing is None:
        return STANDING_UNKNOWN
    pct = standing.ahead_pct
    number = str(int(pct)) if float(pct).is_integer() else f"{pct:.1f}"
    where = f" at {standing.group_name}" if standing.group_name else ""
    if pct >= 50:
        return f"You're ahead of {number}% of learners{where} this week. Keep it going."
    return f"You're ahead of {number}% of learners{where} this week. One session could move you up."


@dataclass(frozen=True, slots=True)
class WeekBoards:
    """A snapshot of the boards of a period: sorted scores per board (global and each group) of
    the listed learners, and each listed learner's boards and score (to leave them out of their
    own comparison)."""

    scores: dict[Scope, list[int]] = field(default_factory=dict)
    listed: dict[str, tuple[tuple[Scope, ...], int]] = field(default_factory=dict)


def week_scores(scored: Iterable[tuple[str, BoardSeat, int]]) -> WeekBoards:
    """The boards of (user id, seat, period XP) triples, as the serving view lists them."""
    boards = WeekBoards()
    for user_id, seat, xp in scored:
        scopes = seat.scopes()
        if scopes:
            boards.listed[user_id] = (scopes, xp)
        for scope in scopes:
            boards.scores.setdefault(scope, []).append(xp)
    for scores in boards.scores.values():
        scores.sort()
    return boards


def standing_of(user_id: str, seat: BoardSeat, xp: int | None, boards: WeekBoards) -> Standing | None:
    """The user's standing on their school's board when it is big enough, else their cohort's,
    else everyone's; ``xp`` is their score this period, None when they have none (compared at
    0). A hidden user is compared with the listed ones (and is in nobody's comparison)."""
    listing = seat.listing
    held_scopes, held_xp = boards.listed.get(user_id, ((), 0))
    score = xp or 0
    named = {"school": listing.school, "cohort": listing.cohort}
    for scope in (*listing.groups, None):
        own = held_xp if scope in held_scopes else None
        pct = percent_ahead(boards.scores.get(scope, []), score, own)
        if pct is not None:
            return Standing(pct, None if scope is None else safe_display_name(named[scope[0]]))
    return None
