"""Contact verification (double opt-in): a new email address or phone number is used only once
its owner has confirmed it (models/contact_verification.py).

A profile PUT that sets a new address keeps the old one in the profile and calls ``start``:
the new address is held as pending, with a code sent to it through the delivery services (and,
by email, a link to ``/v1/t/verify/{token}``). ``POST /v1/users/{id}/contact-verification``
with the code, or the link's button, writes the address into the profile. Removing an address
needs no code: no one can be reached against their will by it.

The link's page confirms on a POST only: mail scanners follow links (a GET), and a scanner
must not confirm an address for whoever typed it.
"""

from __future__ import annotations

import hashlib
from html import escape
from typing import Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from api.bodies import read_json_object
from api.commands import now_ms, rate_limit
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.profile_writes import held_profile, profile_fields, write_profile
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.routes.tracking import checked_link, page
from api.state import AppState
from delivery.receipts import lift_suppression
from infra import keys
from infra.producer import ProducerUnavailable
from infra.redis_conn import as_text
from infra.tracking import MAX_TOKEN_LEN
from models.contact import normalize_email, normalize_phone
from models.contact_verification import (
    FIELDS,
    SEND_LIMITS,
    Channel,
    CodeBook,
    CodeSealer,
    Pending,
    canonical_address,
    pending_id_of,
    verification_message,
)
from models.events import format_ts

router = APIRouter(tags=["profile"])

Token = Path(min_length=1, max_length=MAX_TOKEN_LEN)
MAX_BODY_BYTES = 1024

