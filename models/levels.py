"""Level arithmetic over the rule book's level table (ascending min_xp, level 1 at 0 XP)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from models.rules import Level


class LevelProgress(TypedDict):
    level: int
    title: str
    xp_into_level: int
    xp_to_next: int


def level_for_xp(xp: int, levels: Sequence[Level]) -> Level:
    """The highest level whose threshold `xp` has reached (level 1 for anything below)."""
    current = levels[0]
    for level in levels:
        if level.min_xp > xp:
            break
        current = level
    return current


def level_progress(xp: int, levels: Sequence[Level]) -> LevelProgress:
    """What a progress bar needs; `xp_to_next` is 0 once the top level is reached."""
    current = level_for_xp(xp, levels)
    index = current.level - 1
    nxt = levels[index + 1] if index + 1 < len(levels) else None
    return {
        "level": current.level,
        "title": current.title,
        "xp_into_level": max(0, xp - current.min_xp),
        "xp_to_next": 0 if nxt is None else nxt.min_xp - xp,
    }
