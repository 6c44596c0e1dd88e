"""The independent cohort of `elimu bench cohort`: reproducible, dated inside its 42 days, labelled
by the week after, and valid input for `behavior-events` (the stack refuses nothing of it)."""

from __future__ import annotations

import orjson

from models.events import parse_behavior
from models.time_units import DAY_MS
from scripts.cohort_replay import cohort_start, evaluate, generate

NOW = 1_796_000_000_000 + 17 * 3_600_000  # an afternoon
DAYS = 42


def test_the_cohort_is_reproducible_and_dated_inside_its_days() -> None:
    start = cohort_start(NOW, DAYS)
    assert start % DAY_MS == 0 and (start // DAY_MS - 4) % 7 == 0  # a Monday midnight (UTC)
    end = start + DAYS * DAY_MS
    assert end <= NOW - NOW % DAY_MS  # the days end at or before the last midnight
    events, labels = generate(60, DAYS, 3, start)
    assert (events, labels) == generate(60, DAYS, 3, start)
    assert generate(60, DAYS, 4, start)[0] != events
    assert all(start <= e["ts"] < end for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    # Both outcomes occur; the follow-up week is never sent.
    assert 0 < sum(labels.values()) < len(labels)
    for e in events[:200]:
        parsed = parse_behavior(orjson.dumps(e), NOW)
        assert parsed.user_id == e["user_id"] and parsed.ts_ms == e["ts"]


def test_evaluate_ranks_scores_and_silence_against_the_labels() -> None:
    start = cohort_start(NOW, DAYS)
    end = start + DAYS * DAY_MS
    events = [
        {"event_id": "1", "user_id": "a", "type": "login", "ts": end - 20 * DAY_MS},
        {"event_id": "2", "user_id": "b", "type": "login", "ts": end - 10 * DAY_MS},
        {"event_id": "3", "user_id": "c", "type": "login", "ts": end - 1 * DAY_MS},
        {"event_id": "4", "user_id": "d", "type": "login", "ts": end - 2 * DAY_MS},
    ]
    labels = {"a": 1, "b": 0, "c": 0, "d": 1}
    # The served score ranks perfectly; silence puts c below d (right) and b above d (wrong).
    result = evaluate({"a": 90.0, "d": 80.0, "b": 20.0, "c": 10.0}, events, labels, end)
    assert result["all"]["served_score_auc"] == 1.0
    assert result["all"]["days_since_last_activity_auc"] == 0.75
    assert result["live_7d"]["n"] == 2 and result["quiet_over_7d"]["n"] == 2
