"""The served risk score is chosen from several candidates by their prequential performance.

Populations: `scripts.bench_risk.simulate_population` (how dropping out shows differs in each),
replayed through `RiskModel` as `elimu bench risk --populations` does, small enough to run in a
few seconds each. The metric is the same-day ROC AUC (`models.risk.same_day_auc`) over every
resolved label of the run, warm-up included: the served score must rank at least as well as the
best single candidate, less 0.01.
"""

from __future__ import annotations

import base64
import functools
import math
from typing import Any

import orjson
import pytest

from models.risk import (
    BLEND,
    CANDIDATES,
    LOGISTIC,
    RECENCY,
    SELECT_MIN_CLASS,
    SELECT_WINDOW,
    SILENCE,
    TIE_MIN_WEIGHT,
    IncompatibleModel,
    PendingLabel,
    Resolution,
    RiskModel,
    WindowRow,
    blend_score,
    candidate_aucs,
    evaluation,
    fit_calibration,
    recency_prior,
    same_day_auc,
    silence_score,
    tie_weights,
    user_key,
)
from models.time_units import DAY_MS, HOUR_MS
from scripts.bench_risk import POPULATIONS, run_population

T0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS  # a UTC midnight
H = 7 * DAY_MS
USERS, DAYS, SEED = 160, 56, 1


@pytest.mark.parametrize("kind", list(POPULATIONS))
def test_served_ranks_within_a_hundredth_of_the_best_candidate(kind: str) -> None:
    r = run_population(kind, USERS, DAYS, SEED)
    aucs = r["candidates_roc_auc"]
    assert set(aucs) == set(CANDIDATES) and all(a is not None for a in aucs.values())
    assert r["labels"] > 2_000 and 0.03 < r["dropped_rate"] < 0.5  # a real test, both classes
    assert r["served_roc_auc"] >= max(aucs.values()) - 0.01, r


# ---------------------------------------------------------------------------------------------
# Candidates and the selection


def features(
    recency_d: float, active_28d: float = 0.5, tenure_d: float = 60.0, **more: float
) -> dict[str, float]:
    return {
        "recency_d": recency_d,
        "active_days_28d": active_28d,
        "tenure_log_d": math.log1p(tenure_d),
        "events_7d": 1.0,
        **more,
    }


def test_silence_counts_missed_usual_days_not_days() -> None:
    # Four quiet days: a lot for a daily student, little for a twice-a-week one.
    assert silence_score(features(4.0, 1.0)) > 0.7 > 0.4 > silence_score(features(4.0, 0.25))
    # With `missed_days` (by day of the week), that is what counts.
    assert silence_score(features(4.0, 1.0, missed_days=0.2)) < 0.1
    assert silence_score(features(0.0, missed_days=6.0)) > 0.8
    for x in (features(0.0), features(56.0, 0.0), features(3.0, missed_days=56.0)):
        assert (
            0.0 < silence_score(x) < 1.0 and 0.0 < blend_score(0.3, recency_prior(x), silence_score(x)) < 1.0
        )


def resolution(user: str, day: int, x: dict[str, float], label: int, model_p: float = 0.5) -> Resolution:
    scored = T0 + day * DAY_MS + HOUR_MS
    pending = PendingLabel(user, scored, x, 0.5, model_p)
    return Resolution(pending, label, scored + (H + HOUR_MS if label else HOUR_MS))


def feed(m: RiskModel, days: range, per_day: int, informative: str) -> None:
    """Labels where only the `informative` candidate ranks: dropped users are quiet (recency
    and silence see it) or flagged by the model (`model_p`), never both."""
    for day in days:
        for i in range(per_day):
            label = int(i % 4 == 0)
            quiet = 5.0 if label and informative != LOGISTIC else 0.5
            model_p = 0.9 if label and informative == LOGISTIC else 0.2
            m.ingest(resolution(f"u{day}-{i}", day, features(quiet, 1.0), label, model_p))
            m.advance(T0 + (day + 9) * DAY_MS)


