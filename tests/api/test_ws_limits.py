"""The websocket budgets on their own: connection slots and the op bucket, with a fake clock."""

from __future__ import annotations

import pytest

from api.ws_limits import (
    SERVER_BUSY,
    TOO_MANY_CONNECTIONS,
    ConnectionBudget,
    OpRateLimit,
    OverBudget,
    Verdict,
)


def budget(total: int = 10, per_user: int = 2, unauthenticated: int = 2) -> ConnectionBudget:
    return ConnectionBudget(max_connections=total, max_per_user=per_user, max_unauthenticated=unauthenticated)


def code_of(b: ConnectionBudget, sub: str | None) -> str:
    with pytest.raises(OverBudget) as info:
        b.admit(sub)
    return info.value.code


def test_per_user_limit_and_release() -> None:
    b = budget()
    first, _ = b.admit("u-1"), b.admit("u-1")
    assert code_of(b, "u-1") == TOO_MANY_CONNECTIONS
    assert b.admit("u-2").sub == "u-2"  # others are not affected
    first.release()
    first.release()  # idempotent: a double release must not free someone else's slot
    assert b.per_user == {"u-1": 1, "u-2": 1} and b.total == 2
    b.admit("u-1")
    assert code_of(b, "u-1") == TOO_MANY_CONNECTIONS


def test_process_limit_counts_every_socket() -> None:
    b = budget(total=3)
    b.admit("u-1")
    b.admit(None)
    b.admit("u-2")
    assert code_of(b, "u-3") == SERVER_BUSY
    assert code_of(b, None) == SERVER_BUSY
    assert b.total == 3


def test_unauthenticated_budget_and_authentication() -> None:
    b = budget(per_user=1, unauthenticated=2)
    a, c = b.admit(None), b.admit(None)
    assert code_of(b, None) == SERVER_BUSY
    a.authenticate("u-1")
    assert (b.unauthenticated, b.per_user, b.total) == (1, {"u-1": 1}, 2)
    d = b.admit(None)  # a's place among the unauthenticated is free again
    with pytest.raises(OverBudget) as info:
        d.authenticate("u-1")  # u-1 is at its limit: the slot is given back whole
    assert info.value.code == TOO_MANY_CONNECTIONS
    d.release()  # and releasing it again changes nothing
    assert (b.unauthenticated, b.per_user, b.total) == (1, {"u-1": 1}, 2)
    a.release()
    c.release()
    assert (b.unauthenticated, b.per_user, b.total) == (0, {}, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_op_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    ops = OpRateLimit(rate_per_s=20, burst=40, abuse_limit=40, clock=clock)
    assert [ops.take() for _ in range(40)] == [Verdict.ALLOWED] * 40
    assert ops.take() is Verdict.LIMITED
    clock.now += 0.5  # ten tokens back
    assert [ops.take() for _ in range(10)] == [Verdict.ALLOWED] * 10
    assert ops.take() is Verdict.LIMITED


def test_persistent_abuse_is_abusive_an_occasional_burst_is_not() -> None:
    clock = Clock()
    ops = OpRateLimit(rate_per_s=20, burst=40, abuse_limit=40, clock=clock)
    for _ in range(40):
        ops.take()
    # A burst that overshoots by 30, then calm for ten seconds: strikes leak away entirely.
    assert {ops.take() for _ in range(30)} == {Verdict.LIMITED}
    clock.now += 10
    for _ in range(40):
        ops.take()
    assert {ops.take() for _ in range(30)} == {Verdict.LIMITED}
    # Flooding at ten times the rate for a few seconds: closed.
    verdicts = []
    for _ in range(200 * 3):
        clock.now += 0.005
        verdicts.append(ops.take())
    assert Verdict.ABUSIVE in verdicts
    assert verdicts.index(Verdict.ABUSIVE) < 200  # within the first second of the flood


def test_rate_zero_switches_the_op_limit_off() -> None:
    ops = OpRateLimit(rate_per_s=0, burst=1, abuse_limit=1, clock=Clock())
    assert {ops.take() for _ in range(1000)} == {Verdict.ALLOWED}
