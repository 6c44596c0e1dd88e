"""Whether an A/B test has a winner, said with the test that decided it, without I/O.

Each variant's rate is its rewarded sends over its sends (``sends_and_rewards``: clicked or
converted, less the unsubscribes it caused: what the bandit weighs). The best variant wins when a
two-sided two-proportion z-test (pooled) against every other variant rejects "same rate" at
``ALPHA`` after a Bonferroni correction for the number of comparisons, and every variant has at
least ``MIN_SENDS`` sends (below that the normal approximation says little).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models.interventions.bandit import sends_and_rewards

ALPHA = 0.05
MIN_SENDS = 30
TEST_NAME = (
    "two-sided two-proportion z-test (pooled) on rewarded sends per send, "
    "best variant vs each other, Bonferroni-corrected"
)


def p_value(rewards_a: int, sends_a: int, rewards_b: int, sends_b: int) -> float:
    """Two-sided p-value that two rates are equal (1.0 when nothing can be told apart)."""
    if sends_a <= 0 or sends_b <= 0:
        return 1.0
    pooled = (rewards_a + rewards_b) / (sends_a + sends_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / sends_a + 1 / sends_b))
    if spread == 0:
        return 1.0
    z = (rewards_a / sends_a - rewards_b / sends_b) / spread
    return math.erfc(abs(z) / math.sqrt(2))


def winner(counts: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """``{"winner": variant or None, "significant", "p_value", "alpha", "test", "rates"}``."""
    figures = {v: sends_and_rewards(c) for v, c in counts.items()}
    rates = {v: round(r / s, 4) if s else 0.0 for v, (s, r) in figures.items()}
    out: dict[str, Any] = {"winner": None, "significant": False, "p_value": None, "alpha": ALPHA,
                           "test": TEST_NAME, "rates": rates}  # fmt: skip
    if len(figures) < 2 or any(s < MIN_SENDS for s, _ in figures.values()):
        return out
    best = max(figures, key=lambda v: (rates[v], v))
    sends, rewards = figures[best]
    worst_p = max(p_value(rewards, sends, r, s) for v, (s, r) in figures.items() if v != best)
    threshold = ALPHA / (len(figures) - 1)
    out.update(
        p_value=round(worst_p, 6),
        significant=worst_p < threshold,
        winner=best if worst_p < threshold else None,
    )
    return out
