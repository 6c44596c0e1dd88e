"""The rewards ledger: credits granted in lots, spent on catalogue perks, lost to expiry.

A user's ledger lives in a Faust table owned by one worker, so every function here is pure,
synchronous and deterministic (time arrives as `now_ms`), and mutates the ledger in place.

Rules, and why:

* Idempotent. Commands arrive at least once, so every grant and redemption carries an id. A
  repeated grant id is a no-op (`grant` returns False); a repeated redemption `request_id`
  returns the stored original result, success or failure, and spends nothing more. The ids are
  remembered in `seen` as fixed-size digests (models.digests), the newest `SEEN_CAP` of them (plus
  the ids of lots still holding credit): retries come within minutes, and an unbounded set, or
  one of raw 128-byte ids, would grow the changelog past any budget.
* Lots, not a running total. Each grant is a lot with an optional expiry. Spending takes from
  the soonest-expiring lot first and never-expiring lots last (ties: oldest grant first), which
  is the order that wastes least of the user's credit. Credit is spendable strictly before its
  `expires_at_ms`.
* Expiry is recorded lazily: the next time the ledger is touched (`grant`, `redeem`, or an
  explicit `expire`) with a `now_ms` at or past a lot's expiry, the unspent rest becomes an
  `expiry` entry dated at the expiry instant and the lot is dropped, so it is recorded exactly
  once. Reads (`balance`, `available`, `expiring_soon`) never mutate but already leave expired
  credit out. Once recorded, an expiry is final even if a later command carries an older time.
* Never negative. A redemption spends only what is spendable now; otherwise it is a failed
  result with a `code` (insufficient_balance, unknown_perk, limit_reached), not an exception:
  these are ordinary outcomes the UI shows. Malformed commands raise `InvalidEvent` so the
  stream can dead-letter them. Failures are remembered for idempotency but are not history,
  since they move no credit.
* Bounded history. `history` keeps the newest `HISTORY_CAP` entries, fewer if they would encode
  to more than `HISTORY_BYTES`. Balances stay exact
  because they come from the lots and the lifetime totals (granted, spent, expired), never
  from the history; limits count from `redeemed`, kept per perk for the same reason.
* Bounded lots and balance. At most `MAX_LOTS` lots are kept: past that, the two lots (adjacent
  in spending order) whose expiries are nearest merge into one that expires at the later of the
  two, so no credit expires sooner than promised and the ledger's size has a ceiling whatever
  the number of grants. A grant is at most `MAX_GRANT` and may not lift the spendable balance
  above `MAX_BALANCE` (`GrantRefused`, code `balance_cap`): a forged or mistaken grant is
  bounded even before anyone checks who sent it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from models.digests import id_digest
from models.events import MAX_TS_MS, InvalidEvent, check_id, format_ts
from models.time_units import DAY_MS

#: 2: `seen` is keyed by id digests (version 1 kept raw ids; read and converted).
LEDGER_VERSION = 2
HISTORY_CAP = 50
#: The history's encoded bytes: its ids and reasons are client text, so a count alone would let
#: 50 entries of 128-byte ids weigh 16 KiB.
HISTORY_BYTES = 8 * 1024
SEEN_CAP = 64
MAX_LOTS = 16
# A single grant above this is a bug or an attack, not a reward (the dearest perk costs 500).
MAX_GRANT = 10_000
#: The spendable balance a grant may not lift a user above: 200 of the dearest perk.
MAX_BALANCE = 100_000
#: A grant's reason, in UTF-8 bytes (it is kept in the history).
MAX_REASON_BYTES = 64
EXPIRING_SOON_MS = 7 * DAY_MS

GRANT = "grant"
REDEEM = "redeem"
EXPIRY = "expiry"
# Expiry entries are named after their lot; the prefix is reserved so they can never collide
# with a caller's ids.
EXPIRY_ID_PREFIX = "expiry:"

OK = "ok"
INSUFFICIENT_BALANCE = "insufficient_balance"
UNKNOWN_PERK = "unknown_perk"
LIMIT_REACHED = "limit_reached"
# Refused grants (GrantRefused.code).
GRANT_TOO_LARGE = "grant_too_large"
BALANCE_CAP = "balance_cap"


class GrantRefused(ValueError):
    """A well-formed grant the ledger will not take; `code` says why. Raised before any change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Perk:
    """A catalogue item. `max_per_user` caps lifetime redemptions here; how many streak freezes
    a user may *hold* is the streak engine's business, not the ledger's."""

    perk_id: str
    title: str
    cost: int
    kind: str
    max_per_user: int | None = None

    def __post_init__(self) -> None:
        if self.cost <= 0:
            raise ValueError(f"perk {self.perk_id!r} must cost at least 1 credit")