def test_serves_recency_until_labels_prove_another_candidate_then_switches() -> None:
    m = RiskModel(learn_on_resolve=False)
    assert m.served == RECENCY and evaluation([], [])["served"] == RECENCY
    x = features(2.0)
    assert m.assess("u", x, T0).probability == recency_prior(x)  # no map yet: exactly the prior
    # A few labels of each class: no evidence yet, nothing changes.
    feed(m, range(3), 4 * SELECT_MIN_CLASS // 10, LOGISTIC)
    assert m.served == RECENCY
    feed(m, range(3, 30), 40, LOGISTIC)
    assert m.served == LOGISTIC
    aucs = m.evaluation()["candidates"]["roc_auc"]
    assert aucs[LOGISTIC] == 1.0 and aucs[RECENCY] == 0.5 and set(aucs) == set(CANDIDATES)
    score = m.assess("u", x, T0 + 40 * DAY_MS)
    assert score.served == LOGISTIC and 0.0 < score.probability < 1.0


def test_candidates_the_labels_cannot_tell_apart_are_served_together() -> None:
    m = RiskModel(learn_on_resolve=False)
    m.served = SILENCE
    feed(m, range(30), 40, RECENCY)  # recency and silence rank these alike
    aucs = m.evaluation()["candidates"]["roc_auc"]
    assert aucs[RECENCY] == aucs[SILENCE] == 1.0
    # Tied: both served, neither alone, whichever the order; the one that ranks no better than
    # chance (the logistic, flat here) is left out.
    assert {m.served, *m.tied} == {RECENCY, SILENCE, BLEND} and LOGISTIC not in m.tied
    assert all(TIE_MIN_WEIGHT <= w <= 1.0 for w in m.tied.values())
    assert m.evaluation()["tied"] == m.tied
    # The served probability averages the tied candidates' calibrated logits: between them.
    x = features(2.0, 1.0)
    p = m.assess("u", x, T0 + 40 * DAY_MS).probability
    alone = []
    explained: dict[str, float] = {}
    total = 1.0 + sum(m.tied.values())
    for name, weight in ((m.served, 1.0), *m.tied.items()):
        solo = RiskModel.from_bytes(m.to_bytes())
        solo.served, solo.tied = name, {}
        probability, signals = solo.predict(x)
        alone.append(probability)
        for signal in signals:
            explained[signal.name] = explained.get(signal.name, 0.0) + weight / total * signal.contribution
    assert min(alone) <= p <= max(alone)
    assert p == pytest.approx(sum(w * q for w, q in zip((1.0, *m.tied.values()), alone, strict=True)) / total)
    # The pool's explanation: the same weighted mean of each candidate's (mapped) shares.
    pooled = {signal.name: signal.contribution for signal in m.predict(x)[1]}
    assert pooled.keys() == explained.keys()
    assert all(pooled[k] == pytest.approx(v) for k, v in explained.items())


def window(days: int, gaps: dict[str, float], noise: float, seed: int = 1) -> list[WindowRow]:
    """Rows over `days` days where each candidate c ranks a day's labels with AUC ~ 0.8 - gaps[c]
    (plus a day-to-day wobble of `noise`): positives score `shift` above negatives."""
    import random

    rng = random.Random(seed)
    rows: list[WindowRow] = []
    for day in range(days):
        wobble = {name: rng.gauss(0.0, noise) for name in CANDIDATES}
        for i in range(200):
            label = int(i % 5 == 0)
            scores = []
            for name in CANDIDATES:
                # With uniform noise and a shift s for positives, AUC = 1/2 + s - s^2/2: a
                # larger gap, a smaller shift, a lower AUC.
                shift = min(max(0.6 - 2.0 * (gaps.get(name, 0.0) + wobble[name]), 0.0), 1.0)
                scores.append(0.5 * (rng.random() + (shift if label else 0.0)))
            rows.append(WindowRow(label, day, 0.5, tuple(scores), i))
    return rows


def test_tie_weights_serve_a_clear_winner_alone() -> None:
    # The logistic ranks much better every day: served alone.
    best, tied = tie_weights(window(14, {RECENCY: 0.15, SILENCE: 0.2, BLEND: 0.1}, 0.005))
    assert best == LOGISTIC and tied == {}


def test_tie_weights_blend_candidates_within_their_error() -> None:
    # The same two candidates, identical in expectation, the days noisy: the day-to-day spread
    # makes any gap between them insignificant, so the runner-up weighs close to 1.
    best, tied = tie_weights(window(14, {SILENCE: 0.3, BLEND: 0.3}, 0.05))
    assert {best, *tied} >= {LOGISTIC, RECENCY}
    other = RECENCY if best == LOGISTIC else LOGISTIC
    assert tied[other] > 0.3 and SILENCE not in tied


def test_tie_weights_serve_recency_until_something_ranks_better_than_chance() -> None:
    assert tie_weights([]) == (RECENCY, {})  # no labels: the prior
    # One day: no spread across days to judge anything by.
    assert tie_weights(window(1, {RECENCY: 0.05}, 0.0)) == (RECENCY, {})
    # Every candidate at chance (AUC 0.5 give or take the sampling noise): the prior, alone,
    # whichever candidate happens to lead.
    chance = {name: 0.3 for name in CANDIDATES}
    assert tie_weights(window(14, chance, 0.0)) == (RECENCY, {})
    # The same window where the logistic ranks: served.
    assert tie_weights(window(14, {**chance, LOGISTIC: 0.0}, 0.0)) == (LOGISTIC, {})


def test_evaluation_shows_every_candidate_and_the_served_one_on_the_same_labels() -> None:
    m = RiskModel(learn_on_resolve=False)
    feed(m, range(30), 40, LOGISTIC)
    report = orjson.loads(orjson.dumps(m.evaluation()))  # what GET /v1/ops/risk-model serves
    assert report["served"] == LOGISTIC
    cand = report["candidates"]
    assert set(cand["roc_auc"]) == set(CANDIDATES) and cand["window"] > 0 and cand["positives"] > 0
    assert cand["served_roc_auc"] is not None and cand["auc_method"].startswith("same-day")


def test_same_day_auc_ranks_within_days_only() -> None:
    # Each day ranks perfectly; pooled, the second day's scale (all higher) would not.
    rows = [(1, 0.1, 0), (1, 0.2, 1), (2, 0.8, 0), (2, 0.9, 1)]
    assert same_day_auc(rows) == 1.0
    assert same_day_auc([(1, 0.1, 0), (2, 0.9, 1)]) is None  # no day with both classes


def test_calibration_is_monotone_and_bounded() -> None:
    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9] * 20
    labels = [0, 0, 1, 0, 1, 1] * 20
    a, b = fit_calibration(scores, labels)
    assert a > 0 and math.isfinite(b)
    # Separable labels push a and b to their bounds, never past them.
    a, b = fit_calibration([0.1] * 50 + [0.9] * 50, [0] * 50 + [1] * 50)
    assert 0 < a <= 100 and -100 <= b <= 100


