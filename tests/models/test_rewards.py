from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.digests import id_digest
from models.events import InvalidEvent
from models.rewards import (
    BALANCE_CAP,
    CATALOGUE,
    HISTORY_BYTES,
    HISTORY_CAP,
    INSUFFICIENT_BALANCE,
    LIMIT_REACHED,
    MAX_BALANCE,
    MAX_GRANT,
    MAX_LOTS,
    MAX_REASON_BYTES,
    OK,
    SEEN_CAP,
    UNKNOWN_PERK,
    GrantRefused,
    Ledger,
    Perk,
    available,
    balance,
    expire,
    expiring_soon,
    grant,
    history,
    redeem,
)
from tests.models.factories import ms

DAY = 86_400_000
T = ms("2026-11-22T08:00:00Z")


def new_ledger() -> Ledger:
    return Ledger(user_id="u-1")


def roundtrip(ledger: Ledger) -> Ledger:
    return Ledger.from_dict(orjson.loads(orjson.dumps(ledger.to_dict())))


# --- grants and idempotency ---------------------------------------------------------------------


def test_grant_is_idempotent_by_entry_id() -> None:
    ledger = new_ledger()
    assert grant(ledger, "g-1", 200, "lesson_streak", T) is True
    assert grant(ledger, "g-1", 200, "lesson_streak", T + 1) is False
    assert grant(ledger, "g-1", 999, "other", T + 2) is False  # the id decides, not the payload
    assert balance(ledger, T + 3) == 200
    assert [e["id"] for e in history(ledger)] == ["g-1"]


def test_redeem_retry_returns_the_original_result_and_spends_nothing_more() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 400, "signup", T)
    first = redeem(ledger, "r-1", "streak_freeze", T + 1)
    assert (first.ok, first.cost, first.balance, first.duplicate) == (True, 150, 250, False)
    again = redeem(ledger, "r-1", "streak_freeze", T + 2)
    assert again.duplicate is True
    assert (again.code, again.cost, again.balance, again.at_ms) == (OK, 150, 250, T + 1)
    assert balance(ledger, T + 3) == 250
    assert ledger.redeemed == {"streak_freeze": 1}


def test_failed_redeem_retry_stays_failed_even_after_credit_arrives() -> None:
    ledger = new_ledger()
    failed = redeem(ledger, "r-1", "early_access", T)
    assert (failed.ok, failed.code, failed.cost) == (False, INSUFFICIENT_BALANCE, 0)
    grant(ledger, "g-1", 1000, "bonus", T + 1)
    retry = redeem(ledger, "r-1", "early_access", T + 2)
    assert (retry.code, retry.duplicate) == (INSUFFICIENT_BALANCE, True)
    assert balance(ledger, T + 3) == 1000
    assert history(ledger)[0]["id"] == "g-1"  # failures move no credit, so no history line


def test_grant_and_redeem_ids_share_one_namespace() -> None:
    ledger = new_ledger()
    grant(ledger, "x", 500, "bonus", T)
    redeem(ledger, "y", "streak_freeze", T)
    with pytest.raises(InvalidEvent):
        redeem(ledger, "x", "streak_freeze", T)
    with pytest.raises(InvalidEvent):
        grant(ledger, "y", 10, "bonus", T)


@pytest.mark.parametrize(
    ("entry_id", "amount", "reason"),
    [
        ("", 10, "missing_field"),
        ("g" * 129, 10, "id_too_long"),
        ("expiry:g-1", 10, "bad_type"),
        ("g-1", 0, "bad_type"),
        ("g-1", -5, "bad_type"),
        ("g-1", True, "bad_type"),
        ("g-1", 1_000_001, "bad_type"),
    ],
)
def test_malformed_grants_are_refused(entry_id: str, amount: int, reason: str) -> None:
    ledger = new_ledger()
    with pytest.raises(InvalidEvent) as err:
        grant(ledger, entry_id, amount, "bonus", T)
    assert err.value.reason == reason
    assert ledger == new_ledger()


# --- spending -----------------------------------------------------------------------------------


