"""Rewards: balance, history, the catalogue, redemption, admin grants (docs/growth.md). Credit
expiry is applied at read time with the worker's own functions, so a balance is never stale."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import Field, StrictInt, StrictStr

from api.commands import (
    StrictBody,
    UserIdQuery,
    get_json,
    now_ms,
    pending,
    rate_limit,
    refused,
    subject_of,
    submit,
)
from api.deps import PrincipalDep, StateDep, require_admin
from api.errors import ApiError
from api.ids import StrictId
from api.responses import OrjsonResponse
from infra import keys
from infra.redis_conn import RedisClient
from models import rewards
from models.events import MAX_ID_LEN
from models.time_units import DAY_MS

router = APIRouter(tags=["rewards"])

#: Upper bound on a grant's lifetime; beyond it "expiring" credit is a typo for "never".
MAX_GRANT_EXPIRY_DAYS = 3650


class RedeemBody(StrictBody):
    perk_id: StrictId
    request_id: StrictId


class GrantBody(StrictBody):
    user_id: StrictId
    amount: Annotated[StrictInt, Field(ge=1, le=rewards.MAX_GRANT)]
    # Characters here; the ledger's bound is in UTF-8 bytes, checked in the route.
    reason: Annotated[StrictStr, Field(min_length=1, max_length=rewards.MAX_REASON_BYTES)]
    grant_id: StrictId
    expires_in_days: Annotated[StrictInt | None, Field(ge=1, le=MAX_GRANT_EXPIRY_DAYS)] = None


# ---------------------------------------------------------------------------------------------
# Rewards


async def _ledger(redis: RedisClient, user_id: str, at_ms: int) -> rewards.Ledger:
    """The user's ledger as of ``at_ms``: expiry the worker has not recorded yet is applied to
    this copy, so balance and history agree even when no command touched the ledger since."""
    raw = await get_json(redis, keys.user_rewards(user_id))
    ledger = rewards.Ledger(user_id) if raw is None else rewards.Ledger.from_dict(raw)
    rewards.expire(ledger, at_ms)
    return ledger


@router.get("/v1/rewards/balance", responses={403: {"description": "another user's data"}})
async def rewards_balance(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = subject_of(principal, user_id)
    now = now_ms()
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
    subject = subject_of(principal, user_id)
    ledger = await _ledger(state.redis, subject, now_ms())
    return OrjsonResponse({"user_id": subject, "history": rewards.history(ledger)})


@router.get("/v1/rewards/available", responses={403: {"description": "another user's data"}})
async def rewards_available(
    state: StateDep, principal: PrincipalDep, user_id: UserIdQuery = None
) -> OrjsonResponse:
    subject = subject_of(principal, user_id)
    now = now_ms()
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
        422: {"description": "invalid body (request_id is required; user id + request_id at most 128 bytes)"},
        429: {"description": "rate limited"},
    },
)
async def redeem(body: RedeemBody, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    await rate_limit(state, principal)
    user_id = principal.sub
    # Scoped by the user: two users picking the same request_id must not share an answer.
    command_id = f"{user_id}:{body.request_id}"
    if len(command_id.encode()) > MAX_ID_LEN:
        # The worker keeps the scoped id in the ledger, whose ids are bounded; a longer one would
        # be dead-lettered and the client would only ever see 202.
        raise ApiError(
            422, "validation_error", f"user id + ':' + request_id must be at most {MAX_ID_LEN} bytes"
        )
    fields = {"request_id": body.request_id, "perk_id": body.perk_id}
    answer = await submit(state, command_id, "redeem", user_id, fields, reuse_answer=True)
    if answer is None:
        return pending(command_id)
    if not answer.get("ok"):
        raise refused(answer, {"unknown_perk": 404, "insufficient_balance": 409, "limit_reached": 409})
    return OrjsonResponse(answer)


@router.post(
    "/v1/admin/rewards/grant",
    responses={
        202: {"description": "no answer yet: retry with the same grant_id"},
        403: {"description": "not an admin"},
        409: {"description": "the worker refused the grant: balance_cap (the balance would pass its cap)"},
        422: {"description": "invalid body: amount over the per-grant maximum, reason too long"},
    },
)
async def admin_grant(body: GrantBody, state: StateDep, principal: PrincipalDep) -> OrjsonResponse:
    """Admins only: a grant mints credit. The worker bounds it again (rewards.MAX_GRANT per grant,
    rewards.MAX_BALANCE in all) whoever sent the command."""
    require_admin(principal)
    await rate_limit(state, principal)
    if len(body.reason.encode()) > rewards.MAX_REASON_BYTES or not body.reason.isprintable():
        raise ApiError(
            422, "validation_error", f"reason must be printable, at most {rewards.MAX_REASON_BYTES} bytes"
        )
    now = now_ms()
    # "grant:" keeps grant ids and redemption request ids of one user from sharing answers.
    command_id = f"{body.user_id}:grant:{body.grant_id}"
    fields = {
        "grant_id": body.grant_id,
        "amount": body.amount,
        "reason": body.reason,
        "expires_at_ms": None if body.expires_in_days is None else now + body.expires_in_days * DAY_MS,
        # Who granted it, for the audit trail on the topic (the signature says the API sent it).
        "issued_by": principal.sub,
    }
    answer = await submit(state, command_id, "grant", body.user_id, fields, reuse_answer=True)
    if answer is None:
        return pending(command_id)
    if not answer.get("ok"):
        raise refused(answer, {rewards.GRANT_TOO_LARGE: 422, rewards.BALANCE_CAP: 409})
    return OrjsonResponse(answer)
