"""``GET /v1/at-risk`` and ``GET /v1/ops/risk-model`` on the real Redis.

No worker runs here: the views are written into Redis in the risk pipeline's own format
(streams/risk_pipeline.py ``write_views``: one ``SET`` of the risk document per user, built by
``streams.risk.risk_document``, and one ``ZADD`` of the score on ``keys.RISK_SCORES``).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from api.cursors import decode_cursor, encode_cursor
from api.routes import risk as risk_routes
from infra import keys
from models.risk import RiskModel, RiskScore, Signal, risk_level
from models.risk_workflow import InterventionLog, WeeklyScores, row_fields
from models.time_units import DAY_MS
from streams.risk import risk_document
from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error

ADMIN = bearer("ops", "admin")
SCORED_AT_MS = 1_795_305_600_000  # 2026-11-22T00:00:00Z
STUDENT_FIELDS = {
    "user_id",
    "score",
    "level",
    "signals",
    "recommended_interventions",
    "updated_at",
    "weekly_risk",
    "monthly_risk",
    "confidence",
    # The staff workflow (models/risk_workflow.py).
    "display_name",
    "last_intervention",
    "interventions",
    "trend",
    "trend_weeks",
}


def document(user_id: str, score: float, recommended: list[str] | None = None) -> dict[str, Any]:
    """A risk document exactly as the pipeline publishes it."""
    weekly = score / 100
    scored = RiskScore(
        user_id=user_id,
        score=score,
        level=risk_level(score),
        probability=weekly,
        weekly_risk=weekly,
        monthly_risk=1 - (1 - weekly) ** 4,
        confidence=0.25,
        top_signals=(Signal("days_since_active", 1.5, 3.0), Signal("sessions_7d", -0.4, 0.0)),
        scored_at_ms=SCORED_AT_MS,
    )
    weeks = WeeklyScores()
    weeks.record(SCORED_AT_MS - 7 * DAY_MS, min(100.0, score + 5))
    weeks.record(SCORED_AT_MS, score)
    log = InterventionLog()
    log.record(SCORED_AT_MS - DAY_MS, "gentle_reminder", "PUSH")
    fields = row_fields(f"Student {user_id}", log, weeks, SCORED_AT_MS)
    return {**risk_document(scored, recommended or ["gentle_reminder"], model_version=3), **fields}


async def seed(redis: Redis, scores: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Write the views the way ``RiskSlice.write_views`` does; returns the documents."""
    documents = {uid: document(uid, score) for uid, score in scores.items()}
    for uid, doc in documents.items():
        await redis.set(keys.user_risk(uid), orjson.dumps(doc))
    if scores:
        await redis.zadd(keys.RISK_SCORES, scores)
    return documents


async def at_risk(client: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/v1/at-risk{query}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_levels_follow_the_contract() -> None:
    # The route's stats buckets come from models.risk.LEVELS; the contract fixes them.
    assert (risk_routes._CRITICAL, risk_routes._HIGH, risk_routes._MEDIUM) == (80.0, 60.0, 40.0)


# ---------------------------------------------------------------------------------------------
# Auth and validation


@pytest.mark.parametrize("path", ["/v1/at-risk", "/v1/ops/risk-model"])
async def test_needs_a_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/v1/at-risk", "/v1/ops/risk-model"])
async def test_users_are_refused(client: httpx.AsyncClient, redis: Redis, path: str) -> None:
    await seed(redis, {"u-1": 90.0})
    await redis.set(keys.RISK_EVALUATION, orjson.dumps({"n": 5}))
    # Not even their own score: the list and the model are staff tools.
    assert_error(await client.get(path, headers=bearer("u-1")), 403, "forbidden")


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("?threshold=100.5", "query.threshold"),
        ("?threshold=-1", "query.threshold"),
        ("?threshold=high", "query.threshold"),
        ("?limit=0", "query.limit"),
        ("?limit=501", "query.limit"),
        ("?limit=1.5", "query.limit"),
    ],
)
async def test_out_of_range_parameters_are_422(client: httpx.AsyncClient, query: str, loc: str) -> None:
    error = assert_error(await client.get(f"/v1/at-risk{query}", headers=ADMIN), 422, "validation_error")
    details = error["details"]
    assert isinstance(details, list)
    assert [d["loc"] for d in details] == [loc]


