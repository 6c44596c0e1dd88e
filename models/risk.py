"""Drop-off risk: an online logistic model trained on delayed labels, in event time.

The question asked of the model: "given this user's features now, will they be seen again within
the horizon (default 7 days)?" A user is *dropped* (label 1) when the horizon passes in event time
with no activity, *retained* (label 0) when any activity arrives before it.

Delayed labels. `score(user_id, features, now_ms)` predicts and snapshots the features and the
probability as a `PendingLabel` (at most one per user per `snapshot_gap_ms`, default 1 day, so an
engine may call `score` on every event without flooding the book with near-identical rows).
`on_activity(user_id, ts_ms)` resolves that user's pendings scored before `ts_ms` whose horizon has
not passed as 0 (activity exactly at the deadline counts as seen). `advance(now_ms)` resolves
every pending whose deadline + `grace_ms` lies strictly before `now_ms` as 1. Both are driven by the
stream's event time (watermark), never the wall clock, so a replay resolves exactly what live did.
Learning happens only on resolution (`learn_one` on the snapshot), so a prediction is always
made by a model that had not seen its own label: the evaluation below is prequential.

When it learns: a 0 is known as soon as the user comes back (hours, usually) but a 1 only when the
horizon has passed, so a model learning each label at resolution has, at any moment, learnt the
0s of the last week but only the 1s scored more than a week ago. Its stream of labels is
biased towards 0 (worst in the first week, when it has seen no 1 at all) and it drifts with the
lag, which shows as under-predicted risk. With `defer_negatives=True` (the default) a 0 is
resolved, reported and evaluated at once but LEARNT at its deadline, like a 1, so every example
enters training exactly one horizon after it was scored, whatever its label. The benchmark
measured +0.02-0.03 prequential AUC and a better Brier score for it; `defer_negatives=False`
learns every label at the moment it resolves.
`grace_ms` is the allowed lateness: an event arriving after its user's label was resolved as 1 is
too late to change it (the book says so; the engine should set grace to its lateness bound).

Model. `river.compose.Pipeline(StandardScaler(), LogisticRegression())`, both learning only on
resolved labels (a scaler that learnt on every `score` would move the inputs of a prediction after
its snapshot was taken, and double-count users who are scored often). Why a single linear model
and not an ensemble or trees: (1) `top_signals` must say *why*, and weight x standardized value is
an exact additive decomposition of the logit; (2) log-loss SGD gives usable probabilities for
the risk score and the weekly/monthly transform without a separate calibrator; (3) it is cheap
to score on every event and encodes to about 2 kB, which matters for a broadcast. The
non-linearities that matter (recency, counts) are handled by the log1p transforms of
`models.risk_features`. Until a first label is learnt every prediction is 0.5 (an untrained
scaler maps inputs to 0), which `confidence` reports as 0.

Weekly and monthly risk. The model estimates p = P(dropped within the horizon H). Assuming a
constant hazard (each H-long period independently carries the same drop probability), the risk of
dropping within d days is 1 - (1 - p) ** (d / H): `weekly_risk` (d = 7, equal to p when H = 7
days) and `monthly_risk` (d = 28). This overstates the long-run risk of steady users and
understates it for those already fading, but it is monotone in p and costs nothing; a survival
model proper is future work. `score` (0-100) is 100 x weekly_risk; levels follow the contract:
critical >= 80, high >= 60, medium >= 40, low below.

Confidence = n / (n + 500) x (0.5 + |p - 0.5|), with n the labels learnt: 0 before any label,
approaching |p - 0.5| + 0.5 as evidence accumulates, higher for decisive predictions.

Evaluation. Every resolution appends (probability at scoring time, label) to a bounded buffer
(last 50 000). `roc_auc` is EXACT (Mann-Whitney: rank by sorting, ties get their average rank),
not River's `metrics.ROCAUC`, which approximates with a fixed number of thresholds.
`calibration_bins` gives, per equal-width probability bin, the mean prediction and the observed
drop rate; `brier_score` is the mean squared error of the probabilities.

Persistence. `to_bytes()` = a one-line header (`elimu-risk {"format": 3, "river": ...}`) and a
JSON document of plain numbers and strings (models/risk_codec.py): the pipeline's learnt numbers
and hyperparameters, the pending book, the clock, the evidence count and the evaluation pairs.
It never holds code: these bytes travel on a Kafka topic anyone with broker access could write,
and unpickling them would run whatever a forged record said. `from_bytes` checks every value's
type and bounds, refuses a forged or corrupt record with `IncompatibleModel` (a `ValueError`)
and nothing else, and refuses inputs over 64 MiB (1 MiB with `scoring_only=True`), over 256
features or over `max_eval_pairs` pairs. A restored model predicts and continues learning
exactly as the original would (floats round-trip bit for bit). Format 2 (a pickle) is refused,
never loaded: the trainer then relearns from the labels topic. The River version is written for
operators but not checked: the numbers of a scaler and a logistic regression mean the same in
any River release (a pickle, by contrast, is bound to River's private class layout), and the
codec rebuilds the pipeline with the running release's classes.

Consistency across workers (plan; only the pure parts live here). River's linear models cannot
be merged in general (SGD state, per-feature scaler moments and optimizer state are not
additive), so averaging per-partition copies is not an option. The choice is a single *trainer*:
- each partition keeps, for its own users (key = user_id), the `ActivityProfile` and the
  pending labels (`PendingLabel.to_dict`), and resolves them from its own events and stream time
  with `RiskModel(learn_on_resolve=False)`; resolutions (features, probability, label) go to a
  one-partition `risk-labels` topic;
- one trainer agent consumes it, calls `learn(features, label)` in topic order (deterministic,
  so a replay rebuilds the same model), keeps the prequential evaluation, and publishes
  `to_bytes()` to a compacted `risk-model` topic every few minutes;
- every worker scores with the latest snapshot (`from_bytes`) and swaps it in atomically.
All users are then scored by one model version trained on every label; the cost is a few minutes
of staleness on top of labels that are already up to 7 days late. The alternative (one model per
partition, persisted in that partition's changelog) trains each copy on 1/N of the labels and
scores users of different partitions with differently calibrated models; it is what `RiskModel`
does when used alone (the default `learn_on_resolve=True`), which the benchmark measures.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.events import MAX_TS_MS, format_ts
from models.risk_codec import (
    MAX_MODEL_BYTES,
    MAX_SCORER_BYTES,
    FeatureNames,
    check_features,
    decode_pipeline,
    decode_rows,
    encode_pipeline,
    encode_rows,
    need,
    pack_bytes,
    pack_floats,
    read_bool,
    read_float,
    read_int,
    read_list,
    read_object,
    read_user,
    read_users,
    unpack_bytes,
    unpack_floats,
)

# `from_bytes` raises it: re-exported so callers import the model and its error from one place.
from models.risk_codec import IncompatibleModel as IncompatibleModel
from models.time_units import DAY_MS

DEFAULT_HORIZON_MS = 7 * DAY_MS
DEFAULT_SNAPSHOT_GAP_MS = DAY_MS
MAX_EVAL_PAIRS = 50_000
CONFIDENCE_HALF = 500
TOP_SIGNALS = 3
#: 3: plain data (models/risk_codec.py); 2 was a pickle and is refused unread.
FORMAT_VERSION = 3
_MAGIC = b"elimu-risk"
#: Labels after which the model and the recency prior weigh the same (see `recency_prior`).
PRIOR_LABELS = 200
#: The prior's logistic in days of silence: P(drop) = 1 / (1 + exp(-(d - midpoint) x slope)).
PRIOR_MIDPOINT_D = 3.0
PRIOR_SLOPE = 0.6

# Contract §6: critical >= 80, high >= 60, medium >= 40, low below.
LEVELS: tuple[tuple[float, str], ...] = ((80.0, "critical"), (60.0, "high"), (40.0, "medium"))


def risk_level(score: float) -> str:
    for threshold, name in LEVELS:
        if score >= threshold:
            return name
    return "low"


def horizon_risk(p: float, horizon_days: float, days: float) -> float:
    """P(drop within `days`) from p = P(drop within `horizon_days`) under a constant hazard."""
    p = min(max(p, 0.0), 1.0)
    return 1.0 - float((1.0 - p) ** (days / horizon_days))


def recency_prior(features: Mapping[str, float]) -> float:
    """P(drop) from days of silence alone, for a model that has learnt little or nothing yet.

    A logistic in `recency_d` (0.14 for a user seen just now, 0.5 after 3 quiet days, 0.92 after a
    week): the one signal known to rank drop-off well before any label exists (the benchmark's
    recency-only rule). `RiskModel.predict` blends it with the model by evidence,
    w = n / (n + PRIOR_LABELS), so the first week (no label resolved yet) is ranked by recency
    instead of a flat 0.5, and the prior fades as labels arrive.
    """
    days = float(features.get("recency_d", 0.0))
    return 1.0 / (1.0 + math.exp(-(days - PRIOR_MIDPOINT_D) * PRIOR_SLOPE))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class PendingLabel:
    user_id: str
    scored_at_ms: int
    features: dict[str, float]
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "scored_at_ms": self.scored_at_ms,
            "features": dict(self.features),
            "probability": self.probability,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingLabel:
        """Checked like the model's own book: pending labels arrive from Kafka too (the risk
        labels topic, the per-user changelog). Raises `IncompatibleModel` (a ValueError)."""
        features = read_object(need(data, "features"), "features")
        check_features(features, "features")
        return cls(
            user_id=read_user(need(data, "user_id"), "user_id"),
            scored_at_ms=read_int(need(data, "scored_at_ms"), "scored_at_ms", 0, MAX_TS_MS),
            features={k: float(v) for k, v in features.items()},
            probability=read_float(need(data, "probability"), "probability", 0.0, 1.0),
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    """A pending label's outcome: 1 = dropped (horizon passed), 0 = seen again in time."""

    pending: PendingLabel
    label: int
    resolved_at_ms: int


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    contribution: float  # weight x standardized value: its share of the logit
    value: float


