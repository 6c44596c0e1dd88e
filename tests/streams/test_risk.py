"""The risk processor without Faust (streams/risk.py): a dict store, events as the pipeline hands
them over, and stream time driven by events only. Scores in the event path, the paced sweep,
label resolution in event time, the at-risk channel and the model swap."""

from __future__ import annotations

import orjson
import pytest

from models.campaigns.records import UserFacts
from models.events import BehaviorEvent
from models.interventions import UserContext
from models.risk import LOGISTIC, PendingLabel, Resolution, RiskModel, recency_prior
from models.risk_state import AT_RISK_FROM, HOUR_MS, RiskSettings, RiskState
from models.time_units import DAY_MS
from streams.risk import (
    RiskOutcome,
    RiskProcessor,
    parse_resolution,
    resolution_message,
    risk_document,
)
from tests.models.factories import event

T0 = 1_790_000_000_000
SETTINGS = RiskSettings()
H = SETTINGS.horizon_ms
G = SETTINGS.grace_ms


class Store:
    """The partition's risk table: `get`/`put`, with a count of writes."""

    def __init__(self) -> None:
        self.data: dict[str, RiskState] = {}
        self.puts: list[str] = []

    def get(self, key: str) -> RiskState | None:
        return self.data.get(key)

    def put(self, key: str, state: RiskState) -> None:
        self.data[key] = state
        self.puts.append(key)


class FakeUsers:
    """Nothing known beyond the user id: UTC, no streak, no preferences."""

    def context(self, state: RiskState, now_ms: int) -> tuple[UserContext, UserFacts]:
        return UserContext(state.user_id), UserFacts(state.user_id, "UTC", None, None, None, {})


def processor(settings: RiskSettings = SETTINGS) -> RiskProcessor:
    return RiskProcessor(settings, lambda user_id, now_ms: None, FakeUsers())


def ev(user_id: str, ts: int, type_: str = "lesson_completed") -> tuple[BehaviorEvent, int]:
    return event(type_, ts, user_id=user_id), 10


def scored(out: RiskOutcome) -> dict[str, list[int]]:
    """user -> the stream times at which they were scored in this outcome."""
    times: dict[str, list[int]] = {}
    for s in out.scores:
        times.setdefault(s.user_id, []).append(s.scored_at_ms)
    return times


def owns_all(user_id: str) -> bool:
    return True


def trained_model(n: int) -> RiskModel:
    model = RiskModel()
    for i in range(n):
        model.learn({"recency_d": float(i % 7), "events_7d": float(i % 3)}, i % 2)
    return model


# ---------------------------------------------------------------------------------------------
# The event path


def test_one_score_per_user_per_batch_at_the_users_newest_event() -> None:
    p, store = processor(), Store()
    out = p.on_events(
        [ev("a", T0), ev("a", T0 + 10 * 60_000), ev("b", T0 + 5 * 60_000), ev("a", T0 + 2 * 60_000)], store
    )
    assert scored(out) == {"a": [T0 + 10 * 60_000], "b": [T0 + 5 * 60_000]}
    assert set(out.touched) == {"a", "b"}
    assert [s.user_id for s, _ in out.published] == ["a", "b"]
    # The newest event is where the score and its label snapshot are taken.
    assert store.data["a"].scored_at_ms == T0 + 10 * 60_000
    assert [p.scored_at_ms for p in store.data["a"].pending] == [T0 + 10 * 60_000]
    assert store.data["a"].pending[0].features["recency_d"] == 0.0
    # Every event was folded in.
    assert sum(row[0] for row in store.data["a"].activity.days.values()) == 3
    assert sorted(store.puts) == ["a", "b"]
    assert store.data["a"].last == out.published[0][1]


def test_later_activity_not_worth_a_score_now_is_left_to_the_sweep() -> None:
    p, store = processor(), Store()
    p.on_events([ev("a", T0)], store)
    out = p.on_events([ev("a", T0 + 20 * 60_000)], store)
    assert out.scores == []  # no label snapshot due, not at risk
    assert "a" in out.touched
    # ... but due at once: the next sweep scores it at its event.
    swept = p.sweep(store, owns_all)
    assert scored(swept) == {"a": [T0 + 20 * 60_000]}


