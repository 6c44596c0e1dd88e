"""Lag in seconds (offset -> time interpolation) and the Burrow-style status rules, on synthetic
samples: every rule of docs/operations.md "Consumer lag" has a case here."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.lag_report import (
    GROUP_STATUS_VALUE,
    GroupStatus,
    LagReport,
    PartitionSample,
    PartitionStatus,
    Snapshot,
    build_report,
    format_ts,
    group_status,
    lag_seconds,
    offset_time,
    parse_ts,
    partition_status,
    status_window,
)

OK, WARN, STALL, STOP, REWIND = (
    PartitionStatus.OK,
    PartitionStatus.WARN,
    PartitionStatus.STALL,
    PartitionStatus.STOP,
    PartitionStatus.REWIND,
)


def ends(*points: tuple[float, int]) -> list[PartitionSample]:
    return [PartitionSample(t, e, None) for t, e in points]


def series(rows: list[tuple[int, int]], step_s: float = 5.0, t0: float = 1000.0) -> list[PartitionSample]:
    """Samples ``step_s`` apart from (end, committed) pairs."""
    return [PartitionSample(t0 + i * step_s, end, committed) for i, (end, committed) in enumerate(rows)]


# --- offset -> time ---------------------------------------------------------------------------


def test_interpolates_linearly_between_end_offset_samples() -> None:
    s = ends((0, 100), (10, 200))
    assert offset_time(s, 150) == pytest.approx(5.0)
    assert offset_time(s, 101) == pytest.approx(0.1)
    assert offset_time(s, 200) == pytest.approx(10.0)


def test_a_flat_stretch_does_not_smear_the_estimate() -> None:
    # No message for 100 s, then 10 in 5 s: offset 101 arrived just after t=100, not at t=10.
    s = ends((0, 100), (50, 100), (100, 100), (105, 110))
    assert offset_time(s, 101) == pytest.approx(100.5)
    assert offset_time(s, 110) == pytest.approx(105.0)


def test_the_first_sample_bounds_an_offset_equal_to_its_end() -> None:
    assert offset_time(ends((0, 100), (10, 200)), 100) == 0.0
    assert offset_time(ends((0, 100), (10, 100)), 100) == 0.0


def test_extrapolates_backwards_along_the_oldest_rise_anchored_at_the_first_sample() -> None:
    s = ends((0, 100), (5, 100), (10, 120))  # 4 offsets/s between t=5 and t=10
    assert offset_time(s, 50) == pytest.approx(-12.5)


def test_extrapolates_forwards_along_the_newest_rise() -> None:
    s = ends((0, 0), (10, 100), (20, 300), (30, 300))  # newest rise: 20 offsets/s
    assert offset_time(s, 400) == pytest.approx(35.0)


def test_no_estimate_without_samples_or_without_any_rise_to_extrapolate() -> None:
    assert offset_time([], 5) is None
    flat = ends((0, 100), (10, 100), (20, 100))
    assert offset_time(flat, 50) is None
    assert offset_time(flat, 150) is None


def test_a_recreated_log_drops_the_history_before_it() -> None:
    # End went 500 -> 10: the topic was recreated; only the points after count.
    s = ends((0, 400), (10, 500), (20, 10), (30, 30))
    assert offset_time(s, 20) == pytest.approx(25.0)
    beyond = offset_time(s, 450)  # past the new log's end: in the future of its last sample
    assert beyond is not None and beyond > 30


def test_samples_are_ordered_by_time_whatever_order_they_come_in() -> None:
    assert offset_time(ends((10, 200), (0, 100)), 150) == pytest.approx(5.0)


@given(
    st.lists(
        st.tuples(st.integers(1, 30), st.integers(0, 50)),  # (seconds since previous, new messages)
        min_size=2,
        max_size=30,
    ),
    st.data(),
)
def test_offset_time_is_monotonic_and_never_later_than_the_sample_that_saw_the_offset(
    steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    t, end, samples = 0.0, 1000, []
    for dt, n in steps:
        t, end = t + dt, end + n
        samples.append(PartitionSample(t, end, None))
    first_end, last_end = samples[0].end, samples[-1].end
    offsets = sorted(data.draw(st.lists(st.integers(first_end, last_end), min_size=2, max_size=10)))
    times = [offset_time(samples, o) for o in offsets]
    known = [x for x in times if x is not None]
    assert len(known) == len(times)
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(known))
    for s in samples:  # the end had reached s.end by the time it was sampled
        reached = offset_time(samples, s.end)
        assert reached is not None and reached <= s.ts_s + 1e-9


def test_lag_seconds_is_how_long_ago_the_end_reached_the_committed_offset() -> None:
    # 10 messages/s; the group committed what the end offset was 3 s ago.
    s = [PartitionSample(float(t), 1000 + 10 * t, None) for t in range(0, 30, 5)]
    s.append(PartitionSample(30.0, 1300, 1270))
    assert lag_seconds(s) == pytest.approx(3.0)


def test_lag_seconds_is_zero_when_caught_up_and_unknown_without_a_committed_offset() -> None:
    assert lag_seconds([PartitionSample(0, 100, 100)]) == 0.0
    assert lag_seconds([PartitionSample(0, 100, 120)]) == 0.0  # committed past a recreated log's end
    assert lag_seconds([PartitionSample(0, 100, None)]) is None
    assert lag_seconds([]) is None
    assert lag_seconds([PartitionSample(0, 100, 50)]) is None  # one sample: no rate to go back with


def test_lag_seconds_extrapolates_for_a_committed_offset_older_than_the_history() -> None:
    s = [PartitionSample(float(t), 1000 + 10 * t, 500) for t in range(0, 30, 5)]
    # The end reached 500 fifty seconds before the first sample; the last sample is at t=25.
    assert lag_seconds(s) == pytest.approx(75.0)


# --- the status window ------------------------------------------------------------------------


def test_the_window_is_the_newest_stretch_spanning_the_window_length() -> None:
    s = series([(100 + i, 100) for i in range(10)])  # 45 s of samples, 5 s apart
    window, complete = status_window(s, 30.0)
    assert complete and [x.ts_s for x in window] == [1015.0 + 5 * i for i in range(7)]
    window, complete = status_window(s[:4], 30.0)
    assert not complete and len(window) == 4
    assert status_window([PartitionSample(0, 5, None)], 30.0) == ([], False)


# --- status rules, in the order they apply -----------------------------------------------------


def test_rule_0_a_caught_up_consumer_is_ok_whatever_came_before() -> None:
    rows = [(100 + 10 * i, 100) for i in range(7)] + [(170, 170)]
    assert partition_status(series(rows)) == (OK, True)


def test_rule_1_less_than_a_full_window_is_ok_but_not_complete() -> None:
    stuck = series([(100 + 10 * i, 50) for i in range(6)])  # 25 s: shorter than the 30 s window
    assert partition_status(stuck) == (OK, False)
    assert partition_status(stuck, window_s=20.0) == (STALL, True)


def test_rule_2_a_committed_offset_going_back_is_a_rewind() -> None:
    rows = [(200, 150), (210, 160), (220, 20), (230, 30), (240, 40), (250, 50), (260, 60)]
    assert partition_status(series(rows)) == (REWIND, True)


def test_rule_2_rewind_is_reported_even_if_the_lag_was_zero_before_the_reset() -> None:
    rows = [(100, 100), (110, 110), (120, 0), (130, 20), (140, 40), (150, 60), (160, 80)]
    assert partition_status(series(rows)) == (REWIND, True)


def test_rule_3_lag_zero_anywhere_in_the_window_is_ok() -> None:
    # Even a consumer that has not committed since it caught up, within one window.
    rows = [(100, 100), (110, 100), (120, 100), (130, 100), (140, 100), (150, 100), (160, 100)]
    assert partition_status(series(rows)) == (OK, True)


def test_rule_4_committed_still_while_messages_arrive_is_a_stall() -> None:
    rows = [(100 + 10 * i, 90) for i in range(7)]
    assert partition_status(series(rows)) == (STALL, True)


def test_rule_4_committed_still_with_a_frozen_backlog_is_a_stop() -> None:
    rows = [(500, 90)] * 7
    assert partition_status(series(rows)) == (STOP, True)


def test_rule_4_needs_the_committed_offset_still_for_the_whole_window() -> None:
    # It moved 25 s ago, inside the 30 s window: not a stall (the lag still grows: rule 5).
    rows = [(100 + 10 * i, 90 if i < 2 else 95) for i in range(8)]
    assert partition_status(series(rows)) == (WARN, True)


def test_rule_5_lag_never_decreasing_while_the_consumer_advances_is_a_warning() -> None:
    rows = [(100 + 20 * i, 90 + 10 * i) for i in range(7)]  # produce 4/s, consume 2/s
    assert partition_status(series(rows)) == (WARN, True)


def test_rule_5_a_fixed_lag_with_a_moving_consumer_is_a_warning_as_in_burrow() -> None:
    rows = [(100 + 10 * i, 90 + 10 * i) for i in range(7)]
    assert partition_status(series(rows)) == (WARN, True)


def test_rule_6_a_consumer_whose_lag_goes_down_somewhere_is_ok() -> None:
    lags = [10, 30, 20, 40, 50, 60, 70]
    rows = [(1000 + 50 * i, 1000 + 50 * i - lag) for i, lag in enumerate(lags)]
    assert partition_status(series(rows)) == (OK, True)


def test_only_the_window_counts_not_older_history() -> None:
    # A stall long ago, healthy since: the window (last 30 s) decides.
    stalled = [(100 + 10 * i, 50) for i in range(10)]
    healthy = [(200 + 10 * i, 200 + 10 * i - (5 if i % 2 else 15)) for i in range(7)]
    assert partition_status(series(stalled + healthy)) == (OK, True)


def test_a_healthy_faust_consumer_committing_every_2_8_s_is_ok_at_every_sample() -> None:
    """Produce 100/s, consume instantly, commit every 2.8 s, sample every 5 s: the lag seen at a
    sample is up to 2.8 s of traffic and never zero, yet never judged as a problem."""
    rate, commit_every = 100, 2.8
    samples = []
    for i in range(40):
        t = 0.3 + 5.0 * i
        last_commit = math.floor(t / commit_every) * commit_every
        samples.append(PartitionSample(t, int(rate * t), int(rate * last_commit)))
        if i >= 7:
            assert samples[-1].lag and partition_status(samples) == (OK, True), i


def test_samples_without_a_committed_offset_are_ignored() -> None:
    rows = series([(100 + 10 * i, 90) for i in range(7)])
    with_gaps = [*rows[:3], PartitionSample(1012.0, 125, None), *rows[3:]]
    assert partition_status(with_gaps) == (STALL, True)


# --- group status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], GroupStatus.OK),
        ([OK, OK], GroupStatus.OK),
        ([OK, WARN], GroupStatus.WARN),
        ([WARN, STALL], GroupStatus.ERR),
        ([OK, STOP], GroupStatus.ERR),
        ([REWIND], GroupStatus.ERR),
    ],
)
def test_the_worst_partition_decides_the_group(
    statuses: list[PartitionStatus], expected: GroupStatus
) -> None:
    assert group_status(statuses) is expected


def test_group_status_gauge_values() -> None:
    assert dict(GROUP_STATUS_VALUE) == {GroupStatus.OK: 0, GroupStatus.WARN: 1, GroupStatus.ERR: 2}


# --- the report ------------------------------------------------------------------------------


def _history() -> list[Snapshot]:
    snaps = []
    for i in range(8):
        t = 1_795_305_600.0 + 5 * i
        snaps.append(
            Snapshot(
                t,
                {("events", 0): 100 + 10 * i, ("events", 1): 50, ("old", 0): 7},
                {
                    ("workers", "events", 0): 100 + 10 * i,  # caught up
                    ("workers", "events", 1): 50,  # caught up on a quiet partition
                    ("stuck", "events", 0): 95,  # not moving while messages arrive
                    ("retired", "old", 0): 3,  # not moving, nothing arrives
                },
            )
        )
    return snaps


def test_report_rows_lag_seconds_and_group_statuses() -> None:
    report = build_report(reversed(_history()))  # any order in
    assert report.ts_s == 1_795_305_635.0 and report.samples == 8
    by_group = {g.group: g for g in report.groups}
    assert [g.group for g in report.groups] == ["retired", "stuck", "workers"]
    workers = by_group["workers"]
    assert (workers.status, workers.lag, workers.lag_seconds) == (GroupStatus.OK, 0, 0.0)
    assert [(p.topic, p.partition, p.committed, p.end, p.status) for p in workers.partitions] == [
        ("events", 0, 170, 170, OK),
        ("events", 1, 50, 50, OK),
    ]
    stuck = by_group["stuck"]
    (p,) = stuck.partitions
    assert (p.committed, p.end, p.lag, p.status, stuck.status) == (95, 170, 75, STALL, GroupStatus.ERR)
    # The end offset was 95 2.5 s before the first sample (10 offsets per 5 s), 37.5 s before the last.
    assert p.lag_seconds == pytest.approx(37.5)
    assert stuck.lag_seconds == p.lag_seconds
    retired = by_group["retired"]
    assert (retired.status, retired.partitions[0].status, retired.lag_seconds) == (
        GroupStatus.ERR,
        STOP,
        None,
    )


def test_report_json_shape_and_round_trip() -> None:
    report = build_report(_history())
    doc = report.as_dict()
    assert set(doc) == {"groups", "updated_at"}
    assert doc["updated_at"] == "2026-11-22T00:00:35.000Z"
    group = doc["groups"][1]
    assert set(group) == {"group", "status", "lag", "lag_seconds", "complete", "partitions"}
    assert set(group["partitions"][0]) == {
        "topic",
        "partition",
        "committed",
        "end",
        "lag",
        "lag_seconds",
        "status",
        "complete",
    }
    assert group["status"] == "ERR" and group["partitions"][0]["status"] == "STALL"
    assert LagReport.from_dict(doc).as_dict() == doc


def test_empty_history_gives_an_empty_report() -> None:
    assert build_report([]).as_dict() == {"groups": [], "updated_at": None}


def test_a_partition_whose_end_could_not_be_read_is_left_out() -> None:
    snap = Snapshot(10.0, {}, {("g", "t", 0): 5})
    assert build_report([snap]).groups == ()


def test_timestamps_round_trip() -> None:
    assert parse_ts(format_ts(1_795_305_600.25) or "") == 1_795_305_600.25
