"""Every failure has the contract's error shape and status; tokens are checked on every route."""

from __future__ import annotations

import httpx
import orjson

from api.auth import issue_token
from tests.api.conftest import bearer


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def test_healthz_needs_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nope"), 404, "not_found")


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/events", headers=bearer("u-1")), 405, "method_not_allowed")


async def test_missing_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users/u-1")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_garbage_and_wrongly_signed_tokens_are_401(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.get("/v1/users/u-1", headers={"Authorization": "Bearer x.y.z"}), 401, "unauthorized"
    )
    forged = issue_token("another-secret-of-the-same-length-0123456789", "u-1", "admin")
    response = await client.get("/v1/users/u-1", headers={"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "unauthorized")
    response = await client.get("/v1/users/u-1", headers={"Authorization": f"Basic {forged}"})
    assert_error(response, 401, "unauthorized")


async def test_expired_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users/u-1", headers=bearer("u-1", ttl_s=-60))
    error = assert_error(response, 401, "unauthorized")
    assert "expired" in str(error["message"]).lower()


async def test_other_users_data_is_403_and_admin_may_read(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/users/u-2", headers=bearer("u-1")), 403, "forbidden")
    # The admin passes authorisation and reaches the lookup (the user has no state: 404).
    assert_error(await client.get("/v1/users/u-2", headers=bearer("ops", "admin")), 404, "user_not_found")


async def test_query_validation_error_has_our_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/leaderboards/daily?limit=0", headers=bearer("u-1"))
    error = assert_error(response, 422, "validation_error")
    details = error["details"]
    assert isinstance(details, list) and details[0]["loc"] == "query.limit"


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    spec = orjson.loads((await client.get("/openapi.json")).content)
    assert {"/v1/events", "/v1/users/{user_id}", "/v1/leaderboards/{period}", "/readyz"} <= set(spec["paths"])
