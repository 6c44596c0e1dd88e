"""Referrals, rewards, the daily challenge and goals (docs/growth.md), API side.

Reads come from the serving views the growth worker writes (``infra.keys``); anything that
depends on the reader's clock (credit expiry, referral expiry, today's challenge, expired goals)
is computed here with the same pure functions the worker uses, so a view is never stale just
because no command touched it since.

Every state change is a **command** on ``user-commands`` keyed by the user whose state changes
(``infra.commands``): one worker applies a user's commands in order, so two racing redemptions
cannot spend one balance twice. The API waits a few seconds for the worker's answer and maps it
to a status; without an answer in time it says ``202`` with the command id, since the command is
durable in Kafka and will still be applied.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from redis.asyncio import Redis

from api.auth import Principal
from api.deps import PrincipalDep, StateDep, require_user_access
from api.errors import ApiError
from api.producer import ProducerUnavailable
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.routes.users import streak_today
from api.state import AppState
from infra import keys
from infra.commands import COMMANDS_TOPIC, await_result
from models import rewards
from models.challenges import (
    ChallengeProgress,
    Goal,
    challenge_for,
    expire_goals,
    new_goal,
    public_challenge,
    public_goal,
)
from models.events import MAX_ID_LEN, InvalidEvent, format_ts, parse_ts
from models.referrals import HELD, ReferrerBook, growth_analytics, normalize_code, referral_code
from models.streaks import local_day

router = APIRouter(tags=["growth"])

Answer = dict[str, Any]

#: How long a request waits for the worker's answer before replying 202 (docs/growth.md).
COMMAND_TIMEOUT_S = 5.0
#: Token bucket per principal over every growth POST. Far below the events limit: these are
#: human actions (a redemption, a claim), and each costs a worker round trip.
RATE_SCOPE = "growth"
RATE_PER_S = 5.0
RATE_BURST = 20
#: The per-IP claim counter covers one UTC day; it is kept two so a late claim still reads it.
IP_CLAIMS_TTL_S = 2 * 86_400
#: Upper bound on a grant's lifetime; beyond it "expiring" credit is a typo for "never".
MAX_GRANT_EXPIRY_DAYS = 3650
_DAY_MS = 86_400_000

UserIdQuery = Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LEN)]


# ---------------------------------------------------------------------------------------------
# Bodies. Strict types: "5" is not a number and 1 is not a boolean, as everywhere in the API.


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateBody(_Body):
    device_id: Annotated[StrictStr | None, Field(max_length=MAX_ID_LEN)] = None


class ClaimBody(_Body):
    code: Annotated[StrictStr, Field(max_length=64)]
    device_id: Annotated[StrictStr | None, Field(max_length=MAX_ID_LEN)] = None
    email: Annotated[StrictStr | None, Field(max_length=254)] = None


class RedeemBody(_Body):
    perk_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LEN)]
    request_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LEN)]


class GrantBody(_Body):
    user_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LEN)]
    amount: Annotated[StrictInt, Field(ge=1, le=rewards.MAX_GRANT)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    grant_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LEN)]
    expires_in_days: Annotated[StrictInt | None, Field(ge=1, le=MAX_GRANT_EXPIRY_DAYS)] = None


class ReviewBody(_Body):
    approve: StrictBool


class GoalBody(_Body):
    kind: StrictStr
    target: StrictInt | StrictFloat
    deadline: StrictStr | StrictInt | StrictFloat
    params: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _now_ms() -> int:
    return int(time.time() * 1000)


def _subject(principal: Principal, user_id: str | None) -> str:
    """Whose data a read is about: the caller's own, or ``?user_id=`` (admins, or oneself)."""
    if user_id is None:
        return principal.sub
    require_user_access(principal, user_id)
    return user_id


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this route is for admins only")


async def _rate_limit(state: AppState, principal: Principal) -> None:
    # Built per request: register_script is local (no round trip) and AppState has no slot for
    # a growth limiter; the bucket itself lives in Redis, so nothing is lost between requests.
    limiter = RateLimiter(state.redis, RATE_SCOPE, RATE_PER_S, RATE_BURST)
    decision = await limiter.take(principal.sub)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            "too many requests; slow down",
            headers={"Retry-After": limiter.retry_after_header(decision)},
        )


def _server_command_id(user_id: str) -> str:
    """An id for a command the client gave no idempotency key for: never reuses an answer."""
    return f"{user_id}:{uuid.uuid4().hex}"


