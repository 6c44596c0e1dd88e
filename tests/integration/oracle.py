"""The expected outcome of a set of events, computed by the pure model alone."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any

import orjson

from infra.settings import DEFAULT_RULES, Settings
from models.challenges import apply_to_challenge, challenge_for, completion_props
from models.events import BehaviorEvent, InvalidEvent, parse_behavior
from models.gamification import UserState, apply_event, public_view
from models.rules import Rules
from models.streaks import local_day

RULES = Rules.from_toml(DEFAULT_RULES.read_text())


def expected_views(events: Iterable[dict[str, Any]], now_ms: int) -> dict[str, dict[str, Any]]:
    """Each user's view after ``events`` (UTC users), including the XP the engine adds itself for
    completed daily challenges: the challenge of each day is judged on that day's applied events,
    and its completion is one more event (``challenge:{date}``) through the same fold."""
    window_ms = Settings().dedup_window_days * 86_400_000
    states: dict[str, UserState] = {}
    applied: dict[str, list[BehaviorEvent]] = defaultdict(list)
    for e in events:
        ev = parse_behavior(orjson.dumps(e), now_ms)
        st = states.setdefault(ev.user_id, UserState(user_id=ev.user_id))
        try:
            effects = apply_event(st, ev, RULES, window_ms)
        except InvalidEvent:
            continue  # too late: the worker dead-letters it
        if not effects.duplicate:
            applied[ev.user_id].append(ev)
    for user_id, evs in applied.items():
        by_day: dict[int, list[BehaviorEvent]] = defaultdict(list)
        for ev in evs:
            by_day[local_day(ev.ts_ms, "UTC")].append(ev)
        for day, day_events in sorted(by_day.items()):
            challenge = challenge_for(date.fromordinal(day))
            progress = None
            for ev in sorted(day_events, key=lambda x: (x.ts_ms, x.event_id)):
                progress, change = apply_to_challenge(progress, challenge, ev, RULES, "UTC")
                if change.completed_now:
                    done = BehaviorEvent(
                        f"challenge:{challenge.id}",
                        user_id,
                        "daily_challenge_complete",
                        ev.ts_ms,
                        None,
                        None,
                        None,
                        completion_props(challenge),
                    )
                    apply_event(states[user_id], done, RULES, window_ms)
    return {uid: public_view(st, RULES) for uid, st in states.items()}
