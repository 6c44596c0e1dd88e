"""The risk model as plain data: numbers and strings a reader checks, never code to run.

Why: the model travels on the compacted `elimu-broadcast` topic, which anyone who can write to
Kafka can write. A pickle runs whatever its record says when it is loaded; this format can only
ever produce numbers, strings and booleans, and every one is checked for type and bounds before
the model is built from it. A reader raises `IncompatibleModel` (a `ValueError`) and nothing
else, allocates in proportion to its input only, and refuses inputs over a byte budget.

Layout (the document `RiskModel.to_bytes` writes, after its header line): JSON (orjson), with
the long float arrays (evaluation pairs, the feature values of pending labels) as base64 of
little-endian float64, because 17 significant digits of JSON per float would triple them. Feature
names are written once, in a table; everything else refers to a name by its index. Floats
round-trip exactly (orjson writes the shortest repr that reads back to the same double), so a
restored model predicts and continues learning bit for bit like the one that was written.

The River pipeline (`StandardScaler` then `LogisticRegression` with plain SGD) is exported as
its learnt numbers (per-feature count, mean and variance of the scaler; per-feature weight, the
intercept and the optimizer's iteration count) and its hyperparameters (learning rate, intercept
rate, L2, gradient clip, initial intercept). Any other pipeline shape is refused on writing: it
would need its own exporter.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from river import linear_model, preprocessing

from models.events import is_valid_id

#: The largest serialized model a reader accepts (the whole trainer: book and evaluation).
MAX_MODEL_BYTES = 64 * 1024 * 1024
#: The largest scoring-only model a reader accepts: about 2 kB is written for 18 features, and
#: even MAX_FEATURES names of MAX_FEATURE_NAME_LEN bytes stay far below this.
MAX_SCORER_BYTES = 1024 * 1024
#: Distinct feature names in one model (the engine uses 18, models/risk_features.py).
MAX_FEATURES = 256
MAX_FEATURE_NAME_LEN = 64
#: Bound of every count and event-time instant read back: exact as a float, and far beyond any
#: honest value (year 285 000 in milliseconds; 9e15 labels).
MAX_INT = 2**53
#: Bounds on the pipeline's numbers, far outside what SGD on standardized features reaches (its
#: weights stay within tens) but tight enough that a model that loads gives a finite logit for
#: any features up to 1e100: |z| <= (1e100 + MAX_MEAN) / sqrt(MIN_VAR) = 1e250, times MAX_WEIGHT,
#: summed over MAX_FEATURES, stays below the largest double, and River's sigmoid of a finite
#: logit is a finite probability. A forged model can still score badly; it cannot make the NaN
#: scores that would break the code downstream.
MAX_WEIGHT = 1e6
#: Feature values a stored label may hold (the engine's are days, log counts and ratios, and XP
#: within the daily caps); learning on values up to this keeps the scaler within its bounds.
MAX_FEATURE_VALUE = 1e12
MAX_MEAN = 1e15
MIN_VAR = 1e-300  # or exactly 0: the scaler then maps the feature to 0
MAX_VAR = 1e30


class IncompatibleModel(ValueError):
    """Bytes that are not a risk model this process can read: another format, or a record that
    fails a type or bounds check (corrupt, truncated or forged)."""


# ---------------------------------------------------------------------------------------------
# Checked reads of decoded JSON


def need(obj: Mapping[str, Any], name: str) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise IncompatibleModel(f"missing field {name!r}") from None


def read_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise IncompatibleModel(f"{what} must be an object")
    return value


def read_list(value: Any, what: str, max_len: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise IncompatibleModel(f"{what} must be a list")
    if max_len is not None and len(value) > max_len:
        raise IncompatibleModel(f"{what} holds {len(value)} items; the limit is {max_len}")
    return value


def read_int(value: Any, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    # bool is an int subclass: `true` is not a count.
    if type(value) is not int or not lo <= value <= hi:
        raise IncompatibleModel(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def read_float(value: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if type(value) is int and abs(value) <= MAX_INT:
        value = float(value)
    if type(value) is not float or not math.isfinite(value) or not lo <= value <= hi:
        raise IncompatibleModel(f"{what} must be a finite number in [{lo}, {hi}]")
    return value


def read_variance(value: Any) -> float:
    """0, or within [MIN_VAR, MAX_VAR] (a negative one would make `var ** 0.5` complex inside
    River's transform_one)."""
    var = read_float(value, "scaler variance", 0.0, MAX_VAR)
    if 0.0 < var < MIN_VAR:
        raise IncompatibleModel(f"scaler variance must be 0 or at least {MIN_VAR}")
    return var


def read_bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise IncompatibleModel(f"{what} must be true or false")
    return value


def read_user(value: Any, what: str) -> str:
    """A user id as every entry point accepts them (models.events.check_id)."""
    if not is_valid_id(value):
        raise IncompatibleModel(f"{what} must be an id (printable, at most 128 bytes)")
    return str(value)


def read_users(values: list[Any], what: str) -> list[str]:
    """`read_user` over a column: each distinct id is checked once (a checkpoint repeats the same
    users in thousands of labels, and the check is most of the cost of reading one)."""
    checked: set[str] = set()
    for value in values:
        if type(value) is not str or value not in checked:  # unhashable JSON is not a str
            checked.add(read_user(value, what))
    return values


def read_name(value: Any, what: str) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_FEATURE_NAME_LEN
        or not value.isprintable()
        or len(value.encode("utf-8", "replace")) > MAX_FEATURE_NAME_LEN
    ):
        raise IncompatibleModel(f"{what} must be a printable name of at most {MAX_FEATURE_NAME_LEN} bytes")
    return value