async def _submit(
    state: AppState,
    command_id: str,
    command_type: str,
    user_id: str,
    fields: dict[str, Any],
    *,
    reuse_answer: bool = False,
) -> Answer | None:
    """Produce one command and wait for its answer; None when none came in time.

    ``reuse_answer`` is for client-keyed commands: a retry whose answer is already stored gets
    it without another produce, which is what the worker would answer anyway.
    """
    if reuse_answer:
        stored = await state.redis.get(keys.command_result(command_id))
        if stored is not None:
            answer: Answer = orjson.loads(stored)
            return answer
    command = {"command_id": command_id, "type": command_type, "user_id": user_id, "ts": _now_ms(), **fields}
    try:
        await state.producer.send_all(COMMANDS_TOPIC, [(user_id, command)], state.config.produce_timeout_s)
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    return await await_result(state.redis, command_id, COMMAND_TIMEOUT_S)


def _pending(command_id: str) -> OrjsonResponse:
    return OrjsonResponse({"command_id": command_id, "status": "pending"}, status_code=202)


def _refused(answer: Answer, statuses: dict[str, int], default: int = 409) -> ApiError:
    """The error for a worker's refusal: its code, a status from ``statuses``, its other fields."""
    code = str(answer.get("code") or "refused")
    message = str(answer.get("message") or code.replace("_", " "))
    extra = {k: v for k, v in answer.items() if k not in ("ok", "code", "message")}
    return ApiError(statuses.get(code, default), code, message, extra=extra)


async def _get_json(redis: Redis, key: str) -> Any:
    raw = await redis.get(key)
    return None if raw is None else orjson.loads(raw)


async def _code_owner(redis: Redis, code: str) -> str | None:
    raw: bytes | str | None = await redis.get(keys.referral_code(code))
    return raw.decode() if isinstance(raw, bytes) else raw


def _client_ip(request: Request) -> str | None:
    # request.client only: X-Forwarded-For is set by whoever sends the request, so trusting it
    # here would let one machine claim from a new "IP" every time and never trip the IP
    # velocity check. Behind a proxy, uvicorn (proxy_headers, forwarded_allow_ips) already puts
    # the forwarded address here, and only when the proxy is a trusted one.
    return request.client.host if request.client else None


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
    await _rate_limit(state, principal)
    user_id = principal.sub
    code = referral_code(state.secret.encode(), user_id)
    # NX: 40-bit codes can collide; the first owner keeps the code and the second is refused
    # rather than silently stealing the first one's referrals.
    if not await state.redis.set(keys.referral_code(code), user_id, nx=True):
        owner = await _code_owner(state.redis, code)
        if owner is not None and owner != user_id:
            raise ApiError(409, "code_collision", "this referral code belongs to another user")
    command_id = _server_command_id(user_id)
    fields = {"code": code, "device_id": body.device_id if body else None, "ip": _client_ip(request)}
    answer = await _submit(state, command_id, "referral_generate", user_id, fields)
    if answer is None:
        return _pending(command_id)
    if not answer.get("ok"):
        raise _refused(answer, {})
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
    await _rate_limit(state, principal)
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
    command_id = _server_command_id(user_id)
    fields = {
        "referrer_id": referrer_id,
        "code": code,
        "device_id": body.device_id,
        "ip": ip,
        "email": body.email,
        "ip_claims_24h": int(ip_claims),
    }
    answer = await _submit(state, command_id, "referral_claim", user_id, fields)
    if answer is None:
        return _pending(command_id)
    if not answer.get("ok"):
        raise _refused(answer, {"already_referred": 409, "self_referral": 422})
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


async def _referral_view(redis: Redis, user_id: str) -> tuple[ReferrerBook | None, dict[str, Any] | None]:
    view = await _get_json(redis, keys.user_referrals(user_id))
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
    subject = _subject(principal, user_id)
    book, referred_by = await _referral_view(state.redis, subject)
    now = _now_ms()
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
    subject = _subject(principal, user_id)
    book, _ = await _referral_view(state.redis, subject)
    # A user without a book has simply referred no one yet: zeros, not 404.
    stats = (book or ReferrerBook(subject, "")).stats(_now_ms())
    if book is None:
        stats["code"] = None
    return OrjsonResponse({"user_id": subject, **stats})


async def _all_books(redis: Redis) -> list[ReferrerBook]:
    return [ReferrerBook.from_dict(orjson.loads(raw)) for raw in await redis.hvals(keys.REFERRAL_BOOKS)]


