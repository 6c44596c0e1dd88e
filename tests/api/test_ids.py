"""Every id the API accepts has a byte budget and is printable: path, query and token subject."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.api.conftest import bearer
from tests.api.test_errors_and_auth import assert_error

BAD_IDS = {
    "control": "u-\x01",
    "newline": "u\n1",
    "invisible": "u-\u200b1",
    "too-long": "u" * 129,
    "too-many-bytes": "é" * 65,  # 65 characters, 130 bytes
    "escape-sequence": "\x1b[31mred",
}


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/{}",
        "/v1/users/{}/notifications",
        "/v1/users/{}/matches",
        "/v1/users/{}/matches/insights",
        "/v1/users/{}/recommendations",
        "/v1/users/{}/applications",
        "/v1/users/{}/achievements",
        "/v1/leaderboards/{}",
    ],
)
async def test_path_ids_are_checked_on_every_route(client: httpx.AsyncClient, path: str, bad: str) -> None:
    # As an admin, who may read any user: the id itself is what is refused.
    response = await client.get(path.format(quote(bad, safe="")), headers=bearer("ops", "admin"))
    error = assert_error(response, 422, "validation_error")
    assert error["message"].startswith("path.")  # type: ignore[attr-defined]


async def test_a_path_id_at_the_budget_is_fine(client: httpx.AsyncClient) -> None:
    ok = "é" * 64  # 128 bytes exactly
    response = await client.get(f"/v1/users/{quote(ok)}/applications", headers=bearer("ops", "admin"))
    assert response.status_code == 200
    assert response.json()["user_id"] == ok


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_query_ids_are_checked(client: httpx.AsyncClient, bad: str) -> None:
    admin = bearer("ops", "admin")
    for url in ("/v1/leaderboards/daily", "/v1/rewards/balance", "/v1/market/pulse"):
        name = {"/v1/leaderboards/daily": "around", "/v1/market/pulse": "location"}.get(url, "user_id")
        response = await client.get(url, params={name: bad}, headers=admin)
        assert_error(response, 422, "validation_error")


async def test_an_empty_market_filter_still_means_any(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/market/pulse?location=&industry=", headers=bearer("u-1"))
    assert_error(response, 404, "no_pulse")  # nothing published yet; not a validation error


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_a_token_subject_must_be_an_id(client: httpx.AsyncClient, bad: str) -> None:
    assert_error(await client.get("/v1/leaderboards/daily", headers=bearer(bad)), 401, "unauthorized")
