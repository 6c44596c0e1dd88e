from __future__ import annotations

import pytest

from models.levels import level_for_xp, level_progress
from tests.models.factories import default_rules

LEVELS = default_rules().levels


@pytest.mark.parametrize(
    ("xp", "level"),
    [(0, 1), (99, 1), (100, 2), (299, 2), (300, 3), (999, 4), (1000, 5), (5499, 9), (5500, 10), (10**9, 10)],
)
def test_level_for_xp_boundaries(xp: int, level: int) -> None:
    assert level_for_xp(xp, LEVELS).level == level


def test_negative_xp_is_level_one() -> None:
    assert level_for_xp(-5, LEVELS).level == 1


def test_level_progress() -> None:
    assert level_progress(0, LEVELS) == {
        "level": 1,
        "title": "Newcomer",
        "xp_into_level": 0,
        "xp_to_next": 100,
    }
    assert level_progress(150, LEVELS) == {
        "level": 2,
        "title": "Learner",
        "xp_into_level": 50,
        "xp_to_next": 150,
    }
    assert level_progress(4999, LEVELS) == {
        "level": 9,
        "title": "Veteran",
        "xp_into_level": 999,
        "xp_to_next": 501,
    }


def test_level_progress_at_max_level() -> None:
    top = {"level": 10, "title": "Interview Guru", "xp_into_level": 0, "xp_to_next": 0}
    assert level_progress(5500, LEVELS) == top
    assert level_progress(6000, LEVELS) == {**top, "xp_into_level": 500}