@router.get("/v1/admin/referrals/held", responses={403: {"description": "not an admin"}})
async def held_referrals(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    _require_admin(principal)
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
    _require_admin(principal)
    await _rate_limit(state, principal)
    # Keyed by the referrer: the referral lives in the referrer's book, on their partition.
    command_id = _server_command_id(referrer_id)
    fields = {"referred_id": referred_id, "approve": body.approve}
    answer = await _submit(state, command_id, "referral_review", referrer_id, fields)
    if answer is None:
        return _pending(command_id)
    if not answer.get("ok"):
        raise _refused(answer, {"unknown_referral": 404})
    return OrjsonResponse(answer)


@router.get("/v1/analytics/growth", responses={403: {"description": "not an admin"}})
async def analytics_growth(state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    _require_admin(principal)
    books = await _all_books(state.redis)
    # Every user with an engagement view counts as a user; SCAN keeps Redis responsive while
    # counting (an exact total is not needed for a ratio shown to 4 places).
    total_users = 0
    async for _ in state.redis.scan_iter(match=keys.user_state("*"), count=1000):
        total_users += 1
    return OrjsonResponse({"total_users": total_users, **growth_analytics(books, total_users, _now_ms())})


# ---------------------------------------------------------------------------------------------
# Rewards


async def _ledger(redis: Redis, user_id: str, now_ms: int) -> rewards.Ledger:
    """The user's ledger as of ``now_ms``: expiry the worker has not recorded yet is applied to
    this copy, so balance and history agree even when no command touched the ledger since."""
    raw = await _get_json(redis, keys.user_rewards(user_id))
    ledger = rewards.Ledger(user_id) if raw is None else rewards.Ledger.from_dict(raw)
    rewards.expire(ledger, now_ms)
    return ledger


@router.get("/v1/rewards/balance", responses={403: {"description": "another user's data"}})
async def rewards_balance(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = _subject(principal, user_id)
    now = _now_ms()
    ledger = await _ledger(state.redis, subject, now)
    return OrjsonResponse(
        {
            "user_id": subject,
            "balance": rewards.balance(ledger, now),
            "expiring_soon": rewards.expiring_soon(ledger, now),
            "lifetime": {"granted": ledger.granted, "spent": ledger.spent, "expired": ledger.expired},
        }
    )


@router.get("/v1/rewards/history", responses={403: {"description": "another user's data"}})
async def rewards_history(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = _subject(principal, user_id)
    ledger = await _ledger(state.redis, subject, _now_ms())
    return OrjsonResponse({"user_id": subject, "history": rewards.history(ledger)})


@router.get("/v1/rewards/available", responses={403: {"description": "another user's data"}})
async def rewards_available(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = _subject(principal, user_id)
    now = _now_ms()
    ledger = await _ledger(state.redis, subject, now)
    return OrjsonResponse(
        {"user_id": subject, "balance": rewards.balance(ledger, now), "perks": rewards.available(ledger, now)}
    )


@router.post(
    "/v1/rewards/redeem",
    responses={
        202: {"description": "no answer yet: retry with the same request_id"},
        404: {"description": "unknown perk"},
        409: {"description": "insufficient balance or the perk's limit reached"},
        422: {"description": "invalid body (request_id is required, at most 128 characters)"},
        429: {"description": "rate limited"},
    },
)
async def redeem(body: RedeemBody, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    await _rate_limit(state, principal)
    user_id = principal.sub
    # Scoped by the user: two users picking the same request_id must not share an answer.
    command_id = f"{user_id}:{body.request_id}"
    if len(command_id) > MAX_ID_LEN:
        # The worker keeps the scoped id in the ledger, whose ids are bounded; a longer one would
        # be dead-lettered and the client would only ever see 202.
        raise ApiError(
            422, "validation_error", f"user id + ':' + request_id must be at most {MAX_ID_LEN} characters"
        )
    fields = {"request_id": body.request_id, "perk_id": body.perk_id}
    answer = await _submit(state, command_id, "redeem", user_id, fields, reuse_answer=True)
    if answer is None:
        return _pending(command_id)
    if not answer.get("ok"):
        raise _refused(answer, {"unknown_perk": 404, "insufficient_balance": 409, "limit_reached": 409})
    return OrjsonResponse(answer)


@router.post(
    "/v1/admin/rewards/grant",
    responses={
        202: {"description": "no answer yet: retry with the same grant_id"},
        403: {"description": "not an admin"},
        409: {"description": "the worker refused the grant"},
    },
)
async def admin_grant(body: GrantBody, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    _require_admin(principal)
    await _rate_limit(state, principal)
    now = _now_ms()
    # "grant:" keeps grant ids and redemption request ids of one user from sharing answers.
    command_id = f"{body.user_id}:grant:{body.grant_id}"
    fields = {
        "grant_id": body.grant_id,
        "amount": body.amount,
        "reason": body.reason,
        "expires_at_ms": None if body.expires_in_days is None else now + body.expires_in_days * _DAY_MS,
    }
    answer = await _submit(state, command_id, "grant", body.user_id, fields, reuse_answer=True)
    if answer is None:
        return _pending(command_id)
    if not answer.get("ok"):
        raise _refused(answer, {})
    return OrjsonResponse(answer)


# ---------------------------------------------------------------------------------------------
# Daily challenge and goals


def _local_date(view: dict[str, Any] | None, now_ms: int) -> date:
    tz = (view or {}).get("timezone") or "UTC"
    try:
        return date.fromordinal(local_day(now_ms, tz))
    except ValueError:  # a zone this host does not know: UTC rather than a 500
        return date.fromordinal(local_day(now_ms, "UTC"))


def _streak_before_today(view: dict[str, Any] | None, today: date, now_ms: int) -> int | None:
    """The streak as public_challenge wants it: as of today, not counting today's practice."""
    if view is None or not isinstance(view.get("streak"), dict):
        return None
    streak = streak_today(view, now_ms)
    current = int(streak["current"])
    return current - 1 if current > 0 and streak.get("last_active_day") == today.isoformat() else current


@router.get("/v1/challenges/today", responses={403: {"description": "another user's data"}})
async def challenge_today(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = _subject(principal, user_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_state(subject))
        pipe.get(keys.user_growth(subject))
        raw_view, raw_growth = await pipe.execute()
    view = None if raw_view is None else orjson.loads(raw_view)
    growth = None if raw_growth is None else orjson.loads(raw_growth)
    now = _now_ms()
    today = _local_date(view, now)
    challenge = challenge_for(today)
    # The worker keeps a few days of progress by local date; "challenge" is only the newest.
    growth = growth or {}
    raw_progress = (growth.get("challenges") or {}).get(challenge.id) or growth.get("challenge")
    progress = None if raw_progress is None else ChallengeProgress.from_dict(raw_progress)
    if progress is not None and progress.challenge_id != challenge.id:
        progress = None  # yesterday's progress: nothing done on today's challenge yet
    body = public_challenge(challenge, progress, _streak_before_today(view, today, now))
    return OrjsonResponse({"user_id": subject, **body})


@router.post(
    "/v1/users/{user_id}/goals",
    status_code=201,
    responses={
        202: {"description": "no answer yet"},
        403: {"description": "another user's goals"},
        409: {"description": "too many active goals"},
        422: {"description": "invalid goal"},
        429: {"description": "rate limited"},
    },
)
async def create_goal(
    user_id: str, body: GoalBody, state: StateDep, principal: PrincipalDep
) -> OrjsonResponse:
    require_user_access(principal, user_id)
    await _rate_limit(state, principal)
    now = _now_ms()
    try:
        deadline_ms = parse_ts(body.deadline)
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_goal", f"deadline: {exc.message}") from exc
    try:
        # A throwaway id: the worker names the goal. Validating here turns bad input into a 422
        # without a round trip; the worker validates again against its own clock.
        checked = new_goal("probe", body.kind, body.target, deadline_ms, now, body.params)
    except ValueError as exc:
        raise ApiError(422, "invalid_goal", str(exc)) from exc
    command_id = _server_command_id(user_id)
    fields = {
        "kind": checked.kind,
        "target": checked.target,
        "deadline_ms": deadline_ms,
        "params": checked.params,
    }
    answer = await _submit(state, command_id, "goal_create", user_id, fields)
    if answer is None:
        return _pending(command_id)
    if not answer.get("ok"):
        raise _refused(answer, {"too_many_goals": 409, "invalid_goal": 422})
    return OrjsonResponse(answer.get("goal"), status_code=201)


@router.get("/v1/users/{user_id}/goals", responses={403: {"description": "another user's goals"}})
async def list_goals(user_id: str, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    require_user_access(principal, user_id)
    growth = await _get_json(state.redis, keys.user_growth(user_id))
    goals = [Goal.from_dict(g) for g in ((growth or {}).get("goals") or {}).values()]
    # The worker records expiry lazily; mark it on this copy so a passed deadline shows now.
    expire_goals(goals, _now_ms())
    goals.sort(key=lambda g: (g.created_at_ms, g.goal_id))
    return OrjsonResponse([public_goal(g) for g in goals])
