"""The FastAPI application: wiring only.

``create_app`` assembles middleware, error handlers and routers; the lifespan owns the process's
shared resources (one Redis pool, the channel log, the Kafka producer, the websocket hub) and
closes them in reverse order. Everything a route needs comes from ``api.state.AppState``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI

from api import redact, ws
from api.body_limit import BodySizeLimitMiddleware
from api.config import ApiConfig
from api.errors import install_error_handlers
from api.http_metrics import HttpMetricsMiddleware
from api.hub import Hub
from api.ids import check_path_params
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.routes import ROUTERS
from api.routes.ops import export_lag_gauges
from api.state import AppState
from api.ws_limits import ConnectionBudget
from api.ws_protocol import SharedFrameProtocol
from infra.channels import ChannelLog
from infra.lag import LagConfig, LagSampler
from infra.producer import EventProducer
from infra.redis_conn import connect, connect_pubsub
from infra.settings import Settings
from infra.signing import RecordSigner
from models.rules import Rules

log = logging.getLogger(__name__)

#: Largest websocket frame uvicorn accepts; the protocol handler enforces the smaller op limit.
WS_MAX_FRAME_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, config: ApiConfig | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    config = config or ApiConfig.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Read first: a bad rules file stops the API with the message naming the entry, as it
        # stops the workers, before any connection is opened.
        rules = Rules.from_toml(settings.rules_path.read_text("utf-8"))
        redis = connect(settings.redis_url)
        producer = EventProducer(settings.kafka_bootstrap, signer=RecordSigner(settings.secret()))
        # Its own connection: SUBSCRIBE holds one, and on a cluster it goes to one node.
        pubsub_redis = connect_pubsub(settings.redis_url)
        hub = Hub(pubsub_redis, subscribe_timeout_s=config.ws_subscribe_timeout_s)
        lag_sampler: LagSampler | None = None
        try:
            await producer.start()
            await hub.start()
            app.state.pulse = AppState(
                settings=settings,
                config=config,
                secret=settings.secret(),
                redis=redis,
                channels=ChannelLog(redis),
                producer=producer,
                hub=hub,
                events_rate=RateLimiter(redis, "events", config.rate_per_s, config.rate_burst),
                # Its own scope: an admin and a user may share a ``sub`` but not a bucket.
                admin_events_rate=RateLimiter(
                    redis, "events-admin", config.admin_rate_per_s, config.admin_rate_burst
                ),
                ws_budget=ConnectionBudget(
                    max_connections=config.ws_max_connections,
                    max_per_user=config.ws_max_connections_per_user,
                    max_unauthenticated=config.ws_max_unauthenticated,
                ),
                rules=rules,
            )
            # One process at a time samples consumer lag (a Redis lock); all export its gauges.
            lag_sampler = LagSampler(
                redis,
                settings.kafka_bootstrap,
                channels=app.state.pulse.channels,
                config=LagConfig.from_env(),
                on_report=export_lag_gauges,
            )
            app.state.lag_sampler = lag_sampler
            await lag_sampler.start()
            yield
        finally:
            if lag_sampler is not None:
                await lag_sampler.stop()
            app.state.pulse = None
            await hub.stop()
            await pubsub_redis.aclose()
            await producer.stop()
            await redis.aclose()

    app = FastAPI(
        title="Elimu Pulse",
        version="0.1.0",
        description="Real-time engagement engine: ingest, serving reads and live channels.",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # Every path parameter of every route is an id with a byte budget (api/ids.py).
        dependencies=[Depends(check_path_params)],
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ws.router)
    # Added last = outermost: request metrics also count the 413s the size limit produces.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware)
    return app


def server_config(app: FastAPI, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API (``elimu api`` and the tests' live servers): websockets
    through ``SharedFrameProtocol``, so a channel message is framed once for all its subscribers."""
    return uvicorn.Config(
        app, host=host, port=port, ws=SharedFrameProtocol, ws_max_size=WS_MAX_FRAME_BYTES, **options
    )


def run(settings: Settings, host: str = "127.0.0.1") -> None:
    """Serve the API under uvicorn on ``settings.api_port`` until interrupted (``elimu api``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = server_config(app, host, settings.api_port, proxy_headers=True, log_level="info")
    # After Config: it (re)configures uvicorn's loggers.
    redact.install()
    uvicorn.Server(config).run()
