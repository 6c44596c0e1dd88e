"""Referrals: codes, the claim → completion lifecycle, fraud checks and growth analytics.

Pure and deterministic like the other models (time arrives as `now_ms`); a `ReferrerBook`
is one referrer's Faust table value.

* Codes are HMAC-SHA256(secret, user id) in Crockford base32, 8 characters: the same user always
  gets the same code without storing it, codes cannot be guessed from user ids without the
  secret, and the alphabet has no I, L, O or U, so a code read aloud or copied by hand survives
  (`normalize_code` maps the look-alikes back). 8 characters are 40 bits: collisions become
  likely around a million users, so the code → user table must refuse a second owner.
* A referral is keyed by the referred user (a user can be referred once). It is `pending` when
  claimed and `completed` when the referred user finishes a first lesson at most
  `COMPLETION_WINDOW_MS` (14 days) after the claim; a pending referral past that is `expired`.
* Fraud checks are a pure function of the claim and facts about the referrer. A flagged claim
  is `held` for an admin, never dropped, because most flags (a shared home IP, a busy
  referrer) have innocent explanations; only `self_referral` is refused outright (`rejected`).
  Flags are re-checked by the caller when a referral completes (velocity changes over time):
  `hold` moves it to review before any credit is paid. Held referrals do not expire: the
  decision belongs to the reviewer. A lesson finished while held is remembered, so an approval
  completes the referral if the user did their part in time.
* A book is bounded whatever claims arrive (docs/growth.md, "State budget"): at most
  `MAX_OPEN_REFERRALS` open (pending or held) referrals; a claim beyond that is recorded as
  rejected with the flag `referrer_backlog` (held ones free their place when reviewed). Only the
  newest `MAX_FINISHED_REFERRALS` finished ones (completed, rejected, expired) are kept whole;
  older ones are folded into per-status counts (`archived`), so the stats and the funnel stay
  exact while the list, the time-to-complete figures and the by-day chart cover the kept ones.
  Signals kept for review are bounded in bytes; a longer or unprintable one is not kept.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, NamedTuple

from models.time_units import DAY_MS, HOUR_MS

BOOK_VERSION = 1
CODE_LENGTH = 8
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
COMPLETION_WINDOW_MS = 14 * DAY_MS
VELOCITY_WINDOW_MS = DAY_MS
# Flagged when strictly more than this many happen within VELOCITY_WINDOW_MS.
REFERRER_VELOCITY_MAX = 10
IP_VELOCITY_MAX = 5
# The referrer's own recent devices and IPs; older ones stop counting as "shared".
MAX_KNOWN_SIGNALS = 10
MAX_OPEN_REFERRALS = 12
# One more than REFERRER_VELOCITY_MAX, so "more than that many completed in 24 h" stays exact.
MAX_FINISHED_REFERRALS = REFERRER_VELOCITY_MAX + 1
# Signals kept in a book: a device id is an id (UTF-8 bytes); an IP address is kept in its
# canonical text (at most 45 characters) and a domain only as plain ASCII hostname characters.
MAX_DEVICE_BYTES = 128
MAX_IP_BYTES = 45
MAX_DOMAIN_BYTES = 64
_DOMAIN = re.compile(r"[a-z0-9.-]+", re.ASCII)
# An email address (RFC 5321's limit); only its domain is kept.
MAX_EMAIL_BYTES = 254
REFERRAL_CREDITS = 200
ANALYTICS_DAYS = 30

PENDING = "pending"
COMPLETED = "completed"
HELD = "held"
REJECTED = "rejected"
EXPIRED = "expired"
STATUSES = (PENDING, COMPLETED, HELD, REJECTED, EXPIRED)
OPEN_STATUSES = (PENDING, HELD)

SELF_REFERRAL = "self_referral"
SHARED_DEVICE = "shared_device"
SHARED_IP = "shared_ip"
REFERRER_VELOCITY = "referrer_velocity"
IP_VELOCITY = "ip_velocity"
REFERRAL_LOOP = "referral_loop"
DISPOSABLE_EMAIL = "disposable_email"
REFERRER_BACKLOG = "referrer_backlog"

DISPOSABLE_EMAIL_DOMAINS = frozenset(
    {
        "10minutemail.com",
        "10minutemail.net",
        "33mail.com",
        "burnermail.io",
        "discard.email",
        "dispostable.com",
        "emailondeck.com",
        "fakeinbox.com",
        "getairmail.com",
        "getnada.com",
        "grr.la",
        "guerrillamail.com",
        "guerrillamail.net",
        "guerrillamail.org",
        "mail.tm",
        "maildrop.cc",
        "mailinator.com",
        "mailnesia.com",
        "mintemail.com",
        "moakt.com",
        "mohmal.com",
        "mytemp.email",
        "sharklasers.com",
        "spamgourmet.com",
        "temp-mail.org",
        "tempail.com",
        "tempmail.com",
        "throwawaymail.com",
        "trashmail.com",
        "yopmail.com",
    }
)

_DECODE = {c: c for c in CROCKFORD_ALPHABET} | {"O": "0", "I": "1", "L": "1"}


# ---------------------------------------------------------------------------------------------
# Codes


def referral_code(secret: bytes, user_id: str) -> str:
    """The user's 8-character code: the first 40 bits of HMAC-SHA256(secret, user_id)."""
    if not secret:
        raise ValueError("a referral secret is required; without one codes are guessable")
    digest = hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).digest()
    bits = int.from_bytes(digest[: CODE_LENGTH * 5 // 8], "big")
    return "".join(CROCKFORD_ALPHABET[(bits >> shift) & 31] for shift in range(5 * CODE_LENGTH - 5, -1, -5))


def normalize_code(text: str) -> str | None:
    """A typed code in canonical form (case, hyphens, spaces and O/I/L forgiven), or None."""
    chars = [_DECODE.get(c) for c in text.upper() if c not in "- "]
    if len(chars) != CODE_LENGTH or None in chars:
        return None
    return "".join(c for c in chars if c is not None)


# ---------------------------------------------------------------------------------------------
# Fraud checks


class ClaimSignals(NamedTuple):
    """What we know about one claim. `ip_claims_24h` counts claims from `ip` in the last 24 h,
    this one included."""

    referrer_id: str
    referred_id: str
    device_id: str | None
    ip: str | None
    email: str | None
    ip_claims_24h: int


class ReferrerFacts(NamedTuple):
    """What we know about the referrer when checking a claim (see ReferrerBook.facts)."""

    known_devices: AbstractSet[str]
    known_ips: AbstractSet[str]
    completed_last_24h: int
    referred_by: str | None = None  # who referred the referrer
    referrals_of_referred: AbstractSet[str] = frozenset()  # users the referred user referred


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rpartition("@")[2].strip().rstrip(".").lower() or None


def is_disposable(domain: str) -> bool:
    """True for a listed domain or any subdomain of one (x.mailinator.com)."""
    labels = domain.lower().split(".")
    return any(".".join(labels[i:]) in DISPOSABLE_EMAIL_DOMAINS for i in range(len(labels) - 1))


def fraud_flags(claim: ClaimSignals, referrer: ReferrerFacts, now_ms: int) -> list[str]:
    """Every reason to doubt this claim, in a fixed order; empty when it looks fine.

    The windowed counts arrive precomputed for `now_ms`; the argument is part of the contract
    so time-dependent rules can be added without changing callers.
    """
    flags: list[str] = []
    if claim.referrer_id == claim.referred_id:
        flags.append(SELF_REFERRAL)
    if claim.device_id and claim.device_id in referrer.known_devices:
        flags.append(SHARED_DEVICE)
    if claim.ip and claim.ip in referrer.known_ips:
        flags.append(SHARED_IP)
    if referrer.completed_last_24h > REFERRER_VELOCITY_MAX:
        flags.append(REFERRER_VELOCITY)
    if claim.ip_claims_24h > IP_VELOCITY_MAX:
        flags.append(IP_VELOCITY)
    # Either side of the store can know the earlier referral; both mean A referred B referred A.
    if referrer.referred_by == claim.referred_id or claim.referrer_id in referrer.referrals_of_referred:
        flags.append(REFERRAL_LOOP)
    domain = email_domain(claim.email)
    if domain is not None and is_disposable(domain):
        flags.append(DISPOSABLE_EMAIL)
    return flags


# ---------------------------------------------------------------------------------------------
# Referrals


@dataclass(frozen=True)
class Signals:
    """Kept for review. Only the email's domain is stored: the address itself is not needed."""

    device_id: str | None = None
    ip: str | None = None
    email_domain: str | None = None


@dataclass
class Referral:
    referrer_id: str
    referred_id: str
    claimed_at_ms: int
    status: str = PENDING
    completed_at_ms: int | None = None
    flags: list[str] = field(default_factory=list)
    signals: Signals = field(default_factory=Signals)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown referral status {self.status!r}")

    @property
    def referral_id(self) -> str:
        """The referred user's id: a user can be referred once, so it names the referral."""
        return self.referred_id

    @property
    def deadline_ms(self) -> int:
        return self.claimed_at_ms + COMPLETION_WINDOW_MS

    def status_at(self, now_ms: int) -> str:
        """The status as of `now_ms`, counting a pending referral past its window as expired
        even before `expire` has run."""
        if self.status == PENDING and now_ms > self.deadline_ms:
            return EXPIRED
        return self.status

    @property
    def finished_at_ms(self) -> int:
        """When a finished referral finished, for keeping the newest (see ReferrerBook)."""
        if self.status == EXPIRED:
            return self.deadline_ms
        return self.completed_at_ms if self.completed_at_ms is not None else self.claimed_at_ms

    def to_dict(self, with_referrer: bool = True) -> dict[str, Any]:
        """``with_referrer=False`` inside a book, which names the referrer once."""
        s = self.signals
        data: dict[str, Any] = {"referrer": self.referrer_id} if with_referrer else {}
        data.update(
            {
                "referred": self.referred_id,
                "claimed": self.claimed_at_ms,
                "status": self.status,
                "completed": self.completed_at_ms,
                "flags": self.flags,
                "signals": [s.device_id, s.ip, s.email_domain],
            }
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], referrer_id: str | None = None) -> Referral:
        """``referrer_id``: the book's, for a referral stored in it without its own."""
        referrer = data.get("referrer", referrer_id)
        if not isinstance(referrer, str):
            raise ValueError("a referral needs its referrer")
        return cls(
            referrer_id=referrer,
            referred_id=data["referred"],
            claimed_at_ms=data["claimed"],
            status=data["status"],
            completed_at_ms=data["completed"],
            flags=list(data["flags"]),
            signals=Signals(*data["signals"]),
        )


def new_referral(claim: ClaimSignals, referrer: ReferrerFacts, now_ms: int) -> Referral:
    """The referral a claim creates: rejected for self-referral, held when flagged, else pending."""
    flags = fraud_flags(claim, referrer, now_ms)
    status = REJECTED if SELF_REFERRAL in flags else HELD if flags else PENDING
    domain = email_domain(claim.email)
    signals = Signals(
        bounded_text(claim.device_id, MAX_DEVICE_BYTES),
        normalize_ip(claim.ip),
        domain if domain and len(domain) <= MAX_DOMAIN_BYTES and _DOMAIN.fullmatch(domain) else None,
    )
    return Referral(
        referrer_id=claim.referrer_id,
        referred_id=claim.referred_id,
        claimed_at_ms=now_ms,
        status=status,
        flags=flags,
        signals=signals,
    )


def bounded_text(value: object, max_bytes: int) -> str | None:
    """``value`` if it is printable text of 1..max_bytes UTF-8 bytes, else None: what a book
    (or a referral message) may carry of a client-supplied signal."""
    if not isinstance(value, str) or not value or not value.isprintable():
        return None
    return value if len(value.encode("utf-8", "surrogatepass")) <= max_bytes else None


def normalize_ip(value: object) -> str | None:
    """An IP address in canonical text (as ``ipaddress`` prints it: lower case, zeros
    compressed), or None for anything that is not one: what a book keeps of an IP."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        text = str(ipaddress.ip_address(value))
    except ValueError:
        return None
    return text if len(text) <= MAX_IP_BYTES else None


@dataclass
class ReferrerBook:
    """One referrer's code, own recent devices/IPs (oldest first, bounded) and referrals.

    Referrals are bounded (see the module docstring): open ones by refusing claims past
    MAX_OPEN_REFERRALS, finished ones by folding the oldest into ``archived`` (status -> count),
    which the stats and analytics add back, so no count is falsified. Credits owed are in the
    ledger by then: a referral is finished only after it paid, was refused or lapsed.
    """

    referrer_id: str
    code: str
    known_devices: list[str] = field(default_factory=list)
    known_ips: list[str] = field(default_factory=list)
    referrals: dict[str, Referral] = field(default_factory=dict)
    archived: dict[str, int] = field(default_factory=dict)

    def observe(self, device_id: str | None, ip: str | None) -> None:
        """Remember a device/IP the referrer themself used (e.g. at sign-in)."""
        for value, known in (
            (bounded_text(device_id, MAX_DEVICE_BYTES), self.known_devices),
            (normalize_ip(ip), self.known_ips),
        ):
            if value:
                if value in known:
                    known.remove(value)  # move to the newest end
                known.append(value)
                del known[:-MAX_KNOWN_SIGNALS]

    def facts(
        self,
        now_ms: int,
        referred_by: str | None = None,
        referrals_of_referred: AbstractSet[str] = frozenset(),
    ) -> ReferrerFacts:
        """Facts for `fraud_flags`; the two loop inputs live in other users' books."""
        since = now_ms - VELOCITY_WINDOW_MS
        recent = sum(
            1
            for r in self.referrals.values()
            if r.status == COMPLETED and r.completed_at_ms is not None and since < r.completed_at_ms <= now_ms
        )
        return ReferrerFacts(
            frozenset(self.known_devices),
            frozenset(self.known_ips),
            recent,
            referred_by,
            referrals_of_referred,
        )

    def record_claim(self, referral: Referral) -> bool:
        """Add a claim; False (no change) if this referred user already has one here.

        With MAX_OPEN_REFERRALS open already (after expiring those past their window), an open
        claim is recorded as rejected, flagged ``referrer_backlog``.
        """
        if referral.referrer_id != self.referrer_id:
            raise ValueError(
                f"referral by {referral.referrer_id!r} recorded in the book of {self.referrer_id!r}"
            )
        if referral.referred_id in self.referrals:
            return False
        self.expire(referral.claimed_at_ms)
        if referral.status in OPEN_STATUSES and self.open_count() >= MAX_OPEN_REFERRALS:
            referral.status = REJECTED
            referral.flags.append(REFERRER_BACKLOG)
        self.referrals[referral.referred_id] = referral
        self._prune()
        return True

    def open_count(self) -> int:
        return sum(r.status in OPEN_STATUSES for r in self.referrals.values())

    def _prune(self) -> None:
        self.archive_finished(MAX_FINISHED_REFERRALS)

    def archive_finished(self, keep: int) -> int:
        """Fold all but the ``keep`` newest finished referrals into ``archived``; how many went."""
        finished = [r for r in self.referrals.values() if r.status not in OPEN_STATUSES]
        if len(finished) <= keep:
            return 0
        finished.sort(key=lambda r: (r.finished_at_ms, r.referred_id))
        gone = finished[: len(finished) - keep]
        for ref in gone:
            self.archived[ref.status] = self.archived.get(ref.status, 0) + 1
            del self.referrals[ref.referred_id]
        return len(gone)

    def complete(self, referred_id: str, now_ms: int) -> Referral | None:
        """The referred user finished a lesson at `now_ms`.

        Returns the referral if it moved to completed, else None. An `expired` referral is
        revived when the lesson time is inside the window: the lesson event may arrive after
        `expire` ran. A held referral only remembers the lesson time (see review).
        """
        ref = self.referrals.get(referred_id)
        if ref is None or not ref.claimed_at_ms <= now_ms <= ref.deadline_ms:
            return None
        if ref.status == HELD and ref.completed_at_ms is None:
            ref.completed_at_ms = now_ms
        if ref.status not in (PENDING, EXPIRED):
            return None
        ref.status = COMPLETED
        ref.completed_at_ms = now_ms
        self._prune()
        return ref

    def hold(self, referred_id: str, flags: Iterable[str]) -> Referral:
        """Send a pending or completed referral to review (the caller's re-check found flags)."""
        ref = self.referrals[referred_id]
        if ref.status not in (PENDING, COMPLETED):
            raise ValueError(f"cannot hold a {ref.status} referral")
        ref.status = HELD
        ref.flags.extend(f for f in flags if f not in ref.flags)
        return ref

    def review(self, referred_id: str, approve: bool, now_ms: int) -> Referral:
        """An admin's decision on a held referral. Approval resumes the lifecycle: completed if
        the lesson was done in time, pending inside the window, expired after it. Flags stay
        for the audit trail."""
        ref = self.referrals[referred_id]
        if ref.status != HELD:
            raise ValueError(f"only held referrals are reviewed, this one is {ref.status}")
        if not approve:
            ref.status = REJECTED
        elif ref.completed_at_ms is not None:
            ref.status = COMPLETED
        else:
            ref.status = EXPIRED if now_ms > ref.deadline_ms else PENDING
        self._prune()
        return ref

    def expire(self, now_ms: int) -> list[Referral]:
        """Mark pending referrals past their window expired; returns the ones that changed."""
        changed = [r for r in self.referrals.values() if r.status_at(now_ms) != r.status]
        for ref in changed:
            ref.status = EXPIRED
        if changed:
            self._prune()
        return changed

    def stats(self, now_ms: int) -> dict[str, Any]:
        """The referrer's dashboard. Every recorded claim counts as claimed (we cannot see
        invitations that were never claimed), so conversion is completed / claimed."""
        counts = Counter(r.status_at(now_ms) for r in self.referrals.values())
        counts.update(self.archived)
        claimed = counts.total()
        return {
            "code": self.code,
            "claimed": claimed,
            **{status: counts[status] for status in STATUSES},
            "conversion_rate": round(counts[COMPLETED] / claimed, 4) if claimed else 0.0,
            "credits_earned": counts[COMPLETED] * REFERRAL_CREDITS,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": BOOK_VERSION,
            "referrer_id": self.referrer_id,
            "code": self.code,
            "devices": self.known_devices,
            "ips": self.known_ips,
            "referrals": [r.to_dict(with_referrer=False) for r in self.referrals.values()],
            "archived": self.archived,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferrerBook:
        if data.get("v") != BOOK_VERSION:
            raise ValueError(f"unsupported referrer book version {data.get('v')!r}")
        referrals = [Referral.from_dict(r, data["referrer_id"]) for r in data["referrals"]]
        book = cls(
            referrer_id=data["referrer_id"],
            code=data["code"],
            known_devices=list(data["devices"]),
            known_ips=list(data["ips"]),
            referrals={r.referred_id: r for r in referrals},
            archived=dict(data.get("archived") or {}),
        )
        book._prune()  # a book written before the bound had none
        return book


# ---------------------------------------------------------------------------------------------
# Growth analytics


def growth_analytics(books: Iterable[ReferrerBook], total_users: int, now_ms: int) -> dict[str, Any]:
    """Programme-wide numbers. Each book is one generated code; statuses are as of `now_ms`.

    viral_coefficient = invites per user × conversion = (claims / total_users) × (completed /
    claims): the new active users each existing user brings in. `by_day` covers the last
    `ANALYTICS_DAYS` UTC days, oldest first, counting claims by claim day and completions by
    completion day.
    """
    codes = 0
    funnel: Counter[str] = Counter()
    hours: list[float] = []
    today = now_ms // DAY_MS
    first_day = today - ANALYTICS_DAYS + 1
    claimed_on: Counter[int] = Counter()
    completed_on: Counter[int] = Counter()
    for book in books:
        codes += 1
        funnel.update(book.archived)
        for ref in book.referrals.values():
            status = ref.status_at(now_ms)
            funnel[status] += 1
            claimed_on[ref.claimed_at_ms // DAY_MS] += 1
            if status == COMPLETED and ref.completed_at_ms is not None:
                hours.append((ref.completed_at_ms - ref.claimed_at_ms) / HOUR_MS)
                completed_on[ref.completed_at_ms // DAY_MS] += 1
    claims = sum(funnel.values())
    invites_per_user = claims / total_users if total_users > 0 else 0.0
    conversion = funnel[COMPLETED] / claims if claims else 0.0
    return {
        "viral_coefficient": round(invites_per_user * conversion, 4),
        "invites_per_user": round(invites_per_user, 4),
        "conversion_rate": round(conversion, 4),
        "funnel": {
            "codes_generated": codes,
            "claimed": claims,
            "pending": funnel[PENDING],
            "completed": funnel[COMPLETED],
            "held": funnel[HELD],
            "rejected": funnel[REJECTED],
            "expired": funnel[EXPIRED],
        },
        "time_to_complete_hours": _summary(hours),
        "by_day": [
            {"day": _day_text(day), "claimed": claimed_on[day], "completed": completed_on[day]}
            for day in range(first_day, today + 1)
        ],
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "mean": None}
    ordered = sorted(values)

    def nearest_rank(p: float) -> float:
        # Nearest-rank percentile: always an observed value, no interpolation to explain.
        return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]

    return {
        "p50": round(nearest_rank(0.5), 2),
        "p90": round(nearest_rank(0.9), 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def _day_text(epoch_day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=epoch_day)).isoformat()