def test_insufficient_balance_is_a_result_and_never_goes_negative() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 149, "bonus", T)
    result = redeem(ledger, "r-1", "streak_freeze", T)
    assert (result.ok, result.code, result.balance) == (False, INSUFFICIENT_BALANCE, 149)
    grant(ledger, "g-2", 1, "bonus", T)
    exact = redeem(ledger, "r-2", "streak_freeze", T)
    assert (exact.ok, exact.balance) == (True, 0)
    assert balance(ledger, T) == 0
    assert ledger.lots == []


def test_unknown_perk_is_a_result() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 1000, "bonus", T)
    result = redeem(ledger, "r-1", "free_laptop", T)
    assert (result.ok, result.code, result.cost) == (False, UNKNOWN_PERK, 0)
    assert balance(ledger, T) == 1000


def test_per_user_limit_is_enforced() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 5000, "bonus", T)
    assert CATALOGUE["early_access"].max_per_user == 1
    assert redeem(ledger, "r-1", "early_access", T).ok
    second = redeem(ledger, "r-2", "early_access", T)
    assert (second.code, second.cost) == (LIMIT_REACHED, 0)
    assert balance(ledger, T) == 4500
    # limits are checked before the balance: the user learns the real reason
    poor = new_ledger()
    poor.redeemed["early_access"] = 1
    assert redeem(poor, "r-1", "early_access", T).code == LIMIT_REACHED


def test_unlimited_perk_can_be_redeemed_repeatedly() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 450, "bonus", T)
    assert CATALOGUE["streak_freeze"].max_per_user is None
    assert all(redeem(ledger, f"r-{i}", "streak_freeze", T).ok for i in range(3))
    assert balance(ledger, T) == 0


def test_custom_catalogue_and_catalogue_validation() -> None:
    catalogue = {"sticker": Perk("sticker", "Sticker", 5, "swag", max_per_user=2)}
    ledger = new_ledger()
    grant(ledger, "g-1", 100, "bonus", T)
    codes = [redeem(ledger, f"r-{i}", "sticker", T, catalogue).code for i in range(3)]
    assert codes == [OK, OK, LIMIT_REACHED]
    assert redeem(ledger, "r-9", "streak_freeze", T, catalogue).code == UNKNOWN_PERK
    with pytest.raises(ValueError):
        Perk("free", "Free", 0, "swag")


def test_spending_takes_soonest_expiring_first_and_never_expiring_last() -> None:
    ledger = new_ledger()
    grant(ledger, "forever", 100, "signup", T)
    grant(ledger, "late", 100, "bonus", T, expires_at_ms=T + 20 * DAY)
    grant(ledger, "soon", 100, "bonus", T, expires_at_ms=T + 5 * DAY)
    grant(ledger, "soon-2", 100, "bonus", T, expires_at_ms=T + 5 * DAY)  # tie: older grant first
    redeem(ledger, "r-1", "streak_freeze", T)  # 150: all of "soon", 50 of "soon-2"
    assert [(lot.entry_id, lot.remaining) for lot in ledger.lots] == [
        ("soon-2", 50),
        ("late", 100),
        ("forever", 100),
    ]
    redeem(ledger, "r-2", "streak_freeze", T)  # 150: 50 of "soon-2", all of "late"
    assert [(lot.entry_id, lot.remaining) for lot in ledger.lots] == [("forever", 100)]


# --- expiry ---------------------------------------------------------------------------------------


def test_expired_credit_is_not_spendable() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 300, "bonus", T, expires_at_ms=T + DAY)
    assert balance(ledger, T + DAY - 1) == 300
    assert balance(ledger, T + DAY) == 0  # spendable strictly before the expiry instant
    result = redeem(ledger, "r-1", "streak_freeze", T + DAY)
    assert (result.code, result.balance) == (INSUFFICIENT_BALANCE, 0)