def check_features(features: Mapping[str, float], what: str) -> None:
    """A features mapping a label may hold: at most MAX_FEATURES names, each a short printable
    name, every value a number within MAX_FEATURE_VALUE (`PendingLabel.from_dict`)."""
    if len(features) > MAX_FEATURES:
        raise IncompatibleModel(f"{what} has {len(features)} features; the limit is {MAX_FEATURES}")
    for name, value in features.items():
        read_name(name, f"{what} name")
        read_float(value, f"{what}[{name!r}]", -MAX_FEATURE_VALUE, MAX_FEATURE_VALUE)


# ---------------------------------------------------------------------------------------------
# Binary arrays in base64 (little-endian on every host, so a record reads the same everywhere)


def _b64_len(n_bytes: int) -> int:
    return 4 * ((n_bytes + 2) // 3)


def pack_floats(values: Iterable[float]) -> str:
    buffer = array("d", values)
    if not all(map(math.isfinite, buffer)):
        raise ValueError("a risk model holds only finite numbers")  # a reader would refuse it
    if sys.byteorder == "big":
        buffer.byteswap()
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def unpack_floats(value: Any, what: str, count: int) -> array[float]:
    """Exactly `count` finite float64 values (the length is checked before decoding)."""
    raw = unpack_bytes(value, what, 8 * count)
    buffer = array("d")
    buffer.frombytes(raw)
    if sys.byteorder == "big":
        buffer.byteswap()
    if not all(map(math.isfinite, buffer)):
        raise IncompatibleModel(f"{what} holds a value that is not finite")
    return buffer


def pack_bytes(values: bytes) -> str:
    return base64.b64encode(values).decode("ascii")


def unpack_bytes(value: Any, what: str, count: int) -> bytes:
    if not isinstance(value, str) or len(value) != _b64_len(count):
        raise IncompatibleModel(f"{what} must be base64 of {count} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IncompatibleModel(f"{what} is not base64: {exc}") from None
    if len(raw) != count:
        raise IncompatibleModel(f"{what} must be base64 of {count} bytes")
    return raw


# ---------------------------------------------------------------------------------------------
# Feature names, written once


class FeatureNames:
    """The table of feature names a document refers to by index, in first-seen order."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names: list[str] = list(names)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}

    def add(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            read_name(name, "feature name")  # what a reader would refuse is not written
            if len(self.names) >= MAX_FEATURES:
                raise ValueError(f"a risk model holds at most {MAX_FEATURES} feature names")
            i = self.index[name] = len(self.names)
            self.names.append(name)
        return i

    @classmethod
    def read(cls, value: Any) -> FeatureNames:
        names = [read_name(v, "feature name") for v in read_list(value, "features", MAX_FEATURES)]
        table = cls(names)
        if len(table.index) != len(names):
            raise IncompatibleModel("feature names repeat")
        return table


def encode_rows(rows: Sequence[Mapping[str, float]], names: FeatureNames) -> dict[str, Any]:
    """Feature mappings as {"n": size of each row, "i": name indices (one byte each), "v": values}."""
    indices = bytearray()
    values: list[float] = []
    # Rows share their names, in the same order (the engine's fixed feature vector): each
    # distinct sequence of names is looked up once (14k rows of a checkpoint: half the time).
    known: dict[tuple[str, ...], bytes] = {}
    for row in rows:
        key = tuple(row)
        packed = known.get(key)
        if packed is None:
            packed = known[key] = bytes(names.add(name) for name in key)  # < MAX_FEATURES: a byte each
        indices += packed
        values.extend(row.values())
    return {"n": [len(row) for row in rows], "i": pack_bytes(bytes(indices)), "v": pack_floats(values)}


def decode_rows(value: Any, names: FeatureNames, count: int, what: str) -> list[dict[str, float]]:
    block = read_object(value, what)
    sizes = [read_int(n, f"{what} row size", 0, len(names.names)) for n in read_list(need(block, "n"), what)]
    if len(sizes) != count:
        raise IncompatibleModel(f"{what} has {len(sizes)} rows, expected {count}")
    total = sum(sizes)
    indices = unpack_bytes(need(block, "i"), f"{what} indices", total)
    values = unpack_floats(need(block, "v"), f"{what} values", total)
    table = names.names
    if total and max(indices) >= len(table):
        raise IncompatibleModel(f"{what} refers to a feature name that does not exist")
    if total and not -MAX_FEATURE_VALUE <= min(values) <= max(values) <= MAX_FEATURE_VALUE:
        raise IncompatibleModel(f"{what} holds a value beyond {MAX_FEATURE_VALUE}")
    rows: list[dict[str, float]] = []
    at = 0
    for size in sizes:
        row = {table[indices[k]]: values[k] for k in range(at, at + size)}
        if len(row) != size:
            raise IncompatibleModel(f"{what} repeats a feature within a row")
        rows.append(row)
        at += size
    return rows


# ---------------------------------------------------------------------------------------------
# The River pipeline


def pipeline_steps(pipeline: Any) -> tuple[preprocessing.StandardScaler, linear_model.LogisticRegression]:
    """The scaler and classifier of a pipeline this codec can write, else ValueError."""
    from river import compose, linear_model, optim, preprocessing  # lazily: see default_pipeline

    steps = list(getattr(pipeline, "steps", {}).values())
    if len(steps) != 2:
        raise ValueError("only a StandardScaler -> LogisticRegression pipeline can be serialized")
    scaler, classifier = steps
    # Exact types: a subclass could carry state this exporter does not know about.
    ok = (
        type(pipeline) is compose.Pipeline
        and type(scaler) is preprocessing.StandardScaler
        and scaler.with_std
        and scaler.window_size is None
        and type(classifier) is linear_model.LogisticRegression
        and type(classifier.optimizer) is optim.SGD
        and type(classifier.optimizer.lr) is optim.schedulers.Constant
        and type(classifier.intercept_lr) is optim.schedulers.Constant
        and type(classifier.loss) is optim.losses.Log
        and classifier.loss.weight_pos == 1.0
        and classifier.loss.weight_neg == 1.0
        and type(classifier.initializer) is optim.initializers.Zeros
        and classifier.l1 == 0
    )
    if not ok:
        raise ValueError("only default_pipeline's shape (models/risk.py) can be serialized")
    return scaler, classifier


def encode_pipeline(pipeline: Any, names: FeatureNames) -> dict[str, Any]:
    scaler, classifier = pipeline_steps(pipeline)
    # Weights first and in their own order: the weights' order is the order a dot product sums
    # in, and restoring it keeps predictions equal to the last bit. The names table then starts
    # with the weights, so they are written as a bare list of values.
    weights = classifier._weights.to_dict()
    for name in weights:
        names.add(name)
    # The scaler's means and variances also hold 0.0 for features only ever predicted on (a
    # defaultdict read inserts them); they are kept so the restored scaler is the same object.
    scaled = list(dict.fromkeys([*scaler.counts, *scaler.means, *scaler.vars]))
    return {
        "scaler": [
            [
                names.add(name),
                scaler.counts.get(name, 0),
                read_float(scaler.means.get(name, 0.0), "scaler mean", -MAX_MEAN, MAX_MEAN),
                read_variance(scaler.vars.get(name, 0.0)),
            ]
            for name in scaled
        ],
        # Checked as a reader would: a model that diverged to inf/NaN is refused here, not by
        # every worker that receives it.
        "weights": [read_float(float(w), "weight", -MAX_WEIGHT, MAX_WEIGHT) for w in weights.values()],
        "intercept": read_float(float(classifier.intercept), "intercept", -MAX_WEIGHT, MAX_WEIGHT),
        "intercept_init": read_float(
            float(classifier.intercept_init), "intercept_init", -MAX_WEIGHT, MAX_WEIGHT
        ),
        "lr": float(classifier.optimizer.lr.learning_rate),
        "intercept_lr": float(classifier.intercept_lr.learning_rate),
        "l2": float(classifier.l2),
        "clip_gradient": float(classifier.clip_gradient),
        "n_iterations": classifier.optimizer.n_iterations,
    }


def decode_pipeline(value: Any, names: FeatureNames) -> Any:
    from river import compose, linear_model, optim, preprocessing  # lazily: see default_pipeline

    obj = read_object(value, "pipeline")
    table = names.names
    # Hyperparameters: finite and in ranges under which SGD stays a number (a huge rate only
    # makes a bad model; an infinite one would make NaN weights).
    lr = read_float(need(obj, "lr"), "lr", 0.0, 1e3)
    intercept_lr = read_float(need(obj, "intercept_lr"), "intercept_lr", 0.0, 1e3)
    l2 = read_float(need(obj, "l2"), "l2", 0.0, 1e3)
    clip = read_float(need(obj, "clip_gradient"), "clip_gradient", 0.0, 1e300)
    classifier = linear_model.LogisticRegression(
        optimizer=optim.SGD(lr),
        intercept_lr=intercept_lr,
        l2=l2,
        clip_gradient=clip,
        intercept_init=read_float(need(obj, "intercept_init"), "intercept_init", -MAX_WEIGHT, MAX_WEIGHT),
    )
    classifier.intercept = read_float(need(obj, "intercept"), "intercept", -MAX_WEIGHT, MAX_WEIGHT)
    classifier.optimizer.n_iterations = read_int(need(obj, "n_iterations"), "n_iterations")
    weights = [
        read_float(w, "weight", -MAX_WEIGHT, MAX_WEIGHT)
        for w in read_list(need(obj, "weights"), "weights", len(table))
    ]
    classifier._weights = type(classifier._weights)(dict(zip(table, weights, strict=False)))

    scaler = preprocessing.StandardScaler()
    for entry in read_list(need(obj, "scaler"), "scaler", len(table)):
        item = read_list(entry, "scaler entry")
        if len(item) != 4:
            raise IncompatibleModel("a scaler entry is [feature, count, mean, variance]")
        name = table[read_int(item[0], "scaler feature", 0, len(table) - 1)]
        if name in scaler.means:
            raise IncompatibleModel(f"scaler feature {name!r} repeats")
        count = read_int(item[1], "scaler count")
        if count:
            scaler.counts[name] = count
        scaler.means[name] = read_float(item[2], "scaler mean", -MAX_MEAN, MAX_MEAN)
        scaler.vars[name] = read_variance(item[3])
    return compose.Pipeline(scaler, classifier)
