"""The staff workflow's pure parts (models/risk_workflow.py): filters, the weekly trend kept by
the stream, the interventions remembered, and the row fields; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.events import parse_ts
from models.risk_features import FEATURE_NAMES
from models.risk_state import RiskState
from models.risk_workflow import (
    EMPTY_ROW_FIELDS,
    INTERVENTION_WINDOW_MS,
    MAX_FILTER_VALUES,
    MAX_INTERVENTIONS,
    MAX_ROW_NAME_CHARS,
    InterventionLog,
    InvalidFilter,
    WeeklyScores,
    filter_scope,
    iso_week,
    matches,
    parse_levels,
    parse_signals,
    republish_for_row,
    row_display_name,
    row_fields,
    row_of,
    score_ranges,
    week_label,
)
from models.time_units import DAY_MS, HOUR_MS, WEEK_MS

# Sunday 2026-11-22 23:00 UTC: the last hour of ISO week 2026-W47.
SUNDAY = parse_ts("2026-11-22T23:00:00Z")
MONDAY = parse_ts("2026-11-23T00:00:00Z")


# --- filters ----------------------------------------------------------------------------------


def test_levels_repeat_or_come_as_a_comma_list() -> None:
    assert parse_levels(["critical", "high"]) == parse_levels(["critical,high"]) == {"critical", "high"}
    assert parse_levels([" low , medium", ""]) == {"low", "medium"}
    assert parse_levels(None) == parse_levels([]) == frozenset()


@pytest.mark.parametrize(
    "raw",
    [["severe"], ["Critical"], ["critical,nope"], ["x" * 600], [",".join(["low"] * (MAX_FILTER_VALUES + 1))]],
)
def test_an_unknown_or_oversized_level_is_refused(raw: list[str]) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_levels(raw)
    assert caught.value.field == "level"
    assert len(str(caught.value)) < 200  # the caller's text is clipped, not echoed whole


def test_signals_are_the_features_the_scorer_names() -> None:
    assert parse_signals(["recency_d,missed_days"]) == {"recency_d", "missed_days"}
    assert parse_signals(list(FEATURE_NAMES)) == set(FEATURE_NAMES)
    with pytest.raises(InvalidFilter) as caught:
        parse_signals(["recency_d", "<script>"])
    assert caught.value.field == "signal"


def test_score_ranges_are_the_levels_at_or_above_the_threshold_highest_first() -> None:
    assert score_ranges(frozenset(), 60.0) == [(None, 60.0)]
    assert score_ranges(frozenset({"critical"}), 60.0) == [(None, 80.0)]
    # Adjacent levels read as one range; a gap splits them.
    assert score_ranges(frozenset({"high", "medium"}), 0.0) == [(80.0, 40.0)]
    assert score_ranges(frozenset({"critical", "low"}), 0.0) == [(None, 80.0), (40.0, 0.0)]
    # The threshold cuts into a level, and removes the levels wholly below it.
    assert score_ranges(frozenset({"high", "low"}), 65.0) == [(80.0, 65.0)]
    assert score_ranges(frozenset({"low", "medium"}), 60.0) == []
    assert score_ranges(frozenset({"low"}), 0.0) == [(40.0, 0.0)]


def test_a_document_matches_by_its_own_score_and_signals() -> None:
    doc = {"score": 72.0, "signals": ["recency_d", "events_7d"]}
    assert matches(doc, frozenset(), frozenset())
    assert matches(doc, frozenset({"high"}), frozenset({"events_7d", "streak"}))
    assert not matches(doc, frozenset({"critical"}), frozenset())
    assert not matches(doc, frozenset(), frozenset({"streak"}))
    # Whatever is stored, a malformed document never matches (nor raises).
    for bad in ({}, {"score": "72"}, {"score": True}, {"score": 72.0, "signals": "recency_d"}):
        assert not matches(bad, frozenset({"high"}), frozenset({"recency_d"}))


def test_the_filter_scope_names_the_filters_not_their_spelling() -> None:
    a = filter_scope(60.0, parse_levels(["critical,high"]), parse_signals(["streak"]))
    assert a == filter_scope(60.0, parse_levels(["high", "critical"]), parse_signals(["streak"]))
    assert a != filter_scope(60.0, parse_levels(["critical"]), parse_signals(["streak"]))
    assert a != filter_scope(61.0, parse_levels(["critical,high"]), parse_signals(["streak"]))
    assert a != filter_scope(60.0, parse_levels(["critical,high"]), frozenset())
    assert filter_scope(-0.0, frozenset(), frozenset()) == filter_scope(0.0, frozenset(), frozenset())


# --- the weekly trend -------------------------------------------------------------------------


def test_iso_weeks_start_on_monday_utc() -> None:
    assert iso_week(SUNDAY) + 1 == iso_week(MONDAY) == iso_week(MONDAY + WEEK_MS - 1)
    assert week_label(iso_week(SUNDAY)) == "2026-W47"
    assert week_label(iso_week(MONDAY)) == "2026-W48"
    # Across a year's end: 2026-12-31 is in 2026-W53, 2027-01-04 starts 2027-W01.
    assert week_label(iso_week(parse_ts("2026-12-31T12:00:00Z"))) == "2026-W53"
    assert week_label(iso_week(parse_ts("2027-01-04T00:00:00Z"))) == "2027-W01"


def test_the_trend_keeps_each_weeks_last_score_oldest_first_null_where_unknown() -> None:
    weeks = WeeklyScores()
    weeks.record(SUNDAY - 2 * WEEK_MS - HOUR_MS, 30.0)
    weeks.record(SUNDAY - 2 * WEEK_MS, 35.0)  # the same week: its last score wins
    weeks.record(SUNDAY, 50.0)
    assert weeks.trend(SUNDAY) == [None, 35.0, None, 50.0]
    # A week later, nothing scored yet this week: the current week is unknown.
    assert weeks.trend(MONDAY) == [35.0, None, 50.0, None]
    weeks.record(MONDAY, 55.0)
    assert weeks.trend(MONDAY) == [35.0, None, 50.0, 55.0]


def test_the_trend_is_bounded_and_ignores_a_score_older_than_its_newest_week() -> None:
    weeks = WeeklyScores()
    for i in range(20):
        weeks.record(SUNDAY + i * WEEK_MS, float(i))
    assert len(weeks.weeks) == 4
    weeks.record(SUNDAY, 99.0)  # stream time never goes back; a stale score changes nothing
    assert weeks.trend(SUNDAY + 19 * WEEK_MS) == [16.0, 17.0, 18.0, 19.0]


def test_the_trend_rows_round_trip_and_hostile_rows_are_dropped() -> None:
    weeks = WeeklyScores()
    weeks.record(SUNDAY, 42.5)
    assert WeeklyScores.from_rows(orjson.loads(orjson.dumps(weeks.to_rows()))) == weeks
    hostile = [
        [1, 2, 3],
        "x",
        [True, 5.0],
        [2900, 101.0],
        [2901, -1],
        [2902, "5"],
        [2903, 50.0],
        [2903, 60.0],
    ]
    assert WeeklyScores.from_rows(hostile).weeks == [(2903, 50.0)]
    assert WeeklyScores.from_rows([[w, 1.0] for w in range(10_000)]).weeks == [
        (w, 1.0) for w in range(9996, 10_000)
    ]
    assert WeeklyScores.from_rows(None).weeks == WeeklyScores.from_rows({"a": 1}).weeks == []


# --- interventions received -------------------------------------------------------------------


def test_interventions_are_counted_over_28_days_and_the_last_is_kept() -> None:
    log = InterventionLog()
    assert log.record(SUNDAY - 30 * DAY_MS, "gentle_reminder", "PUSH")
    assert log.record(SUNDAY - 3 * DAY_MS, "peer_comparison", "IN_APP")
    assert not log.record(SUNDAY - DAY_MS, "job_match", "EMAIL")  # career news is not an intervention
    assert log.count(SUNDAY) == 1
    assert log.last is not None and log.last.public() == {
        "type": "peer_comparison",
        "channel": "IN_APP",
        "at": "2026-11-19T23:00:00Z",
    }
    # The window slides with time; the newest entry stays the last intervention past it.
    assert log.count(SUNDAY + 28 * DAY_MS) == 0
    assert log.last.type == "peer_comparison"


def test_a_redelivered_intervention_counts_once() -> None:
    log = InterventionLog()
    assert log.record(SUNDAY, "human_outreach", "STAFF")
    assert not log.record(SUNDAY, "human_outreach", "STAFF")
    assert log.count(SUNDAY) == 1


def test_the_intervention_log_is_bounded_whatever_reaches_it() -> None:
    log = InterventionLog()
    for i in range(1000):
        log.record(SUNDAY + i * 60_000, "gentle_reminder", "PUSH" * 50)
    assert len(log.entries) == MAX_INTERVENTIONS
    assert all(len(e.channel) <= 16 for e in log.entries)
    assert log.count(SUNDAY + 1000 * 60_000) == MAX_INTERVENTIONS
    # Out of order: the newest stays last, and entries older than the window are forgotten.
    log.record(SUNDAY + 2 * INTERVENTION_WINDOW_MS, "streak_warning", "PUSH")
    log.record(SUNDAY + INTERVENTION_WINDOW_MS + DAY_MS, "peer_comparison", "PUSH")
    assert [e.type for e in log.entries] == ["peer_comparison", "streak_warning"]


def test_the_intervention_rows_round_trip_and_hostile_rows_are_dropped() -> None:
    log = InterventionLog()
    log.record(SUNDAY, "discount_offer", "EMAIL")
    assert InterventionLog.from_rows(orjson.loads(orjson.dumps(log.to_rows()))) == log
    hostile = [
        [SUNDAY, "not_a_type", "PUSH"],
        [SUNDAY, "gentle_reminder", 7],
        ["x", "gentle_reminder", "PUSH"],
        5,
    ]
    assert InterventionLog.from_rows(hostile).entries == []
    many = [[SUNDAY + i, "gentle_reminder", "PUSH"] for i in range(5000)]
    assert len(InterventionLog.from_rows(many).entries) == MAX_INTERVENTIONS


# --- the row ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Amina", "Amina"),
        ("  Amina \n\t Njeri ", "Amina Njeri"),
        ("Am\u202eina\u200b", "Amina"),  # a bidi override and a zero-width space are dropped
        ("\x00\x1b[31m", "[31m"),
        ('</td><script>alert(1)</script>"', '</td><script>alert(1)</script>"'),  # text, never markup
        ("\u2028\u2029", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_a_display_name_is_shown_printable_and_bounded(raw: object, shown: str | None) -> None:
    assert row_display_name(raw) == shown


@given(st.text(max_size=2000))
def test_any_display_name_comes_out_printable_and_short(raw: str) -> None:
    shown = row_display_name(raw)
    assert shown is None or (shown.isprintable() and 0 < len(shown) <= MAX_ROW_NAME_CHARS)


def test_row_fields_and_how_a_row_reads_them() -> None:
    weeks, log = WeeklyScores(), InterventionLog()
    weeks.record(SUNDAY - WEEK_MS, 70.0)
    weeks.record(SUNDAY, 82.0)
    log.record(SUNDAY - DAY_MS, "human_outreach", "STAFF")
    fields = row_fields("  Amina\u202e ", log, weeks, SUNDAY)
    assert fields == {
        "display_name": "Amina",
        "last_intervention": {"type": "human_outreach", "channel": "STAFF", "at": "2026-11-21T23:00:00Z"},
        "interventions": 1,
        "interventions_window_days": 28,
        "trend": [None, None, 70.0, 82.0],
        "trend_weeks": ["2026-W44", "2026-W45", "2026-W46", "2026-W47"],
    }
    document = orjson.loads(orjson.dumps({"score": 82.0, **fields}))
    assert row_of(document) == {k: fields[k] for k in EMPTY_ROW_FIELDS}
    # A document from before these fields, or a hostile one, reads as unknown.
    assert row_of({"score": 50.0}) == EMPTY_ROW_FIELDS
    assert row_of({"trend": [1, 2], "interventions": "9", "last_intervention": "x"}) == EMPTY_ROW_FIELDS
    weeks_named = {"trend_weeks": ["a", "b", "c", "d"]}
    assert row_of({"trend": [500, None, "a", 5], **weeks_named})["trend"] == [None, None, None, 5]
    assert row_of({"trend": [1, 2, 3, 4], "trend_weeks": ["a", 5, "c", "d"]})["trend"] == [None] * 4


def test_a_document_is_rewritten_for_a_new_name_or_a_new_week_only() -> None:
    weeks, log = WeeklyScores(), InterventionLog()
    fields = row_fields("Amina", log, weeks, SUNDAY)
    assert republish_for_row(None, fields)
    assert not republish_for_row(fields, row_fields("Amina", log, weeks, SUNDAY - HOUR_MS))
    assert republish_for_row(fields, row_fields("Amina N.", log, weeks, SUNDAY))
    assert republish_for_row(fields, row_fields("Amina", log, weeks, MONDAY))
    # A document written before the fields is rewritten once.
    assert republish_for_row({"score": 50.0}, fields)


# --- in the risk state ------------------------------------------------------------------------


def test_the_state_codec_keeps_the_memories_and_reads_states_written_before_them() -> None:
    state = RiskState("u-1")
    state.weekly.record(SUNDAY, 64.0)
    state.received.record(SUNDAY, "gentle_reminder", "IN_APP")
    again = RiskState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert again.weekly == state.weekly and again.received == state.received
    old = RiskState("u-2").to_dict()
    assert "weeks" not in old and "received" not in old  # an empty memory writes nothing
    decoded = RiskState.from_dict(old)
    assert decoded.weekly.weeks == [] and decoded.received.entries == []


def test_times_are_utc_iso_weeks() -> None:
    assert datetime.fromtimestamp(SUNDAY / 1000, UTC).isocalendar().week == 47
