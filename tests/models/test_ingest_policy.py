from __future__ import annotations

import pytest

from infra.settings import DEFAULT_RULES
from models.challenges import REWARD_TYPES
from models.events import FUTURE_TOLERANCE_MS, InvalidEvent, parse_ts
from models.ingest_policy import (
    MAX_USER_EVENT_AGE_MS,
    PLATFORM_EVENT_TYPES,
    TS_TOO_OLD,
    TYPE_NOT_ALLOWED,
    USER_EVENT_TYPES,
    check_user_event,
)
from models.risk_features import APPLICATION_TYPES, NOTIFICATION_CLICKED
from models.rules import Rules
from scripts.simulator import EVENT_MIX

NOW = parse_ts("2026-11-22T09:00:00Z")


def reason_of(event_type: str, ts_ms: int = NOW) -> str | None:
    try:
        check_user_event(event_type, ts_ms, NOW)
    except InvalidEvent as exc:
        assert exc.message  # every refusal says why
        return exc.reason
    return None


@pytest.mark.parametrize("event_type", sorted(USER_EVENT_TYPES))
def test_user_types_are_accepted_at_ingest_time(event_type: str) -> None:
    assert reason_of(event_type) is None


@pytest.mark.parametrize("event_type", sorted(PLATFORM_EVENT_TYPES))
def test_platform_types_are_refused(event_type: str) -> None:
    assert reason_of(event_type) == TYPE_NOT_ALLOWED


@pytest.mark.parametrize(
    "event_type", ["", "Lesson_Complete", "lesson_complete ", "made_up", "x" * 128, "lesson_complete\x00"]
)
def test_unknown_types_are_refused(event_type: str) -> None:
    assert reason_of(event_type) == TYPE_NOT_ALLOWED


def test_the_lists_never_overlap() -> None:
    assert USER_EVENT_TYPES.isdisjoint(PLATFORM_EVENT_TYPES)


def test_the_issue_named_forgeries_and_engine_outputs_are_platform_only() -> None:
    named = {"course_complete", "certificate_earned", "referral_accepted", "notification_converted"}
    engine_outputs = REWARD_TYPES | {"goal_set", "job_apply"}
    for event_type in named | engine_outputs | APPLICATION_TYPES | {NOTIFICATION_CLICKED}:
        assert event_type in PLATFORM_EVENT_TYPES, event_type


def test_every_type_in_use_is_classified() -> None:
    """A new action in the shipped rules or the simulator must be put on one list deliberately."""
    rules = Rules.from_toml(DEFAULT_RULES.read_text())
    in_use = set(rules.known_types) | {event_type for event_type, _ in EVENT_MIX}
    unclassified = in_use - USER_EVENT_TYPES - PLATFORM_EVENT_TYPES
    assert unclassified == set()


def test_time_window() -> None:
    oldest = NOW - MAX_USER_EVENT_AGE_MS
    assert reason_of("lesson_complete", oldest) is None
    assert reason_of("lesson_complete", oldest - 1) == TS_TOO_OLD
    assert reason_of("lesson_complete", 0) == TS_TOO_OLD  # back-dated to 1970
    # The future bound belongs to models.events (every producer); this module does not repeat it.
    assert reason_of("lesson_complete", NOW + FUTURE_TOLERANCE_MS) is None


def test_a_forbidden_type_is_reported_before_its_time() -> None:
    assert reason_of("course_complete", 0) == TYPE_NOT_ALLOWED
