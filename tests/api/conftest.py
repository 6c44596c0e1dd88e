"""Fixtures for the API tests: the app on the real Redis and broker, driven two ways.

HTTP tests call the app in-process through httpx's ASGI transport (the lifespan is entered by
hand, since the transport does not run it). Websocket tests need a real server, so the app runs
under uvicorn on a free port inside the test's event loop and is reached with ``websockets``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from api.app import create_app, server_config
from api.auth import Role, issue_token
from api.config import ApiConfig
from api.state import AppState
from infra.net import free_port
from infra.settings import Settings
from tests.conftest import create_topic, wait_until

SECRET = "test-secret-for-api-tests-0123456789abcdef"


def token(sub: str, role: Role = "user", ttl_s: int = 3600) -> str:
    return issue_token(SECRET, sub, role, ttl_s=ttl_s)


def bearer(sub: str, role: Role = "user", ttl_s: int = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, role, ttl_s)}"}


@pytest.fixture
def settings(redis_url: str, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(kafka=kafka_bootstrap, redis=redis_url, data_dir=tmp_path, secret_override=SECRET)


@pytest.fixture
def events_topic(unique: str) -> str:
    return f"behavior-events-{unique}"


@pytest.fixture
def api_config(events_topic: str) -> ApiConfig:
    """Defaults, except a unique topic and a short websocket auth timeout. Tests needing other
    limits override with ``dataclasses.replace`` through ``make_app``."""
    return ApiConfig(events_topic=events_topic, ws_auth_timeout_s=0.5)


@pytest.fixture
async def created_topic(kafka_bootstrap: str, events_topic: str) -> str:
    await create_topic(kafka_bootstrap, events_topic)
    return events_topic


class RunningApp:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def state(self) -> AppState:
        state = self.app.state.pulse
        assert isinstance(state, AppState)
        return state


@pytest.fixture
async def make_client(settings: Settings, api_config: ApiConfig) -> AsyncIterator[Callable[..., Any]]:
    """``await make_client(**config_overrides)`` -> an httpx client on a started app."""
    stack: list[Any] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(settings, dataclasses.replace(api_config, **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test")
        stack.append(client)
        client.app = RunningApp(app)  # type: ignore[attr-defined]
        return client

    yield factory
    for resource in reversed(stack):
        await resource.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result


class LiveServer:
    def __init__(self, app: FastAPI, port: int) -> None:
        self.app = app
        self.port = port

    @property
    def state(self) -> AppState:
        state = self.app.state.pulse
        assert isinstance(state, AppState)
        return state

    def url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws" + (f"?{query}" if query else "")

    def connect(self, query: str = "", **kwargs: Any) -> ws_connect:
        return ws_connect(self.url(query), proxy=None, open_timeout=5, close_timeout=2, **kwargs)

    def connect_as(self, sub: str, role: Role = "user", **kwargs: Any) -> ws_connect:
        return self.connect(f"token={token(sub, role)}", **kwargs)


@pytest.fixture
async def make_server(settings: Settings, api_config: ApiConfig) -> AsyncIterator[Callable[..., Any]]:
    """``await make_server(**config_overrides)`` -> the app served by uvicorn on a free port."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def factory(**overrides: Any) -> LiveServer:
        app = create_app(settings, dataclasses.replace(api_config, **overrides))
        port = free_port()
        config = server_config(app, "127.0.0.1", port, lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        running.append((server, task))

        async def up() -> bool:
            if task.done():
                task.result()  # surfaces the startup error
            return server.started

        await wait_until(up, timeout=10, what="uvicorn started")
        return LiveServer(app, port)

    yield factory
    for server, task in running:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server(make_server: Callable[..., Any]) -> LiveServer:
    result: LiveServer = await make_server()
    return result


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send_json(ws: ClientConnection, payload: Any) -> None:
    await ws.send(orjson.dumps(payload).decode())


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 10.0) -> list[Any]:
    """Everything on partition 0 of ``topic`` from the start, once ``expected`` records are there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[Any] = []

        async def enough() -> bool:
            batch = await consumer.getmany(tp, timeout_ms=200)
            records.extend(batch.get(tp, []))
            return len(records) >= expected

        await wait_until(enough, timeout=timeout, what=f"{expected} records on {topic}")
        return records
    finally:
        await consumer.stop()


async def end_offset(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        offsets = await consumer.end_offsets([tp])
        return int(offsets[tp])
    finally:
        await consumer.stop()
