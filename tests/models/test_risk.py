"""The drop-off risk model: delayed labels in event time, levels, evaluation, persistence."""

from __future__ import annotations

import json
import random

import pytest
from river.__version__ import __version__ as RIVER_VERSION

from models.risk import (
    DAY_MS,
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


def test_top_signals_are_named_positive_contributions() -> None:
    m = trained()
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
    m = trained()
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


def test_persistence_round_trip() -> None:
    m = trained()
    m.score("p", QUIET, T0 + 200 * DAY_MS)
    m.score("d", ACTIVE, T0 + 200 * DAY_MS)
    m.on_activity("d", T0 + 200 * DAY_MS + 1)  # a deferred 0
    back = RiskModel.from_bytes(m.to_bytes())
    assert back.predict(QUIET)[0] == m.predict(QUIET)[0]
    assert (back.n_learned, back.pending_count, back.deferred_count) == (m.n_learned, 1, 1)
    assert list(back.pairs) == list(m.pairs) and back.pending("p") == m.pending("p")
    assert list(back.baseline_pairs) == list(m.baseline_pairs)
    scorer = RiskModel.from_bytes(m.to_bytes(scoring_only=True))
    assert scorer.predict(QUIET)[0] == m.predict(QUIET)[0] and scorer.n_learned == m.n_learned
    assert (len(scorer.pairs), scorer.pending_count) == (0, 0)
    assert len(m.to_bytes(scoring_only=True)) < len(m.to_bytes()) / 2
    assert back.pending("p")[0] == PendingLabel.from_dict(m.pending("p")[0].to_dict())
    # The restored book keeps working in event time.
    [r] = back.advance(T0 + 200 * DAY_MS + H + 1)
    assert (r.label, r.pending.user_id) == (1, "p") and back.n_learned == m.n_learned + 2


def test_refuses_another_river_minor_or_format() -> None:
    data = RiskModel().to_bytes()
    head, _, body = data.partition(b"\n")
    magic, _, header = head.partition(b" ")
    assert json.loads(header) == {"format": 2, "river": RIVER_VERSION}

    def with_header(**fields: object) -> bytes:
        return (
            magic + b" " + json.dumps({"format": 2, "river": RIVER_VERSION, **fields}).encode() + b"\n" + body
        )

    major, minor, *_ = RIVER_VERSION.split(".")
    other_minor = f"{major}.{int(minor) + 1}.0"
    with pytest.raises(IncompatibleModel, match=rf"river {other_minor}.*river {RIVER_VERSION}"):
        RiskModel.from_bytes(with_header(river=other_minor))
    with pytest.raises(IncompatibleModel, match="format"):
        RiskModel.from_bytes(with_header(format=1))
    with pytest.raises(IncompatibleModel, match="header"):
        RiskModel.from_bytes(b"\x80\x04junk")
    # Another patch release of the same minor loads.
    assert RiskModel.from_bytes(with_header(river=f"{major}.{minor}.99")).n_learned == 0