#: The kind of perk the engine fulfils itself: a freeze added to the user's streak
#: (models/gamification.py); every other kind is fulfilled by the platform.
FREEZE_PERK_KIND = "streak_freeze"

# Data, not code: adding a perk is adding a row.
_PERKS = (
    Perk("streak_freeze", "Streak freeze", 150, FREEZE_PERK_KIND),
    Perk("discount_10", "10% discount voucher", 300, "voucher"),
    Perk("mock_interview", "Mock interview with a mentor", 400, "session", max_per_user=2),
    Perk("early_access", "Early access to new courses", 500, "access", max_per_user=1),
)
CATALOGUE: Mapping[str, Perk] = MappingProxyType({perk.perk_id: perk for perk in _PERKS})


@dataclass
class Lot:
    """Credit from one grant that is still spendable or not yet recorded as expired."""

    entry_id: str
    remaining: int
    expires_at_ms: int | None
    granted_at_ms: int

    def spend_key(self) -> tuple[bool, int]:
        return (self.expires_at_ms is None, self.expires_at_ms or 0)


@dataclass(frozen=True)
class Entry:
    """One history line. `amount` is signed (credit in > 0); `ref` is the grant's reason, the
    redeemed perk id, or the expired lot's id."""

    entry_id: str
    kind: str
    amount: int
    ref: str
    at_ms: int


@dataclass(frozen=True)
class RedeemResult:
    request_id: str
    code: str
    perk_id: str
    cost: int  # credits actually spent: 0 on failure
    balance: int  # spendable balance right after the attempt
    at_ms: int
    duplicate: bool = False  # True when this is the stored answer to a retried request

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass
class Ledger:
    """One user's credits. Lots are kept in spending order; `entries` oldest first, capped."""

    user_id: str
    lots: list[Lot] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    # id digest -> None for a grant, or the compact RedeemResult [code, perk, cost, balance, at].
    seen: dict[str, list[Any] | None] = field(default_factory=dict)
    redeemed: dict[str, int] = field(default_factory=dict)
    granted: int = 0
    spent: int = 0
    expired: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": LEDGER_VERSION,
            "user_id": self.user_id,
            "lots": [
                [lot.entry_id, lot.remaining, lot.expires_at_ms, lot.granted_at_ms] for lot in self.lots
            ],
            "hist": [[e.entry_id, e.kind, e.amount, e.ref, e.at_ms] for e in self.entries],
            "seen": self.seen,
            "redeemed": self.redeemed,
            "totals": [self.granted, self.spent, self.expired],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        version = data.get("v")
        if version not in (1, LEDGER_VERSION):
            raise ValueError(f"unsupported ledger version {version!r}")
        granted, spent, expired = data["totals"]
        # Version 1 remembered raw ids: digest them, so a retry after the upgrade is still known.
        seen_key = id_digest if version == 1 else str
        seen = list(data["seen"].items())[-SEEN_CAP:]
        ledger = cls(
            user_id=data["user_id"],
            lots=[Lot(*lot) for lot in data["lots"]],
            entries=[Entry(*entry) for entry in data["hist"][-HISTORY_CAP:]],
            seen={seen_key(k): (None if v is None else list(v)) for k, v in seen},
            redeemed=dict(data["redeemed"]),
            granted=granted,
            spent=spent,
            expired=expired,
        )
        while len(ledger.lots) > MAX_LOTS:  # a version 1 ledger had no bound
            _merge_nearest_lots(ledger)
        return ledger


# ---------------------------------------------------------------------------------------------
# Commands


