"""Whether an A/B test has a winner (models/interventions/significance.py): a pooled two-sided
two-proportion z-test on rewarded sends per send, best variant against each other one,
Bonferroni-corrected, never below MIN_SENDS sends per variant."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.interventions.significance import ALPHA, MIN_SENDS, TEST_NAME, p_value, winner


def chi_square_p(a: int, n: int, b: int, m: int) -> float:
    """The same question asked as a 2x2 chi-square test without continuity correction (one degree
    of freedom), written out independently of the module: its statistic is the pooled z squared."""
    table = [[a, n - a], [b, m - b]]
    rows = [sum(r) for r in table]
    cols = [table[0][j] + table[1][j] for j in range(2)]
    total = n + m
    chi2 = sum(
        (table[i][j] - rows[i] * cols[j] / total) ** 2 / (rows[i] * cols[j] / total)
        for i in range(2)
        for j in range(2)
    )
    return math.erfc(math.sqrt(chi2 / 2))


def funnel(sent: int, clicked: int, converted: int = 0, unsubscribed: int = 0) -> dict[str, int]:
    return {"sent": sent, "opened": clicked, "clicked": clicked, "converted": converted,
            "unsubscribed": unsubscribed}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# p_value


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # Reference values from scipy.stats.chi2_contingency(..., correction=False).
        ((50, 100, 30, 100), 0.003892417122778637),
        ((50, 100, 35, 100), 0.03190525523659659),
        ((50, 100, 48, 100), 0.7772540327312346),
    ],
)
def test_p_value_matches_known_values(counts: tuple[int, int, int, int], expected: float) -> None:
    assert p_value(*counts) == pytest.approx(expected, rel=1e-9)
    assert p_value(*counts) == pytest.approx(chi_square_p(*counts), rel=1e-9)


@pytest.mark.parametrize(
    "counts",
    [
        (0, 0, 5, 10),  # no sends on one side
        (5, 10, 0, 0),
        (0, 0, 0, 0),
        (0, 50, 0, 50),  # nothing rewarded anywhere: no spread
        (50, 50, 40, 40),  # everything rewarded
        (10, 40, 10, 40),  # the same rate
        (3, 10, 30, 100),
    ],
)
def test_p_value_is_one_when_nothing_can_be_told_apart(counts: tuple[int, int, int, int]) -> None:
    assert p_value(*counts) == 1.0


def test_p_value_shrinks_as_the_gap_grows() -> None:
    ps = [p_value(50, 200, 50 + gap, 200) for gap in range(0, 60, 5)]
    assert ps == sorted(ps, reverse=True) and ps[0] == 1.0 and ps[-1] < 1e-6


def test_p_value_shrinks_with_more_sends_at_the_same_rates() -> None:
    ps = [p_value(5 * k, 10 * k, 4 * k, 10 * k) for k in (1, 10, 100, 1000)]
    assert ps == sorted(ps, reverse=True) and ps[-1] < 1e-6


_pairs = st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, max(n, 0)), st.just(n)))


@given(a=_pairs, b=_pairs)
def test_p_value_is_a_probability_and_symmetric(a: tuple[int, int], b: tuple[int, int]) -> None:
    p = p_value(a[0], a[1], b[0], b[1])
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(p_value(b[0], b[1], a[0], a[1]), rel=1e-12, abs=1e-300)
    if a[1] and b[1] and a[0] * b[1] == b[0] * a[1]:
        assert p == 1.0  # equal rates


@given(a=_pairs, b=_pairs)
def test_p_value_agrees_with_the_chi_square_test(a: tuple[int, int], b: tuple[int, int]) -> None:
    (ra, sa), (rb, sb) = a, b
    if not sa or not sb or ra + rb in (0, sa + sb):
        return  # degenerate: p_value says 1.0, the chi-square has no statistic
    assert p_value(ra, sa, rb, sb) == pytest.approx(chi_square_p(ra, sa, rb, sb), rel=1e-6, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# winner


def test_the_better_variant_wins_when_clearly_different() -> None:
    verdict = winner({"a": funnel(100, 50), "b": funnel(100, 30)})
    assert verdict == {
        "winner": "a",
        "significant": True,
        "p_value": round(0.003892417122778637, 6),
        "alpha": ALPHA,
        "test": TEST_NAME,
        "rates": {"a": 0.5, "b": 0.3},
    }


def test_the_winner_does_not_depend_on_the_order_or_the_names() -> None:
    assert winner({"b": funnel(100, 30), "a": funnel(100, 50)})["winner"] == "a"
    assert winner({"a": funnel(100, 30), "b": funnel(100, 50)})["winner"] == "b"


def test_no_winner_when_the_rates_are_close() -> None:
    verdict = winner({"a": funnel(100, 50), "b": funnel(100, 48)})
    assert verdict["winner"] is None and verdict["significant"] is False
    assert verdict["p_value"] == pytest.approx(0.777254, abs=1e-6)
    assert verdict["rates"] == {"a": 0.5, "b": 0.48}


@pytest.mark.parametrize("short", [0, 1, MIN_SENDS - 1])
def test_no_verdict_below_min_sends(short: int) -> None:
    verdict = winner({"a": funnel(1000, 900), "b": funnel(short, 0)})
    assert verdict["winner"] is None and verdict["significant"] is False and verdict["p_value"] is None
    assert verdict["rates"]["a"] == 0.9


def test_min_sends_itself_is_enough() -> None:
    verdict = winner({"a": funnel(MIN_SENDS, MIN_SENDS), "b": funnel(MIN_SENDS, 0)})
    assert verdict["winner"] == "a" and verdict["p_value"] is not None


@pytest.mark.parametrize("counts", [{}, {"a": funnel(1000, 500)}])
def test_no_verdict_without_two_variants(counts: dict[str, Any]) -> None:
    verdict = winner(counts)
    assert verdict["winner"] is None and verdict["p_value"] is None
    assert verdict["rates"] == {v: 0.5 for v in counts}


def test_bonferroni_needs_more_with_more_variants() -> None:
    # p = 0.032 against each other variant: enough against one (alpha 0.05), not against two
    # (alpha 0.05 / 2 each).
    two = winner({"a": funnel(100, 50), "b": funnel(100, 35)})
    three = winner({"a": funnel(100, 50), "b": funnel(100, 35), "c": funnel(100, 35)})
    assert two["winner"] == "a" and two["p_value"] == pytest.approx(0.031905, abs=1e-6)
    assert three["winner"] is None and three["significant"] is False
    assert three["p_value"] == pytest.approx(0.031905, abs=1e-6)


def test_the_closest_rival_decides() -> None:
    verdict = winner({"a": funnel(100, 60), "b": funnel(100, 20), "c": funnel(100, 57)})
    assert verdict["winner"] is None
    assert verdict["p_value"] == pytest.approx(p_value(60, 100, 57, 100), abs=1e-6)


def test_unsubscribes_count_against_a_variant() -> None:
    # a clicks better but drives people off the channel: b is the better message.
    verdict = winner({"a": funnel(200, 100, unsubscribed=80), "b": funnel(200, 60)})
    assert verdict["rates"] == {"a": 0.1, "b": 0.3}
    assert verdict["winner"] == "b"


def test_conversions_are_rewards_and_opens_are_not() -> None:
    converted = {"sent": 100, "opened": 90, "clicked": 0, "converted": 50}
    opened = {"sent": 100, "opened": 100, "clicked": 10, "converted": 0}
    verdict = winner({"a": converted, "b": opened})
    assert verdict["rates"] == {"a": 0.5, "b": 0.1} and verdict["winner"] == "a"


def test_partial_or_missing_counts_read_as_zero() -> None:
    verdict = winner({"a": {"sent": 100, "clicked": 50}, "b": {"sent": 100}})
    assert verdict["winner"] == "a" and verdict["rates"] == {"a": 0.5, "b": 0.0}


_funnels = st.builds(
    lambda sent, c, u: {"sent": sent, "clicked": min(c, sent), "unsubscribed": u},
    st.integers(0, 400),
    st.integers(0, 400),
    st.integers(0, 20),
)


@given(counts=st.dictionaries(st.sampled_from("abcde"), _funnels, max_size=5))
def test_a_winner_has_the_best_rate_and_enough_sends_everywhere(counts: dict[str, dict[str, int]]) -> None:
    verdict = winner(counts)
    assert set(verdict["rates"]) == set(counts)
    assert all(0.0 <= r <= 1.0 for r in verdict["rates"].values())
    if verdict["winner"] is None:
        assert verdict["significant"] is False
        return
    assert verdict["significant"] is True and len(counts) >= 2
    assert all(c["sent"] >= MIN_SENDS for c in counts.values())
    best = verdict["rates"][verdict["winner"]]
    assert all(best > r for v, r in verdict["rates"].items() if v != verdict["winner"])
    assert 0.0 <= verdict["p_value"] < ALPHA / (len(counts) - 1)
