"""``python -m api`` / ``api.app.run``: the production entry point serves, and keeps tokens out
of its logs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.redact import RedactTokens
from infra.net import free_port
from tests.api.conftest import SECRET, recv_json, send_json, token
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_filter_masks_query_tokens() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/v1/ws?x=1&token=eyJ.abc.def&y=2"), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /v1/ws?x=1&token=***&y=2" [accepted]'


@pytest.fixture
def api_process(redis_url: str, kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log_path = tmp_path / "api.log"
    env = dict(
        os.environ,
        ELIMU_KAFKA=kafka_bootstrap,
        ELIMU_REDIS=redis_url,
        ELIMU_SECRET=SECRET,
        ELIMU_DATA_DIR=str(tmp_path),
        ELIMU_API_PORT=str(port),
    )
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        yield f"127.0.0.1:{port}", log_path
    finally:
        proc.terminate()
        # uvicorn shuts down cleanly, then re-raises the signal it caught (exit status -SIGTERM).
        assert proc.wait(10) in (0, -signal.SIGTERM), log_path.read_text()
        assert "Application shutdown complete" in log_path.read_text()


async def test_serves_http_and_websocket(api_process: tuple[str, Path]) -> None:
    address, log_path = api_process
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:

        async def healthy() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(healthy, timeout=20, what="API answering /healthz")

    from websockets.asyncio.client import connect

    secret_token = token("u-1")
    async with connect(f"ws://{address}/v1/ws?token={secret_token}", proxy=None) as ws:
        await send_json(ws, {"op": "subscribe", "channel": "user:u-1"})
        assert (await recv_json(ws))["op"] == "subscribed"

    async def logged() -> bool:
        return "WebSocket /v1/ws" in log_path.read_text()

    await wait_until(logged, timeout=5, what="websocket request logged")
    text = log_path.read_text()
    assert secret_token not in text
    assert "token=***" in text