def grant(
    ledger: Ledger, entry_id: str, amount: int, reason: str, now_ms: int, expires_at_ms: int | None = None
) -> bool:
    """Add a lot of `amount` credits; False (and no change) if `entry_id` was already applied.

    A grant that is already past its expiry is still recorded, then expires at once: the
    history should show both rather than silently dropping a late-delivered grant. Raises
    `GrantRefused` (nothing changed) when the grant would lift the balance over `MAX_BALANCE`.
    """
    _check_id(entry_id)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_GRANT:
        raise InvalidEvent("bad_type", f"grant amount must be an integer in 1..{MAX_GRANT}")
    _check_reason(reason)
    if expires_at_ms is not None and (
        isinstance(expires_at_ms, bool)
        or not isinstance(expires_at_ms, int)
        or not 0 <= expires_at_ms <= MAX_TS_MS
    ):
        raise InvalidEvent("bad_type", "expires_at_ms must be epoch milliseconds or null")
    key = id_digest(entry_id)
    if key in ledger.seen:
        if ledger.seen[key] is not None:
            raise InvalidEvent("bad_type", f"id {entry_id[:64]!r} already names a redemption")
        return False
    if any(lot.entry_id == entry_id for lot in ledger.lots):  # seen may have forgotten a live lot
        return False
    live = expires_at_ms is None or expires_at_ms > now_ms
    if live and balance(ledger, now_ms) + amount > MAX_BALANCE:
        raise GrantRefused(BALANCE_CAP, f"a balance is at most {MAX_BALANCE} credits")
    expire(ledger, now_ms)
    lot = Lot(entry_id, amount, expires_at_ms, now_ms)
    # insort keeps equal keys in grant order: older grants are spent first on a tie.
    bisect.insort(ledger.lots, lot, key=Lot.spend_key)
    while len(ledger.lots) > MAX_LOTS:
        _merge_nearest_lots(ledger)
    ledger.granted += amount
    _remember(ledger, key, None)
    _append(ledger, Entry(entry_id, GRANT, amount, reason, now_ms))
    expire(ledger, now_ms)
    return True


def redeem(
    ledger: Ledger, request_id: str, perk_id: str, now_ms: int, catalogue: Mapping[str, Perk] = CATALOGUE
) -> RedeemResult:
    """Spend a perk's cost, soonest-expiring credit first. Idempotent by `request_id`."""
    _check_id(request_id)
    key = id_digest(request_id)
    if key in ledger.seen:
        stored = ledger.seen[key]
        if stored is None:
            raise InvalidEvent("bad_type", f"id {request_id[:64]!r} already names a grant")
        code, stored_perk, cost, balance_after, at_ms = stored
        return RedeemResult(request_id, code, stored_perk, cost, balance_after, at_ms, duplicate=True)
    expire(ledger, now_ms)
    # After expire(now_ms) every lot left is spendable now.
    available_now = sum(lot.remaining for lot in ledger.lots)
    perk = catalogue.get(perk_id)
    if perk is None:
        code = UNKNOWN_PERK
    elif perk.max_per_user is not None and ledger.redeemed.get(perk_id, 0) >= perk.max_per_user:
        code = LIMIT_REACHED
    elif available_now < perk.cost:
        code = INSUFFICIENT_BALANCE
    else:
        code = OK
    cost = 0
    if perk is not None and code == OK:
        cost = perk.cost
        _spend(ledger, cost)
        ledger.redeemed[perk_id] = ledger.redeemed.get(perk_id, 0) + 1
        _append(ledger, Entry(request_id, REDEEM, -cost, perk_id, now_ms))
    result = RedeemResult(request_id, code, perk_id, cost, available_now - cost, now_ms)
    _remember(ledger, key, [code, perk_id, cost, result.balance, now_ms])
    return result


def expire(ledger: Ledger, now_ms: int) -> list[Entry]:
    """Record the expiry of every lot whose time has come; returns the new entries.

    Idempotent: an expired lot is dropped, so a second call records nothing.
    """
    recorded: list[Entry] = []
    # Lots are in spending order, so the due ones are a prefix.
    while ledger.lots and (expiry := ledger.lots[0].expires_at_ms) is not None and expiry <= now_ms:
        lot = ledger.lots.pop(0)
        ledger.expired += lot.remaining
        entry = Entry(EXPIRY_ID_PREFIX + lot.entry_id, EXPIRY, -lot.remaining, lot.entry_id, expiry)
        _append(ledger, entry)
        recorded.append(entry)
    return recorded


# ---------------------------------------------------------------------------------------------
# Reads (never mutate)


def balance(ledger: Ledger, now_ms: int) -> int:
    """Credits spendable at `now_ms`, whether or not expiry has been recorded yet."""
    return sum(lot.remaining for lot in ledger.lots if _spendable(lot, now_ms))


def history(ledger: Ledger) -> list[dict[str, Any]]:
    """Kept entries, newest first (by time; ties newest-recorded first), times in RFC 3339."""
    detail_key = {GRANT: "reason", REDEEM: "perk_id", EXPIRY: "lot_id"}
    # sorted(reverse=True) is stable, so reversing first puts later-recorded ties first.
    ordered = sorted(reversed(ledger.entries), key=lambda e: e.at_ms, reverse=True)
    return [
        {
            "id": e.entry_id,
            "kind": e.kind,
            "amount": e.amount,
            detail_key[e.kind]: e.ref,
            "at": format_ts(e.at_ms),
        }
        for e in ordered
    ]