def test_window_is_bounded_by_sampling_users() -> None:
    m = RiskModel(learn_on_resolve=False)
    for i in range(SELECT_WINDOW + 500):
        m.ingest(resolution(f"user-{i}", 0, features(1.0), i % 2))
    assert len(m.window) <= SELECT_WINDOW and m.sample_bits >= 1
    # A fixed share of the users (by key), not the latest labels.
    assert all(row.key % (1 << m.sample_bits) == 0 for row in m.window)
    assert {row.key for row in m.window} <= {user_key(f"user-{i}") for i in range(SELECT_WINDOW + 500)}


# ---------------------------------------------------------------------------------------------
# Codec: the selection state round-trips, and anything else is refused


@functools.cache
def selecting_bytes() -> bytes:
    m = RiskModel(learn_on_resolve=False)
    feed(m, range(30), 40, LOGISTIC)
    m.score("p", features(3.0), T0 + 31 * DAY_MS)
    return m.to_bytes()


def selecting_model() -> RiskModel:
    """A model that has selected a candidate, with a window and a pending label (built once:
    the hostile-input cases below each start from a fresh copy)."""
    return RiskModel.from_bytes(selecting_bytes())


def test_selection_state_round_trips() -> None:
    m = selecting_model()
    assert m.served == LOGISTIC and m.calibration[LOGISTIC] != (1.0, 0.0) and m.window
    back = RiskModel.from_bytes(m.to_bytes())
    assert (back.served, back.select_day, back.sample_bits) == (m.served, m.select_day, m.sample_bits)
    assert back.window == m.window and back.calibration[LOGISTIC] == m.calibration[LOGISTIC]
    assert back.tied == m.tied
    assert back.pending("p") == m.pending("p") and back.pending("p")[0].model_probability is not None
    assert back.to_bytes() == m.to_bytes()
    x = features(3.0)
    assert back.assess("u", x, T0) == m.assess("u", x, T0)
    scorer = RiskModel.from_bytes(m.to_bytes(scoring_only=True), scoring_only=True)
    assert (
        scorer.served == LOGISTIC
        and scorer.window == []
        and scorer.assess("u", x, T0) == m.assess("u", x, T0)
    )
    # A pending label keeps the model's probability on the wire (labels topic, changelog) too.
    label = m.pending("p")[0]
    assert PendingLabel.from_dict(orjson.loads(orjson.dumps(label.to_dict()))) == label


def test_tied_candidates_round_trip_and_reach_the_scorer() -> None:
    m = RiskModel(learn_on_resolve=False)
    feed(m, range(30), 40, RECENCY)
    assert m.tied
    back = RiskModel.from_bytes(m.to_bytes())
    scorer = RiskModel.from_bytes(m.to_bytes(scoring_only=True), scoring_only=True)
    x = features(3.0, 0.5, missed_days=2.5)
    for other in (back, scorer):
        assert (other.served, other.tied) == (m.served, m.tied)
        assert other.assess("u", x, T0) == m.assess("u", x, T0)
        assert all(other.calibration[name] == m.calibration[name] for name in (m.served, *m.tied))


