"""The risk model's wire format as an attacker sees it (models/risk_codec.py, RiskModel.from_bytes):
whatever the bytes, reading raises IncompatibleModel or yields a model that works; sizes,
feature counts and evaluation pairs are bounded before anything is allocated for them."""

from __future__ import annotations

import contextlib
import json
import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.risk import MAX_EVAL_PAIRS, IncompatibleModel, RiskModel
from models.risk_codec import (
    MAX_FEATURE_VALUE,
    MAX_FEATURES,
    MAX_MODEL_BYTES,
    MAX_SCORER_BYTES,
    MAX_WEIGHT,
    MIN_VAR,
    pack_floats,
)
from models.time_units import DAY_MS

T0 = 1_790_000_000_000
H = 7 * DAY_MS
QUIET = {"recency_d": 5.0, "events_7d": 0.0, "score_mean": 0.6}


def small_model() -> RiskModel:
    """Every part of the state in use, small enough to mutate thousands of times."""
    rng = random.Random(2)
    m = RiskModel(max_eval_pairs=100)
    for i in range(40):
        x = {"recency_d": rng.uniform(0, 6), "events_7d": rng.uniform(0, 4), "score_mean": 0.7}
        m.score(f"u{i}", x, T0 + i * 3_600_000)
        if x["recency_d"] < 3:
            m.on_activity(f"u{i}", T0 + i * 3_600_000 + DAY_MS)
    m.advance(T0 + 30 * 3_600_000 + H)
    m.score("late", QUIET, T0 + 2 * H)
    m.score("back", QUIET, T0 + 2 * H)
    m.on_activity("back", T0 + 2 * H + 1)
    assert m.n_learned and m.pending_count and m.deferred_count and m.pairs
    return m


GOOD = small_model().to_bytes()
HEADER, _, GOOD_BODY = GOOD.partition(b"\n")


def body() -> dict[str, Any]:
    doc = orjson.loads(GOOD_BODY)
    assert isinstance(doc, dict)
    return doc


def encode(doc: Any, header: bytes = HEADER) -> bytes:
    # The standard library's encoder: it writes integers beyond 64 bits, which orjson refuses.
    return header + b"\n" + json.dumps(doc, allow_nan=False).encode()


def exercise(model: RiskModel) -> None:
    """What the engine does with a model it adopted; none of it may raise on a model that loaded."""
    for x in (QUIET, {"recency_d": 1e100, "other": -1e100}, {}):
        probability, _ = model.predict(x)
        assert 0.0 <= probability <= 1.0
        assert math.isfinite(model.assess("u", x, T0).score)
    model.evaluation()
    model.advance(T0 + 10 * H)  # resolves and learns whatever the book holds
    model.evaluation()
    with contextlib.suppress(ValueError):
        # Learning on extreme (but admitted) values may leave numbers no reader would take.
        model.to_bytes()


def read(data: bytes, *, scoring_only: bool = False) -> RiskModel | None:
    """from_bytes, allowed to refuse only with IncompatibleModel; a model it yields must work."""
    try:
        model = RiskModel.from_bytes(data, scoring_only=scoring_only)
    except IncompatibleModel:
        return None
    exercise(model)
    return model


def test_the_fixture_reads_back() -> None:
    assert read(GOOD) is not None and read(encode(body())) is not None


# --- fuzz -------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_are_refused(data: bytes) -> None:
    for candidate in (data, HEADER + b"\n" + data, HEADER + data):
        assert read(candidate) is None
        assert read(candidate, scoring_only=True) is None


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_body_is_refused(doc: Any) -> None:
    assert read(encode(doc)) is None


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _paths(v, (*prefix, i))
    return found


PATHS = _paths(body())[1:]


def _replace(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    *parents, last = path
    for step in parents:
        doc = doc[step]
    if delete:
        del doc[last]
    else:
        doc[last] = value


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), JSON, st.booleans())
def test_a_valid_model_with_one_value_forged_is_refused_or_works(
    path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    doc = body()
    _replace(doc, path, value, delete)
    read(encode(doc))


NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, 1e308, -0.0, 5e-324, MAX_WEIGHT * 2, MIN_VAR / 2]),
)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_valid_model_with_one_number_forged_is_refused_or_works(data: st.DataObject) -> None:
    doc = body()
    numeric = [p for p in PATHS if type(_get(doc, p)) in (int, float)]
    path = data.draw(st.sampled_from(numeric))
    _replace(doc, path, data.draw(NUMBERS), delete=False)
    read(encode(doc))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=0, max_value=255))
