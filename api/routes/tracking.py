"""Where the links of a mail or a push land (infra/tracking.py): the open pixel, click-through
and one-click unsubscribe (RFC 8058).

No token is needed: the signed link is the credential, and it can only record what it names
(this notification, this user, this channel). Opens and clicks are published as the user's
`notification_opened` / `notification_clicked` events, with an id per notification and kind, so
a pixel loaded ten times counts once; the worker folds them into the notification's funnel and
the A/B counts. An unsubscribe turns the channel off in the user's notification settings (the
same whole-profile write as ``PUT /v1/users/{id}/notification-settings``) and reports
``unsubscribed`` against the message's template and variant.

A GET never unsubscribes: mail scanners and link previews follow links. It shows a page whose
button POSTs; mail clients that honour ``List-Unsubscribe-Post`` POST directly.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from api import metrics
from api.commands import now_ms
from api.deps import StateDep
from api.errors import ApiError
from api.profile_writes import held_profile, profile_fields, write_profile
from api.rate_limit import RateLimiter
from api.state import AppState
from infra import keys
from infra.producer import ProducerUnavailable
from infra.tracking import LINK_TTL_MS, MAX_TOKEN_LEN, BadLink, Link, LinkSigner
from models.career import DEFAULT_CHANNELS
from models.delivery import delivery_report, tracking_event
from models.scanners import TRAPPED_FOR_MS, machine_reason

router = APIRouter(tags=["tracking"])

Token = Path(min_length=1, max_length=MAX_TOKEN_LEN)
#: The 1x1 transparent GIF of the open pixel.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
#: Per notification: one link cannot be replayed into a flood of produce calls.
RATE_SCOPE, RATE_PER_S, RATE_BURST = "track", 2.0, 10


def checked_link(state: AppState, token: str) -> Link:
    try:
        return LinkSigner(state.secret).verify(token, now_ms())
    except BadLink as exc:
        raise ApiError(404, "bad_link", str(exc)) from exc


async def _paced(state: AppState, link: Link) -> bool:
    limiter = RateLimiter(state.redis, RATE_SCOPE, RATE_PER_S, RATE_BURST)
    return (await limiter.take(f"{link.kind}:{link.notification_id}")).allowed


async def _record(state: AppState, link: Link, request: Request) -> None:
    """Publish the open or click ``link`` names, unless a machine made it (models/scanners.py);
    a repeat is paced away, and counts once anyway."""
    now = now_ms()
    why = machine_reason(
        channel=link.channel,
        sent_ms=link.expires_ms - LINK_TTL_MS,
        now_ms=now,
        user_agent=request.headers.get("user-agent", ""),
        trapped=bool(await state.redis.exists(keys.tracking_trapped(link.notification_id))),
    )
    if why is not None:
        metrics.TRACKING_IGNORED.labels(link.kind, why).inc()
        return
    if not await _paced(state, link):
        return
    event = tracking_event(link.kind, link.notification_id, link.user_id, link.channel, now)
    try:
        await state.producer.send_all(
            state.config.events_topic, [(link.user_id, event)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width"></head>'
        f'<body style="font-family:sans-serif;max-width:480px;margin:3em auto">{body}</body></html>'
    )
    return HTMLResponse(html, status_code=status, headers=_NO_STORE)


@router.get("/v1/t/open/{token}", include_in_schema=False)
async def track_open(request: Request, state: StateDep, token: str = Token) -> Response:
    link = checked_link(state, token)
    if link.kind == "open":
        await _record(state, link, request)
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


@router.get("/v1/t/click/{token}", include_in_schema=False)
async def track_click(request: Request, state: StateDep, token: str = Token) -> HTMLResponse:
    link = checked_link(state, token)
    if link.kind != "click":
        raise ApiError(404, "bad_link", "not a click-through link")
    await _record(state, link, request)
    return page("Elimu Pulse", "<h1>Thanks!</h1><p>Pick up where you left off in the Elimu Pulse app.</p>")


@router.get("/v1/t/more/{token}", include_in_schema=False)
async def trap(state: StateDep, token: str = Token) -> Response:
    """The hidden link of a mail (models/mail.py): no reader sees it, so whatever follows it is a
    scanner, and the notification's opens and clicks are set aside for a while."""
    link = checked_link(state, token)
    if link.kind == "trap":
        await state.redis.set(keys.tracking_trapped(link.notification_id), "1", px=TRAPPED_FOR_MS)
        metrics.TRACKING_IGNORED.labels("trap", "trap").inc()
    return Response(status_code=204, headers=_NO_STORE)


@router.get("/v1/t/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe_page(state: StateDep, token: str = Token) -> HTMLResponse:
    link = checked_link(state, token)
    if link.kind != "unsubscribe":
        raise ApiError(404, "bad_link", "not an unsubscribe link")
    channel = escape(link.channel.lower())
    return page(
        "Unsubscribe",
        f"<h1>Unsubscribe</h1><p>Stop getting Elimu Pulse notifications by {channel}?</p>"
        f'<form method="post"><button type="submit">Unsubscribe from {channel}</button></form>',
    )


@router.post("/v1/t/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe(state: StateDep, token: str = Token) -> HTMLResponse:
    link = checked_link(state, token)
    if link.kind != "unsubscribe":
        raise ApiError(404, "bad_link", "not an unsubscribe link")
    held = await held_profile(state, link.user_id) or {}
    prefs: dict[str, Any] = dict(held.get("notification_prefs") or {})
    current = list(prefs.get("channels") or DEFAULT_CHANNELS)
    if link.channel in current:
        prefs["channels"] = [c for c in current if c != link.channel] or list(DEFAULT_CHANNELS)
        await write_profile(state, link.user_id, held, {**profile_fields(held), "notification_prefs": prefs})
        # Counted against the message's variant once, and only when it turned a channel off: a
        # link posted again (or by whoever it was forwarded to) changes no A/B count.
        counted = keys.unsubscribe_counted(link.notification_id, link.channel)
        if await state.redis.set(counted, "1", nx=True, px=LINK_TTL_MS):
            report = delivery_report(
                link.notification_id, link.channel, "unsubscribed",
                type="", template=link.template, variant=link.variant,
            )  # fmt: skip
            try:
                await state.producer.send_all(
                    state.config.outcomes_topic, [("", report)], state.config.produce_timeout_s
                )
            except ProducerUnavailable as exc:
                raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    channel = escape(link.channel.lower())
    return page(
        "Unsubscribed",
        f"<h1>Done</h1><p>You will not get Elimu Pulse notifications by {channel} any more.</p>",
    )