def test_expiry_is_recorded_once_lazily_at_the_expiry_time() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 300, "bonus", T, expires_at_ms=T + DAY)
    redeem(ledger, "r-1", "streak_freeze", T + 1)
    assert [e["kind"] for e in history(ledger)] == ["redeem", "grant"]  # reads never record
    assert balance(ledger, T + 2 * DAY) == 0
    assert [e["kind"] for e in history(ledger)] == ["redeem", "grant"]
    recorded = expire(ledger, T + 3 * DAY)
    assert [(e.entry_id, e.amount, e.at_ms) for e in recorded] == [("expiry:g-1", -150, T + DAY)]
    assert expire(ledger, T + 4 * DAY) == []
    grant(ledger, "g-2", 10, "bonus", T + 5 * DAY)
    kinds = [(e["kind"], e["amount"]) for e in history(ledger)]
    assert kinds == [("grant", 10), ("expiry", -150), ("redeem", -150), ("grant", 300)]
    assert history(ledger)[1]["at"] == "2026-11-23T08:00:00Z"
    assert (ledger.granted, ledger.spent, ledger.expired) == (310, 150, 150)


def test_fully_spent_lot_records_no_expiry() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 150, "bonus", T, expires_at_ms=T + DAY)
    redeem(ledger, "r-1", "streak_freeze", T)
    assert expire(ledger, T + 2 * DAY) == []
    assert ledger.expired == 0


def test_grant_already_past_expiry_is_recorded_then_expires() -> None:
    ledger = new_ledger()
    assert grant(ledger, "late", 50, "bonus", T, expires_at_ms=T - DAY) is True
    assert balance(ledger, T) == 0
    assert [e["kind"] for e in history(ledger)] == ["grant", "expiry"]  # the expiry is older
    assert grant(ledger, "late", 50, "bonus", T) is False


def test_expiring_soon_lists_credit_within_seven_days() -> None:
    ledger = new_ledger()
    grant(ledger, "a", 10, "bonus", T, expires_at_ms=T + 7 * DAY)
    grant(ledger, "b", 20, "bonus", T, expires_at_ms=T + 2 * DAY)
    grant(ledger, "c", 40, "bonus", T, expires_at_ms=T + 7 * DAY + 1)
    grant(ledger, "d", 80, "bonus", T)
    soon = expiring_soon(ledger, T)
    assert soon["amount"] == 30
    assert soon["lots"] == [
        {"id": "b", "amount": 20, "expires_at": "2026-11-24T08:00:00Z"},
        {"id": "a", "amount": 10, "expires_at": "2026-11-29T08:00:00Z"},
    ]
    assert expiring_soon(ledger, T + 3 * DAY)["amount"] == 50  # b is gone, c came into range


# --- reads --------------------------------------------------------------------------------------


def test_available_flags_affordable_and_limit() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 900, "bonus", T)
    redeem(ledger, "r-1", "early_access", T)
    rows = {row["perk_id"]: row for row in available(ledger, T)}
    assert [row["perk_id"] for row in available(ledger, T)] == [
        "streak_freeze",
        "discount_10",
        "mock_interview",
        "early_access",
    ]
    assert rows["streak_freeze"]["affordable"] is True
    assert rows["discount_10"]["affordable"] is True  # 400 left, costs 300
    assert rows["mock_interview"]["affordable"] is True  # exactly 400
    assert rows["early_access"] == {
        "perk_id": "early_access",
        "title": "Early access to new courses",
        "cost": 500,
        "kind": "access",
        "max_per_user": 1,
        "redeemed": 1,
        "affordable": False,
        "limit_reached": True,
    }


def test_history_is_newest_first_in_rfc3339() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 500, "signup", T)
    redeem(ledger, "r-1", "discount_10", T + 1500)
    assert history(ledger) == [
        {
            "id": "r-1",
            "kind": "redeem",
            "amount": -300,
            "perk_id": "discount_10",
            "at": "2026-11-22T08:00:01.500Z",
        },
        {"id": "g-1", "kind": "grant", "amount": 500, "reason": "signup", "at": "2026-11-22T08:00:00Z"},
    ]


def test_history_cap_keeps_balance_exact() -> None:
    ledger = new_ledger()
    for i in range(HISTORY_CAP + 100):
        grant(ledger, f"g-{i}", 1, "tick", T + i)
    assert len(ledger.entries) == HISTORY_CAP
    assert history(ledger)[-1]["id"] == "g-100"  # the oldest 100 fell off
    assert balance(ledger, T + DAY) == HISTORY_CAP + 100
    assert grant(ledger, "g-0", 1, "tick", T + DAY) is False  # its id is still remembered
    assert redeem(ledger, "r-1", "streak_freeze", T + DAY).balance == HISTORY_CAP + 100 - 150
    assert balance(roundtrip(ledger), T + DAY) == HISTORY_CAP - 50