@dataclass(frozen=True, slots=True)
class RiskScore:
    user_id: str
    score: float  # 0-100
    level: str
    probability: float
    weekly_risk: float
    monthly_risk: float
    confidence: float
    top_signals: tuple[Signal, ...]
    scored_at_ms: int

    def to_dict(self) -> dict[str, Any]:
        """The `risk-scores` record: contract fields first (`score`, `level`, `updated_at`)."""
        return {
            "user_id": self.user_id,
            "score": self.score,
            "level": self.level,
            "updated_at": format_ts(self.scored_at_ms),
            "signals": [s.name for s in self.top_signals],
            "weekly_risk": round(self.weekly_risk, 4),
            "monthly_risk": round(self.monthly_risk, 4),
            "confidence": self.confidence,
            "contributions": {s.name: round(s.contribution, 4) for s in self.top_signals},
        }


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


# ---------------------------------------------------------------------------------------------
# Evaluation (pure functions over (probability, label) pairs)


def roc_auc(pairs: Iterable[tuple[float, int]]) -> float | None:
    """Exact ROC AUC (Mann-Whitney U / (P x N)); tied probabilities share their average rank.

    None when one class is absent (AUC is undefined then).
    """
    ordered = sorted(pairs, key=lambda pair: pair[0])
    positives = sum(1 for _, y in ordered if y)
    negatives = len(ordered) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1][0] == ordered[i][0]:
            j += 1
        average_rank = (i + j) / 2.0 + 1.0  # ranks are 1-based
        rank_sum += average_rank * sum(1 for k in range(i, j + 1) if ordered[k][1])
        i = j + 1
    u = rank_sum - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def brier_score(pairs: Iterable[tuple[float, int]]) -> float | None:
    items = list(pairs)
    if not items:
        return None
    return sum((p - y) ** 2 for p, y in items) / len(items)