def test_activity_proves_a_pending_label_retained() -> None:
    p, store = processor(), Store()
    p.on_events([ev("a", T0)], store)
    out = p.on_events([ev("a", T0 + 2 * DAY_MS)], store)
    [r] = out.resolutions
    assert (r.pending.user_id, r.pending.scored_at_ms, r.label, r.resolved_at_ms) == (
        "a",
        T0,
        0,
        T0 + 2 * DAY_MS,
    )
    # A day has passed since the last snapshot: scored and labelled again here.
    assert [x.scored_at_ms for x in store.data["a"].pending] == [T0 + 2 * DAY_MS]


def test_the_watermark_advances_with_events_only() -> None:
    p, store = processor(), Store()
    assert p.watermark_ms is None
    assert not p.sweep(store, owns_all)  # no stream time yet: nothing to do

    p.on_events([ev("a", T0 + 5), ev("b", T0 + 9), ev("a", T0 + 1)], store)
    assert p.watermark_ms == T0 + 9
    p.on_events([ev("c", T0 - DAY_MS)], store)  # a late event does not move it back
    assert p.watermark_ms == T0 + 9
    p.sweep(store, owns_all)
    assert p.watermark_ms == T0 + 9  # the sweep follows it, never moves it
    p.on_events([ev("c", T0 + HOUR_MS)], store)
    assert p.watermark_ms == T0 + HOUR_MS


def test_a_users_labels_expire_by_their_own_partitions_time_not_a_partition_drained_ahead() -> None:
    """Partitions are consumed unevenly: in a replay one can be days of event time ahead of
    another. A user on the lagging partition, whose next events are still unread, must not be
    labelled dropped by the other partition's clock."""
    partitions = {"lagging": 0, "lagging-clock": 0, "ahead": 1}
    p = RiskProcessor(
        SETTINGS, lambda user_id, now_ms: None, FakeUsers(), partition_of=partitions.__getitem__
    )
    store = Store()
    p.on_events([ev("lagging", T0)], store)  # takes a pending label at T0
    assert [x.scored_at_ms for x in store.data["lagging"].pending] == [T0]
    p.on_events([ev("ahead", T0 + H + G + DAY_MS)], store)  # partition 1 is far ahead
    assert p.watermark_ms == T0 + H + G + DAY_MS
    for _ in range(3):
        out = p.sweep(store, owns_all)
        assert not out.resolutions  # partition 0 is still at T0: nothing of it expired
    assert [x.scored_at_ms for x in store.data["lagging"].pending] == [T0]
    # The lagging partition's own next event resolves it as retained, as it should.
    out = p.on_events([ev("lagging", T0 + DAY_MS)], store)
    assert [(r.pending.scored_at_ms, r.label) for r in out.resolutions] == [(T0, 0)]
    # And its own clock, once past the deadline, expires what is left as dropped.
    p.on_events([ev("lagging-clock", T0 + 3 * DAY_MS + H + G)], store)
    expired = [r for _ in range(3) for r in p.sweep(store, owns_all).resolutions]
    assert {(r.pending.user_id, r.label) for r in expired} == {("lagging", 1)}


# ---------------------------------------------------------------------------------------------
# The sweep


def test_the_sweep_rescores_only_the_users_due() -> None:
    p, store = processor(), Store()
    p.on_events([ev("a", T0)], store)  # due at T0 + 1h
    p.on_events([ev("b", T0 + 30 * 60_000)], store)  # due at T0 + 1h30
    p.on_events([ev("clock", T0 + HOUR_MS)], store)  # scored now, due at T0 + 2h

    out = p.sweep(store, owns_all)

    assert scored(out) == {"a": [T0 + HOUR_MS]}
    assert store.data["b"].scored_at_ms == T0 + 30 * 60_000
    assert p.due_count == 3  # everyone back on the agenda
    # Nothing more is due until stream time moves.
    assert not p.sweep(store, owns_all)


def test_the_sweep_respects_its_budget() -> None:
    p, store = processor(), Store()
    users = [f"u{i}" for i in range(5)]
    p.on_events([ev(u, T0) for u in users], store)
    p.on_events([ev("clock", T0 + HOUR_MS)], store)

    looked: list[str] = []
    for expected in (2, 2, 1, 0):
        out = p.sweep(store, owns_all, budget=2)
        assert len(out.touched) == expected
        looked.extend(out.touched)
    assert sorted(looked) == users  # each due user looked at exactly once
    assert all(store.data[u].scored_at_ms == T0 + HOUR_MS for u in users)