def test_to_dict_round_trip() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 500, "signup", T, expires_at_ms=T + DAY)
    grant(ledger, "g-2", 300, "bonus", T)
    redeem(ledger, "r-1", "discount_10", T)
    redeem(ledger, "r-2", "nope", T)
    expire(ledger, T + 2 * DAY)
    copy = roundtrip(ledger)
    assert copy == ledger
    assert redeem(copy, "r-1", "discount_10", T).duplicate is True
    with pytest.raises(ValueError):
        Ledger.from_dict({**ledger.to_dict(), "v": 99})


# --- property: any interleaving ---------------------------------------------------------------

_op = st.one_of(
    st.tuples(
        st.just("grant"),
        st.integers(0, 7),  # few ids, so retries happen
        st.integers(1, 400),
        st.one_of(st.none(), st.integers(-DAY, 10 * DAY)),
    ),
    st.tuples(st.just("redeem"), st.integers(0, 7), st.sampled_from([*CATALOGUE, "nope"]), st.none()),
    st.tuples(st.just("time"), st.integers(-DAY, 3 * DAY), st.none(), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=60))
def test_any_interleaving_keeps_balance_exact_and_never_negative(ops: list[tuple[Any, ...]]) -> None:
    ledger = new_ledger()
    now = T  # may step back: commands arrive out of order
    # An independent model: lots as [expiry or None, remaining], spent soonest expiry first.
    model: list[list[Any]] = []
    granted_ids: set[int] = set()
    results: dict[int, tuple[str, int]] = {}
    redeemed: dict[str, int] = {}
    spent = 0

    def record_expiry() -> None:
        # A touch at `now` makes expiry final: dropped lots stay dropped if time steps back.
        model[:] = [lot for lot in model if lot[0] is None or lot[0] > now]

    for kind, a, b, c in ops:
        if kind == "time":
            now += a
        elif kind == "grant":
            expires = None if c is None else now + c
            applied = grant(ledger, f"g-{a}", b, "r", now, expires)
            assert applied == (a not in granted_ids)
            if applied:
                granted_ids.add(a)
                model.append([expires, b])
                record_expiry()
        elif a in results:
            result = redeem(ledger, f"r-{a}", b, now)
            assert result.duplicate and (result.code, result.cost) == results[a]
        else:
            result = redeem(ledger, f"r-{a}", b, now)
            record_expiry()
            perk = CATALOGUE.get(b)
            if perk is None:
                expected = UNKNOWN_PERK
            elif perk.max_per_user is not None and redeemed.get(b, 0) >= perk.max_per_user:
                expected = LIMIT_REACHED
            elif sum(lot[1] for lot in model) < perk.cost:
                expected = INSUFFICIENT_BALANCE
            else:
                expected = OK
            assert result.code == expected and not result.duplicate
            results[a] = (result.code, result.cost)
            if perk is not None and result.ok:
                redeemed[b] = redeemed.get(b, 0) + 1
                spent += perk.cost
                due = perk.cost
                for lot in sorted(model, key=lambda lot: (lot[0] is None, lot[0] or 0)):
                    taken = min(lot[1], due)
                    lot[1] -= taken
                    due -= taken
        expected_balance = sum(lot[1] for lot in model if lot[0] is None or lot[0] > now)
        assert balance(ledger, now) == expected_balance >= 0
        assert all(lot.remaining > 0 for lot in ledger.lots)
        assert sum(lot.remaining for lot in ledger.lots) == ledger.granted - ledger.spent - ledger.expired
        assert ledger.spent == spent
    assert roundtrip(ledger) == ledger


# --- bounds (docs/growth.md, "State budget") ----------------------------------------------------