def test_a_document_from_before_candidates_serves_the_logistic_model() -> None:
    m = selecting_model()
    body = document(m)
    for name in ("served", "calibration", "selection", "tied"):
        del body[name]
    del body["pending"]["model_probability"]
    old = RiskModel.from_bytes(encode(m, body))
    assert old.served == LOGISTIC and old.window == [] and old.pending("p")[0].model_probability is None


def document(m: RiskModel) -> dict[str, Any]:
    data = m.to_bytes()
    result: dict[str, Any] = orjson.loads(data[data.index(b"\n") + 1 :])
    return result


def encode(m: RiskModel, body: dict[str, Any]) -> bytes:
    data = m.to_bytes()
    return data[: data.index(b"\n") + 1] + orjson.dumps(body)


def b64_floats(values: list[float]) -> str:
    import array

    return base64.b64encode(array.array("d", values).tobytes()).decode()


@pytest.mark.parametrize(
    "hostile",
    [
        lambda b: b.update(served="oracle"),
        lambda b: b.update(served=["recency"]),
        lambda b: b.update(calibration=[1.0]),
        lambda b: b.update(calibration=[-1.0, 0.0]),  # a map that reverses the ranking
        lambda b: b.update(calibration=[1.0, 1e9]),
        lambda b: b.update(calibration=["1", 0.0]),
        lambda b: b.update(calibration=[1.0, 0.0] * 1000),
        lambda b: b["selection"].update(candidates=["logistic", "recency"]),
        lambda b: b["selection"].update(candidates=[*CANDIDATES, "extra"]),
        lambda b: b["selection"].update(n=SELECT_WINDOW + 1),
        lambda b: b["selection"].update(n=b["selection"]["n"] + 1),
        lambda b: b["selection"].update(n="10"),
        lambda b: b["selection"].update(sample_bits=33),
        lambda b: b["selection"].update(select_day=True),
        lambda b: b["selection"].update(y=base64.b64encode(b"\x02" * b["selection"]["n"]).decode()),
        lambda b: b["selection"].update(day=b64_floats([1.5] * b["selection"]["n"])),
        lambda b: b["selection"].update(key=b64_floats([-1.0] * b["selection"]["n"])),
        lambda b: b["selection"].update(key=b64_floats([2.0**40] * b["selection"]["n"])),
        lambda b: b["selection"].update(served_p=b64_floats([1.5] * b["selection"]["n"])),
        lambda b: b["selection"].update(
            scores=b64_floats([math.nan] * (len(CANDIDATES) * b["selection"]["n"]))
        ),
        lambda b: b["selection"].update(scores=b["selection"]["scores"][:-8]),
        lambda b: b.update(selection=[]),
        lambda b: b.update(tied=[]),
        lambda b: b.update(tied={"names": ["oracle"], "weights": [0.5], "calibration": [[1.0, 0.0]]}),
        lambda b: b.update(tied={"names": [b["served"]], "weights": [0.5], "calibration": [[1.0, 0.0]]}),
        lambda b: b.update(
            tied={"names": [RECENCY, RECENCY], "weights": [0.5, 0.5], "calibration": [[1.0, 0.0]] * 2}
        ),
        lambda b: b.update(tied={"names": [RECENCY], "weights": [1.5], "calibration": [[1.0, 0.0]]}),
        lambda b: b.update(tied={"names": [RECENCY], "weights": [0.0], "calibration": [[1.0, 0.0]]}),
        lambda b: b.update(tied={"names": [RECENCY], "weights": [0.5], "calibration": [[-1.0, 0.0]]}),
        lambda b: b.update(tied={"names": [RECENCY], "weights": [0.5], "calibration": [[1.0]]}),
        lambda b: b.update(tied={"names": [RECENCY], "weights": [0.5, 0.5], "calibration": [[1.0, 0.0]]}),
        lambda b: b.update(tied={"names": [["recency"]], "weights": [0.5], "calibration": [[1.0, 0.0]]}),
        lambda b: b["pending"].update(model_probability=b64_floats([2.0])),
        lambda b: b["pending"].update(model_probability=b64_floats([0.5, 0.5])),
    ],
)
def test_hostile_selection_state_is_refused(hostile: Any) -> None:
    m = selecting_model()
    body = document(m)
    hostile(body)
    with pytest.raises(IncompatibleModel):
        RiskModel.from_bytes(encode(m, body))


@pytest.mark.parametrize("value", [2.0, -0.5, "0.5", [0.5], math.inf])
def test_a_pending_label_with_a_bad_model_probability_is_refused(value: Any) -> None:
    label = PendingLabel("u", T0, features(1.0), 0.5, 0.5).to_dict()
    label["model_probability"] = value
    with pytest.raises(IncompatibleModel):
        PendingLabel.from_dict(label)


def test_candidate_aucs_on_an_empty_window() -> None:
    empty: list[WindowRow] = []
    assert candidate_aucs(empty) == dict.fromkeys(CANDIDATES)