def test_the_sweep_skips_users_it_does_not_own() -> None:
    p, store = processor(), Store()
    p.on_events([ev("a", T0), ev("b", T0)], store)  # both due at T0 + 1h; a comes off the heap first
    p.on_events([ev("clock", T0 + HOUR_MS)], store)
    store.puts.clear()

    out = p.sweep(store, lambda user_id: user_id != "a", budget=1)

    # The budget counts users looked at: skipping a does not use it up.
    assert set(out.touched) == {"b"}
    assert "a" not in store.puts
    assert store.data["a"].scored_at_ms == T0
    assert p.due_count == 2  # b and clock; a is no longer on this worker's agenda
    p.on_events([ev("clock2", T0 + 5 * HOUR_MS)], store)
    assert "a" not in p.sweep(store, owns_all).touched


def test_forget_drops_the_users_no_longer_owned() -> None:
    p, store = processor(), Store()
    p.on_events([ev("a", T0), ev("b", T0), ev("c", T0)], store)
    assert p.due_count == 3
    p.forget(lambda user_id: user_id == "a")
    assert p.due_count == 1
    p.on_events([ev("clock", T0 + HOUR_MS)], store)
    assert set(p.sweep(store, owns_all).touched) == {"a"}


def test_the_sweep_skips_stale_heap_entries() -> None:
    p, store = processor(), Store()
    p.on_events([ev("a", T0)], store)  # (T0 + 1h, a) on the heap
    # Re-scheduled later (as if scored elsewhere since): the first entry is stale.
    store.data["a"].scored_at_ms = T0 + 5 * HOUR_MS
    p.schedule([store.data["a"]])
    assert p.due_count == 1

    p.on_events([ev("clock", T0 + 2 * HOUR_MS)], store)
    assert "a" not in p.sweep(store, owns_all).touched  # its stale entry was due, not the user

    p.on_events([ev("clock", T0 + 6 * HOUR_MS)], store)
    assert scored(p.sweep(store, owns_all)).get("a") == [T0 + 6 * HOUR_MS]


def test_a_quiet_users_label_resolves_as_dropped_after_deadline_plus_grace() -> None:
    p, store = processor(), Store()
    p.on_events([ev("quiet", T0)], store)
    [label] = store.data["quiet"].pending
    assert label.scored_at_ms == T0

    # Only another user's events move stream time: to deadline + grace, not past it.
    p.on_events([ev("busy", T0 + H + G)], store)
    out = p.sweep(store, owns_all)
    assert "quiet" in out.touched  # re-scored as the silence grew
    assert out.resolutions == []
    assert [x.scored_at_ms for x in store.data["quiet"].pending] == [T0]  # gone too long to relabel

    p.on_events([ev("busy", T0 + H + G + 1)], store)
    out = p.sweep(store, owns_all)
    [r] = [r for r in out.resolutions if r.pending.user_id == "quiet"]
    assert (r.label, r.pending.scored_at_ms, r.resolved_at_ms) == (1, T0, T0 + H + G + 1)
    assert store.data["quiet"].pending == []
    assert r.pending.probability == pytest.approx(recency_prior({"recency_d": 0.0}))


def test_a_quiet_user_is_rescored_as_the_silence_grows() -> None:
    p, store = processor(), Store()
    p.on_events([ev("quiet", T0)], store)
    levels: list[str] = []
    for day in range(1, 8):
        p.on_events([ev("busy", T0 + day * DAY_MS)], store)
        out = p.sweep(store, owns_all)
        [s] = [s for s in out.scores if s.user_id == "quiet"]
        assert s.scored_at_ms == T0 + day * DAY_MS
        levels.append(s.level)
    assert levels[0] == "low" and levels[-1] == "critical"
    # One label a day while live (7 days of silence is still within the horizon).
    assert [x.scored_at_ms for x in store.data["quiet"].pending] == [T0 + d * DAY_MS for d in range(8)]


# ---------------------------------------------------------------------------------------------
# The at-risk channel