def test_ids_are_remembered_as_fixed_size_digests() -> None:
    ledger = new_ledger()
    long_id = "g" * 128
    grant(ledger, long_id, 10, "bonus", T)
    redeem(ledger, "r" * 128, "nope", T)
    assert set(ledger.seen) == {id_digest(long_id), id_digest("r" * 128)}
    assert all(len(key) == 22 for key in ledger.seen)
    assert grant(ledger, long_id, 10, "bonus", T + 1) is False
    assert redeem(ledger, "r" * 128, "nope", T + 1).duplicate
    # The memory is a window: the oldest of many ids is forgotten, its live lot still known.
    for i in range(SEEN_CAP + 10):
        redeem(ledger, f"r-{i}", "nope", T)
    assert len(ledger.seen) == SEEN_CAP and id_digest(long_id) not in ledger.seen
    assert grant(ledger, long_id, 10, "bonus", T + 2) is False


def test_lots_merge_past_the_cap_keeping_balance_and_promised_expiry() -> None:
    ledger = new_ledger()
    for i in range(3 * MAX_LOTS):
        grant(ledger, f"g-{i}", 10, "bonus", T, expires_at_ms=T + (i + 1) * DAY)
    assert len(ledger.lots) == MAX_LOTS
    assert balance(ledger, T) == 30 * MAX_LOTS == ledger.granted
    # Credit granted to expire on day i+1 is still spendable until then: a merge only extends.
    for day in range(1, 3 * MAX_LOTS + 1):
        assert balance(ledger, T + day * DAY - 1) >= 10 * (3 * MAX_LOTS - day + 1)
    assert balance(ledger, T + 3 * MAX_LOTS * DAY) == 0
    assert balance(roundtrip(ledger), T) == balance(ledger, T)


def test_a_grant_above_the_balance_cap_is_refused_and_changes_nothing() -> None:
    ledger = new_ledger()
    for i in range(MAX_BALANCE // MAX_GRANT):
        grant(ledger, f"g-{i}", MAX_GRANT, "bonus", T)
    before = roundtrip(ledger)
    with pytest.raises(GrantRefused) as err:
        grant(ledger, "one-more", 1, "bonus", T)
    assert err.value.code == BALANCE_CAP
    assert ledger == before
    assert grant(ledger, "g-0", MAX_GRANT, "bonus", T) is False  # a retry is still a retry
    grant(ledger, "already-expired", 5, "late", T, expires_at_ms=T - 1)  # adds nothing spendable
    redeem(ledger, "r-1", "streak_freeze", T)
    assert grant(ledger, "top-up", 150, "bonus", T) is True  # room again after spending
    assert balance(ledger, T) == MAX_BALANCE


@pytest.mark.parametrize(
    ("reason", "expires"),
    [
        ("x" * (MAX_REASON_BYTES + 1), None),
        ("é" * (MAX_REASON_BYTES // 2 + 1), None),
        ("a\x00b", None),
        ("ok", "soon"),
        ("ok", True),
        ("ok", -1),
    ],
)
def test_a_grant_reason_and_expiry_are_bounded(reason: str, expires: Any) -> None:
    ledger = new_ledger()
    with pytest.raises(InvalidEvent):
        grant(ledger, "g-1", 10, reason, T, expires_at_ms=expires)
    assert ledger == new_ledger()


def test_history_is_bounded_in_bytes_as_well_as_count() -> None:
    ledger = new_ledger()
    for i in range(HISTORY_CAP):
        grant(ledger, f"{i}-" + '"' * 120, 1, '"' * MAX_REASON_BYTES, T + i)
    assert sum(len(orjson.dumps(e)) for e in ledger.to_dict()["hist"]) <= HISTORY_BYTES
    assert 0 < len(ledger.entries) < HISTORY_CAP
    assert balance(ledger, T + DAY) == HISTORY_CAP  # balances never read the history


def test_a_version_1_ledger_is_read_with_its_ids_digested() -> None:
    ledger = new_ledger()
    grant(ledger, "g-1", 300, "bonus", T)
    redeem(ledger, "r-1", "streak_freeze", T)
    old = ledger.to_dict() | {"v": 1, "seen": {"g-1": None, "r-1": ["ok", "streak_freeze", 150, 150, T]}}
    upgraded = Ledger.from_dict(old)
    assert upgraded == ledger
    assert redeem(upgraded, "r-1", "streak_freeze", T + 1).duplicate
