"""The outreach queue's task (models/outreach.py) without I/O: built from a student's risk view
and inbox, assigned and resolved with a bounded history, and its stored and shown forms. And the
sweep's side of it (models/nudges.py ``plan``): a critical student whose first recommendation is
a staff task also hears from us."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from models.campaigns.records import UserFacts
from models.events import format_ts, parse_ts
from models.interventions import QUEUED, Notification, UserContext, risk_key
from models.interventions.policy import URGENCY_CHANNELS, recommend_for
from models.nudges import plan
from models.outreach import (
    MAX_ASSIGNEE_LEN,
    MAX_HISTORY,
    MAX_LAST_INTERVENTIONS,
    MAX_NOTE_LEN,
    OutreachError,
    OutreachTask,
    assign,
    new_task,
    resolve,
)
from models.risk import RiskScore, Signal, risk_level
from models.risk_state import RiskState
from models.time_units import DAY_MS, HOUR_MS

CREATED = parse_ts("2026-03-10T12:00:00Z")
LATER = CREATED + 90_500  # 12:01:30.500


def risk_view(**overrides: Any) -> dict[str, Any]:
    """A student's risk view as the pipeline writes it (``RiskScore.to_dict`` and detail)."""
    view: dict[str, Any] = {
        "user_id": "u-1",
        "score": 91.5,
        "level": "critical",
        "updated_at": "2026-03-10T11:00:00Z",
        "signals": ["recency_d", "events_7d", "streak"],
        "weekly_risk": 0.9,
        "monthly_risk": 0.99,
        "confidence": 0.3,
        "contributions": {"recency_d": 1.2, "events_7d": 0.8, "streak": 0.3},
        "recommended_interventions": ["human_outreach", "gentle_reminder"],
    }
    view.update(overrides)
    return view


def inbox_entry(i: int) -> dict[str, Any]:
    """One notification of the inbox view (``Notification.public``)."""
    return {
        "id": f"n-{i}",
        "type": "gentle_reminder",
        "subject": f"We miss you ({i})",
        "body": "One short lesson today?",
        "cta": "Continue",
        "channels": ["IN_APP"],
        "created_at": format_ts(CREATED - i * HOUR_MS),
        "read": i % 2 == 0,
    }


def task() -> OutreachTask:
    inbox = [inbox_entry(i) for i in range(3)]
    return new_task("n-h", "u-1", CREATED, "Reach out to student u-1", risk_view(), ["Quiet."], inbox)


# ---------------------------------------------------------------------------------------------
# new_task


def test_a_new_task_carries_the_risk_the_words_and_the_last_notifications() -> None:
    inbox = [inbox_entry(i) for i in range(MAX_LAST_INTERVENTIONS + 3)]
    words = ["Several days have passed since the last activity.", "Few activities this week."]

    t = new_task("n-h", "u-1", CREATED, "Reach out to student u-1", risk_view(), words, inbox)

    assert (t.id, t.user_id, t.created_ms, t.updated_ms) == ("n-h", "u-1", CREATED, CREATED)
    assert (t.score, t.level) == (91.5, "critical")
    assert t.signals == ("recency_d", "events_7d", "streak")
    assert t.explanations == tuple(words)
    assert t.summary == "Reach out to student u-1"
    # The newest first, as the inbox lists them, bounded, and only what staff need of each.
    assert len(t.last_interventions) == MAX_LAST_INTERVENTIONS
    assert [dict(i) for i in t.last_interventions] == [
        {"type": e["type"], "subject": e["subject"], "created_at": e["created_at"], "read": e["read"]}
        for e in inbox[:MAX_LAST_INTERVENTIONS]
    ]
    assert (t.status, t.assignee, t.note) == ("open", None, None)
    assert t.history == ((CREATED, "created", "engine"),)


def test_an_integer_score_is_a_float() -> None:
    t = new_task("n", "u", CREATED, "", risk_view(score=88), [], [])
    assert t.score == 88.0 and isinstance(t.score, float)


@pytest.mark.parametrize("junk", [None, "91.5", [91.5], {"v": 1}])
def test_a_score_that_is_no_number_is_none(junk: Any) -> None:
    t = new_task("n", "u", CREATED, "", risk_view(score=junk, level=7), [], [])
    assert t.score is None
    assert t.level is None  # a level that is not a string is dropped too


