"""Referral codes, claims, history and stats, the admin review queue and growth analytics
(docs/growth.md). State changes are commands (``api.commands``); reads use the worker's views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from pydantic import Field, StrictBool, StrictStr

from api.commands import (
    StrictBody,
    UserIdQuery,
    get_json,
    now_ms,
    pending,
    rate_limit,
    refused,
    server_command_id,
    subject_of,
    submit,
)
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.ids import StrictId
from api.responses import OrjsonResponse
from infra import keys
from infra.redis_conn import RedisClient, as_text
from models.events import format_ts
from models.referrals import HELD, ReferrerBook, growth_analytics, normalize_code, referral_code

router = APIRouter(tags=["referrals"])

#: The per-IP claim counter covers one UTC day; it is kept two so a late claim still reads it.
IP_CLAIMS_TTL_S = 2 * 86_400


async def _code_owner(redis: RedisClient, code: str) -> str | None:
    raw: bytes | str | None = await redis.get(keys.referral_code(code))
    return None if raw is None else as_text(raw)


def _client_ip(request: Request) -> str | None:
    # request.client only: X-Forwarded-For is set by whoever sends the request, so trusting it
    # here would let one machine claim from a new "IP" every time and never trip the IP
    # velocity check. Behind a proxy, uvicorn (proxy_headers, forwarded_allow_ips) already puts
    # the forwarded address here, and only when the proxy is a trusted one.
    return request.client.host if request.client else None


class GenerateBody(StrictBody):
    device_id: StrictId | None = None


class ClaimBody(StrictBody):
    code: Annotated[StrictStr, Field(max_length=64)]
    device_id: StrictId | None = None
    email: Annotated[StrictStr | None, Field(max_length=254)] = None


class ReviewBody(StrictBody):
    approve: StrictBool


# ---------------------------------------------------------------------------------------------
# Referrals


@router.post(
    "/v1/referrals/generate",
    responses={
        202: {"description": "no answer yet: {'command_id', 'status': 'pending'}"},
        409: {"description": "the code already belongs to another user"},
        429: {"description": "rate limited"},
    },
)
async def generate_code(
    request: Request, state: StateDep, principal: PrincipalDep, body: GenerateBody | None = None
) -> OrjsonResponse:
    await rate_limit(state, principal)
    user_id = principal.sub
    code = referral_code(state.secret.encode(), user_id)
    # NX: 40-bit codes can collide; the first owner keeps the code and the second is refused
    # rather than silently stealing the first one's referrals.
    if not await state.redis.set(keys.referral_code(code), user_id, nx=True):
        owner = await _code_owner(state.redis, code)
        if owner is not None and owner != user_id:
            raise ApiError(409, "code_collision", "this referral code belongs to another user")
    command_id = server_command_id(user_id)
    fields = {"code": code, "device_id": body.device_id if body else None, "ip": _client_ip(request)}
    answer = await submit(state, command_id, "referral_generate", user_id, fields)
    if answer is None:
        return pending(command_id)
    if not answer.get("ok"):
        raise refused(answer, {})
    return OrjsonResponse({"code": code})


@router.post(
    "/v1/referrals/claim",
    status_code=202,
    responses={
        202: {"description": "claimed, or no answer yet (then 'status': 'pending')"},
        400: {"description": "not a well-formed code"},
        404: {"description": "no user has this code"},
        409: {"description": "the caller was already referred"},
        422: {"description": "the caller's own code"},
        429: {"description": "rate limited"},
    },
)
async def claim_code(
    request: Request, body: ClaimBody, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    await rate_limit(state, principal)
    user_id = principal.sub
    code = normalize_code(body.code)
    if code is None:
        raise ApiError(400, "bad_code", "not a referral code")
    referrer_id = await _code_owner(state.redis, code)
    if referrer_id is None:
        raise ApiError(404, "unknown_code", "no user has this referral code")
    if referrer_id == user_id:
        raise ApiError(422, "self_referral", "you cannot claim your own referral code")
    ip = _client_ip(request)
    ip_claims = 0
    if ip is not None:
        day = datetime.now(UTC).date().isoformat()
        async with state.redis.pipeline(transaction=True) as pipe:
            pipe.incr(keys.referral_ip_claims(ip, day))
            pipe.expire(keys.referral_ip_claims(ip, day), IP_CLAIMS_TTL_S)
            ip_claims, _ = await pipe.execute()
    command_id = server_command_id(user_id)
    fields = {
        "referrer_id": referrer_id,
        "code": code,
        "device_id": body.device_id,
        "ip": ip,
        "email": body.email,
        "ip_claims_24h": int(ip_claims),
    }
    answer = await submit(state, command_id, "referral_claim", user_id, fields)
    if answer is None:
        return pending(command_id)
    if not answer.get("ok"):
        raise refused(answer, {"already_referred": 409, "self_referral": 422})
    return OrjsonResponse(
        {"status": "claimed", "referrer_id": answer.get("referrer_id", referrer_id)}, status_code=202
    )


def _public_referral(book: ReferrerBook, referred_id: str, now_ms: int) -> dict[str, Any]:
    # Flags and signals (devices, IPs) stay with the admins: showing a referrer why a claim was
    # held would teach them how to dodge the checks.
    ref = book.referrals[referred_id]
    return {
        "referred_id": ref.referred_id,
        "status": ref.status_at(now_ms),
        "claimed_at": format_ts(ref.claimed_at_ms),
        "complete_by": format_ts(ref.deadline_ms),
        "completed_at": None if ref.completed_at_ms is None else format_ts(ref.completed_at_ms),
    }


async def _referral_view(
    redis: RedisClient, user_id: str
) -> tuple[ReferrerBook | None, dict[str, Any] | None]:
    view = await get_json(redis, keys.user_referrals(user_id))
    if view is None:
        return None, None
    raw_book = view.get("book")
    book = None if raw_book is None else ReferrerBook.from_dict(raw_book)
    return book, _public_referred_by(view.get("referred_by"))


def _public_referred_by(raw: Any) -> dict[str, Any] | None:
    """Who referred this user and when; the worker's bookkeeping flags stay internal."""
    if not isinstance(raw, dict) or not isinstance(raw.get("referrer_id"), str):
        return None
    claimed = raw.get("claimed_at_ms")
    return {
        "referrer_id": raw["referrer_id"],
        "claimed_at": format_ts(claimed) if isinstance(claimed, int) else None,
    }


