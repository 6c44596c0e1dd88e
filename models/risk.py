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

The served score. The pipeline above is one of four candidates (`CANDIDATES`): `logistic` (it,
blended with the recency prior by evidence), `recency` (the prior alone), `silence` (usual active
days missed, `silence_score`) and `blend` (the mean of their logits). Every resolved label keeps
each candidate's score at scoring time (the logistic's in `PendingLabel.model_probability`, the
others recomputed from the label's features); once a day of stream time, `select` ranks them by
same-day ROC AUC (`same_day_auc`) over the labels of the last SELECT_DAYS whole days that have
all resolved, and serves the best, blended with the candidates statistically tied with it
(`tie_weights`: weights from the gap in units of its day-clustered standard error), each
through a Platt map fitted on the same labels so the served score stays a probability on one
scale. Recency is served until the labels show a candidate ranking better than chance
(docs/risk.md, "The served score").

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
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

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

#: The candidates the served score is chosen from (`RiskModel.select`): the River model blended
#: with the recency prior, the recency prior alone, and silence measured in the user's own
#: expected active days (`silence_score`).
LOGISTIC = "logistic"
RECENCY = "recency"
SILENCE = "silence"
BLEND = "blend"
CANDIDATES: tuple[str, ...] = (LOGISTIC, RECENCY, SILENCE, BLEND)
#: The selection ranks the candidates on the labels scored over this many whole UTC days, the
#: most recent days whose labels have all resolved (a day's 1s resolve a horizon after its 0s:
#: a day still open would hold only 0s). Whole weeks: how students behave changes with the day
#: of the week (weekend-only students), and a window of a few days made the choice follow the
#: calendar (measured: 12 switches in 9 weeks between two candidates of equal merit).
SELECT_DAYS = 14
#: Labels the window keeps at most. Beyond it the window keeps only the labels of a fixed
#: subset of users (half of them, then a quarter...: `sample_bits`), so it still spans
#: SELECT_DAYS whole days, and its size, and the checkpoint's, stay bounded at any volume.
SELECT_WINDOW = 8_000
#: No selection before the window holds this many labels of each class (an AUC on a handful of
#: positives is noise).
SELECT_MIN_CLASS = 60
#: Candidates statistically tied with the best one are served together (`tie_weights`): a
#: candidate whose same-day AUC is `gap` below the best one's, with standard error `se` (of the
#: paired difference, from its spread across the window's days), weighs
#: exp(-(gap / (TIE_SCALE x se)) ** 2 / 2) beside the best one's 1: 0.61 at two standard errors,
#: 0.14 at four, nothing past TIE_MIN_WEIGHT. Why not a fixed margin to switch (the previous
#: rule: 0.01): candidates within a hundredth of each other took turns a step behind their merit
#: (labels of a day are judged ~8 days later) and lost up to 0.016 against the best on
#: loyal-but-sparse students; a blend of the tied ones does not need to guess which is ahead.
TIE_SCALE = 2.0
#: Below this weight a candidate is left out of the blend (so a clear winner is served alone, with
#: its exact explanation).
TIE_MIN_WEIGHT = 0.01
#: The standard error is never taken below this (a window of identical candidates).
TIE_MIN_SE = 1e-4
#: The best candidate must rank the window better than chance (AUC 0.5) by this many standard
#: errors (by day, as for the gaps); otherwise the labels show no evidence against the prior,
#: and `recency` is served alone, as before any label (a blend of candidates none of which ranks
#: is noise). A guard on principle: on the populations it changes nothing, and on cohorts
#: replayed through the stack (`elimu bench cohort`), where no candidate ranked the live
#: students, nothing beyond the replay's run-to-run spread (docs/risk.md).
CHANCE_Z = 2.0
#: Calibration maps (a, b) are kept within these bounds (a > 0: a map never reverses a ranking).
CALIBRATION_MIN_SLOPE = 0.05
CALIBRATION_MAX = 100.0
#: `silence_score`: the logistic in log(expected active days missed); 0.5 at 2 missed.
SILENCE_MIDPOINT = 2.0
SILENCE_SLOPE = 1.5

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


def silence_score(features: Mapping[str, float]) -> float:
    """P(drop) from silence measured in the user's own rhythm: days since the last event times
    the share of days the user is active (over the last 28 days, or their tenure if shorter),
    i.e. how many of their usual active days they have missed. Three quiet days are nothing for
    a student who comes twice a week and a lot for one who comes daily: the recency prior ranks
    both alike. A logistic in log(days missed) makes it a probability (0.5 at two missed days).
    Pure function of the features, so its score at scoring time is recomputed from a label's
    snapshot."""
    logit, _ = _silence_logit(features)
    return 1.0 / (1.0 + math.exp(-logit))


