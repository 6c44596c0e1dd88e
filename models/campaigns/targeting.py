"""Targeting: whether a user is in a campaign's audience.

Targeting (`targets`, evaluated when an occurrence fires, with event time `now_ms`)
  * all: everyone.
  * at_risk: a risk score exists and is >= `threshold` (0-100, like models.risk).
  * inactive: no activity at all, or none for at least `inactive_days` days of event time
    (exactly 7 days counts as 7 days inactive).
  * filter: one profile field compared with `value`. Strings compare trimmed and case-folded
    ("nairobi" matches "Nairobi "). A missing field or a value of the wrong type never matches
    and never raises: profiles are only loosely typed, and one odd profile must not stop a
    campaign. Which ops apply to which fields is checked when the campaign is created.
"""

from __future__ import annotations

from models.campaigns.records import NUMBER_FIELDS, Target, UserFacts, as_number
from models.time_units import DAY_MS


def targets(target: Target, facts: UserFacts, now_ms: int) -> bool:
    """Whether the user is in the campaign's audience at event time `now_ms`; never raises."""
    if target.kind == "all":
        return True
    if target.kind == "at_risk":
        score = as_number(facts.risk_score)
        return score is not None and score >= target.threshold
    if target.kind == "inactive":
        last = facts.last_active_ms
        return last is None or now_ms - last >= target.inactive_days * DAY_MS
    if target.kind == "filter" and target.field is not None:
        return _matches(target, facts.profile.get(target.field))
    return False


def _norm(value: object) -> str | None:
    return value.strip().casefold() if isinstance(value, str) else None


def _matches(target: Target, actual: object) -> bool:
    op, wanted = target.op, target.value
    if op == "contains":
        if not isinstance(actual, list | tuple):
            return False
        needle = _norm(wanted)
        return needle is not None and any(_norm(item) == needle for item in actual)
    if target.field in NUMBER_FIELDS:
        number = as_number(actual)
        candidates = wanted if isinstance(wanted, tuple) else (wanted,)
        if number is None or any(as_number(c) is None for c in candidates):
            return False
        if op == "gte":
            return bool(number >= wanted)
        if op == "lte":
            return bool(number <= wanted)
        equal = any(number == c for c in candidates)
    else:
        text = _norm(actual)
        candidates = wanted if isinstance(wanted, tuple) else (wanted,)
        if text is None:
            return False
        equal = any(text == _norm(c) for c in candidates)
    return not equal if op == "ne" else equal
