"""Application status tracking: the transition rules, out-of-order delivery and the analytics."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.applications import (
    HISTORY_CAP,
    NOTE_BYTES,
    Application,
    ApplicationFacts,
    application_analytics,
    apply_status,
    is_legal_transition,
)
from models.digests import id_digest
from models.events import APPLICATION_STATUSES, ApplicationStatusEvent
from tests.models.factories import ms

T0 = ms("2026-11-20T00:00:00Z")
HOUR = 3_600_000
DAY = 24 * HOUR

# Spelled out rather than derived, so the matrix test does not restate the implementation.
LEGAL_NEXT: dict[str, set[str]] = {
    "submitted": {
        "viewed",
        "screening",
        "interview_scheduled",
        "interviewed",
        "offer",
        "hired",
        "rejected",
        "withdrawn",
    },
    "viewed": {"screening", "interview_scheduled", "interviewed", "offer", "hired", "rejected", "withdrawn"},
    "screening": {"interview_scheduled", "interviewed", "offer", "hired", "rejected", "withdrawn"},
    "interview_scheduled": {"interviewed", "offer", "hired", "rejected", "withdrawn"},
    "interviewed": {"offer", "hired", "rejected", "withdrawn"},
    "offer": {"hired", "rejected", "withdrawn"},
    "hired": set(),
    "rejected": set(),
    "withdrawn": set(),
}

_ids = itertools.count()


def ev(
    status: str,
    ts_ms: int,
    *,
    event_id: str | None = None,
    note: str | None = None,
    application_id: str = "a-1",
    user_id: str = "u-1",
    job_id: str = "j-1",
) -> ApplicationStatusEvent:
    return ApplicationStatusEvent(
        event_id=event_id if event_id is not None else f"e-{next(_ids)}",
        application_id=application_id,
        user_id=user_id,
        job_id=job_id,
        status=status,
        ts_ms=ts_ms,
        note=note,
    )


def fold(events: Iterable[ApplicationStatusEvent]) -> Application:
    app: Application | None = None
    for event in events:
        app, _ = apply_status(app, event)
    assert app is not None
    return app


def statuses(app: Application) -> list[tuple[str, bool]]:
    return [(entry.status, entry.legal) for entry in app.history]


# ---------------------------------------------------------------------------------------------
# Transition rules


def test_legal_next_covers_every_status() -> None:
    assert set(LEGAL_NEXT) == set(APPLICATION_STATUSES)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(APPLICATION_STATUSES, repeat=2)))
def test_transition_matrix(current: str, new: str) -> None:
    start, _ = apply_status(None, ev(current, T0))
    app, change = apply_status(start, ev(new, T0 + HOUR))

    assert change.previous_status == current
    assert not change.duplicate
    assert len(app.history) == 2
    if new == current:  # a repeat: recorded, legal, but a no-op
        assert (app.status, change.changed, change.legal) == (current, False, True)
        assert statuses(app) == [(current, True), (current, True)]
        assert app.updated_at_ms == T0
        assert is_legal_transition(current, new)
    elif new in LEGAL_NEXT[current]:
        assert (app.status, change.status, change.changed, change.legal) == (new, new, True, True)
        assert statuses(app) == [(current, True), (new, True)]
        assert app.updated_at_ms == T0 + HOUR
        assert is_legal_transition(current, new)
    else:
        assert (app.status, change.status, change.changed, change.legal) == (current, current, False, False)
        assert statuses(app) == [(current, True), (new, False)]
        assert app.updated_at_ms == T0
        assert not is_legal_transition(current, new)


@pytest.mark.parametrize("status", APPLICATION_STATUSES)
def test_an_application_may_begin_at_any_status(status: str) -> None:
    app, change = apply_status(None, ev(status, T0 + 5 * HOUR))

    assert change == type(change)(None, status, True, False, True)
    assert app.status == status
    assert app.submitted_at_ms == T0 + 5 * HOUR
    assert app.updated_at_ms == T0 + 5 * HOUR
    assert is_legal_transition(None, status)


@pytest.mark.parametrize("terminal", ["hired", "rejected", "withdrawn"])
def test_terminal_states_ignore_everything_after_them(terminal: str) -> None:
    later = [ev(s, T0 + (i + 2) * HOUR) for i, s in enumerate(APPLICATION_STATUSES) if s != terminal]
    app = fold([ev("submitted", T0), ev(terminal, T0 + HOUR), *later])

    assert app.status == terminal
    assert app.updated_at_ms == T0 + HOUR
    assert statuses(app)[:2] == [("submitted", True), (terminal, True)]
    assert all(not legal for _, legal in statuses(app)[2:])
    assert len(app.history) == 2 + len(later)


def test_skipping_ahead_is_legal() -> None:
    app, change = apply_status(fold([ev("submitted", T0)]), ev("interview_scheduled", T0 + 3 * HOUR))

    assert change.changed and change.legal
    assert app.status == "interview_scheduled"
    assert app.first_response_at_ms == T0 + 3 * HOUR


def test_starting_without_submitted_uses_the_first_event_time() -> None:
    app = fold([ev("viewed", T0 + HOUR), ev("screening", T0 + 2 * HOUR)])

    assert app.status == "screening"
    assert app.submitted_at_ms == T0 + HOUR
    # The first event is both the "submission" and the first employer action.
    assert app.first_response_at_ms == T0 + HOUR


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown application status"):
        apply_status(None, ev("ghosted", T0))


@pytest.mark.parametrize("field", ["application_id", "user_id", "job_id"])
def test_an_event_of_another_application_user_or_job_is_refused(field: str) -> None:
    app = fold([ev("submitted", T0)])
    with pytest.raises(ValueError, match=field):
        apply_status(app, ev("viewed", T0 + HOUR, **{field: "other"}))


def test_apply_status_does_not_modify_its_input() -> None:
    app = fold([ev("submitted", T0)])
    before = Application.from_dict(app.to_dict())

    new, _ = apply_status(app, ev("viewed", T0 + HOUR))

    assert app == before
    assert new.status == "viewed"


# ---------------------------------------------------------------------------------------------
# Out of order, duplicates and illegal events


def test_out_of_order_arrival_is_folded_in_event_time_order() -> None:
    app = fold([ev("interviewed", T0 + 3 * HOUR), ev("viewed", T0 + HOUR), ev("submitted", T0)])

    assert app.status == "interviewed"
    assert statuses(app) == [("submitted", True), ("viewed", True), ("interviewed", True)]
    assert app.submitted_at_ms == T0
    assert app.first_response_at_ms == T0 + HOUR
    assert app.updated_at_ms == T0 + 3 * HOUR


def test_a_late_event_before_the_current_status_does_not_change_it() -> None:
    app, change = apply_status(fold([ev("interviewed", T0 + 3 * HOUR)]), ev("viewed", T0 + HOUR))

    assert (change.previous_status, change.status, change.changed, change.legal) == (
        "interviewed",
        "interviewed",
        False,
        True,
    )
    assert app.submitted_at_ms == T0 + HOUR


def test_a_late_exit_makes_later_events_illegal() -> None:
    app = fold([ev("submitted", T0), ev("offer", T0 + 3 * DAY)])
    app, change = apply_status(app, ev("rejected", T0 + DAY))

    assert (change.previous_status, change.status, change.changed, change.legal) == (
        "offer",
        "rejected",
        True,
        True,
    )
    assert statuses(app) == [("submitted", True), ("rejected", True), ("offer", False)]
    assert app.updated_at_ms == T0 + DAY


def test_same_time_events_are_ordered_by_pipeline_rank() -> None:
    app = fold([ev("rejected", T0, event_id="a"), ev("viewed", T0, event_id="b"), ev("submitted", T0)])

    assert statuses(app) == [("submitted", True), ("viewed", True), ("rejected", True)]
    assert app.status == "rejected"


def test_a_duplicate_event_id_changes_nothing() -> None:
    viewed = ev("viewed", T0 + HOUR, event_id="dup")
    app = fold([ev("submitted", T0), viewed])

    again, change = apply_status(app, viewed)
    # Same id, different content: still the same event as far as idempotency goes.
    again2, change2 = apply_status(app, ev("offer", T0 + 2 * HOUR, event_id="dup"))

    assert again is app and again2 is app
    assert change == type(change)("viewed", "viewed", False, True, True)
    assert change2 == change
    assert len(app.history) == 2


def test_a_duplicate_of_an_illegal_event_reports_it_illegal() -> None:
    backward = ev("viewed", T0 + 2 * HOUR, event_id="back")
    app = fold([ev("submitted", T0), ev("screening", T0 + HOUR), backward])

    _, change = apply_status(app, backward)

    assert change.duplicate and not change.legal and not change.changed


def test_illegal_events_are_kept_but_ignored() -> None:
    app = fold(
        [
            ev("submitted", T0),
            ev("interviewed", T0 + HOUR),
            ev("viewed", T0 + 2 * HOUR, note="late sync"),
            ev("offer", T0 + 3 * HOUR),
        ]
    )

    assert app.status == "offer"
    assert statuses(app) == [("submitted", True), ("interviewed", True), ("viewed", False), ("offer", True)]
    assert app.history[2].note == "late sync"


_events = st.lists(
    st.tuples(st.sampled_from(APPLICATION_STATUSES), st.integers(0, 20)),
    min_size=1,
    max_size=25,
).map(
    lambda rows: [
        ev(status, T0 + minute * 60_000, event_id=f"x{i}") for i, (status, minute) in enumerate(rows)
    ]
)


@settings(max_examples=300, deadline=None)
@given(events=_events, data=st.data())
def test_any_arrival_order_with_redeliveries_gives_the_same_application(
    events: list[ApplicationStatusEvent], data: st.DataObject
) -> None:
    base = fold(events)
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=10))
    shuffled = data.draw(st.permutations(events + redelivered))

    assert fold(shuffled) == base
    # The fold's output is ordered and consistent with its own verdicts.
    assert [e.ts_ms for e in base.history] == sorted(e.ts_ms for e in base.history)
    assert base.status == [e.status for e in base.history if e.legal][-1]


_many_events = st.lists(
    st.tuples(st.sampled_from(APPLICATION_STATUSES), st.integers(0, 500)),
    min_size=HISTORY_CAP + 1,
    max_size=HISTORY_CAP + 30,
).map(
    lambda rows: [
        ev(status, T0 + minute * 60_000, event_id=f"y{i}") for i, (status, minute) in enumerate(rows)
    ]
)


@settings(max_examples=30, deadline=None)
@given(events=_many_events, data=st.data())
def test_the_history_cap_never_changes_status_or_times(
    events: list[ApplicationStatusEvent], data: st.DataObject
) -> None:
    base = fold(events)
    shuffled = fold(data.draw(st.permutations(events)))

    assert len(base.history) == HISTORY_CAP
    # Which non-transitions were dropped depends on order; what they never affect does not.
    assert base.facts() == shuffled.facts()
    assert (base.status, base.updated_at_ms) == (shuffled.status, shuffled.updated_at_ms)


def test_the_history_cap_drops_the_oldest_non_transitions() -> None:
    events = [ev("submitted", T0), ev("offer", T0 + HOUR)]
    events += [ev("viewed", T0 + (i + 2) * HOUR, event_id=f"v{i:03}") for i in range(HISTORY_CAP + 20)]
    app = fold(events)

    assert len(app.history) == HISTORY_CAP
    assert statuses(app)[:2] == [("submitted", True), ("offer", True)]
    # HISTORY_CAP + 22 entries, HISTORY_CAP kept: the 22 oldest illegal `viewed` went.
    assert app.history[2].event_digest == id_digest("v022")
    assert app.history[-1].event_digest == id_digest(f"v{HISTORY_CAP + 19:03}")

    # A late exit still lands where it belongs and wins.
    app, change = apply_status(app, ev("rejected", T0 + 30 * 60_000))
    assert change.changed and app.status == "rejected"
    assert len(app.history) == HISTORY_CAP
    # `offer` is no longer a transition, so it is now the oldest entry the cap may drop.
    assert statuses(app)[:3] == [("submitted", True), ("rejected", True), ("viewed", False)]
    assert "offer" not in {entry.status for entry in app.history}


# ---------------------------------------------------------------------------------------------
# First response time


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([("submitted", 0), ("viewed", 5)], 5),
        ([("submitted", 0), ("rejected", 48)], 48),  # a rejection is an answer too
        ([("submitted", 0), ("screening", 7), ("viewed", 3)], 3),  # out of order: earliest wins
        ([("submitted", 0), ("withdrawn", 1)], None),  # the candidate's action, not the employer's
        ([("submitted", 0), ("withdrawn", 1), ("viewed", 2)], None),  # illegal actions do not count
        ([("submitted", 0), ("submitted", 4)], None),
    ],
)
def test_first_response_time(events: list[tuple[str, int]], expected: int | None) -> None:
    app = fold(ev(status, T0 + hours * HOUR) for status, hours in events)

    assert app.first_response_at_ms == (None if expected is None else T0 + expected * HOUR)
    assert app.submitted_at_ms == T0


# ---------------------------------------------------------------------------------------------
# Serialisation and views


def _sample() -> Application:
    return fold(
        [
            ev("viewed", T0 + HOUR, event_id="e2"),
            ev("submitted", T0, event_id="e1", note="via app"),
            ev("interviewed", T0 + 2 * DAY, event_id="e3"),
            ev("screening", T0 + 3 * DAY, event_id="e4", note="backwards"),
        ]
    )


def test_to_dict_from_dict_round_trip_through_json() -> None:
    app = _sample()
    data = orjson.loads(orjson.dumps(app.to_dict()))

    restored = Application.from_dict(data)

    assert restored == app
    # The event id is kept as its fixed-size digest (an id may be 128 bytes).
    assert data["h"][0] == [T0, "submitted", id_digest("e1"), "via app"]
    # Derived fields are not stored: the changelog carries only ids and history rows.
    assert set(data) == {"v", "id", "user", "job", "h"}
    assert apply_status(restored, ev("offer", T0 + 4 * DAY))[0].status == "offer"
    # A redelivery is still told apart after the round trip.
    assert apply_status(restored, ev("offer", T0 + 4 * DAY, event_id="e3"))[1].duplicate


def test_a_version_1_state_is_read_with_its_ids_digested_and_notes_cut() -> None:
    v1 = {
        "v": 1,
        "id": "a-1",
        "user": "u-1",
        "job": "j-1",
        "h": [[T0, "submitted", "e1", "x" * 2000], [T0 + HOUR, "viewed", "e2", None]],
    }

    app = Application.from_dict(v1)

    assert [e.event_digest for e in app.history] == [id_digest("e1"), id_digest("e2")]
    assert app.history[0].note == "x" * (NOTE_BYTES - 2)
    assert app.status == "viewed"
    # The ids it had are still recognised as redeliveries.
    assert apply_status(app, ev("offer", T0 + DAY, event_id="e1"))[1].duplicate


def test_a_note_is_cut_to_its_byte_budget_at_a_character_boundary() -> None:
    app, _ = apply_status(None, ev("submitted", T0, note="\x01" * 512))
    emoji, _ = apply_status(None, ev("submitted", T0, note="🙂" * 512))

    assert len(orjson.dumps(app.history[0].note)) <= NOTE_BYTES
    assert app.history[0].note == "\x01" * ((NOTE_BYTES - 2) // 6)
    assert emoji.history[0].note == "🙂" * ((NOTE_BYTES - 2) // 4)
    assert app.public_view()["history"][0]["note"] == app.history[0].note


def test_from_dict_refuses_an_unknown_version_and_an_empty_history() -> None:
    data = _sample().to_dict()
    with pytest.raises(ValueError, match="version"):
        Application.from_dict({**data, "v": 99})
    with pytest.raises(ValueError, match="at least one event"):
        Application.from_dict({**data, "h": []})


def test_public_view() -> None:
    assert _sample().public_view() == {
        "application_id": "a-1",
        "job_id": "j-1",
        "status": "interviewed",
        "submitted_at": "2026-11-20T00:00:00Z",
        "updated_at": "2026-11-22T00:00:00Z",
        "history": [
            {"status": "submitted", "ts": "2026-11-20T00:00:00Z", "note": "via app", "legal": True},
            {"status": "viewed", "ts": "2026-11-20T01:00:00Z", "note": None, "legal": True},
            {"status": "interviewed", "ts": "2026-11-22T00:00:00Z", "note": None, "legal": True},
            {"status": "screening", "ts": "2026-11-23T00:00:00Z", "note": "backwards", "legal": False},
        ],
    }


def test_facts_count_steps_reached_before_an_exit() -> None:
    rejected = fold([ev("submitted", T0), ev("interviewed", T0 + DAY), ev("rejected", T0 + 2 * DAY)])
    hired = fold([ev("offer", T0), ev("hired", T0 + DAY), ev("withdrawn", T0 + 2 * DAY)])

    assert rejected.facts("tech", "linkedin") == ApplicationFacts(
        application_id="a-1",
        submitted_at_ms=T0,
        first_response_at_ms=T0 + DAY,
        reached_interview=True,
        reached_offer=False,
        hired=False,
        rejected=True,
        withdrawn=False,
        industry="tech",
        source="linkedin",
    )
    hired_facts = hired.facts()
    assert (hired_facts.reached_interview, hired_facts.reached_offer, hired_facts.hired) == (True, True, True)
    assert not hired_facts.withdrawn  # the withdrawal after `hired` was illegal
    # An illegal step is not "reached": interviewed after a rejection.
    late = fold([ev("submitted", T0), ev("rejected", T0 + DAY), ev("interviewed", T0 + 2 * DAY)])
    assert not late.facts().reached_interview


# ---------------------------------------------------------------------------------------------
# Analytics


def facts(
    app_id: str,
    submitted: str,
    response_hours: float | None,
    *,
    interview: bool = False,
    offer: bool = False,
    hired: bool = False,
    rejected: bool = False,
    industry: str | None = None,
    source: str | None = None,
) -> ApplicationFacts:
    submitted_ms = ms(submitted)
    return ApplicationFacts(
        application_id=app_id,
        submitted_at_ms=submitted_ms,
        first_response_at_ms=None if response_hours is None else submitted_ms + int(response_hours * HOUR),
        reached_interview=interview,
        reached_offer=offer,
        hired=hired,
        rejected=rejected,
        withdrawn=False,
        industry=industry,
        source=source,
    )


NOW = ms("2026-11-22T12:00:00Z")
SAMPLE_FACTS = [
    facts("a", "2026-11-20T00:00:00Z", 2, interview=True, industry="tech", source="linkedin"),
    facts(
        "b",
        "2026-11-20T06:00:00Z",
        4,
        interview=True,
        offer=True,
        hired=True,
        industry="tech",
        source="referral",
    ),
    facts("c", "2026-11-22T01:00:00Z", 10, rejected=True, source="linkedin"),
    facts("d", "2026-11-22T02:00:00Z", None, industry="health"),
    # Outside the 3-day window on either side: ignored everywhere.
    facts("old", "2026-11-19T23:59:59Z", 1, interview=True, industry="tech"),
    facts("future", "2026-11-23T00:00:00Z", 1, interview=True, industry="tech"),
]


def test_analytics_on_a_hand_computed_set() -> None:
    report = application_analytics(SAMPLE_FACTS, NOW, days=3)

    assert report["total"] == 4
    # Response hours 2, 4, 10: p90 interpolates 4 + 0.8 × (10 − 4).
    assert report["response_time_hours"] == {"p50": 4.0, "p90": 8.8, "mean": 5.33, "responded": 3}
    assert (report["interview_rate"], report["offer_rate"], report["hire_rate"]) == (0.5, 0.25, 0.25)
    assert report["by_day"] == [
        {"day": "2026-11-20", "submitted": 2, "responded": 2, "interviews": 2, "offers": 1},
        {"day": "2026-11-21", "submitted": 0, "responded": 0, "interviews": 0, "offers": 0},
        {"day": "2026-11-22", "submitted": 2, "responded": 1, "interviews": 0, "offers": 0},
    ]
    assert report["by_industry"] == {
        "health": {"total": 1, "interview_rate": 0.0, "offer_rate": 0.0, "hire_rate": 0.0},
        "tech": {"total": 2, "interview_rate": 1.0, "offer_rate": 0.5, "hire_rate": 0.5},
        "unknown": {"total": 1, "interview_rate": 0.0, "offer_rate": 0.0, "hire_rate": 0.0},
    }
    assert list(report["by_industry"]) == ["health", "tech", "unknown"]  # sorted, not first-seen order
    assert report["by_source"] == {
        "linkedin": {"total": 2, "interview_rate": 0.5, "offer_rate": 0.0, "hire_rate": 0.0},
        "referral": {"total": 1, "interview_rate": 1.0, "offer_rate": 1.0, "hire_rate": 1.0},
        "unknown": {"total": 1, "interview_rate": 0.0, "offer_rate": 0.0, "hire_rate": 0.0},
    }


def test_analytics_do_not_depend_on_input_order() -> None:
    assert application_analytics(reversed(SAMPLE_FACTS), NOW, days=3) == application_analytics(
        SAMPLE_FACTS, NOW, days=3
    )


def test_analytics_rates_are_rounded_to_four_decimals_and_p50_interpolates() -> None:
    three = [
        facts("a", "2026-11-22T00:00:00Z", 1, interview=True),
        facts("b", "2026-11-22T00:00:00Z", 2),
        facts("c", "2026-11-22T00:00:00Z", None),
    ]
    report = application_analytics(three, NOW, days=1)

    assert report["interview_rate"] == 0.3333
    assert report["response_time_hours"] == {"p50": 1.5, "p90": 1.9, "mean": 1.5, "responded": 2}
    assert [row["day"] for row in report["by_day"]] == ["2026-11-22"]


def test_analytics_of_nothing() -> None:
    report = application_analytics([], NOW)

    assert report["total"] == 0
    assert report["response_time_hours"] == {"p50": None, "p90": None, "mean": None, "responded": 0}
    assert (report["interview_rate"], report["offer_rate"], report["hire_rate"]) == (0.0, 0.0, 0.0)
    assert len(report["by_day"]) == 30
    assert report["by_day"][0]["day"] == "2026-10-24"
    assert report["by_day"][-1] == {
        "day": "2026-11-22",
        "submitted": 0,
        "responded": 0,
        "interviews": 0,
        "offers": 0,
    }
    assert report["by_industry"] == {} and report["by_source"] == {}


def test_analytics_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="days"):
        application_analytics(SAMPLE_FACTS, NOW, days=0)


def test_analytics_from_applications_end_to_end() -> None:
    app = fold([ev("submitted", ms("2026-11-22T00:00:00Z")), ev("viewed", ms("2026-11-22T03:30:00Z"))])

    report = application_analytics([app.facts("tech", None)], NOW, days=1)

    assert report["response_time_hours"]["p50"] == 3.5
    assert report["by_industry"]["tech"]["total"] == 1
    assert report["by_source"]["unknown"]["total"] == 1