def calibration_bins(pairs: Iterable[tuple[float, int]], bins: int = 10) -> list[CalibrationBin]:
    """Equal-width bins over [0, 1] (p = 1 falls in the last); empty bins are omitted."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    sums = [0.0] * bins
    positives = [0] * bins
    counts = [0] * bins
    for p, y in pairs:
        b = min(int(p * bins), bins - 1) if p > 0 else 0
        sums[b] += p
        positives[b] += 1 if y else 0
        counts[b] += 1
    return [
        CalibrationBin(b / bins, (b + 1) / bins, counts[b], sums[b] / counts[b], positives[b] / counts[b])
        for b in range(bins)
        if counts[b]
    ]


# ---------------------------------------------------------------------------------------------
# Pending labels of one user (pure; used by `RiskModel`'s own book and by per-user engine state)


def evaluation(
    pairs: Iterable[tuple[float, int]], baseline_pairs: Iterable[tuple[float, int]], bins: int = 10
) -> dict[str, Any]:
    """How well scores ranked and were calibrated on resolved labels (``pairs`` of
    (predicted, label)), beside the recency-only baseline on the same labels."""
    pairs = list(pairs)
    return {
        "n": len(pairs),
        "positives": sum(y for _, y in pairs),
        "roc_auc": roc_auc(pairs),
        "roc_auc_method": "exact (Mann-Whitney, average ranks for ties)",
        # The same labels ranked by days of silence alone: what the model must beat.
        "baseline_roc_auc": roc_auc(baseline_pairs),
        "brier": brier_score(pairs),
        "calibration": [
            {
                "lower": b.lower,
                "upper": b.upper,
                "count": b.count,
                "mean_predicted": b.mean_predicted,
                "observed_rate": b.observed_rate,
            }
            for b in calibration_bins(pairs, bins)
        ],
    }


def wants_snapshot(pendings: Sequence[PendingLabel], now_ms: int, gap_ms: int) -> bool:
    """Whether a score at `now_ms` becomes a new pending label (one per `gap_ms` per user)."""
    return not pendings or now_ms - pendings[-1].scored_at_ms >= gap_ms


def resolve_seen(
    pendings: Sequence[PendingLabel], ts_ms: int, horizon_ms: int
) -> tuple[list[PendingLabel], list[PendingLabel]]:
    """(kept, retained): the user was active at `ts_ms`; pendings scored before it and still within
    their horizon are retained (label 0; activity exactly at the deadline counts as seen). Expired
    ones are kept for `resolve_expired` (they resolve as 1)."""
    kept: list[PendingLabel] = []
    retained: list[PendingLabel] = []
    for pending in pendings:
        if pending.scored_at_ms < ts_ms <= pending.scored_at_ms + horizon_ms:
            retained.append(pending)
        else:
            kept.append(pending)
    return kept, retained


def resolve_expired(
    pendings: Sequence[PendingLabel], now_ms: int, horizon_ms: int, grace_ms: int
) -> tuple[list[PendingLabel], list[PendingLabel]]:
    """(kept, dropped): pendings whose deadline + grace lies strictly before `now_ms` (label 1)."""
    kept: list[PendingLabel] = []
    dropped: list[PendingLabel] = []
    for pending in pendings:
        (dropped if pending.scored_at_ms + horizon_ms + grace_ms < now_ms else kept).append(pending)
    return kept, dropped


# ---------------------------------------------------------------------------------------------
# The model


def default_pipeline(learning_rate: float = 0.01, l2: float = 1e-4) -> Any:
    """StandardScaler -> LogisticRegression, intercept learning at the weights' rate (labels are
    imbalanced; River's default intercept rate of 0.01 takes long to find the base rate)."""
    # River is imported where a model is built, not with this module: its linear models pull in
    # SciPy (2 s of start-up), and the API and the CLI import this module only for scores,
    # levels and evaluations.
    from river import compose, linear_model, optim, preprocessing

    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), intercept_lr=learning_rate, l2=l2
        ),
    )


