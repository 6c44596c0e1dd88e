"""The operators' dashboard (``GET /dashboard``) in a real headless browser.

Debian's chromium (installed by ``scripts/ensure_chromium.sh``, which ``make test`` runs first) is
driven by Playwright through ``executable_path``; Playwright's own browser download is never used.
A real worker and API run on the embedded broker and Redis, the API sampling consumer lag every
second, so the page's numbers move within seconds of the events the test produces.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaProducer
from playwright.async_api import Browser, Page, async_playwright

from api.auth import issue_token
from infra import outreach_store
from infra.channels import ChannelLog
from infra.redis_conn import connect
from models.outreach import new_task
from tests.conftest import wait_until
from tests.integration.processes import TEST_SECRET, stack_env, start_api, start_worker, wait_ready
from tests.integration.test_careers import posting

# The page following the stack is the subject, not the broker: it runs on the first broker only.
pytestmark = [pytest.mark.integration, pytest.mark.one_broker, pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "dashboard.png"
#: How long the page may take to show what the stack did (worker commit + lag tick + push).
UI_TIMEOUT_MS = 60_000
USERS = ("amina", "brian", "chao")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (`make test` does)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def events(now_ms: int, round_: int) -> list[dict[str, Any]]:
    """Three lessons for each user, with ids unique to the round."""
    return [
        {
            "event_id": f"dash-{round_}-{user}-{i}",
            "user_id": user,
            "type": "lesson_complete",
            "ts": now_ms - 1000 + i,
            "props": {"lesson_id": f"L{round_}-{i}", "score": 80},
        }
        for i, user in enumerate(USERS * 3)
    ]


def send_postings(bootstrap: str, values: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for v in values:
        producer.send("job-postings", orjson.dumps(v), key=v["job_id"].encode())
    producer.flush()
    producer.close()


def figure(element_id: str) -> str:
    """A JS expression for the number behind a figure, for ``wait_for_function`` (a function, not an
    expression string: the page's CSP forbids the eval Playwright uses for the latter)."""
    return f"Number(document.getElementById('{element_id}').dataset.value)"


async def number(page: Page, selector: str) -> float | None:
    """The raw number behind a figure (its ``data-value``), ``None`` while it shows none."""
    raw = await page.get_attribute(selector, "data-value")
    return float(raw) if raw else None


async def login(page: Page, url: str, token: str) -> None:
    await page.goto(f"{url}/dashboard")
    await page.fill("#token", token)
    await page.click("#login-button")


async def test_wrong_token_shows_an_error_and_no_data(
    fresh_kafka: str, redis_url: str, tmp_path: Path, browser: Browser
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_LAG_INTERVAL="1")
    api, url = start_api(env, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            # The page is a static shell: served without a token, with a strict CSP.
            r = await http.get("/dashboard")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "script-src 'sha256-" in r.headers["content-security-policy"]

        page = await browser.new_page()
        await login(page, url, issue_token("not-the-server-secret-0123456789abcdef", "ops", "admin"))
        await page.wait_for_selector("#error:not([hidden])", timeout=UI_TIMEOUT_MS)
        assert "Invalid or expired token" in (await page.text_content("#error") or "")
        assert await page.is_hidden("#dashboard")
        assert await page.get_attribute("#status", "data-state") == "error"

        # A valid token without the admin role is refused too.
        await login(page, url, issue_token(TEST_SECRET, "amina"))
        await page.wait_for_function(
            "() => document.getElementById('error').textContent.includes('admin token')",
            timeout=UI_TIMEOUT_MS,
        )
        assert await page.is_hidden("#dashboard")
        assert await page.locator("#leaderboard tbody tr").count() == 0
    finally:
        api.stop()


async def add_outreach_task(redis_url: str, task_id: str, user_id: str) -> None:
    """A task as the delivery service creates it from a human_outreach notification."""
    redis = connect(redis_url)
    try:
        now = int(time.time() * 1000)
        risk = {"score": 91.0, "level": "critical", "signals": ["recency_d"]}
        task = new_task(task_id, user_id, now, "Reach out to student dora", risk, ["Inactive for days."], [])
        assert await outreach_store.create(redis, ChannelLog(redis), task)
    finally:
        await redis.aclose()


async def test_dashboard_follows_the_stack_live(
    fresh_kafka: str, redis_url: str, tmp_path: Path, browser: Browser
) -> None:
    env = stack_env(fresh_kafka, redis_url, tmp_path, ELIMU_LAG_INTERVAL="1")
    worker = start_worker(env, tmp_path / "worker.log")
    api, url = start_api(env, tmp_path / "api.log")
    admin = issue_token(TEST_SECRET, "ops", "admin")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, worker)

            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The URL-fragment sign-in; the fragment is dropped from the address bar afterwards.
            await page.goto(f"{url}/dashboard#token={admin}")
            await page.wait_for_selector("#status[data-state='connected']", timeout=UI_TIMEOUT_MS)
            assert await page.text_content("#status") == "connected"
            assert "token=" not in page.url
            # Nothing posted yet: "no postings yet", or an empty pulse if the worker published one.
            assert (await number(page, "#market-new-jobs") or 0) == 0
            assert await page.text_content("#at-risk-empty") == "no risk scores yet"
            assert await page.is_visible("#at-risk-empty")

            # The outreach queue: a task as the delivery service creates it shows up live; "take it"
            # assigns it to the signed-in officer; resolving it (here over HTTP) takes it off.
            assert await page.is_visible("#outreach-empty")
            await add_outreach_task(redis_url, "n-outreach-1", "dora")
            await page.wait_for_function(
                """() => [...document.querySelectorAll('#outreach tbody tr')]
                        .some((tr) => tr.textContent.includes('dora') && tr.textContent.includes('open'))""",
                timeout=UI_TIMEOUT_MS,
            )
            await page.click("#outreach tbody tr button:has-text('take it')")
            await page.wait_for_function(
                "() => document.querySelector('#outreach tbody tr').textContent.includes('assigned · ops')",
                timeout=UI_TIMEOUT_MS,
            )
            admin_headers = {"Authorization": f"Bearer {admin}"}
            r = await http.post(
                "/v1/admin/outreach/n-outreach-1/resolve", json={"note": "called her"}, headers=admin_headers
            )
            assert r.status_code == 200 and r.json()["status"] == "resolved", r.text
            await page.wait_for_selector("#outreach-empty", state="visible", timeout=UI_TIMEOUT_MS)

            # Let one lag report arrive, so "before" is a number the events must move.
            await page.wait_for_function(
                "() => document.getElementById('committed-total').dataset.value !== undefined",
                timeout=UI_TIMEOUT_MS,
            )
            committed_before = await number(page, "#committed-total") or 0.0
            assert (await number(page, "#events-per-s") or 0) == 0

            now = int(time.time() * 1000)
            r = await http.post("/v1/events", json=events(now, 0), headers=admin_headers)
            assert r.status_code == 202, r.text
            send_postings(fresh_kafka, [posting("dash-j-1"), posting("dash-j-2")])

            # Leaderboard, market pulse and committed offsets move, pushed over the websocket.
            await page.wait_for_function(
                """() => [...document.querySelectorAll('#leaderboard tbody tr')]
                        .some((tr) => tr.textContent.includes('amina'))""",
                timeout=UI_TIMEOUT_MS,
            )
            await page.wait_for_function(
                f"() => {figure('market-new-jobs')} >= 1",
                timeout=UI_TIMEOUT_MS,
            )
            await page.wait_for_function(
                f"() => {figure('committed-total')} > {committed_before}",
                timeout=UI_TIMEOUT_MS,
            )

            # events/s counts the progress of offsets already committed (a partition's first commit
            # is no rate): once the lag report has the events' partitions, more events show as a rate.
            async def behaviour_committed() -> bool:
                report = (await http.get("/v1/ops/lag", headers=admin_headers)).json()
                return any(
                    p["topic"] == "behavior-events" and p["committed"] > 0
                    for g in report["groups"]
                    for p in g["partitions"]
                )

            await wait_until(behaviour_committed, timeout=60, what="behavior-events offsets committed")
            r = await http.post("/v1/events", json=events(now, 1), headers=admin_headers)
            assert r.status_code == 202, r.text
            await page.wait_for_function(f"() => {figure('events-per-s')} > 0", timeout=UI_TIMEOUT_MS)
            assert await page.locator("#leaderboard tbody tr").count() == len(USERS)
            assert await page.is_hidden("#market-empty")
            assert int(await page.get_attribute("#lag-chart", "data-points") or 0) >= 2
            assert await page.locator("#lag-groups tbody tr").count() >= 1
            assert await page.get_attribute("#status", "data-state") == "connected"
            assert errors == []

            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            data = shot.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            assert len(data) > 20_000, f"{shot} is only {len(data)} bytes"
            if os.environ.get("ELIMU_UPDATE_SCREENSHOT"):
                # The picture in the docs is refreshed on request, not by every test run.
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                DOCS_SCREENSHOT.write_bytes(data)
    finally:
        api.stop()
        worker.stop()
