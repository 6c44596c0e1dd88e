"""The drop-off risk model: delayed labels in event time, levels, evaluation, persistence."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import orjson
import pytest
from river.__version__ import __version__ as RIVER_VERSION

import models.risk as risk_module
from models.risk import (
    DAY_MS,
    FORMAT_VERSION,
    LOGISTIC,
    PRIOR_LABELS,
    IncompatibleModel,
    PendingLabel,
    Resolution,
    RiskModel,
    _logit,
    brier_score,
    calibration_bins,
    horizon_risk,
    recency_prior,
    resolve_expired,
    resolve_seen,
    risk_level,
    roc_auc,
    wants_snapshot,
)
from models.risk_codec import MAX_FEATURE_NAME_LEN, MAX_FEATURES

T0 = 1_790_000_000_000
H = 7 * DAY_MS
ACTIVE = {"recency_d": 0.1, "events_7d": 3.0, "score_mean": 0.8}
QUIET = {"recency_d": 5.0, "events_7d": 0.0, "score_mean": 0.6}


def weights(model: RiskModel) -> dict[str, float]:
    return dict(model.model.steps["LogisticRegression"].weights)


# --- label resolution -----------------------------------------------------------------------


def test_activity_before_horizon_resolves_zero() -> None:
    m = RiskModel(defer_negatives=False)
    m.score("u", ACTIVE, T0)
    assert m.on_activity("u", T0) == []  # same instant as the score: not "seen again"
    [r] = m.on_activity("u", T0 + 3 * DAY_MS)
    assert (r.label, r.pending.user_id, r.pending.scored_at_ms, r.resolved_at_ms) == (
        0,
        "u",
        T0,
        T0 + 3 * DAY_MS,
    )
    assert m.pending_count == 0 and m.n_learned == 1
    assert m.advance(T0 + 30 * DAY_MS) == []  # the stale deadline does not resolve it again


def test_horizon_passing_resolves_one_with_exact_boundary() -> None:
    m = RiskModel()
    m.score("u", QUIET, T0)
    assert m.advance(T0 + H) == []  # deadline reached, not passed
    [r] = m.advance(T0 + H + 1)
    assert (r.label, r.resolved_at_ms) == (1, T0 + H + 1)
    assert m.on_activity("u", T0 + H + 2) == []


def test_activity_exactly_at_the_deadline_counts_as_seen() -> None:
    m = RiskModel()
    m.score("u", QUIET, T0)
    [r] = m.on_activity("u", T0 + H)
    assert r.label == 0
    assert m.advance(T0 + H + 1) == []


def test_activity_after_deadline_is_left_to_advance() -> None:
    m = RiskModel()
    m.score("u", QUIET, T0)
    assert m.on_activity("u", T0 + H + 5) == []
    assert [r.label for r in m.advance(T0 + H + 6)] == [1]


def test_grace_delays_the_drop() -> None:
    m = RiskModel(grace_ms=DAY_MS)
    m.score("u", QUIET, T0)
    assert m.advance(T0 + H + DAY_MS) == []
    assert [r.label for r in m.advance(T0 + H + DAY_MS + 1)] == [1]


def test_advance_is_monotone_in_stream_time() -> None:
    m = RiskModel()
    m.score("u", QUIET, T0)
    assert len(m.advance(T0 + 2 * H)) == 1
    m.score("v", QUIET, T0)
    assert m.advance(T0 + H) == []  # an older watermark changes nothing
    assert len(m.advance(T0 + 2 * H + 1)) == 1


def test_one_snapshot_per_gap_and_other_users_untouched() -> None:
    m = RiskModel()
    m.score("u", ACTIVE, T0)
    m.score("u", ACTIVE, T0 + DAY_MS - 1)  # inside the gap: scored, not snapshotted
    m.score("u", ACTIVE, T0 + DAY_MS)
    m.score("v", ACTIVE, T0)
    assert [p.scored_at_ms for p in m.pending("u")] == [T0, T0 + DAY_MS]
    resolved = m.on_activity("u", T0 + DAY_MS + 1)
    assert sorted(r.pending.scored_at_ms for r in resolved) == [T0, T0 + DAY_MS]
    assert [p.user_id for p in m.pending("v")] == ["v"]
    # A late event from before a snapshot does not resolve it.
    m.score("u", ACTIVE, T0 + 3 * DAY_MS)
    assert m.on_activity("u", T0 + 2 * DAY_MS) == []
    assert len(m.pending("u")) == 1


def test_learning_happens_only_on_resolution() -> None:
    m = RiskModel(defer_negatives=False)
    for i in range(50):
        m.score(f"u{i}", QUIET, T0)
    assert m.n_learned == 0 and weights(m) == {}
    assert m.predict(QUIET)[0] == pytest.approx(recency_prior(QUIET))  # the prior alone
    m.advance(T0 + H + 1)
    assert m.n_learned == 50 and weights(m) != {}


def test_deferred_zero_is_reported_now_and_learnt_at_its_deadline() -> None:
    m = RiskModel()
    m.score("u", ACTIVE, T0)
    [r] = m.on_activity("u", T0 + 60_000)
    assert r.label == 0 and list(m.pairs) == [(recency_prior(ACTIVE), 0)]
    assert m.n_learned == 0 and m.deferred_count == 1
    assert m.advance(T0 + H) == [] and m.n_learned == 0
    assert m.advance(T0 + H + 1) == []  # nothing newly resolved...
    assert m.n_learned == 1 and m.deferred_count == 0  # ...but the 0 is learnt now


def test_learn_on_resolve_false_only_resolves() -> None:
    m = RiskModel(learn_on_resolve=False)
    m.score("u", QUIET, T0)
    assert len(m.advance(T0 + H + 1)) == 1
    assert m.n_learned == 0 and len(m.pairs) == 1


# --- scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "level"),
    [(100.0, "critical"), (80.0, "critical"), (79.9, "high"), (60.0, "high"), (59.9, "medium"),
     (40.0, "medium"), (39.9, "low"), (0.0, "low")],
)  # fmt: skip
def test_levels(score: float, level: str) -> None:
    assert risk_level(score) == level


def test_horizon_transform() -> None:
    assert horizon_risk(0.3, 7, 7) == pytest.approx(0.3)
    assert horizon_risk(0.3, 7, 28) == pytest.approx(1 - 0.7**4)
    assert horizon_risk(0.0, 7, 28) == 0.0 and horizon_risk(1.0, 7, 28) == 1.0
    assert horizon_risk(0.5, 14, 7) == pytest.approx(1 - 0.5**0.5)


def trained(seed: int = 1, n: int = 600) -> RiskModel:
    """Users who go quiet drop, active ones come back: replayed through the public API."""
    rng = random.Random(seed)
    m = RiskModel()
    now = T0
    for i in range(n):
        quiet = rng.random() < 0.5
        x = {
            "recency_d": rng.uniform(3, 6) if quiet else rng.uniform(0, 1),
            "events_7d": rng.uniform(0, 1) if quiet else rng.uniform(2, 4),
            "score_mean": rng.uniform(0.5, 0.9),
        }
        m.score(f"u{i}", x, now)
        if not quiet:
            m.on_activity(f"u{i}", now + DAY_MS)
        now += 3_600_000
        m.advance(now)  # stream time drives the drops (and the deferred 0s) during the replay
    m.advance(now + 2 * H)
    return m


def test_quiet_users_get_higher_risk_after_training() -> None:
    m = trained()
    assert m.n_learned == 600 and m.pending_count == 0
    quiet = m.score("q", QUIET, T0 + 100 * DAY_MS, snapshot=False)
    active = m.score("a", ACTIVE, T0 + 100 * DAY_MS, snapshot=False)
    assert quiet.score > 60 > 40 > active.score
    assert quiet.level in ("high", "critical") and active.level == "low"
    assert quiet.monthly_risk > quiet.weekly_risk == pytest.approx(quiet.probability)
    assert 0 < active.confidence <= 1 and quiet.confidence > 0.4
    assert m.pending("q") == [] and m.pending("a") == []  # snapshot=False


def serving_logistic(m: RiskModel) -> RiskModel:
    """`m` serving its logistic candidate unmapped: what the tests of that candidate check."""
    m.served, m.calibration[LOGISTIC], m.tied = LOGISTIC, (1.0, 0.0), {}
    return m


def test_top_signals_are_named_positive_contributions() -> None:
    m = serving_logistic(trained())
    s = m.score("q", QUIET, T0 + 100 * DAY_MS)
    names = [sig.name for sig in s.top_signals]
    assert names[0] in ("recency_d", "events_7d") and set(names) <= set(QUIET) and len(names) <= 3
    assert all(sig.contribution > 0 for sig in s.top_signals)
    assert [sig.contribution for sig in s.top_signals] == sorted(
        (sig.contribution for sig in s.top_signals), reverse=True
    )
    scaler = m.model.steps["StandardScaler"]
    w = m.n_learned / (m.n_learned + PRIOR_LABELS)
    by_hand = {
        name: w * weights(m)[name] * (value - scaler.means[name]) / scaler.vars[name] ** 0.5
        for name, value in QUIET.items()
    }
    by_hand["recency_d"] += (1 - w) * _logit(recency_prior(QUIET))
    top = max(by_hand, key=lambda name: by_hand[name])
    assert names[0] == top and s.top_signals[0].contribution == pytest.approx(by_hand[top])
    assert s.top_signals[0].value == QUIET[top]
    assert names == [n for n in sorted(by_hand, key=lambda n: -by_hand[n]) if by_hand[n] > 0][:3]
    record = s.to_dict()
    assert record["signals"] == names and record["level"] == s.level
    assert record["updated_at"].endswith("Z")


def test_untrained_model_ranks_by_recency_with_no_confidence() -> None:
    m = RiskModel()
    s = m.score("u", QUIET, T0)
    assert s.score == round(100 * recency_prior(QUIET), 1) and s.level == risk_level(s.score)
    assert s.confidence == 0.0 and [sig.name for sig in s.top_signals] == ["recency_d"]
    assert m.assess("a", ACTIVE, T0).score < s.score  # quieter ranks higher before any label


def test_recency_prior_is_monotone_and_fades_with_evidence() -> None:
    priors = [recency_prior({"recency_d": d}) for d in (0.0, 1.0, 3.0, 7.0, 30.0)]
    assert priors == sorted(priors) and priors[2] == pytest.approx(0.5) and priors[-1] > 0.99
    m = serving_logistic(trained())
    w = m.n_learned / (m.n_learned + PRIOR_LABELS)
    scaler, classifier = m.model.steps.values()
    model_p = classifier.predict_proba_one(scaler.transform_one(dict(QUIET)))[True]
    assert m.predict(QUIET)[0] == pytest.approx(w * model_p + (1 - w) * recency_prior(QUIET))


def test_pure_pending_helpers() -> None:
    a = PendingLabel("u", T0, {}, 0.5)
    b = PendingLabel("u", T0 + 2 * DAY_MS, {}, 0.5)
    assert wants_snapshot([], T0, DAY_MS) and not wants_snapshot([a], T0 + DAY_MS - 1, DAY_MS)
    assert wants_snapshot([a], T0 + DAY_MS, DAY_MS)
    # Seen at T0 + 3 days: both scored before and within their horizon.
    assert resolve_seen([a, b], T0 + 3 * DAY_MS, H) == ([], [a, b])
    # Seen at a's deadline exactly: still retained; one ms later only b.
    assert resolve_seen([a, b], T0 + H, H) == ([], [a, b])
    assert resolve_seen([a, b], T0 + H + 1, H) == ([a], [b])
    assert resolve_seen([b], T0 + DAY_MS, H) == ([b], [])  # a late event from before the score
    assert resolve_expired([a, b], T0 + H, H, 0) == ([a, b], [])
    assert resolve_expired([a, b], T0 + H + 1, H, 0) == ([b], [a])
    assert resolve_expired([a, b], T0 + H + 1, H, 10) == ([a, b], [])


def test_ingest_learns_resolutions_made_elsewhere_like_its_own() -> None:
    own = RiskModel()
    fed = RiskModel()
    rng = random.Random(3)
    for i in range(200):
        x = QUIET if rng.random() < 0.5 else ACTIVE
        own.score(f"u{i}", x, T0 + i)
        pending = own.pending(f"u{i}")[0]
        label = 1 if x is QUIET else 0
        if label == 0:
            [r] = own.on_activity(f"u{i}", T0 + i + 1)
            fed.ingest(r)
        else:
            fed.ingest(Resolution(pending, 1, T0 + i + H + 1))
    own.advance(T0 + 400 + H + 1)
    fed.advance(T0 + 400 + H + 1)
    assert fed.n_learned == 200 and fed.deferred_count == 0
    assert sorted(fed.pairs) == sorted(own.pairs)
    assert fed.predict(QUIET)[0] == pytest.approx(own.predict(QUIET)[0], abs=0.05)
    assert fed.evaluation()["baseline_roc_auc"] == pytest.approx(1.0)


# --- evaluation -----------------------------------------------------------------------------


def test_exact_auc_hand_computed_with_ties() -> None:
    # Positives at 0.8, 0.4, 0.4; negatives at 0.4, 0.2, 0.1.
    # Pairs (pos, neg): 0.8 beats all 3; each 0.4 ties the 0.4 (1/2) and beats 0.2, 0.1.
    # U = 3 + 2 * (0.5 + 2) = 8 of 9 pairs.
    pairs = [(0.8, 1), (0.4, 1), (0.4, 1), (0.4, 0), (0.2, 0), (0.1, 0)]
    assert roc_auc(pairs) == pytest.approx(8 / 9)
    assert roc_auc(list(reversed(pairs))) == pytest.approx(8 / 9)
    assert roc_auc([(0.5, 1), (0.5, 0)]) == pytest.approx(0.5)
    assert roc_auc([(0.1, 1), (0.9, 0)]) == 0.0
    assert roc_auc([(0.3, 1), (0.4, 1)]) is None


def test_brier_and_calibration_bins() -> None:
    pairs = [(0.05, 0), (0.15, 0), (0.15, 1), (0.95, 1), (1.0, 1), (0.0, 0)]
    assert brier_score(pairs) == pytest.approx((0.05**2 + 0.15**2 + 0.85**2 + 0.05**2 + 0 + 0) / 6)
    assert brier_score([]) is None
    bins = calibration_bins(pairs, bins=10)
    assert [(b.lower, b.count) for b in bins] == [(0.0, 2), (0.1, 2), (0.9, 2)]
    assert bins[0].mean_predicted == pytest.approx(0.025) and bins[0].observed_rate == 0.0
    assert bins[1].mean_predicted == pytest.approx(0.15) and bins[1].observed_rate == 0.5
    assert bins[2].mean_predicted == pytest.approx(0.975) and bins[2].observed_rate == 1.0
    with pytest.raises(ValueError):
        calibration_bins(pairs, bins=0)


def test_prequential_pairs_use_the_prediction_made_at_scoring_time() -> None:
    m = trained()
    report = m.evaluation()
    assert report["n"] == 600 and report["positives"] == sum(y for _, y in m.pairs)
    assert report["roc_auc"] == pytest.approx(roc_auc(list(m.pairs)))
    assert report["roc_auc"] > 0.9
    assert sum(b["count"] for b in report["calibration"]) == 600


def test_eval_buffer_is_bounded() -> None:
    m = RiskModel(max_eval_pairs=10)
    for i in range(25):
        m.score(f"u{i}", QUIET, T0)
    m.advance(T0 + H + 1)
    assert len(m.pairs) == 10 and m.n_learned == 25


# --- persistence ----------------------------------------------------------------------------


def book_model() -> RiskModel:
    """A trained model with every part of its state in use: pending labels (two for one user),
    a deferred 0, stale heap entries, a clock and evaluation pairs."""
    m = trained()
    m.score("p", QUIET, T0 + 200 * DAY_MS)
    m.score("p", QUIET, T0 + 201 * DAY_MS)
    m.score("d", ACTIVE, T0 + 200 * DAY_MS)
    m.on_activity("d", T0 + 200 * DAY_MS + 1)  # a deferred 0
    m.score("n", {**ACTIVE, "applications_28d": 1.0}, T0 + 200 * DAY_MS)  # a feature never learnt
    return m


def test_persistence_round_trip() -> None:
    m = book_model()
    back = RiskModel.from_bytes(m.to_bytes())
    assert back.predict(QUIET) == m.predict(QUIET)
    assert (back.n_learned, back.pending_count, back.deferred_count) == (m.n_learned, 3, 1)
    assert back._book == m._book and back.clock_ms == m.clock_ms
    assert list(back.pairs) == list(m.pairs) and back.pending("p") == m.pending("p")
    assert list(back.baseline_pairs) == list(m.baseline_pairs) and back.pairs.maxlen == m.pairs.maxlen
    config = ("horizon_ms", "grace_ms", "snapshot_gap_ms", "learn_on_resolve", "defer_negatives")
    assert [getattr(back, k) for k in config] == [getattr(m, k) for k in config]
    assert back.pending("p")[0] == PendingLabel.from_dict(m.pending("p")[0].to_dict())
    assert back.to_bytes() == m.to_bytes()  # the same state, byte for byte
    # The restored book keeps working in event time.
    [r1, r2, r3] = back.advance(T0 + 202 * DAY_MS + H + 1)
    assert sorted((r.label, r.pending.user_id) for r in (r1, r2, r3)) == [(1, "n"), (1, "p"), (1, "p")]
    assert back.n_learned == m.n_learned + 4  # three drops and the deferred 0


def test_scoring_only_round_trip_is_small_and_predicts_the_same() -> None:
    m = book_model()
    data = m.to_bytes(scoring_only=True)
    scorer = RiskModel.from_bytes(data, scoring_only=True)
    for x in (QUIET, ACTIVE, {"recency_d": 2.0}, {"unseen": 1.0}):
        assert scorer.predict(x) == m.predict(x)
        assert scorer.assess("u", x, T0) == m.assess("u", x, T0)
    assert scorer.n_learned == m.n_learned and scorer._book == type(m._book)()
    assert (len(scorer.pairs), scorer.pending_count) == (0, 0)
    # Three features learnt and one only predicted on, the served candidate and its map, and
    # the candidates tied with it (all of them on these separable labels) with theirs: about
    # a kilobyte.
    assert len(data) < 1_300 < len(m.to_bytes())
    assert RiskModel.from_bytes(data).n_learned == m.n_learned  # a full reader takes it too
    with pytest.raises(IncompatibleModel, match="scoring-only"):
        RiskModel.from_bytes(m.to_bytes(), scoring_only=True)


def further_stream(model: RiskModel, seed: int) -> list[object]:
    """Drive a model through more of everything (scores, activity, drops, deferred 0s learnt,
    labels made elsewhere, a feature it never saw) and return every observable outcome."""
    rng = random.Random(seed)
    seen: list[object] = []
    now = T0 + 300 * DAY_MS
    for i in range(400):
        user = f"w{rng.randrange(60)}"
        x = {
            "recency_d": rng.uniform(0, 8),
            "events_7d": rng.uniform(0, 4),
            "score_mean": rng.uniform(0.4, 1.0),
        }
        if i > 200:
            x["late_feature"] = rng.uniform(-1, 1)
        s = model.score(user, x, now)
        seen.append((s.probability, s.score, s.top_signals, s.confidence))
        if rng.random() < 0.5:
            seen.append(model.on_activity(user, now + rng.randrange(1, 3 * DAY_MS)))
        if rng.random() < 0.1:
            pending = PendingLabel(f"elsewhere{i}", now - DAY_MS, x, 0.3)
            model.ingest(Resolution(pending, rng.randrange(2), now))
        now += rng.randrange(1, 6 * 3_600_000)
        seen.append(model.advance(now))
        seen.append(model.predict(QUIET))
    seen.append(model.advance(now + 3 * H))
    seen.append((model.n_learned, model.evaluation()))
    return seen


def test_a_restored_model_continues_learning_exactly_like_the_original() -> None:
    a = book_model()
    b = RiskModel.from_bytes(a.to_bytes())
    learnt = a.n_learned
    assert further_stream(b, seed=9) == further_stream(a, seed=9)  # == on floats: bit for bit
    assert b.n_learned == a.n_learned > learnt + 300  # it did learn on the way
    assert b.to_bytes() == a.to_bytes()
    # A scorer restored from the broadcast learns like the trainer's pipeline too.
    c = book_model()
    scorer = RiskModel.from_bytes(c.to_bytes(scoring_only=True))
    for x, y in ((QUIET, 1), (ACTIVE, 0), ({"recency_d": 9.0, "new": 2.0}, 1)):
        c.learn(x, y)
        scorer.learn(x, y)
        assert scorer.predict(x) == c.predict(x)


def test_refuses_another_format_but_not_another_river_release() -> None:
    data = RiskModel().to_bytes()
    head, _, body = data.partition(b"\n")
    magic, _, header = head.partition(b" ")
    assert json.loads(header) == {"format": FORMAT_VERSION, "river": RIVER_VERSION}

    def with_header(**fields: object) -> bytes:
        header = {"format": FORMAT_VERSION, "river": RIVER_VERSION, **fields}
        return magic + b" " + json.dumps(header).encode() + b"\n" + body

    # Plain numbers mean the same in any River release: the version is informative only.
    assert RiskModel.from_bytes(with_header(river="0.99.0")).n_learned == 0
    for other in (2, 4, "3", True, None):
        with pytest.raises(IncompatibleModel, match="format"):
            RiskModel.from_bytes(with_header(format=other))
    with pytest.raises(IncompatibleModel, match="header"):
        RiskModel.from_bytes(b"\x80\x04junk")


class _Touch:
    """A pickle that creates a file when it is loaded: what an attacker writes to the topic."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_forged_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    # The payload has teeth: loading it the old way creates its file.
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_Touch(canary))).close()
    assert canary.exists()

    target = tmp_path / "pwned"
    payload = pickle.dumps({"model": _Touch(target)})
    old_header = orjson.dumps({"format": 2, "river": RIVER_VERSION})
    new_header = orjson.dumps({"format": FORMAT_VERSION, "river": RIVER_VERSION})
    forged = [
        b"elimu-risk " + old_header + b"\n" + payload,  # what format 2 looked like
        b"elimu-risk " + new_header + b"\n" + payload,  # a pickle under today's header
        payload,
    ]
    for data in forged:
        for scoring_only in (False, True):
            with pytest.raises(IncompatibleModel):
                RiskModel.from_bytes(data, scoring_only=scoring_only)
    assert not target.exists()
    assert not hasattr(risk_module, "pickle")  # nothing in the module could unpickle


def test_pending_label_from_dict_checks_what_kafka_sent() -> None:
    good = PendingLabel("u", T0, {"recency_d": 1.0}, 0.5).to_dict()
    assert PendingLabel.from_dict(good).features == {"recency_d": 1.0}
    assert PendingLabel.from_dict({**good, "features": {"n": 3}}).features == {"n": 3.0}
    bad = [
        {**good, "user_id": "u\x00"},
        {**good, "user_id": "x" * 129},
        {**good, "user_id": 7},
        {**good, "scored_at_ms": "1"},
        {**good, "scored_at_ms": 1.5},
        {**good, "scored_at_ms": True},
        {**good, "probability": 1.5},
        {**good, "probability": "0.5"},
        {**good, "features": {"x": "1"}},
        {**good, "features": {"x": float("nan")}},
        {**good, "features": {f"f{i}": 0.0 for i in range(MAX_FEATURES + 1)}},
        {**good, "features": {"n" * (MAX_FEATURE_NAME_LEN + 1): 0.0}},
        {**good, "features": []},
        {k: v for k, v in good.items() if k != "probability"},
    ]
    for data in bad:
        with pytest.raises(ValueError):
            PendingLabel.from_dict(data)