def test_truncated_or_flipped_records_are_refused_or_work(at: int, byte: int) -> None:
    assert read(GOOD[:at]) is None
    read(GOOD[:at] + bytes([byte]) + GOOD[at + 1 :])


# --- bounds -----------------------------------------------------------------------------------


def test_oversized_inputs_are_refused_before_parsing() -> None:
    with pytest.raises(IncompatibleModel, match="limit"):
        RiskModel.from_bytes(GOOD + b" " * (MAX_MODEL_BYTES + 1 - len(GOOD)))
    with pytest.raises(IncompatibleModel, match="limit"):
        RiskModel.from_bytes(GOOD + b" " * MAX_SCORER_BYTES, scoring_only=True)
    assert RiskModel.from_bytes(GOOD + b" " * 1000).n_learned  # JSON whitespace is fine
    # The header must end early: no scan of a long first line.
    with pytest.raises(IncompatibleModel, match="header"):
        RiskModel.from_bytes(b"elimu-risk " + b" " * 10_000 + b"\n{}")


def test_feature_tables_are_bounded() -> None:
    doc = body()
    doc["features"] = [f"f{i}" for i in range(MAX_FEATURES + 1)]
    with pytest.raises(IncompatibleModel, match="features"):
        RiskModel.from_bytes(encode(doc))
    for bad in (["x" * 65], ["a\x00"], [""], [7], ["a", "a"]):
        doc["features"] = bad + body()["features"]
        with pytest.raises(IncompatibleModel):
            RiskModel.from_bytes(encode(doc))
    # The writer refuses what no reader would take.
    m = RiskModel()
    m.learn({f"f{i}": 1.0 for i in range(MAX_FEATURES + 1)}, 1)
    with pytest.raises(ValueError, match="at most"):
        m.to_bytes()


def test_evaluation_pairs_are_bounded_by_max_eval_pairs() -> None:
    doc = body()
    limit = doc["config"]["max_eval_pairs"]
    n = limit + 1
    doc["pairs"] = {"n": n, "p": pack_floats([0.5] * n), "y": "AAAA" * (n // 3 + 1)}
    with pytest.raises(IncompatibleModel, match="pairs"):
        RiskModel.from_bytes(encode(doc))
    doc = body()
    doc["config"]["max_eval_pairs"] = MAX_EVAL_PAIRS + 1
    with pytest.raises(IncompatibleModel, match="max_eval_pairs"):
        RiskModel.from_bytes(encode(doc))
    # A count that disagrees with the data is refused before any of it is decoded.
    doc = body()
    doc["pairs"]["n"] = 3
    with pytest.raises(IncompatibleModel, match=r"pairs\.p"):
        RiskModel.from_bytes(encode(doc))


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("pipeline", "weights", 0), MAX_WEIGHT * 2),
        (("pipeline", "weights", 0), None),
        (("pipeline", "intercept"), "0.1"),
        (("pipeline", "lr"), -0.1),
        (("pipeline", "scaler", 0, 3), -1.0),
        (("pipeline", "scaler", 0, 3), MIN_VAR / 10),
        (("pipeline", "scaler", 0, 1), True),
        (("pipeline", "n_iterations"), 2**60),
        (("config", "horizon_ms"), 0),
        (("config", "learn_on_resolve"), 1),
        (("n_learned"), -1),
        (("clock_ms"), 1.5),
        (("pending", "user", 0), "a\nb"),
        (("pending", "user", 0), "x" * 129),
        (
            ("pending", "x", "v"),
            lambda doc: pack_floats([MAX_FEATURE_VALUE * 10] * sum(doc["pending"]["x"]["n"])),
        ),
        (("pending", "probability"), lambda doc: pack_floats([1.5] * len(doc["pending"]["user"]))),
        (("deferred", "scored_at", 0), -5),
        (("deadlines", "user"), []),
        (("pairs", "y"), None),
    ],
)
def test_forged_values_are_refused(where: tuple[Any, ...] | str, value: Any) -> None:
    doc = body()
    path = where if isinstance(where, tuple) else (where,)
    _replace(doc, path, value(doc) if callable(value) else value, delete=False)
    with pytest.raises(IncompatibleModel):
        RiskModel.from_bytes(encode(doc))


def test_a_forged_heap_order_is_made_a_heap_again() -> None:
    doc = body()
    for column in doc["deadlines"].values():
        column.reverse()
    model = RiskModel.from_bytes(encode(doc))
    deadlines = model._book.deadlines
    assert all(deadlines[(i - 1) // 2] <= deadlines[i] for i in range(1, len(deadlines)))
