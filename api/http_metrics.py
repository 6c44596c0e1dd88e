"""ASGI middleware recording request count and latency per route template.

The label is the route's path template (``/v1/users/{user_id}``), never the raw path, so a client
walking user ids cannot blow up the number of series; requests that match no route share the
label ``unmatched``. Pure ASGI rather than ``BaseHTTPMiddleware`` so it adds no task per request
and sees the status of responses produced by exception handlers too.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = str(getattr(route, "path", "unmatched")) if route is not None else "unmatched"
            method = str(scope.get("method", ""))
            metrics.HTTP_REQUESTS.labels(label, method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(label, method).observe(time.perf_counter() - start)
