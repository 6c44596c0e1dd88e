"""``GET /dashboard``: the operators' live dashboard, one self-contained HTML page.

The page is a static shell served without auth: it holds no data. It asks for an admin token (a
form, or ``#token=…`` in the URL fragment, which never reaches a server), checks it against
``GET /v1/ops/lag``, loads the current state over HTTP and then follows the websocket channels
``ops:lag``, ``admin:at-risk``, ``market`` and ``leaderboard:{daily,all_time}`` (CONTRACT.md §7–8).
Plain JavaScript and a hand-drawn ``<canvas>`` chart: no build step, no external resources.

The page's inline script and style are allowed by their hashes in a strict Content-Security-Policy
(computed here from the file), so nothing else can run in a page that holds an admin token.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])

PAGE = "dashboard.html"
_INLINE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.S) for tag in ("script", "style")}


@lru_cache(maxsize=1)
def page() -> tuple[bytes, dict[str, str]]:
    """The page and its response headers, read once from the package data (``api/static``)."""
    html = resources.files("api").joinpath("static", PAGE).read_text(encoding="utf-8")
    script_hashes = " ".join(_csp_hash(s) for s in _INLINE["script"].findall(html))
    style_hashes = " ".join(_csp_hash(s) for s in _INLINE["style"].findall(html))
    csp = (
        "default-src 'none'; "
        f"script-src {script_hashes}; "
        f"style-src {style_hashes}; "
        "connect-src 'self'; "
        "img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
    return html.encode("utf-8"), headers


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    body, headers = page()
    return HTMLResponse(body, headers=headers)