def available(ledger: Ledger, now_ms: int, catalogue: Mapping[str, Perk] = CATALOGUE) -> list[dict[str, Any]]:
    """The catalogue, cheapest first, with what this user can redeem right now."""
    spendable = balance(ledger, now_ms)
    rows: list[dict[str, Any]] = []
    for perk in sorted(catalogue.values(), key=lambda p: (p.cost, p.perk_id)):
        used = ledger.redeemed.get(perk.perk_id, 0)
        rows.append(
            {
                "perk_id": perk.perk_id,
                "title": perk.title,
                "cost": perk.cost,
                "kind": perk.kind,
                "max_per_user": perk.max_per_user,
                "redeemed": used,
                "affordable": spendable >= perk.cost,
                "limit_reached": perk.max_per_user is not None and used >= perk.max_per_user,
            }
        )
    return rows


def expiring_soon(ledger: Ledger, now_ms: int, within_ms: int = EXPIRING_SOON_MS) -> dict[str, Any]:
    """Spendable credit that expires within `within_ms` (default 7 days), soonest first."""
    lots = [
        lot
        for lot in ledger.lots
        if lot.expires_at_ms is not None and now_ms < lot.expires_at_ms <= now_ms + within_ms
    ]
    return {
        "amount": sum(lot.remaining for lot in lots),
        "lots": [
            {"id": lot.entry_id, "amount": lot.remaining, "expires_at": format_ts(lot.expires_at_ms or 0)}
            for lot in lots
        ],
    }


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_id(entry_id: str) -> None:
    if not isinstance(entry_id, str) or entry_id == "":
        raise InvalidEvent("missing_field", "an entry id is required")
    check_id(entry_id, "entry id")  # bytes and printable: ids are kept in the history
    if entry_id.startswith(EXPIRY_ID_PREFIX):
        raise InvalidEvent("bad_type", f"ids starting with {EXPIRY_ID_PREFIX!r} are reserved")


def _check_reason(reason: str) -> None:
    if (
        not isinstance(reason, str)
        or not reason
        or len(reason.encode("utf-8", "surrogatepass")) > MAX_REASON_BYTES
        or not reason.isprintable()
    ):
        raise InvalidEvent("bad_type", f"a grant reason is 1..{MAX_REASON_BYTES} bytes of printable text")


def _merge_nearest_lots(ledger: Ledger) -> None:
    """Merge the two lots, adjacent in spending order, whose expiries are nearest; the merged lot
    keeps the first one's id and the later expiry (no credit expires sooner than promised)."""
    lots = ledger.lots

    def gap(i: int) -> float:
        a, b = lots[i].expires_at_ms, lots[i + 1].expires_at_ms
        if a is None or b is None:
            return 0 if a is b else float("inf")
        return b - a

    i = min(range(len(lots) - 1), key=gap)  # the first (oldest) pair on a tie
    first, second = lots[i], lots.pop(i + 1)
    first.remaining += second.remaining
    first.expires_at_ms = second.expires_at_ms  # spending order is unchanged: it was sorted


def _spendable(lot: Lot, now_ms: int) -> bool:
    return lot.expires_at_ms is None or lot.expires_at_ms > now_ms


def _spend(ledger: Ledger, amount: int) -> None:
    """Take `amount` from the lots in order; the caller has checked it is there."""
    ledger.spent += amount
    while amount:
        lot = ledger.lots[0]
        taken = min(lot.remaining, amount)
        lot.remaining -= taken
        amount -= taken
        if lot.remaining == 0:  # an empty lot has nothing left to expire
            ledger.lots.pop(0)


def _remember(ledger: Ledger, key: str, value: list[Any] | None) -> None:
    ledger.seen[key] = value
    while len(ledger.seen) > SEEN_CAP:
        del ledger.seen[next(iter(ledger.seen))]  # dicts keep insertion order: oldest first


def _append(ledger: Ledger, entry: Entry) -> None:
    ledger.entries.append(entry)
    if len(ledger.entries) > HISTORY_CAP:
        del ledger.entries[: len(ledger.entries) - HISTORY_CAP]
    size = sum(map(_entry_bytes, ledger.entries))
    while size > HISTORY_BYTES and len(ledger.entries) > 1:
        size -= _entry_bytes(ledger.entries.pop(0))


def trim_history(ledger: Ledger, keep: int) -> None:
    """Keep only the newest ``keep`` history entries (balances never read the history)."""
    del ledger.entries[: max(0, len(ledger.entries) - keep)]


def _entry_bytes(e: Entry) -> int:
    """The entry's size in ``to_dict``'s JSON (the form the changelog carries)."""
    return len(orjson.dumps([e.entry_id, e.kind, e.amount, e.ref, e.at_ms]))