@dataclass
class _Book:
    pending: dict[str, list[PendingLabel]] = field(default_factory=dict)
    deadlines: list[tuple[int, int, str]] = field(default_factory=list)  # (deadline, scored_at, user)
    # Resolved as 0, waiting for their deadline to be learnt (defer_negatives).
    deferred: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)


class RiskModel:
    """Online drop-off classifier with delayed labels; see the module docstring."""

    def __init__(
        self,
        horizon_ms: int = DEFAULT_HORIZON_MS,
        *,
        grace_ms: int = 0,
        snapshot_gap_ms: int = DEFAULT_SNAPSHOT_GAP_MS,
        max_eval_pairs: int = MAX_EVAL_PAIRS,
        learn_on_resolve: bool = True,
        defer_negatives: bool = True,
        pipeline: Any = None,
    ) -> None:
        if horizon_ms <= 0:
            raise ValueError("horizon_ms must be positive")
        self.horizon_ms = horizon_ms
        self.grace_ms = grace_ms
        self.snapshot_gap_ms = snapshot_gap_ms
        self.learn_on_resolve = learn_on_resolve
        self.defer_negatives = defer_negatives
        self.model: Any = default_pipeline() if pipeline is None else pipeline
        self.n_learned = 0
        self.clock_ms: int | None = None
        self.pairs: deque[tuple[float, int]] = deque(maxlen=max_eval_pairs)
        # (recency_d at scoring time, label) of the same resolutions: the recency-only baseline.
        self.baseline_pairs: deque[tuple[float, int]] = deque(maxlen=max_eval_pairs)
        self._book = _Book()

    # --- prediction -------------------------------------------------------------------------

    def _steps(self) -> tuple[Any, Any]:
        steps = list(self.model.steps.values())
        return steps[0], steps[-1]

    def _contributions(self, x: Mapping[str, float]) -> tuple[float, dict[str, float]]:
        """P(dropped within the horizon) and each feature's share of the logit.

        The model's probability blended with `recency_prior` by evidence (w = n / (n + 200)):
        contributions are the model's, scaled by w, with the prior's logit share, (1 - w) x
        logit(prior), added to `recency_d`.
        """
        scaler, classifier = self._steps()
        standardized: dict[str, float] = scaler.transform_one(dict(x))
        model_p = float(classifier.predict_proba_one(standardized)[True])
        weights = classifier._weights  # the VectorDict itself: `.weights` copies it on every call
        w = self.n_learned / (self.n_learned + PRIOR_LABELS)
        prior = recency_prior(x)
        contributions = {name: w * float(weights.get(name, 0.0)) * z for name, z in standardized.items()}
        if "recency_d" in contributions:
            contributions["recency_d"] += (1.0 - w) * _logit(prior)
        return w * model_p + (1.0 - w) * prior, contributions

    def predict(self, features: Mapping[str, float]) -> tuple[float, list[Signal]]:
        """P(dropped within the horizon) and every feature's contribution (no side effects)."""
        probability, contributions = self._contributions(features)
        return probability, [Signal(name, c, float(features[name])) for name, c in contributions.items()]

    def assess(self, user_id: str, features: Mapping[str, float], now_ms: int) -> RiskScore:
        """Score a user at event time `now_ms`, without keeping a pending label."""
        probability, contributions = self._contributions(features)
        horizon_days = self.horizon_ms / DAY_MS
        weekly = horizon_risk(probability, horizon_days, 7.0)
        monthly = horizon_risk(probability, horizon_days, 28.0)
        score = round(100.0 * weekly, 1)
        evidence = self.n_learned / (self.n_learned + CONFIDENCE_HALF)
        confidence = round(evidence * (0.5 + abs(probability - 0.5)), 3)
        rising = heapq.nsmallest(TOP_SIGNALS, ((-c, name) for name, c in contributions.items() if c > 0))
        return RiskScore(
            user_id=user_id,
            score=score,
            level=risk_level(score),
            probability=probability,
            weekly_risk=weekly,
            monthly_risk=monthly,
            confidence=confidence,
            top_signals=tuple(Signal(name, -neg, float(features[name])) for neg, name in rising),
            scored_at_ms=now_ms,
        )

    def score(
        self, user_id: str, features: Mapping[str, float], now_ms: int, *, snapshot: bool = True
    ) -> RiskScore:
        """Score a user at event time `now_ms`; snapshot a pending label unless one is recent."""
        result = self.assess(user_id, features, now_ms)
        if snapshot:
            self._snapshot(user_id, dict(features), now_ms, result.probability)
        return result

    def _snapshot(self, user_id: str, features: dict[str, float], now_ms: int, probability: float) -> None:
        queue = self._book.pending.setdefault(user_id, [])
        if not wants_snapshot(queue, now_ms, self.snapshot_gap_ms):
            return
        pending = PendingLabel(user_id, now_ms, features, probability)
        queue.append(pending)
        heapq.heappush(self._book.deadlines, (now_ms + self.horizon_ms, now_ms, user_id))

    # --- label resolution -------------------------------------------------------------------

    def on_activity(self, user_id: str, ts_ms: int) -> list[Resolution]:
        """The user was active at `ts_ms`: pendings scored before it, still within their horizon,
        resolve as 0 (retained). Expired ones are left to `advance` (they resolve as 1)."""
        queue = self._book.pending.get(user_id)
        if not queue:
            return []
        kept, retained = resolve_seen(queue, ts_ms, self.horizon_ms)
        if kept:
            self._book.pending[user_id] = kept
        else:
            del self._book.pending[user_id]
        return [self._resolve(pending, 0, ts_ms) for pending in retained]

    def advance(self, now_ms: int) -> list[Resolution]:
        """Stream time reached `now_ms`: pendings with deadline + grace < now resolve as 1."""
        if self.clock_ms is not None and now_ms <= self.clock_ms:
            return []
        self.clock_ms = now_ms
        resolved: list[Resolution] = []
        deadlines = self._book.deadlines
        while deadlines and deadlines[0][0] + self.grace_ms < now_ms:
            _, scored_at, user_id = heapq.heappop(deadlines)
            retained = self._book.deferred.pop((user_id, scored_at), None)
            if retained is not None:
                self.learn(retained, 0)  # resolved as 0 earlier; learnt now, at its deadline
                continue
            queue = self._book.pending.get(user_id)
            if not queue:
                continue  # resolved as 0 and learnt already: a stale heap entry
            for i, pending in enumerate(queue):
                if pending.scored_at_ms == scored_at:
                    del queue[i]
                    resolved.append(self._resolve(pending, 1, now_ms))
                    break
            if not queue:
                del self._book.pending[user_id]
        return resolved

    def _resolve(self, pending: PendingLabel, label: int, at_ms: int) -> Resolution:
        resolution = Resolution(pending, label, at_ms)
        self._record(resolution, scheduled=True)
        return resolution

    def ingest(self, resolution: Resolution) -> None:
        """Evaluate and learn a resolution made elsewhere: the engine's trainer is fed the
        resolutions of every partition (see the module docstring). Drive `advance` with the
        resolutions' time so deferred 0s are learnt at their deadlines."""
        self._record(resolution, scheduled=False)

    def _record(self, resolution: Resolution, *, scheduled: bool) -> None:
        pending, label = resolution.pending, resolution.label
        self.pairs.append((pending.probability, label))
        self.baseline_pairs.append((pending.features.get("recency_d", 0.0), label))
        if not self.learn_on_resolve:
            return
        if label == 0 and self.defer_negatives:
            key = (pending.user_id, pending.scored_at_ms)
            if key not in self._book.deferred:
                self._book.deferred[key] = pending.features
                if not scheduled:
                    # Scored elsewhere: no deadline of ours to learn it at yet.
                    heapq.heappush(
                        self._book.deadlines,
                        (pending.scored_at_ms + self.horizon_ms, pending.scored_at_ms, pending.user_id),
                    )
        else:
            self.learn(pending.features, label)

    def learn(self, features: Mapping[str, float], label: int) -> None:
        self.model.learn_one(dict(features), bool(label))
        self.n_learned += 1

    def pending(self, user_id: str) -> list[PendingLabel]:
        return list(self._book.pending.get(user_id, ()))

    @property
    def pending_count(self) -> int:
        """Labels not resolved yet (the deferred 0s, resolved but not yet learnt, excluded)."""
        return sum(len(q) for q in self._book.pending.values())

    @property
    def deferred_count(self) -> int:
        return len(self._book.deferred)

    # --- evaluation -------------------------------------------------------------------------

    def evaluation(self, bins: int = 10) -> dict[str, Any]:
        return evaluation(self.pairs, self.baseline_pairs, bins)

    # --- persistence ------------------------------------------------------------------------

    def to_bytes(self, *, scoring_only: bool = False) -> bytes:
        """The whole state, or with `scoring_only` just what predicting needs (the pipeline and
        the evidence count): about 2 kB, what the engine broadcasts to every worker.

        Raises ValueError for a state no reader would accept (a non-finite number, over
        MAX_FEATURES feature names, a pipeline other than `default_pipeline`'s shape)."""
        names = FeatureNames()
        book = _Book() if scoring_only else self._book
        pending = [p for queue in book.pending.values() for p in queue]
        deferred = list(book.deferred.items())
        pairs = () if scoring_only else self.pairs
        baseline = () if scoring_only else self.baseline_pairs
        body = {
            "config": {
                "horizon_ms": self.horizon_ms,
                "grace_ms": self.grace_ms,
                "snapshot_gap_ms": self.snapshot_gap_ms,
                "max_eval_pairs": self.pairs.maxlen,
                "learn_on_resolve": self.learn_on_resolve,
                "defer_negatives": self.defer_negatives,
            },
            "pipeline": encode_pipeline(self.model, names),
            "n_learned": self.n_learned,
            "clock_ms": self.clock_ms,
            "pending": {
                "user": [p.user_id for p in pending],
                "scored_at": [p.scored_at_ms for p in pending],
                "probability": pack_floats(p.probability for p in pending),
                "x": encode_rows([p.features for p in pending], names),
            },
            "deferred": {
                "user": [user for (user, _), _ in deferred],
                "scored_at": [scored_at for (_, scored_at), _ in deferred],
                "x": encode_rows([features for _, features in deferred], names),
            },
            # The heap as a list, in heap order: restored as is, it is the same heap.
            "deadlines": {
                "deadline": [d for d, _, _ in book.deadlines],
                "scored_at": [s for _, s, _ in book.deadlines],
                "user": [u for _, _, u in book.deadlines],
            },
            "pairs": _pack_pairs(pairs),
            "baseline_pairs": _pack_pairs(baseline),
        }
        body["features"] = names.names  # last: the rows above added theirs
        from river.__version__ import __version__ as river_version

        header = orjson.dumps({"format": FORMAT_VERSION, "river": river_version})
        return _MAGIC + b" " + header + b"\n" + orjson.dumps(body)

    @classmethod
    def from_bytes(cls, data: bytes, *, scoring_only: bool = False) -> RiskModel:
        """The model `to_bytes` wrote, or `IncompatibleModel` (and no other exception) for
        anything else. `scoring_only=True` is for the broadcast scorer: 1 MiB at most, and a
        record that carries a book or evaluation pairs is refused."""
        limit = MAX_SCORER_BYTES if scoring_only else MAX_MODEL_BYTES
        if not isinstance(data, bytes):
            raise IncompatibleModel("a serialized RiskModel is bytes")
        if len(data) > limit:
            raise IncompatibleModel(f"serialized RiskModel is {len(data)} bytes; the limit is {limit}")
        end = data.find(b"\n", 0, _MAX_HEADER)
        if end < 0 or not data.startswith(_MAGIC + b" "):
            raise IncompatibleModel("not a serialized RiskModel (missing header)")
        try:
            header = orjson.loads(data[len(_MAGIC) + 1 : end])
        except orjson.JSONDecodeError as exc:
            raise IncompatibleModel(f"unreadable RiskModel header: {exc}") from exc
        written = header.get("format") if isinstance(header, dict) else None
        if type(written) is not int or written != FORMAT_VERSION:
            raise IncompatibleModel(
                f"RiskModel format {written!r} cannot be read by format {FORMAT_VERSION}"
                + (" (format 2 is a pickle: never loaded)" if written == 2 else "")
            )
        try:
            body = orjson.loads(data[end + 1 :])
            return cls._from_document(read_object(body, "RiskModel"), scoring_only)
        except orjson.JSONDecodeError as exc:
            raise IncompatibleModel(f"unreadable RiskModel: {exc}") from exc
        except IncompatibleModel:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            # Every value is checked above; this net keeps a reader's own bug from becoming a
            # crash of the caller (the broadcast feed, the trainer's restore).
            raise IncompatibleModel(f"RiskModel refused: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _from_document(cls, body: dict[str, Any], scoring_only: bool) -> RiskModel:
        config = read_object(need(body, "config"), "config")
        max_eval_pairs = read_int(need(config, "max_eval_pairs"), "max_eval_pairs", 0, MAX_EVAL_PAIRS)
        names = FeatureNames.read(need(body, "features"))
        model = cls(
            read_int(need(config, "horizon_ms"), "horizon_ms", 1),
            grace_ms=read_int(need(config, "grace_ms"), "grace_ms"),
            snapshot_gap_ms=read_int(need(config, "snapshot_gap_ms"), "snapshot_gap_ms"),
            max_eval_pairs=max_eval_pairs,
            learn_on_resolve=read_bool(need(config, "learn_on_resolve"), "learn_on_resolve"),
            defer_negatives=read_bool(need(config, "defer_negatives"), "defer_negatives"),
            pipeline=decode_pipeline(need(body, "pipeline"), names),
        )
        model.n_learned = read_int(need(body, "n_learned"), "n_learned")
        clock = need(body, "clock_ms")
        model.clock_ms = None if clock is None else read_int(clock, "clock_ms")
        model.pairs.extend(_unpack_pairs(need(body, "pairs"), max_eval_pairs, "pairs", 0.0, 1.0))
        model.baseline_pairs.extend(
            _unpack_pairs(need(body, "baseline_pairs"), max_eval_pairs, "baseline_pairs", -math.inf, math.inf)
        )
        model._book = _read_book(body, names)
        if scoring_only and (model.pairs or model.baseline_pairs or model._book != _Book()):
            raise IncompatibleModel("a scoring-only model carries no pending labels or evaluation")
        return model


#: A header is `elimu-risk {"format": 3, "river": "x.y.z"}`: far shorter than this.
_MAX_HEADER = 256


def _columns(value: Any, what: str, names: Sequence[str]) -> tuple[dict[str, Any], list[list[Any]], int]:
    """A table of parallel columns: the object, each named column, and their common length."""
    table = read_object(value, what)
    columns = [read_list(need(table, name), f"{what}.{name}") for name in names]
    count = len(columns[0])
    if any(len(c) != count for c in columns):
        raise IncompatibleModel(f"{what}: columns of different lengths")
    return table, columns, count


def _read_book(body: dict[str, Any], names: FeatureNames) -> _Book:
    book = _Book()
    table, (users, scored), count = _columns(need(body, "pending"), "pending", ("user", "scored_at"))
    probabilities = unpack_floats(need(table, "probability"), "pending.probability", count)
    if count and not 0.0 <= min(probabilities) <= max(probabilities) <= 1.0:
        raise IncompatibleModel("pending probability must lie in [0, 1]")
    rows = decode_rows(need(table, "x"), names, count, "pending.x")
    for user, at, p, x in zip(read_users(users, "pending user"), scored, probabilities, rows, strict=True):
        book.pending.setdefault(user, []).append(PendingLabel(user, read_int(at, "scored_at"), x, p))

    table, (users, scored), count = _columns(need(body, "deferred"), "deferred", ("user", "scored_at"))
    rows = decode_rows(need(table, "x"), names, count, "deferred.x")
    for user, at, x in zip(read_users(users, "deferred user"), scored, rows, strict=True):
        book.deferred[(user, read_int(at, "scored_at"))] = x
    if len(book.deferred) != count:
        raise IncompatibleModel("deferred labels repeat")

    columns = ("deadline", "scored_at", "user")
    _, (deadlines, scored, users), _ = _columns(need(body, "deadlines"), "deadlines", columns)
    book.deadlines = [
        (read_int(d, "deadline"), read_int(at, "scored_at"), u)
        for d, at, u in zip(deadlines, scored, read_users(users, "deadline user"), strict=True)
    ]
    # A no-op on the heap `to_bytes` wrote (heapify moves nothing in a valid heap); a forged
    # order is made a heap again instead of resolving labels out of time order.
    heapq.heapify(book.deadlines)
    return book


def _pack_pairs(pairs: Iterable[tuple[float, int]]) -> dict[str, Any]:
    """(float64 values, one byte per label) in base64: 12 bytes a pair instead of ~25 as JSON,
    which matters for a checkpoint of 20 000 pairs written every 30 s."""
    items = list(pairs)
    return {
        "n": len(items),
        "p": pack_floats(p for p, _ in items),
        "y": pack_bytes(bytes(1 if y else 0 for _, y in items)),
    }


def _unpack_pairs(value: Any, limit: int, what: str, lo: float, hi: float) -> list[tuple[float, int]]:
    packed = read_object(value, what)
    count = read_int(need(packed, "n"), f"{what}.n", 0, limit)
    values = unpack_floats(need(packed, "p"), f"{what}.p", count)
    labels = unpack_bytes(need(packed, "y"), f"{what}.y", count)
    if labels.translate(None, b"\x00\x01"):
        raise IncompatibleModel(f"{what}: every label is 0 or 1")
    if count and not lo <= min(values) <= max(values) <= hi:
        raise IncompatibleModel(f"{what}: a value outside [{lo}, {hi}]")
    return list(zip(values, labels, strict=True))
