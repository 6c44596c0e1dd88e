"""The per-process resources the routes share, created and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from api.config import ApiConfig
from api.hub import Hub
from api.rate_limit import RateLimiter
from api.ws_limits import ConnectionBudget
from infra.channels import ChannelLog
from infra.producer import EventProducer
from infra.redis_conn import RedisClient
from infra.settings import Settings
from models.rules import Rules


@dataclass
class AppState:
    settings: Settings
    config: ApiConfig
    secret: str
    redis: RedisClient
    channels: ChannelLog
    producer: EventProducer
    hub: Hub
    #: ``POST /v1/events`` buckets, counted in events: per user, and per admin principal.
    events_rate: RateLimiter
    admin_events_rate: RateLimiter
    #: Websocket connections this process holds (limits per process and per user).
    ws_budget: ConnectionBudget
    #: The rule book (``ELIMU_RULES``), for the catalogues the API shows (achievements, levels).
    rules: Rules


def app_state(conn: HTTPConnection) -> AppState:
    """The state of the app serving ``conn`` (a request or a websocket)."""
    state = getattr(conn.app.state, "pulse", None)
    if not isinstance(state, AppState):
        raise RuntimeError("the app's lifespan has not run: use create_app() under an ASGI server")
    return state