@pytest.mark.parametrize("risk", [None, {}])
def test_no_risk_view_makes_a_task_without_a_score(risk: Mapping[str, Any] | None) -> None:
    t = new_task("n", "u", CREATED, "s", risk, [], [])
    assert (t.score, t.level, t.signals, t.explanations, t.last_interventions) == (None, None, (), (), ())
    assert t.status == "open"


def test_signals_explanations_and_summary_are_bounded() -> None:
    many = [f"sig_{i}" for i in range(20)]
    words = [f"Sentence {i}." for i in range(20)]
    t = new_task("n", "u", CREATED, "x" * 5000, risk_view(signals=many), words, [])
    assert t.signals == tuple(many[:8])
    assert t.explanations == tuple(words[:8])
    assert len(t.summary) == 1000


def test_an_inbox_entry_missing_fields_shows_them_as_none() -> None:
    t = new_task("n", "u", CREATED, "", None, [], [{"type": "job_match"}])
    assert [dict(i) for i in t.last_interventions] == [
        {"type": "job_match", "subject": None, "created_at": None, "read": None}
    ]


# ---------------------------------------------------------------------------------------------
# assign, resolve


def test_assign_then_resolve_records_who_did_what_and_when() -> None:
    opened = task()
    assigned = assign(opened, "  wanjiru  ", "ops-1", LATER)
    assert (assigned.status, assigned.assignee, assigned.updated_ms) == ("assigned", "wanjiru", LATER)
    assert assigned.history == ((CREATED, "created", "engine"), (LATER, "assigned to wanjiru", "ops-1"))
    assert opened.status == "open" and opened.history == ((CREATED, "created", "engine"),)  # unchanged

    done_at = LATER + DAY_MS
    resolved = resolve(assigned, "  Called her; she is back on Monday.  ", "wanjiru", done_at)
    assert (resolved.status, resolved.assignee) == ("resolved", "wanjiru")
    assert resolved.note == "Called her; she is back on Monday."
    assert resolved.updated_ms == done_at
    assert resolved.history[-1] == (done_at, "resolved", "wanjiru")
    assert len(resolved.history) == 3
    # Nothing else changed on the way.
    assert (resolved.id, resolved.created_ms, resolved.score, resolved.signals) == (
        opened.id,
        opened.created_ms,
        opened.score,
        opened.signals,
    )


def test_an_open_task_may_be_resolved_without_an_assignee_and_an_empty_note_is_none() -> None:
    resolved = resolve(task(), "   ", "ops-1", LATER)
    assert (resolved.status, resolved.assignee, resolved.note) == ("resolved", None, None)


def test_reassigning_keeps_both_in_the_history() -> None:
    first = assign(task(), "amani", "ops-1", LATER)
    second = assign(first, "baraka", "ops-2", LATER + 1)
    assert second.assignee == "baraka"
    assert [h[1:] for h in second.history] == [
        ("created", "engine"),
        ("assigned to amani", "ops-1"),
        ("assigned to baraka", "ops-2"),
    ]


def test_updated_ms_never_goes_back_with_a_clock_behind() -> None:
    assigned = assign(task(), "amani", "ops-1", LATER)
    behind = resolve(assigned, "done", "ops-2", LATER - 60_000)
    assert behind.updated_ms == LATER
    assert behind.history[-1][0] == LATER - 60_000  # the history says when it was said to be


def test_a_resolved_task_can_be_neither_assigned_nor_resolved_again() -> None:
    resolved = resolve(assign(task(), "amani", "ops-1", LATER), "ok", "ops-1", LATER + 1)
    with pytest.raises(OutreachError) as info:
        assign(resolved, "baraka", "ops-2", LATER + 2)
    assert info.value.code == "already_resolved"
    with pytest.raises(OutreachError) as again:
        resolve(resolved, "again", "ops-2", LATER + 2)
    assert again.value.code == "already_resolved"


