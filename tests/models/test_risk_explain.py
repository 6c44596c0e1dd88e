"""Risk signals in words (models/risk_explain.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.risk_explain import SIGNAL_WORDS, explain
from models.risk_features import FEATURE_NAMES


def test_every_feature_has_words_for_both_directions() -> None:
    assert set(SIGNAL_WORDS) == set(FEATURE_NAMES)
    for raises, lowers in SIGNAL_WORDS.values():
        assert raises and lowers and raises != lowers


def test_strongest_first_with_the_direction_of_each() -> None:
    got = explain({"streak": -0.4, "recency_d": 1.5, "score_trend": 0.2})
    assert [(e["signal"], e["effect"], e["weight"]) for e in got] == [
        ("recency_d", "raises", 1.5),
        ("streak", "lowers", -0.4),
        ("score_trend", "raises", 0.2),
    ]
    assert got[0]["text"] == SIGNAL_WORDS["recency_d"][0]
    assert got[1]["text"] == SIGNAL_WORDS["streak"][1]


def test_an_unknown_signal_is_named_and_junk_is_skipped() -> None:
    got = explain({"new_feature_x": 0.3, "bad": "high", "flag": True})
    assert got == [{"signal": "new_feature_x", "effect": "raises", "weight": 0.3, "text": "new feature x"}]


@given(st.dictionaries(st.sampled_from(FEATURE_NAMES), st.floats(-50, 50, allow_nan=False)))
def test_one_entry_per_signal_ordered_by_strength(contributions: dict[str, float]) -> None:
    got = explain(contributions)
    assert sorted(e["signal"] for e in got) == sorted(contributions)
    weights = [abs(e["weight"]) for e in got]
    assert weights == sorted(weights, reverse=True)
