from __future__ import annotations

import pytest

from models.leaderboard import MAX_EXACT_XP, PERIODS, bucket, decode_score, encode_score, period_keys
from tests.models.factories import ms


def test_periods() -> None:
    assert PERIODS == ("daily", "weekly", "all_time")


@pytest.mark.parametrize(
    ("ts", "daily", "weekly"),
    [
        ("2026-11-22T08:15:00Z", "2026-11-22", "2026-W47"),  # a Sunday
        ("2026-11-22T23:59:59.999Z", "2026-11-22", "2026-W47"),
        ("2026-11-23T00:00:00Z", "2026-11-23", "2026-W48"),  # Monday starts the ISO week
        ("2026-11-23T01:00:00+03:00", "2026-11-22", "2026-W47"),  # UTC boundaries, not local
        ("2026-12-31T12:00:00Z", "2026-12-31", "2026-W53"),
        ("2027-01-01T00:00:00Z", "2027-01-01", "2026-W53"),
        ("2027-01-03T23:59:59Z", "2027-01-03", "2026-W53"),
        ("2027-01-04T00:00:00Z", "2027-01-04", "2027-W01"),
        ("2024-12-30T00:00:00Z", "2024-12-30", "2025-W01"),
        ("2028-02-29T10:00:00Z", "2028-02-29", "2028-W09"),
    ],
)
def test_buckets_on_utc_boundaries(ts: str, daily: str, weekly: str) -> None:
    t = ms(ts)
    assert bucket("daily", t) == daily
    assert bucket("weekly", t) == weekly
    assert bucket("all_time", t) == "all"
    assert period_keys(t) == (f"daily:{daily}", f"weekly:{weekly}", "all_time:all")


def test_unknown_period() -> None:
    with pytest.raises(ValueError, match="monthly"):
        bucket("monthly", 0)


T0 = ms("2026-11-22T08:00:00Z")


def test_more_xp_always_ranks_higher() -> None:
    assert encode_score(101, ms("2088-01-01T00:00:00Z")) > encode_score(100, ms("2020-01-01T00:00:00Z"))
    assert encode_score(1, T0) > encode_score(0, T0)


def test_equal_xp_earlier_ranks_higher() -> None:
    assert encode_score(500, T0) > encode_score(500, T0 + 1000)
    assert encode_score(500, T0) == encode_score(500, T0 + 999)  # second resolution


def test_decode_recovers_xp() -> None:
    for xp in (0, 1, 77, 5500, MAX_EXACT_XP):
        for t in (0, T0, ms("2090-01-01T00:00:00Z")):
            assert decode_score(encode_score(xp, t)) == xp


def test_exact_up_to_max_exact_xp() -> None:
    top = encode_score(MAX_EXACT_XP, ms("2020-01-01T00:00:00Z"))
    assert top == 2**53 - 1
    assert int(top) == top
    # Adjacent seconds still differ at the top of the range: no float rounding.
    assert encode_score(MAX_EXACT_XP, T0) - encode_score(MAX_EXACT_XP, T0 + 1000) == 1


def test_clamps() -> None:
    assert decode_score(encode_score(MAX_EXACT_XP + 10, T0)) == MAX_EXACT_XP
    assert decode_score(encode_score(-5, T0)) == 0
    before_2020 = encode_score(10, ms("2019-06-01T00:00:00Z"))
    assert before_2020 == encode_score(10, ms("2020-01-01T00:00:00Z"))
    far_future = encode_score(10, ms("2100-01-01T00:00:00Z"))
    assert far_future == 10 * 2**31
    assert decode_score(far_future) == 10