@pytest.mark.parametrize(
    "assignee",
    ["", "   ", "x" * (MAX_ASSIGNEE_LEN + 1), "line\nbreak", "tab\there", "bell\x07"],
    ids=["empty", "blank", "too_long", "newline", "tab", "control"],
)
def test_an_invalid_assignee_is_refused(assignee: str) -> None:
    with pytest.raises(OutreachError) as info:
        assign(task(), assignee, "ops-1", LATER)
    assert info.value.code == "invalid_assignee"
    assert str(info.value)


def test_the_longest_assignee_and_note_are_accepted() -> None:
    name = "a" * MAX_ASSIGNEE_LEN
    assert assign(task(), name, "ops-1", LATER).assignee == name
    note = "n" * MAX_NOTE_LEN
    assert resolve(task(), note, "ops-1", LATER).note == note


def test_a_note_over_the_limit_is_refused() -> None:
    with pytest.raises(OutreachError) as info:
        resolve(task(), "n" * (MAX_NOTE_LEN + 1), "ops-1", LATER)
    assert info.value.code == "invalid_note"


def test_the_history_is_bounded_and_keeps_the_newest() -> None:
    t = task()
    for i in range(MAX_HISTORY + 5):
        t = assign(t, f"officer-{i}", "ops", LATER + i)
    assert len(t.history) == MAX_HISTORY
    assert t.history[-1] == (LATER + MAX_HISTORY + 4, f"assigned to officer-{MAX_HISTORY + 4}", "ops")
    assert t.history[0][1] == "assigned to officer-5"  # "created" and the first five dropped


def test_who_did_it_is_bounded_in_the_history() -> None:
    t = assign(task(), "amani", "s" * 500, LATER)
    assert t.history[-1][2] == "s" * MAX_ASSIGNEE_LEN


# ---------------------------------------------------------------------------------------------
# Stored and shown forms


def test_to_dict_from_dict_round_trips_through_json() -> None:
    resolved = resolve(assign(task(), "amani", "ops-1", LATER), "Called.", "amani", LATER + 5)
    stored = orjson.loads(orjson.dumps(resolved.to_dict()))
    assert OutreachTask.from_dict(stored) == resolved
    assert OutreachTask.from_dict(stored).to_dict() == resolved.to_dict()
    fresh = task()
    assert OutreachTask.from_dict(orjson.loads(orjson.dumps(fresh.to_dict()))) == fresh


def test_from_dict_fills_what_an_older_task_lacks() -> None:
    t = OutreachTask.from_dict({"id": "n", "user_id": "u", "created_ms": CREATED})
    assert (t.updated_ms, t.status, t.summary, t.history, t.signals) == (CREATED, "open", "", (), ())


def test_public_shows_times_as_rfc3339_and_the_history_as_objects() -> None:
    resolved = resolve(assign(task(), "amani", "ops-1", LATER), "Called.", "amani", LATER + 1000)
    shown = resolved.public()
    assert "created_ms" not in shown and "updated_ms" not in shown
    assert shown["created_at"] == "2026-03-10T12:00:00Z"
    assert shown["updated_at"] == "2026-03-10T12:01:31.500Z"
    assert shown["history"] == [
        {"at": "2026-03-10T12:00:00Z", "action": "created", "by": "engine"},
        {"at": "2026-03-10T12:01:30.500Z", "action": "assigned to amani", "by": "ops-1"},
        {"at": "2026-03-10T12:01:31.500Z", "action": "resolved", "by": "amani"},
    ]
    for stamp in (shown["created_at"], shown["updated_at"], *(h["at"] for h in shown["history"])):
        assert parse_ts(stamp) in (CREATED, LATER, LATER + 1000)
    assert shown["status"] == "resolved" and shown["note"] == "Called."
    assert shown["signals"] == ["recency_d", "events_7d", "streak"]
    assert orjson.loads(orjson.dumps(shown)) == shown  # plain JSON


# ---------------------------------------------------------------------------------------------
# plan(): a critical student hears from us too

NOW = parse_ts("2026-03-10T12:00:00Z")
QUIET_SINCE = NOW - 5 * DAY_MS


