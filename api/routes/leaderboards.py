"""``GET /v1/leaderboards/{period}``: the current period's board, top or around one user, the
global one or a school's or cohort's (``?school=`` / ``?cohort=``).

The workers keep one sorted set per board and period bucket (UTC day, ISO week, ``all``) with
scores that already fold in the tie-break (who reached the score first), so the ranking is
Redis' own order and ranks are positions: two users never share a rank. ``decode_score`` turns
the stored score back into XP. Each entry shows the name, school and cohort the user's profile
gives (``keys.user_board``, written by the worker; null when the profile has none or the name
reads like a link: models/boards.py).

Users who hid themselves (``leaderboard_visible: false``) are on no board, so nobody's listing
shows them and ranks are counted without them. The caller's own standing is ``me``: their rank
and score on this board (for a hidden user, the rank they would have among the listed ones), or
null when they have no score on it (or it is not their school's or cohort's board).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Query

from api.deps import PrincipalDep, StateDep
from api.errors import ApiError
from api.ids import OptionalIdQuery
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.redis_conn import mget
from models.boards import GROUP_KINDS, MAX_GROUP_LEN, InvalidGroup, checked_group, group_digest, shown_card
from models.leaderboard import PERIODS, bucket, decode_score, encode_score

router = APIRouter(tags=["leaderboards"])

#: A school or cohort as a query: bounded before it is checked like the profile's field. The
#: slack over MAX_GROUP_LEN leaves room for the spaces trimming removes.
GroupQuery = Annotated[str | None, Query(max_length=4 * MAX_GROUP_LEN)]


@router.get(
    "/v1/leaderboards/{period}",
    responses={
        404: {"description": "unknown period, or `around` user not on the board"},
        422: {"description": "both `school` and `cohort`, or one the profile would refuse"},
    },
)
async def get_leaderboard(
    period: str,
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    around: OptionalIdQuery = None,
    school: GroupQuery = None,
    cohort: GroupQuery = None,
) -> OrjsonResponse:
    # Any signed-in user may read every board; the principal only picks whose ``me`` is shown.
    if period not in PERIODS:
        raise ApiError(404, "unknown_period", f"period must be one of {', '.join(PERIODS)}")
    group = _group(school, cohort)
    now_bucket = bucket(period, int(time.time() * 1000))
    key = (
        keys.leaderboard(period, now_bucket)
        if group is None
        else keys.group_leaderboard(group[0], group[1], period, now_bucket)
    )
    start = 0
    if around is not None:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrank(key, around)
            pipe.zcard(key)
            rank, size = await pipe.execute()
        if rank is None:
            raise ApiError(404, "not_ranked", f"user {around!r} is not on the {period} leaderboard")
        start = window_start(int(rank), int(size), limit)
    found = await state.redis.zrevrange(key, start, start + limit - 1, withscores=True)
    rows = cast(list[tuple[bytes, float]], found)
    users = [member.decode() for member, _ in rows]
    cards = await _cards(state, [*users, principal.sub])
    entries: list[dict[str, Any]] = [
        {
            "rank": start + offset + 1,
            "user_id": user_id,
            "score": decode_score(score),
            **shown_card(cards[offset]),
        }
        for offset, (user_id, (_, score)) in enumerate(zip(users, rows, strict=True))
    ]
    me = await _standing(state, key, principal.sub, cards[-1], group, f"{period}:{now_bucket}")
    body: dict[str, Any] = {"period": period, "entries": entries, "me": me}
    if group is not None:
        body[group[0]] = school if group[0] == "school" else cohort
    return OrjsonResponse(body)


def _group(school: str | None, cohort: str | None) -> tuple[str, str] | None:
    """The (kind, digest) of the group board asked for, or None for the global board."""
    asked = [(kind, name) for kind, name in zip(GROUP_KINDS, (school, cohort), strict=True) if name]
    if len(asked) > 1:
        raise ApiError(422, "invalid_board", "ask for one board: school or cohort, not both")
    if not asked:
        return None
    kind, name = asked[0]
    try:
        checked = checked_group(name, kind)
    except InvalidGroup as exc:
        raise ApiError(422, "invalid_board", exc.message, extra={"reason": exc.reason}) from exc
    if checked is None:
        raise ApiError(422, "invalid_board", f"{kind} is blank")
    return kind, group_digest(kind, checked)


async def _cards(state: AppState, user_ids: list[str]) -> list[dict[str, Any] | None]:
    raw = await mget(state.redis, [keys.user_board(user_id) for user_id in user_ids])
    return [None if doc is None else dict(orjson.loads(doc)) for doc in raw]


async def _standing(
    state: AppState,
    key: str,
    user_id: str,
    card: dict[str, Any] | None,
    group: tuple[str, str] | None,
    period_bucket: str,
) -> dict[str, Any] | None:
    """The caller's rank and score on this board, whether the board lists them or not."""
    if group is not None and (card is None or card.get("groups", {}).get(group[0]) != group[1]):
        return None  # not their school's (or cohort's) board
    if card is None or card.get("listed", True):
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrank(key, user_id)
            pipe.zscore(key, user_id)
            rank, score = await pipe.execute()
        if rank is None or score is None:
            return None
        return {"rank": int(rank) + 1, "score": decode_score(score), "listed": True}
    held = card.get("periods", {}).get(period_bucket)
    if not held:
        return None
    xp, reached = int(held[0]), int(held[1])
    # Hidden: counted against the listed learners, as if they were listed (a tie-broken score
    # is unique, so strictly higher scores are exactly the ones ranked above).
    above = await state.redis.zcount(key, f"({int(encode_score(xp, reached))}", "+inf")
    return {"rank": int(above) + 1, "score": decode_score(encode_score(xp, reached)), "listed": False}


def window_start(rank: int, size: int, limit: int) -> int:
    """First 0-based position of a ``limit``-long window centred on ``rank``, kept inside the board
    (a user near the top or bottom gets a full window shifted toward the middle)."""
    start = rank - (limit - 1) // 2
    return max(0, min(start, size - limit))