def test_the_at_risk_channel_gets_scores_at_risk_and_the_recovery_below() -> None:
    assert AT_RISK_FROM == 40.0
    p, store = processor(), Store()

    first = p.on_events([ev("a", T0)], store)
    assert [d["score"] for _, d in first.published] == [14.2]
    assert first.at_risk == []  # low, and never was at risk

    p.on_events([ev("clock", T0 + 3 * DAY_MS)], store)
    swept = p.sweep(store, owns_all)
    [doc] = [d for d in swept.at_risk if d["user_id"] == "a"]
    assert (doc["score"], doc["level"]) == (50.0, "medium")

    back = p.on_events([ev("a", T0 + 3 * DAY_MS + HOUR_MS)], store)  # at risk: scored at once
    assert scored(back) == {"a": [T0 + 3 * DAY_MS + HOUR_MS]}
    [doc] = back.at_risk
    assert (doc["user_id"], doc["score"], doc["level"]) == ("a", 14.2, "low")
    assert store.data["a"].last == doc

    # Low after low: no longer on the channel.
    p.on_events([ev("clock", T0 + 4 * DAY_MS + HOUR_MS)], store)
    later = p.sweep(store, owns_all)
    assert any(s.user_id == "a" for s, _ in later.published)
    assert [d for d in later.at_risk if d["user_id"] == "a"] == []


# ---------------------------------------------------------------------------------------------
# Model swaps and recovery


def test_adopt_model_swaps_the_model_and_its_version() -> None:
    p, store = processor(), Store()
    first = p.on_events([ev("a", T0)], store)
    assert first.published[0][1]["model_version"] == 0

    model = trained_model(12)
    model.served = LOGISTIC  # the learnt candidate, so the new model's scores differ
    p.adopt_model(model)
    assert p.model is model and p.model_version == 12

    out = p.on_events([ev("b", T0)], store)
    [(score, doc)] = out.published
    assert doc["model_version"] == 12
    x = store.data["b"].pending[0].features
    assert score.probability == pytest.approx(model.predict(x)[0])
    assert score.probability != pytest.approx(first.scores[0].probability)


def test_adopt_watermark_starts_stream_time_at_the_newest_recovered_event() -> None:
    recovered = []
    for user_id, last in (("a", T0 + 3), ("b", T0 + 7), ("c", T0 + 5)):
        state = RiskState(user_id)
        state.activity.last_event_ms = last
        recovered.append(state)
    recovered.append(RiskState("never-active"))

    p = processor()
    p.adopt_watermark(recovered)
    assert p.watermark_ms == T0 + 7
    p.adopt_watermark(recovered[:1])  # never moves back
    assert p.watermark_ms == T0 + 7
    p.adopt_watermark([RiskState("none")])
    assert p.watermark_ms == T0 + 7


def test_recovered_labels_resolve_without_new_traffic() -> None:
    # A worker restarts with the states it owned: a quiet user's label fell due meanwhile.
    old, store = processor(), Store()
    old.on_events([ev("quiet", T0)], store)
    old.on_events([ev("late", T0 + H + G + 1)], store)

    p = processor()
    states = list(store.data.values())
    p.adopt_watermark(states)
    p.schedule(states)
    out = p.sweep(store, owns_all)

    assert [(r.pending.user_id, r.label) for r in out.resolutions] == [("quiet", 1)]


# ---------------------------------------------------------------------------------------------
# Messages


def test_a_resolution_round_trips_through_its_message() -> None:
    pending = PendingLabel("u-1", T0, {"recency_d": 1.5, "events_7d": 0.25}, 0.375)
    for label in (0, 1):
        resolution = Resolution(pending, label, T0 + DAY_MS)
        message = orjson.loads(orjson.dumps(resolution_message(resolution)))
        assert message["label"] == label and message["user_id"] == "u-1"
        assert parse_resolution(message) == resolution


@pytest.mark.parametrize("label", [2, -1])
def test_a_label_other_than_0_or_1_is_refused(label: int) -> None:
    pending = PendingLabel("u-1", T0, {"recency_d": 1.5}, 0.5)
    message = {**resolution_message(Resolution(pending, 1, T0)), "label": label}
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        parse_resolution(message)


def test_the_risk_document_has_the_contract_fields_first() -> None:
    model = RiskModel()
    score = model.assess("u-1", {"recency_d": 4.0, "events_7d": 0.0}, T0)
    doc = risk_document(score, ["gentle_reminder"], 42)
    assert list(doc)[:4] == ["user_id", "score", "level", "updated_at"]
    assert doc["recommended_interventions"] == ["gentle_reminder"]
    assert doc["model_version"] == 42 and doc["scored_at_ms"] == T0
    assert doc["score"] == score.score and doc["level"] == score.level == "high"