def critical(value: float = 92.0, signals: tuple[str, ...] = ()) -> RiskScore:
    assert risk_level(value) == "critical"
    return RiskScore(
        user_id="u-1",
        score=value,
        level="critical",
        probability=value / 100,
        weekly_risk=value / 100,
        monthly_risk=1.0,
        confidence=0.3,
        top_signals=tuple(Signal(s, 1.0, 1.0) for s in signals),
        scored_at_ms=NOW,
    )


def run_plan(ctx: UserContext, score: RiskScore) -> tuple[RiskState, list[tuple[str, Notification]]]:
    state = RiskState(ctx.user_id)
    state.activity.last_event_ms = QUIET_SINCE
    out = plan(state, ctx, score, NOW, campaigns=[], facts=_facts(ctx), variant_counts=lambda t: {})
    decided: list[tuple[str, Notification]] = []
    for source, d in out.decisions:
        assert d.reason == QUEUED and d.notification is not None, d
        decided.append((source, d.notification))
    assert [n for _, n in decided] == out.delivered
    return state, decided


def _facts(ctx: UserContext) -> UserFacts:
    return UserFacts(ctx.user_id, ctx.timezone, ctx.signup_ms, ctx.last_active_ms, None, {})


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (None, ("IN_APP",)),  # no settings: in-app only
        (["IN_APP", "SMS"], ("SMS", "IN_APP")),  # in the critical urgency's order
        (["EMAIL", "PUSH", "SMS", "IN_APP"], URGENCY_CHANNELS["critical"]),
    ],
)
def test_a_critical_student_gets_a_staff_task_and_a_message_of_their_own(
    allowed: list[str] | None, expected: tuple[str, ...]
) -> None:
    prefs = {} if allowed is None else {"channels": allowed}
    ctx = UserContext("u-1", prefs=prefs, last_active_ms=QUIET_SINCE)
    score = critical(signals=("recency_d", "events_7d"))
    recommended = recommend_for(score, ctx)
    assert recommended[0] == "human_outreach"
    student_kind = next(k for k in recommended if k != "human_outreach")

    state, decided = run_plan(ctx, score)

    assert [(source, n.type) for source, n in decided] == [("risk", "human_outreach"), ("risk", student_kind)]
    (_, staff), (_, student) = decided
    assert staff.channels == ()  # no user channel: the delivery service makes it a task (STAFF)
    assert staff.primary_channel == "STAFF"
    assert staff.key == risk_key("u-1", "human_outreach", NOW // DAY_MS)
    assert "critical" in staff.body and "recency_d" in staff.body  # the level and signals, for staff
    assert student.channels == expected
    assert student.urgency == "critical"
    assert student.key == risk_key("u-1", student_kind, NOW // DAY_MS)
    assert student.id != staff.id
    # Only the student's own message is in their inbox.
    assert [n.type for n in state.notifications.inbox] == ([student_kind] if "IN_APP" in expected else [])


def test_the_pair_is_sent_once_a_day() -> None:
    ctx = UserContext("u-1", last_active_ms=QUIET_SINCE)
    state, first = run_plan(ctx, critical())
    assert len(first) == 2
    again = plan(
        state, ctx, critical(), NOW + HOUR_MS, campaigns=[], facts=_facts(ctx), variant_counts=lambda t: {}
    )
    assert [d.reason for _, d in again.decisions] == ["duplicate", "duplicate"]
    assert again.delivered == []


def test_without_a_staff_task_first_there_is_one_decision() -> None:
    # A student who opted out of human outreach: the first recommendation is addressed to them.
    ctx = UserContext("u-1", prefs={"opt_out": ["human_outreach"]}, last_active_ms=QUIET_SINCE)
    _, decided = run_plan(ctx, critical())
    assert [n.type for _, n in decided] == [recommend_for(critical(), ctx)[0]]
    assert decided[0][1].type != "human_outreach"


def test_a_high_risk_student_gets_no_staff_task() -> None:
    ctx = UserContext("u-1", last_active_ms=QUIET_SINCE)
    high = RiskScore(
        user_id="u-1",
        score=70.0,
        level="high",
        probability=0.7,
        weekly_risk=0.7,
        monthly_risk=0.9,
        confidence=0.3,
        top_signals=(),
        scored_at_ms=NOW,
    )
    _, decided = run_plan(ctx, high)
    assert [n.type for _, n in decided] == ["gentle_reminder"]