async def test_parameter_bounds_are_accepted(client: httpx.AsyncClient, redis: Redis) -> None:
    await seed(redis, {"u-top": 100.0, "u-low": 0.0})
    everyone = await at_risk(client, "?threshold=0&limit=500")
    assert [s["user_id"] for s in everyone["students"]] == ["u-top", "u-low"]
    top = await at_risk(client, "?threshold=100&limit=1")
    assert [s["user_id"] for s in top["students"]] == ["u-top"]
    assert top["stats"]["at_risk_pct"] == 50.0


# ---------------------------------------------------------------------------------------------
# The list


async def test_empty_board(client: httpx.AsyncClient) -> None:
    assert await at_risk(client) == {
        "students": [],
        "stats": {"total_students": 0, "critical": 0, "high": 0, "medium": 0, "at_risk_pct": 0.0},
        "next_cursor": None,
    }


async def test_students_are_the_stored_documents_highest_first(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    documents = await seed(redis, {"u-a": 61.5, "u-b": 97.25, "u-c": 75.0, "u-d": 12.0})
    body = await at_risk(client)  # default threshold 60
    assert [s["user_id"] for s in body["students"]] == ["u-b", "u-c", "u-a"]
    for student in body["students"]:
        doc = documents[student["user_id"]]
        assert set(student) == STUDENT_FIELDS
        assert student == {name: doc[name] for name in STUDENT_FIELDS}
    first = body["students"][0]
    assert first["score"] == 97.25
    assert first["level"] == "critical"
    assert first["signals"] == ["days_since_active", "sessions_7d"]
    assert first["recommended_interventions"] == ["gentle_reminder"]
    assert first["updated_at"] == "2026-11-22T00:00:00Z"
    # The pipeline's detail (contributions, model version) stays out of the list.
    assert "contributions" not in first and "model_version" not in first


async def test_threshold_is_inclusive_and_limit_cuts_the_list(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seed(redis, {"u-80": 80.0, "u-60": 60.0, "u-59": 59.99, "u-40": 40.0, "u-95": 95.0})
    assert [s["user_id"] for s in (await at_risk(client, "?threshold=60"))["students"]] == [
        "u-95",
        "u-80",
        "u-60",
    ]
    assert [s["user_id"] for s in (await at_risk(client, "?threshold=59.99"))["students"]] == [
        "u-95",
        "u-80",
        "u-60",
        "u-59",
    ]
    assert [s["user_id"] for s in (await at_risk(client, "?threshold=80.01"))["students"]] == ["u-95"]
    limited = await at_risk(client, "?threshold=0&limit=2")
    assert [s["user_id"] for s in limited["students"]] == ["u-95", "u-80"]
    # The stats count the whole board, not the page.
    assert limited["stats"]["total_students"] == 5
    assert limited["stats"]["at_risk_pct"] == 100.0


async def test_stats_count_levels_at_the_exact_boundaries(client: httpx.AsyncClient, redis: Redis) -> None:
    await seed(
        redis,
        {
            "crit-100": 100.0,
            "crit-80": 80.0,  # exactly 80: critical
            "high-79": 79.99,
            "high-60": 60.0,  # exactly 60: high
            "med-59": 59.99,
            "med-40": 40.0,  # exactly 40: medium
            "low-39": 39.99,
        },
    )
    body = await at_risk(client, "?threshold=60")
    assert body["stats"] == {
        "total_students": 7,
        "critical": 2,
        "high": 2,
        "medium": 2,
        "at_risk_pct": 57.1,  # 4 of 7 at or above 60
    }
    levels = {s["user_id"]: s["level"] for s in body["students"]}
    assert levels == {"crit-100": "critical", "crit-80": "critical", "high-79": "high", "high-60": "high"}


@pytest.mark.parametrize(
    ("threshold", "pct"),
    [("0", 100.0), ("40", 85.7), ("80", 28.6), ("80.5", 14.3), ("100", 0.0)],
)
async def test_at_risk_pct_is_the_share_at_or_above_the_threshold(
    client: httpx.AsyncClient, redis: Redis, threshold: str, pct: float
) -> None:
    await seed(
        redis,
        {"a": 100.0 - 1e-9, "b": 80.0, "c": 60.0, "d": 55.0, "e": 41.0, "f": 40.0, "g": 3.0},
    )
    body = await at_risk(client, f"?threshold={threshold}")
    assert body["stats"]["at_risk_pct"] == pct
    assert len(body["students"]) == round(pct * 7 / 100)


async def test_a_member_without_its_document_is_left_out(client: httpx.AsyncClient, redis: Redis) -> None:
    await seed(redis, {"u-kept": 70.0})
    await redis.zadd(keys.RISK_SCORES, {"u-gone": 90.0})  # a score whose document is missing
    body = await at_risk(client)
    assert [s["user_id"] for s in body["students"]] == ["u-kept"]
    assert body["stats"]["total_students"] == 2


async def test_a_document_without_the_optional_fields(client: httpx.AsyncClient, redis: Redis) -> None:
    minimal = {"user_id": "u-old", "score": 66.0, "level": "high"}
    await redis.set(keys.user_risk("u-old"), orjson.dumps(minimal))
    await redis.zadd(keys.RISK_SCORES, {"u-old": 66.0})
    (student,) = (await at_risk(client))["students"]
    assert student == {
        **minimal,
        "signals": [],
        "recommended_interventions": [],
        "updated_at": None,
        "weekly_risk": None,
        "monthly_risk": None,
        "confidence": None,
        # A document written before the workflow fields: unknown, not zero.
        "display_name": None,
        "last_intervention": None,
        "interventions": None,
        "trend": [None, None, None, None],
        "trend_weeks": [None, None, None, None],
    }


# ---------------------------------------------------------------------------------------------
# One student, explained


async def test_one_student_with_the_signals_in_words(client: httpx.AsyncClient, redis: Redis) -> None:
    documents = await seed(redis, {"u-1": 82.5})
    response = await client.get("/v1/at-risk/u-1", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in STUDENT_FIELDS} == {k: documents["u-1"][k] for k in STUDENT_FIELDS}
    # The document's contributions: days_since_active +1.5 (raises), sessions_7d -0.4 (lowers).
    assert [(e["signal"], e["effect"]) for e in body["explanations"]] == [
        ("days_since_active", "raises"),
        ("sessions_7d", "lowers"),
    ]
    assert all(e["text"] for e in body["explanations"])


async def test_one_student_is_404_before_a_score_and_403_for_users(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    assert_error(await client.get("/v1/at-risk/u-none", headers=ADMIN), 404, "not_scored")
    await seed(redis, {"u-1": 82.5})
    assert_error(await client.get("/v1/at-risk/u-1", headers=bearer("u-1")), 403, "forbidden")


# ---------------------------------------------------------------------------------------------
# Paging (next_cursor)


async def pages(client: httpx.AsyncClient, query: str) -> list[list[str]]:
    """Every page of the list, following ``next_cursor`` to the end."""
    out: list[list[str]] = []
    cursor: str | None = None
    while True:
        body = await at_risk(client, query + (f"&cursor={cursor}" if cursor else ""))
        out.append([s["user_id"] for s in body["students"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 1000, "the cursor does not advance"


async def test_next_cursor_pages_through_every_student_once(client: httpx.AsyncClient, redis: Redis) -> None:
    # Ties on one score, with ids that sort both ways around the cursor's, and scores that are
    # not exactly representable in decimal.
    scores = {f"u-{i:03d}": (95.0 if i % 3 == 0 else 60.0 + i / 7) for i in range(40)}
    scores["u-edge"] = 60.0
    await seed(redis, scores)
    got = await pages(client, "?threshold=60&limit=7")
    assert all(len(page) == 7 for page in got[:-1]) and 1 <= len(got[-1]) <= 7
    flat = [uid for page in got for uid in page]
    # Highest first; ties in the index's order (member descending); each student exactly once.
    assert flat == sorted(scores, key=lambda uid: (-scores[uid], [-ord(c) for c in uid]))
    # The stats are the whole board's on every page.
    body = await at_risk(client, "?threshold=60&limit=7")
    assert body["stats"]["total_students"] == 41


async def test_a_page_ends_with_null_when_it_holds_the_rest(client: httpx.AsyncClient, redis: Redis) -> None:
    await seed(redis, {"a": 90.0, "b": 80.0})
    assert (await at_risk(client, "?threshold=60&limit=2"))["next_cursor"] is None
    first = await at_risk(client, "?threshold=60&limit=1")
    assert [s["user_id"] for s in first["students"]] == ["a"]
    assert first["next_cursor"] is not None


async def test_students_re_scored_between_pages_are_neither_lost_nor_repeated_below_the_cursor(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seed(redis, {"a": 90.0, "b": 85.0, "c": 80.0, "d": 75.0})
    first = await at_risk(client, "?threshold=60&limit=2")
    assert [s["user_id"] for s in first["students"]] == ["a", "b"]
    # "a" drops below the page's cursor, "d" rises above it: keyset paging continues below "b".
    await seed(redis, {"a": 70.0, "d": 99.0})
    rest = await at_risk(client, f"?threshold=60&limit=2&cursor={first['next_cursor']}")
    assert [s["user_id"] for s in rest["students"]] == ["c", "a"]


async def test_the_page_after_a_cursor_whose_own_student_was_re_scored(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await seed(redis, {"u9": 70.0, "u5": 70.0, "u1": 70.0, "top": 90.0, "low": 65.0})
    first = await at_risk(client, "?threshold=60&limit=3")
    assert [s["user_id"] for s in first["students"]] == ["top", "u9", "u5"]
    # The cursor's own row moves (up, then gone): the next page still starts right below where
    # it was, among the rows that were tied with it.
    await seed(redis, {"u5": 95.0})
    rest = await at_risk(client, f"?threshold=60&limit=3&cursor={first['next_cursor']}")
    assert [s["user_id"] for s in rest["students"]] == ["u1", "low"] and rest["next_cursor"] is None
    await redis.zrem(keys.RISK_SCORES, "u5")
    again = await at_risk(client, f"?threshold=60&limit=1&cursor={first['next_cursor']}")
    assert [s["user_id"] for s in again["students"]] == ["u1"] and again["next_cursor"] is not None


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64-!!",
        "bm90IGpzb24",  # "not json"
        encode_cursor(50.0, "u-1")[:-3],  # cut short
        base64.urlsafe_b64encode(b'["high", "u-1"]').decode(),
        base64.urlsafe_b64encode(b'[1e999, "u-1"]').decode(),  # infinite
        base64.urlsafe_b64encode(b"[50, 7]").decode(),
        base64.urlsafe_b64encode(b'[50, "u\\u0000x"]').decode(),  # a control character
        base64.urlsafe_b64encode(orjson.dumps([50, "x" * 129])).decode(),  # an over-long id
        base64.urlsafe_b64encode(b'{"score": 50}').decode(),
    ],
)
async def test_a_cursor_this_list_did_not_return_is_400(
    client: httpx.AsyncClient, redis: Redis, cursor: str
) -> None:
    await seed(redis, {"a": 90.0})
    assert_error(await client.get(f"/v1/at-risk?cursor={cursor}", headers=ADMIN), 400, "invalid_cursor")


async def test_an_oversized_cursor_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/at-risk?cursor={'A' * 600}", headers=ADMIN)
    assert_error(response, 422, "validation_error")


@given(
    score=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), member=st.text(min_size=1, max_size=40)
)
def test_cursors_round_trip(score: float, member: str) -> None:
    assume(member.isprintable())
    assert decode_cursor(encode_cursor(score, member)) == (score, member)


# ---------------------------------------------------------------------------------------------
# The model's evaluation


async def test_risk_model_before_any_report(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/ops/risk-model", headers=ADMIN)
    assert response.status_code == 200
    # The shape of the trainer's report, nothing evaluated yet.
    assert response.json() == {**RiskModel().evaluation(), "labels_learnt": 0, "pending_deferred": 0}


async def test_risk_model_returns_the_trainers_report(client: httpx.AsyncClient, redis: Redis) -> None:
    model = RiskModel()
    # What streams/risk_trainer.py writes: the evaluation plus two counters.
    evaluation = {**model.evaluation(), "labels_learnt": 1234, "pending_deferred": 7}
    evaluation["roc_auc"] = 0.8125
    await redis.set(keys.RISK_EVALUATION, orjson.dumps(evaluation))
    response = await client.get("/v1/ops/risk-model", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == evaluation


async def test_a_rescore_between_index_and_documents_still_lists_in_order(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    """The worker may re-score a student after the route read the index and before it read the
    documents: the list follows the documents it shows (the flake of the at-risk integration test,
    where 69.6 came before 70.1)."""
    await seed(redis, {"a": 90.0, "b": 80.0, "c": 65.0})
    # Documents newer than the index: b overtook a, c fell under the threshold.
    for uid, score in {"a": 70.0, "b": 95.0, "c": 50.0}.items():
        await redis.set(keys.user_risk(uid), orjson.dumps(document(uid, score)))
    body = await at_risk(client, "?threshold=60")
    assert [(s["user_id"], s["score"]) for s in body["students"]] == [("b", 95.0), ("a", 70.0)]
