"""The expected outcome of a set of events, computed by the pure model alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from infra.settings import DEFAULT_RULES, Settings
from models.events import parse_behavior
from models.gamification import UserState, apply_event, public_view
from models.rules import Rules

RULES = Rules.from_toml(DEFAULT_RULES.read_text())


def expected_views(events: Iterable[dict[str, Any]], now_ms: int) -> dict[str, dict[str, Any]]:
    states: dict[str, UserState] = {}
    for e in events:
        ev = parse_behavior(orjson.dumps(e), now_ms)
        st = states.setdefault(ev.user_id, UserState(user_id=ev.user_id))
        apply_event(st, ev, RULES, Settings().dedup_window_days * 86_400_000)
    return {uid: public_view(st, RULES) for uid, st in states.items()}