# Removes the pending request only if it is still the one confirmed (not replaced meanwhile).
_TAKE_IF_SAME = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Counts a wrong guess only while the pending address exists, so a guess racing the expiry (or
# the confirmation) never leaves a stray hash without a TTL behind.
_COUNT_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""


async def pending(state: AppState, user_id: str, channel: Channel) -> Pending | None:
    raw = await state.redis.hgetall(keys.contact_pending(user_id, channel))
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    return Pending.from_fields(fields) if fields else None


async def _paced(state: AppState, user_id: str, channel: Channel, address: str) -> None:
    """429 when too many codes were asked for lately: by this user, by this user for this
    address, for this address by anyone (in its canonical spelling), or on this channel in all
    (models/contact_verification.py ``SEND_LIMITS``)."""
    digest = hashlib.sha256(canonical_address(channel, address).encode()).hexdigest()[:32]
    subjects = {
        "user": user_id,
        "user-address": f"{user_id}:{digest}",
        "address": digest,
        f"channel-{channel}": channel,
    }
    for scope, subject in subjects.items():
        count, per_ms = SEND_LIMITS[scope]
        limiter = RateLimiter(state.redis, f"verify-{scope}", count / (per_ms / 1000), count)
        await limiter.require(
            subject, "too many codes asked for lately; try again later", "verification_paced"
        )


async def start(
    state: AppState, user_id: str, channel: Channel, address: str, *, again: bool = False
) -> Pending:
    """Hold ``address`` as pending and send its code, unless that very address is already
    pending and its code still works (a profile PUT repeated does not send codes again; with
    ``again``, a fresh code replaces it). Paced before anything changes: a refused request
    leaves the pending code as it was."""
    now = now_ms()
    current = await pending(state, user_id, channel)
    if not again and current is not None and current.address == address and current.expires_ms > now:
        return current
    await _paced(state, user_id, channel, address)
    fresh, code = CodeBook(state.secret).new(user_id, channel, address, now)
    key = keys.contact_pending(user_id, channel)
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=fresh.to_fields())  # type: ignore[arg-type]  # dict invariance
        pipe.pexpireat(key, fresh.expires_ms)
        await pipe.execute()
    sealed = CodeSealer(state.secret).seal(user_id, fresh.id, code)
    message = verification_message(user_id, fresh, sealed, format_ts(now), link_hint=channel == "EMAIL")
    try:
        await state.producer.send_all(
            state.config.notifications_topic, [(user_id, message)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        # The new code never left: put back what was pending before (if anything).
        await _restore(state, key, current)
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    return fresh


async def _restore(state: AppState, key: str, previous: Pending | None) -> None:
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if previous is not None and previous.expires_ms > now_ms():
            pipe.hset(key, mapping=previous.to_fields())  # type: ignore[arg-type]  # dict invariance
            pipe.pexpireat(key, previous.expires_ms)
        await pipe.execute()


async def _confirm(state: AppState, user_id: str, confirmed: Pending) -> OrjsonResponse:
    """Write the confirmed address into the profile. Only the caller that removed this very
    request writes (two confirmations racing write once; a request replaced meanwhile is not
    removed), and a write that fails puts the request back, so the code still works."""
    key = keys.contact_pending(user_id, confirmed.channel)
    if not await state.redis.eval(_TAKE_IF_SAME, 1, key, confirmed.id):
        raise ApiError(409, "already_confirmed", "this address was just confirmed or replaced")
    held = await held_profile(state, user_id) or {}
    fields = {**profile_fields(held), FIELDS[confirmed.channel]: confirmed.address}
    try:
        response = await write_profile(
            state, user_id, held, {**fields, "notification_prefs": held.get("notification_prefs") or {}}
        )
    except ApiError:
        await _restore(state, key, confirmed)
        raise
    if confirmed.channel == "EMAIL":
        # The code reached that mailbox: a suppression from an old bounce no longer holds.
        await lift_suppression(state.redis, confirmed.address)
    return response


def _channel(value: object) -> Channel:
    name = str(value or "").upper()
    if name not in FIELDS:
        raise ApiError(422, "invalid_channel", "channel is EMAIL or SMS")
    return name


@router.get("/v1/users/{user_id}/contact-verification")
async def get_pending(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """The addresses waiting for their code."""
    require_user_access(principal, user_id)
    shown: list[dict[str, Any]] = []
    for channel in FIELDS:
        held = await pending(state, user_id, channel)
        if held is not None:
            shown.append({**held.view(), "expires_at": format_ts(held.expires_ms)})
    return OrjsonResponse({"pending": shown})


@router.post(
    "/v1/users/{user_id}/contact-verification",
    responses={
        404: {"description": "nothing pending on that channel"},
        409: {"description": "confirmed by another request"},
        410: {"description": "the code expired or too many wrong codes: ask for a new one"},
        422: {"description": "wrong code (attempts_left says how many remain)"},
    },
)
async def confirm_code(
    user_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    """Confirm a pending address with the code sent to it."""
    require_user_access(principal, user_id)
    body = await read_json_object(request, MAX_BODY_BYTES, "verification")
    channel = _channel(body.get("channel"))
    code = body.get("code")
    if not isinstance(code, str):
        raise ApiError(422, "invalid_code", "code is the string of digits sent to the address")
    await rate_limit(state, principal)
    key = keys.contact_pending(user_id, channel)
    attempts = int(await state.redis.eval(_COUNT_ATTEMPT, 1, key))
    held = await pending(state, user_id, channel)
    if attempts < 0 or held is None:
        raise ApiError(404, "nothing_pending", f"no {FIELDS[channel]} is waiting for a code")
    verdict = CodeBook(state.secret).check(user_id, held, code, now_ms())
    if verdict == "ok":
        return await _confirm(state, user_id, held)
    if verdict in ("expired", "exhausted"):
        await state.redis.delete(key)
        raise ApiError(410, f"code_{verdict}", "ask for a new code (resend)")
    raise ApiError(
        422, "wrong_code", "that is not the code sent", extra={"attempts_left": held.attempts_left()}
    )


@router.post("/v1/users/{user_id}/contact-verification/resend", responses={404: {}, 429: {}})
async def resend(user_id: str, request: Request, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """A fresh code for the pending address (the old one stops working)."""
    require_user_access(principal, user_id)
    body = await read_json_object(request, MAX_BODY_BYTES, "verification")
    channel = _channel(body.get("channel"))
    held = await pending(state, user_id, channel)
    if held is None:
        raise ApiError(404, "nothing_pending", f"no {FIELDS[channel]} is waiting for a code")
    fresh = await start(state, user_id, channel, held.address, again=True)
    return OrjsonResponse({**fresh.view(), "expires_at": format_ts(fresh.expires_ms)}, status_code=202)


async def _linked(state: AppState, token: str) -> tuple[str, Pending]:
    """The pending request a verification link names; 404 when the link is not one, or names a
    request since confirmed, replaced or expired."""
    link = checked_link(state, token)
    if link.kind != "verify" or link.channel not in FIELDS:
        raise ApiError(404, "bad_link", "not a verification link")
    held = await pending(state, link.user_id, link.channel)
    if held is None or held.id != pending_id_of(link.notification_id) or held.expires_ms < now_ms():
        raise ApiError(404, "bad_link", "this link was used, replaced by a newer one, or has expired")
    return link.user_id, held


@router.get("/v1/t/verify/{token}", include_in_schema=False)
async def verify_page(state: StateDep, token: str = Token) -> HTMLResponse:
    _, held = await _linked(state, token)
    address = escape(held.address)
    return page(
        "Confirm your address",
        f"<h1>Confirm your address</h1><p>Use <b>{address}</b> for Elimu Pulse notifications?</p>"
        '<form method="post"><button type="submit">Yes, confirm</button></form>',
    )


@router.post("/v1/t/verify/{token}", include_in_schema=False)
async def verify_link(state: StateDep, token: str = Token) -> HTMLResponse:
    user_id, held = await _linked(state, token)
    await _confirm(state, user_id, held)
    return page("Confirmed", f"<h1>Done</h1><p>{escape(held.address)} is confirmed.</p>")


def changed_contacts(held: dict[str, Any], body: dict[str, Any]) -> dict[Channel, str]:
    """The addresses a profile PUT sets that the profile does not hold yet (normalised): each
    must be confirmed before it is used. Removing one (null) is not a change that needs it."""
    changed: dict[Channel, str] = {}
    for channel, field in FIELDS.items():
        value = body.get(field)
        if not isinstance(value, str) or not value.strip():
            continue
        normal = normalize_email(value) if channel == "EMAIL" else normalize_phone(value)
        if normal != held.get(field):
            changed[channel] = normal
    return changed


def with_pending(response: OrjsonResponse, started: list[Pending]) -> OrjsonResponse:
    """The profile answer with the addresses now waiting for their code."""
    if not started:
        return response
    shown = orjson.loads(response.body)
    shown["pending_verification"] = [{**p.view(), "expires_at": format_ts(p.expires_ms)} for p in started]
    return OrjsonResponse(shown, status_code=response.status_code)