def blend_score(model_p: float, recency: float, silence: float) -> float:
    """The blend candidate: the mean of the other three candidates' logits. Equal weights, not
    learnt ones: weights refitted as labels arrive move the score's scale every time, and a
    score whose scale moves ranks worse across days than any of its parts (measured)."""
    return _sigmoid((_logit(model_p) + _logit(recency) + _logit(silence)) / 3.0)


def _silence_logit(features: Mapping[str, float]) -> tuple[float, float]:
    """(logit, the activity rate's share of it): logit = slope x (log(missed + 0.05) -
    log(midpoint)), with missed the `missed_days` feature (usual active days missed, by day of
    the week). Without it (a profile of an older release), days of silence x the share of
    active days; the rate's share, slope x log(rate), then lowers the risk of rare visitors."""
    if "missed_days" in features:
        missed = max(float(features["missed_days"]), 0.0)
        return SILENCE_SLOPE * (math.log(missed + 0.05) - math.log(SILENCE_MIDPOINT)), 0.0
    days = max(float(features.get("recency_d", 0.0)), 0.0)
    tenure = min(max(math.expm1(float(features.get("tenure_log_d", 0.0))), 1.0), 28.0)
    rate = min(max(float(features.get("active_days_28d", 0.0)) * 28.0 / tenure, 1.0 / 28.0), 1.0)
    logit = SILENCE_SLOPE * (math.log(days * rate + 0.05) - math.log(SILENCE_MIDPOINT))
    return logit, SILENCE_SLOPE * math.log(rate)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def fit_calibration(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the log loss of sigmoid(a x logit(s) + b) on the labels,
    by Newton's method, with a small pull towards the identity (1, 0) so that a handful of
    labels cannot throw the map far; a is kept >= CALIBRATION_MIN_SLOPE (a map never reverses
    a ranking) and both within CALIBRATION_MAX."""
    z = [_logit(s) for s in scores]
    a, b = 1.0, 0.0
    ridge = 1.0
    for _ in range(12):
        g_a, g_b = ridge * (a - 1.0), ridge * b
        h_aa, h_ab, h_bb = ridge, 0.0, ridge
        for zi, y in zip(z, labels, strict=True):
            p = _sigmoid(a * zi + b)
            r, w = p - y, p * (1.0 - p)
            g_a += r * zi
            g_b += r
            h_aa += w * zi * zi
            h_ab += w * zi
            h_bb += w
        det = h_aa * h_bb - h_ab * h_ab
        if det <= 0.0:
            break
        step_a = (h_bb * g_a - h_ab * g_b) / det
        step_b = (h_aa * g_b - h_ab * g_a) / det
        a = min(max(a - step_a, CALIBRATION_MIN_SLOPE), CALIBRATION_MAX)
        b = min(max(b - step_b, -CALIBRATION_MAX), CALIBRATION_MAX)
        if abs(step_a) < 1e-6 and abs(step_b) < 1e-6:
            break
    return a, b


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
    probability: float  # the served score
    #: The logistic candidate's probability at scoring time, when another candidate was served
    #: or not (the other candidates are functions of `features`, recomputed when it resolves).
    #: None on labels written before candidates existed: the served probability stands in.
    model_probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "scored_at_ms": self.scored_at_ms,
            "features": dict(self.features),
            "probability": self.probability,
        }
        if self.model_probability is not None:
            out["model_probability"] = self.model_probability
        return out

    def candidate_scores(self) -> tuple[float, ...]:
        """Each candidate's score at scoring time, in `CANDIDATES` order."""
        model_p = self.probability if self.model_probability is None else self.model_probability
        recency, silence = recency_prior(self.features), silence_score(self.features)
        return model_p, recency, silence, blend_score(model_p, recency, silence)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingLabel:
        """Checked like the model's own book: pending labels arrive from Kafka too (the risk
        labels topic, the per-user changelog). Raises `IncompatibleModel` (a ValueError)."""
        features = read_object(need(data, "features"), "features")
        check_features(features, "features")
        model_p = data.get("model_probability")
        return cls(
            user_id=read_user(need(data, "user_id"), "user_id"),
            scored_at_ms=read_int(need(data, "scored_at_ms"), "scored_at_ms", 0, MAX_TS_MS),
            features={k: float(v) for k, v in features.items()},
            probability=read_float(need(data, "probability"), "probability", 0.0, 1.0),
            model_probability=None if model_p is None else read_float(model_p, "model_probability", 0.0, 1.0),
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
    #: The logistic candidate's probability (equal to `probability` when it is served): what a
    #: label snapshot keeps so the selection can compare it with the served one.
    model_probability: float | None = None
    #: The candidate `probability` comes from (`CANDIDATES`).
    served: str = LOGISTIC

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


_first = itemgetter(0)


def roc_auc(pairs: Iterable[tuple[float, int]]) -> float | None:
    """Exact ROC AUC (Mann-Whitney U / (P x N)); tied probabilities share their average rank.

    None when one class is absent (AUC is undefined then).
    """
    ordered = sorted(pairs, key=_first)
    positives = sum(1 for _, y in ordered if y)
    negatives = len(ordered) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = 0.0
    i = 0  # rank of the group's first item, 0-based
    # One pass over runs of tied scores (groupby runs in C: the trainer ranks its window of
    # candidates every few seconds for its report).
    for _, group in groupby(ordered, key=_first):
        labels = [y for _, y in group]
        size = len(labels)
        average_rank = i + (size - 1) / 2.0 + 1.0  # ranks are 1-based
        rank_sum += average_rank * sum(1 for y in labels if y)
        i += size
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


class WindowRow(NamedTuple):
    """One resolved label of the selection window: its outcome, the UTC day it was scored on,
    the probability served then, each candidate's score then (in `CANDIDATES` order), and its
    user's `user_key` (what the window samples on)."""

    label: int
    day: int
    served: float
    scores: tuple[float, ...]
    key: int


def user_key(user_id: str) -> int:
    """A user's 32-bit key for sampling the window: CRC-32, the same in every process (Python's
    own `hash` of a string is salted per process, and the trainer must be deterministic)."""
    return zlib.crc32(user_id.encode())


def _sampled(key: int, bits: int) -> bool:
    return key & ((1 << bits) - 1) == 0


def same_day_auc(rows: Iterable[tuple[int, float, int]]) -> float | None:
    """ROC AUC over the pairs (dropped, retained) scored on the same UTC day, from (day, score,
    label) rows: the day's Mann-Whitney U summed over days, over the day's positives x negatives
    summed. Why not pooled: an at-risk list ranks students against each other at one moment,
    and the resolved labels come from weeks of scores whose base rate moves (new cohorts, a
    model still learning its scale). A pooled AUC also scores whether a Monday's 0.3 outranks
    a Friday's 0.2, which no one acts on, and it penalises any score whose scale moves, however
    well it ranks each day. None when no day has both classes."""
    by_day: dict[int, list[tuple[float, int]]] = {}
    for day, score, label in rows:
        by_day.setdefault(day, []).append((score, label))
    u = weight = 0.0
    for pairs in by_day.values():
        positives = sum(y for _, y in pairs)
        negatives = len(pairs) - positives
        auc = roc_auc(pairs) if positives and negatives else None
        if auc is not None:
            u += auc * positives * negatives
            weight += positives * negatives
    return u / weight if weight else None


def evaluation(
    pairs: Iterable[tuple[float, int]],
    baseline_pairs: Iterable[tuple[float, int]],
    bins: int = 10,
    *,
    served: str = RECENCY,
    window: Iterable[WindowRow] = (),
    tied: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """How well scores ranked and were calibrated on resolved labels (``pairs`` of
    (predicted, label)), beside the recency-only baseline on the same labels; and the candidate
    `served` (and those `tied` with it, by weight), with every candidate's AUC over the
    selection `window` (`RiskModel.window`) beside the served scores' on the same labels."""
    pairs = list(pairs)
    window = list(window)
    return {
        "n": len(pairs),
        "positives": sum(y for _, y in pairs),
        "roc_auc": roc_auc(pairs),
        "roc_auc_method": "exact (Mann-Whitney, average ranks for ties)",
        # The same labels ranked by days of silence alone: what the model must beat.
        "baseline_roc_auc": roc_auc(baseline_pairs),
        "brier": brier_score(pairs),
        "served": served,
        # The candidates served beside it and their weights (it weighs 1): tied with it.
        "tied": dict(tied or {}),
        "candidates": {
            "window": len(window),
            "positives": sum(row.label for row in window),
            "auc_method": "same-day (pairs scored on the same UTC day; see same_day_auc)",
            "served_roc_auc": same_day_auc((row.day, row.served, row.label) for row in window),
            "roc_auc": candidate_aucs(window),
        },
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


def candidate_aucs(window: Sequence[WindowRow]) -> dict[str, float | None]:
    """Each candidate's same-day ROC AUC over `window` (None: no day with both classes)."""
    return {
        name: same_day_auc((row.day, row.scores[i], row.label) for row in window)
        for i, name in enumerate(CANDIDATES)
    }


def daily_pair_counts(window: Sequence[WindowRow]) -> tuple[list[float], list[list[float]]]:
    """Per UTC day of `window` with both classes: its pairs (positives x negatives) and, per
    candidate (in `CANDIDATES` order), its Mann-Whitney U (the day's AUC x its pairs). Their sums
    over days are the same-day AUC's numerator and denominator (`same_day_auc`)."""
    by_day: dict[int, list[WindowRow]] = {}
    for row in window:
        by_day.setdefault(row.day, []).append(row)
    pairs: list[float] = []
    u: list[list[float]] = [[] for _ in CANDIDATES]
    for day in sorted(by_day):
        rows = by_day[day]
        positives = sum(row.label for row in rows)
        weight = positives * (len(rows) - positives)
        if not weight:
            continue
        pairs.append(float(weight))
        for i in range(len(CANDIDATES)):
            auc = roc_auc((row.scores[i], row.label) for row in rows)
            u[i].append(weight * (auc if auc is not None else 0.5))
    return pairs, u


def _day_se(u: Sequence[float], pairs: Sequence[float], mean: float, total: float) -> float:
    """Standard error of a same-day statistic, sum(u) / total (an AUC, or the gap between two),
    from its spread across days around `mean` (each day weighted by its pairs: clustered by
    day). At least two days."""
    days = len(pairs)
    spread = sum((ud - w * mean) ** 2 for ud, w in zip(u, pairs, strict=True))
    return math.sqrt(spread * days / (days - 1)) / total


def tie_weights(window: Sequence[WindowRow]) -> tuple[str, dict[str, float]]:
    """(the best candidate by same-day AUC over `window`, the weight of each other candidate
    statistically tied with it): see TIE_SCALE. The standard error of a gap is the spread of the
    day-by-day gaps (days weighted by their pairs; a cluster-robust estimate, clustered by day):
    the candidates' errors are strongly correlated (the same students, mostly the same signal),
    so the gap's error is far smaller than either AUC's, and days are what varies (the day of
    the week, a cohort's first week). Cheap (the window is ranked once per candidate and day)
    and deterministic. Ties in AUC go to the first in `CANDIDATES` order. Until the window shows
    the best candidate ranking better than chance (CHANCE_Z), `recency` alone, as before any
    label; a window of one day cannot show it."""
    pairs, u = daily_pair_counts(window)
    total = sum(pairs)
    if not total:
        return RECENCY, {}
    aucs = [sum(column) / total for column in u]
    best = max(range(len(CANDIDATES)), key=lambda i: aucs[i])
    days = len(pairs)
    if days < 2 or aucs[best] - 0.5 < CHANCE_Z * _day_se(u[best], pairs, aucs[best], total):
        # Nothing ranks these labels better than chance, as far as they can tell: no evidence
        # against the prior, which is what ranks before labels exist (and what ranks students
        # quiet past the horizon, who never get a label, by their silence).
        return RECENCY, {}
    weights: dict[str, float] = {}
    for i, name in enumerate(CANDIDATES):
        if i == best:
            continue
        gap = aucs[best] - aucs[i]
        differences = [ub - ui for ub, ui in zip(u[best], u[i], strict=True)]
        z = gap / max(TIE_SCALE * _day_se(differences, pairs, gap, total), TIE_MIN_SE)
        weight = math.exp(-0.5 * z * z)
        if weight >= TIE_MIN_WEIGHT:
            weights[name] = weight
    return CANDIDATES[best], weights


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
        #: The candidate whose probability is served (`select`). The logistic candidate until
        #: the labels say otherwise: before any label it *is* the recency prior (the evidence
        #: blend), so a new deployment ranks by recency either way.
        self.served = RECENCY
        #: The most recent resolutions, each with every candidate's score at scoring time:
        #: what `select` ranks the candidates on.
        self.window: list[WindowRow] = []
        #: The window keeps the labels of users whose id hashes to 0 modulo 2 ** sample_bits.
        self.sample_bits = 0
        #: The UTC day (of stream time) of the last selection.
        self.select_day = -1
        #: Per candidate, the map (a, b) its score is served through: sigmoid(a x logit(s) + b),
        #: fitted on the window by `select` (Platt scaling). Identity until the first selection.
        #: Why: candidates speak different scales (the recency prior says 0.14 for a user seen
        #: now, the learnt model ~0.05 at a 7% drop rate). Served raw, a switch from one to the
        #: other would shift every score, and the scores served before and after a switch would
        #: no longer rank together (measured: a pooled AUC 0.06-0.12 below either candidate).
        #: Mapped, every candidate serves a probability on the same, observed scale.
        self.calibration: dict[str, tuple[float, float]] = {name: (1.0, 0.0) for name in CANDIDATES}
        #: The candidates served beside `served`, each with its weight (`served` weighs 1):
        #: those the labels cannot tell from it (`tie_weights`). Empty: `served` alone.
        self.tied: dict[str, float] = {}

    # --- prediction -------------------------------------------------------------------------

    def _steps(self) -> tuple[Any, Any]:
        steps = list(self.model.steps.values())
        return steps[0], steps[-1]

    def _contributions(self, x: Mapping[str, float]) -> tuple[float, dict[str, float], float]:
        """P(dropped within the horizon) served, each feature's share of its logit, and the
        logistic candidate's probability (kept by label snapshots).

        The served probability is the served candidate's through its map, averaged with those of
        the candidates tied with it (`tied`, by weight), each through its own map: the maps put
        every candidate on the observed scale, so the average is a probability on that scale too
        (a linear pool: probabilities, not logits, are averaged, so a candidate whose map is
        steep, fitted on labels it separates almost perfectly, moves the average by its weight
        at most; measured, both pools rank alike). Its explanation is the same average of the
        candidates' (mapped) shares of their logits: exact for one candidate, an approximation
        of a pool. The logistic candidate is always computed (a label must keep its score
        whichever is served); the others are a few float operations on top.
        """
        model_p, logistic_shares = self._logistic(x)
        a, b = self.calibration[self.served]
        if not self.tied:
            raw, logit, contributions = self._candidate(self.served, x, model_p, logistic_shares)
            if (a, b) == (1.0, 0.0):  # no map yet: the candidate's probability, to the last bit
                return (_sigmoid(logit) if raw is None else raw), contributions, model_p
            # The map scales every share of the logit alike; its intercept is no feature's.
            return _sigmoid(a * logit + b), {k: a * v for k, v in contributions.items()}, model_p
        # A pool: each candidate's logit once, and the shares in one pass. Every candidate's
        # shares are a multiple of three parts (the logistic's shares, recency's, silence's;
        # the blend a third of each), so the pool's are those parts times summed coefficients.
        total = 1.0 + sum(self.tied.values())
        logit_m = _logit(model_p)
        logit_r = _logit(recency_prior(x))
        logit_s, rate_share = _silence_logit(x)
        logits = {
            LOGISTIC: logit_m,
            RECENCY: logit_r,
            SILENCE: logit_s,
            BLEND: (logit_m + logit_r + logit_s) / 3.0,
        }
        parts = {LOGISTIC: 0.0, RECENCY: 0.0, SILENCE: 0.0}
        pooled = 0.0
        for name, weight in ((self.served, 1.0), *self.tied.items()):
            a, b = self.calibration[name]
            share = weight / total
            pooled += share * _sigmoid(a * logits[name] + b)
            if name == BLEND:
                for part in parts:
                    parts[part] += share * a / 3.0
            else:
                parts[name] += share * a
        shares: dict[str, float] = {}
        if parts[LOGISTIC]:
            shares = {feature: parts[LOGISTIC] * c for feature, c in logistic_shares.items()}
        silence = "missed_days" if "missed_days" in x else "recency_d"
        for feature, k, c in (
            ("recency_d", parts[RECENCY], logit_r),
            (silence, parts[SILENCE], logit_s - rate_share),
            ("active_days_28d", parts[SILENCE], rate_share),
        ):
            if k and feature in x:
                shares[feature] = shares.get(feature, 0.0) + k * c
        return pooled, shares, model_p

    @staticmethod
    def _candidate(
        name: str, x: Mapping[str, float], model_p: float, logistic_shares: dict[str, float]
    ) -> tuple[float | None, float, dict[str, float]]:
        """(the candidate's own probability when it is not sigmoid(logit), else None; its logit;
        each feature's share of that logit)."""
        if name == BLEND:
            logit_s, rate_share = _silence_logit(x)
            silence = "missed_days" if "missed_days" in x else "recency_d"
            logit_r = _logit(recency_prior(x))
            logit = (_logit(model_p) + logit_r + logit_s) / 3.0
            shares = {feature: c / 3.0 for feature, c in logistic_shares.items()}
            for feature, c in (
                (silence, logit_s - rate_share),
                ("active_days_28d", rate_share),
                ("recency_d", logit_r),
            ):
                if feature in x:
                    shares[feature] = shares.get(feature, 0.0) + c / 3.0
            return None, logit, shares
        if name == RECENCY:
            raw = recency_prior(x)
            # The whole logit is silence: the explanation says so, and nothing else.
            return raw, _logit(raw), ({"recency_d": _logit(raw)} if "recency_d" in x else {})
        if name == SILENCE:
            logit, rate_share = _silence_logit(x)
            silence = "missed_days" if "missed_days" in x else "recency_d"
            parts = {silence: logit - rate_share, "active_days_28d": rate_share}
            return None, logit, {k: v for k, v in parts.items() if k in x}
        return model_p, _logit(model_p), logistic_shares

    def _logistic(self, x: Mapping[str, float]) -> tuple[float, dict[str, float]]:
        """The logistic candidate: the River model's probability blended with `recency_prior`
        by evidence (w = n / (n + 200)); contributions are the model's, scaled by w, with the
        prior's logit share, (1 - w) x logit(prior), added to `recency_d`."""
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
        probability, contributions, _ = self._contributions(features)
        return probability, [Signal(name, c, float(features[name])) for name, c in contributions.items()]

    def assess(self, user_id: str, features: Mapping[str, float], now_ms: int) -> RiskScore:
        """Score a user at event time `now_ms`, without keeping a pending label."""
        probability, contributions, model_p = self._contributions(features)
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
            model_probability=model_p,
            served=self.served,
        )

    def score(
        self, user_id: str, features: Mapping[str, float], now_ms: int, *, snapshot: bool = True
    ) -> RiskScore:
        """Score a user at event time `now_ms`; snapshot a pending label unless one is recent."""
        result = self.assess(user_id, features, now_ms)
        if snapshot:
            self._snapshot(user_id, dict(features), now_ms, result)
        return result

    def _snapshot(self, user_id: str, features: dict[str, float], now_ms: int, result: RiskScore) -> None:
        queue = self._book.pending.setdefault(user_id, [])
        if not wants_snapshot(queue, now_ms, self.snapshot_gap_ms):
            return
        pending = PendingLabel(user_id, now_ms, features, result.probability, result.model_probability)
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
        sample_key = user_key(pending.user_id)
        if _sampled(sample_key, self.sample_bits):
            day = pending.scored_at_ms // DAY_MS
            scores = pending.candidate_scores()
            self.window.append(WindowRow(label, day, pending.probability, scores, sample_key))
            # Ends: at 32 bits only key 0 is kept. A flood of one user's labels (their key) is
            # bounded by the per-user snapshot rate upstream.
            while len(self.window) > SELECT_WINDOW and self.sample_bits < 32:
                self.sample_bits += 1
                self.window = [row for row in self.window if _sampled(row.key, self.sample_bits)]
            del self.window[:-SELECT_WINDOW]
        # Once a day of stream time: every score of a day then comes from one candidate through
        # one map, so the day's ranking is one score's (a change mid-day mixes two scales).
        day_now = resolution.resolved_at_ms // DAY_MS
        if day_now > self.select_day:
            self.select_day = day_now
            self.select()
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

    # --- choosing the served candidate ---------------------------------------------------------

    def complete_window(self, *, trim: bool = False) -> list[WindowRow]:
        """The window's labels scored on the last SELECT_DAYS days whose labels have all resolved
        by the latest selection's day (`trim`: and forget the labels of older days)."""
        lag = -(-(self.horizon_ms + self.grace_ms) // DAY_MS) + 1  # a day's labels resolve by then
        last = self.select_day - lag
        first = last - SELECT_DAYS + 1
        if trim:
            self.window = [row for row in self.window if row.day >= first]
        return [row for row in self.window if first <= row.day <= last]

    def select(self) -> str:
        """Serve the candidate that ranked the recent resolved labels best, blended with the
        candidates the labels cannot tell from it (prequentially: every score in the window was
        made before its label was known).

        The best candidate by same-day AUC is `served`; each other candidate statistically tied
        with it gets a weight in `tied` (`tie_weights`): when one candidate is clearly best it
        is served alone, with its exact explanation and its own calibration; when the labels
        cannot separate two, both are served, so the choice does not flip-flop a step behind.
        Nothing changes before the window holds SELECT_MIN_CLASS labels of each class.
        Deterministic in the labels' order, so a trainer replaying the same labels serves the
        same blend."""
        complete = self.complete_window(trim=True)
        positives = sum(row.label for row in complete)
        if min(positives, len(complete) - positives) < SELECT_MIN_CLASS:
            return self.served
        labels = [row.label for row in complete]
        for i, name in enumerate(CANDIDATES):
            self.calibration[name] = fit_calibration([row.scores[i] for row in complete], labels)
        self.served, self.tied = tie_weights(complete)
        return self.served

    # --- evaluation -------------------------------------------------------------------------

    def evaluation(self, bins: int = 10) -> dict[str, Any]:
        """`evaluation` of the served scores, with every candidate's AUC over the selection
        window beside the served one's on the same labels, and which candidate is served."""
        return evaluation(
            self.pairs,
            self.baseline_pairs,
            bins,
            served=self.served,
            window=self.complete_window(),
            tied=self.tied,
        )

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
        body: dict[str, Any] = {
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
            # What a scorer needs: which candidate to serve, through which map. The window
            # only the trainer needs.
            "served": self.served,
            "calibration": list(self.calibration[self.served]),
            # The candidates blended in with it, each with its weight and its own map. A reader
            # of an older release ignores it and serves `served` alone, as it did.
            "tied": {
                "names": list(self.tied),
                "weights": [self.tied[name] for name in self.tied],
                "calibration": [list(self.calibration[name]) for name in self.tied],
            },
        }
        if not scoring_only:
            body["selection"] = _pack_window(self.window, self.select_day, self.sample_bits)
        if pending:  # -1: none kept (a label from before candidates existed)
            body["pending"]["model_probability"] = pack_floats(
                -1.0 if p.model_probability is None else p.model_probability for p in pending
            )
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
        # Optional: a document written before candidates existed serves the logistic model.
        served = body.get("served", LOGISTIC)
        if served not in CANDIDATES:
            raise IncompatibleModel(f"served must be one of {CANDIDATES}")
        model.served = served
        if "calibration" in body:  # the served candidate's map; the others are refitted before use
            item = read_list(body["calibration"], "calibration", 2)
            if len(item) != 2:
                raise IncompatibleModel("calibration is the served candidate's [a, b]")
            model.calibration[served] = (
                read_float(item[0], "calibration a", CALIBRATION_MIN_SLOPE, CALIBRATION_MAX),
                read_float(item[1], "calibration b", -CALIBRATION_MAX, CALIBRATION_MAX),
            )
        if "tied" in body:  # absent before ties were blended: `served` alone
            model.tied = _read_tied(body["tied"], served, model.calibration)
        if "selection" in body:
            model.window, model.select_day, model.sample_bits = _unpack_window(body["selection"])
        if scoring_only and (model.pairs or model.baseline_pairs or model.window or model._book != _Book()):
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


def _read_map(value: Any, what: str) -> tuple[float, float]:
    item = read_list(value, what, 2)
    if len(item) != 2:
        raise IncompatibleModel(f"{what} is a candidate's [a, b]")
    return (
        read_float(item[0], f"{what} a", CALIBRATION_MIN_SLOPE, CALIBRATION_MAX),
        read_float(item[1], f"{what} b", -CALIBRATION_MAX, CALIBRATION_MAX),
    )


def _read_tied(value: Any, served: str, calibration: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The candidates blended with `served`: known candidates other than it, each once, with a
    weight in [TIE_MIN_WEIGHT, 1] and a map within the calibration bounds (set in `calibration`)."""
    table, (names, weights, maps), count = _columns(value, "tied", ("names", "weights", "calibration"))
    del table
    if count >= len(CANDIDATES):
        raise IncompatibleModel("tied names at most the other candidates")
    tied: dict[str, float] = {}
    for name, weight, item in zip(names, weights, maps, strict=True):
        if type(name) is not str or name not in CANDIDATES or name == served or name in tied:
            raise IncompatibleModel("tied: each a candidate other than the served one, once")
        tied[name] = read_float(weight, "tied weight", TIE_MIN_WEIGHT, 1.0)
        calibration[name] = _read_map(item, "tied calibration")
    return tied


def _read_book(body: dict[str, Any], names: FeatureNames) -> _Book:
    book = _Book()
    table, (users, scored), count = _columns(need(body, "pending"), "pending", ("user", "scored_at"))
    probabilities = unpack_floats(need(table, "probability"), "pending.probability", count)
    if count and not 0.0 <= min(probabilities) <= max(probabilities) <= 1.0:
        raise IncompatibleModel("pending probability must lie in [0, 1]")
    model_ps: Sequence[float | None] = [None] * count
    if "model_probability" in table:  # absent before candidates existed
        column = unpack_floats(table["model_probability"], "pending.model_probability", count)
        if not all(v == -1.0 or 0.0 <= v <= 1.0 for v in column):
            raise IncompatibleModel("pending model_probability must be -1 or lie in [0, 1]")
        model_ps = [None if v == -1.0 else v for v in column]
    rows = decode_rows(need(table, "x"), names, count, "pending.x")
    for user, at, p, x, model_p in zip(
        read_users(users, "pending user"), scored, probabilities, rows, model_ps, strict=True
    ):
        book.pending.setdefault(user, []).append(PendingLabel(user, read_int(at, "scored_at"), x, p, model_p))

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


def _pack_window(window: Iterable[WindowRow], select_day: int, sample_bits: int) -> dict[str, Any]:
    """The selection window as columns: labels one byte each, scoring days and user keys as
    integers, the served probability and each candidate's score (in the order `candidates`
    names) as float64."""
    items = list(window)
    return {
        "candidates": list(CANDIDATES),
        "select_day": select_day,
        "sample_bits": sample_bits,
        # Whole numbers as float64 (exact below 2 ** 53): 11 bytes of base64 each, not JSON.
        "key": pack_floats(float(row.key) for row in items),
        "n": len(items),
        "y": pack_bytes(bytes(row.label for row in items)),
        "day": pack_floats(float(row.day) for row in items),
        "served_p": pack_floats(row.served for row in items),
        "scores": pack_floats(v for row in items for v in row.scores),
    }


def _whole(values: Sequence[float], what: str, hi: int) -> list[int]:
    if not all(v.is_integer() and 0 <= v <= hi for v in values):
        raise IncompatibleModel(f"{what}: every value is a whole number in [0, {hi}]")
    return [int(v) for v in values]


def _unpack_window(value: Any) -> tuple[list[WindowRow], int, int]:
    """The window `_pack_window` wrote, checked: the candidates are exactly this release's (a
    window of other candidates means nothing to this selection), at most SELECT_WINDOW labels
    of 0 or 1, every score a probability."""
    packed = read_object(value, "selection")
    names = read_list(need(packed, "candidates"), "selection.candidates", len(CANDIDATES))
    if tuple(names) != CANDIDATES:
        raise IncompatibleModel(f"selection candidates must be {list(CANDIDATES)}")
    select_day = read_int(need(packed, "select_day"), "selection.select_day", -1, MAX_TS_MS // DAY_MS)
    sample_bits = read_int(need(packed, "sample_bits"), "selection.sample_bits", 0, 32)
    count = read_int(need(packed, "n"), "selection.n", 0, SELECT_WINDOW)
    keys = _whole(unpack_floats(need(packed, "key"), "selection.key", count), "selection.key", 2**32 - 1)
    labels = unpack_bytes(need(packed, "y"), "selection.y", count)
    if labels.translate(None, b"\x00\x01"):
        raise IncompatibleModel("selection: every label is 0 or 1")
    days = _whole(
        unpack_floats(need(packed, "day"), "selection.day", count), "selection.day", MAX_TS_MS // DAY_MS
    )
    served = unpack_floats(need(packed, "served_p"), "selection.served_p", count)
    width = len(CANDIDATES)
    scores = unpack_floats(need(packed, "scores"), "selection.scores", count * width)
    if any(not 0.0 <= v <= 1.0 for v in (*served, *scores)):
        raise IncompatibleModel("selection: a score outside [0, 1]")
    window = [
        WindowRow(labels[i], days[i], served[i], tuple(scores[i * width : (i + 1) * width]), keys[i])
        for i in range(count)
    ]
    return window, select_day, sample_bits


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