@router.get("/v1/referrals/history", responses={403: {"description": "another user's data"}})
async def referral_history(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = subject_of(principal, user_id)
    book, referred_by = await _referral_view(state.redis, subject)
    now = now_ms()
    referrals = []
    if book is not None:
        newest_first = sorted(
            book.referrals.values(), key=lambda r: (r.claimed_at_ms, r.referred_id), reverse=True
        )
        referrals = [_public_referral(book, r.referred_id, now) for r in newest_first]
    return OrjsonResponse(
        {
            "user_id": subject,
            "code": book.code if book else None,
            "referred_by": referred_by,
            "referrals": referrals,
        }
    )


@router.get("/v1/referrals/stats", responses={403: {"description": "another user's data"}})
async def referral_stats(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = subject_of(principal, user_id)
    book, _ = await _referral_view(state.redis, subject)
    # A user without a book has simply referred no one yet: zeros, not 404.
    stats = (book or ReferrerBook(subject, "")).stats(now_ms())
    if book is None:
        stats["code"] = None
    return OrjsonResponse({"user_id": subject, **stats})


async def _all_books(redis: RedisClient) -> list[ReferrerBook]:
    return [ReferrerBook.from_dict(orjson.loads(raw)) for raw in await redis.hvals(keys.REFERRAL_BOOKS)]


@router.get("/v1/admin/referrals/held", responses={403: {"description": "not an admin"}})
async def held_referrals(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal)
    refs = [
        ref for book in await _all_books(state.redis) for ref in book.referrals.values() if ref.status == HELD
    ]
    # Oldest first: the review queue is worked in the order people have been waiting.
    refs.sort(key=lambda r: (r.claimed_at_ms, r.referrer_id, r.referred_id))
    held = [
        {
            "referrer_id": ref.referrer_id,
            "referred_id": ref.referred_id,
            "claimed_at": format_ts(ref.claimed_at_ms),
            "completed_at": None if ref.completed_at_ms is None else format_ts(ref.completed_at_ms),
            "flags": list(ref.flags),
            "signals": {
                "device_id": ref.signals.device_id,
                "ip": ref.signals.ip,
                "email_domain": ref.signals.email_domain,
            },
        }
        for ref in refs
    ]
    return OrjsonResponse({"held": held})


@router.post(
    "/v1/admin/referrals/{referrer_id}/{referred_id}/review",
    responses={
        202: {"description": "no answer yet"},
        403: {"description": "not an admin"},
        404: {"description": "the referrer has no such referral"},
        409: {"description": "the referral is not held"},
    },
)
async def review_referral(
    referrer_id: str, referred_id: str, body: ReviewBody, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_admin(principal)
    await rate_limit(state, principal)
    # Keyed by the referrer: the referral lives in the referrer's book, on their partition.
    command_id = server_command_id(referrer_id)
    fields = {"referred_id": referred_id, "approve": body.approve}
    answer = await submit(state, command_id, "referral_review", referrer_id, fields)
    if answer is None:
        return pending(command_id)
    if not answer.get("ok"):
        raise refused(answer, {"unknown_referral": 404})
    return OrjsonResponse(answer)


@router.get("/v1/analytics/growth", responses={403: {"description": "not an admin"}})
async def analytics_growth(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_admin(principal)
    books = await _all_books(state.redis)
    # Every user with an engagement view counts as a user; SCAN keeps Redis responsive while
    # counting (an exact total is not needed for a ratio shown to 4 places).
    total_users = 0
    async for _ in state.redis.scan_iter(match=keys.user_state("*"), count=1000):
        total_users += 1
    return OrjsonResponse({"total_users": total_users, **growth_analytics(books, total_users, now_ms())})
