"""``GET /v1/leaderboards/{period}``: the current period's board, top or around one user.

The workers keep one sorted set per period bucket (UTC day, ISO week, ``all``) with scores that
already fold in the tie-break (who reached the score first), so the ranking is Redis' own order
and ranks are positions: two users never share a rank. ``decode_score`` turns the stored score
back into XP.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, StateDep
from api.errors import ApiError
from api.ids import OptionalIdQuery
from api.responses import OrjsonResponse
from infra import keys
from models.leaderboard import PERIODS, bucket, decode_score

router = APIRouter(tags=["leaderboards"])


@router.get(
    "/v1/leaderboards/{period}",
    responses={404: {"description": "unknown period, or `around` user not on the board"}},
)
async def get_leaderboard(
    period: str,
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    around: OptionalIdQuery = None,
) -> OrjsonResponse:
    del principal  # any signed-in user may read every board
    if period not in PERIODS:
        raise ApiError(404, "unknown_period", f"period must be one of {', '.join(PERIODS)}")
    key = keys.leaderboard(period, bucket(period, int(time.time() * 1000)))
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
    entries: list[dict[str, Any]] = [
        {"rank": start + offset + 1, "user_id": member.decode(), "score": decode_score(score)}
        for offset, (member, score) in enumerate(rows)
    ]
    return OrjsonResponse({"period": period, "entries": entries})


def window_start(rank: int, size: int, limit: int) -> int:
    """First 0-based position of a ``limit``-long window centred on ``rank``, kept inside the board
    (a user near the top or bottom gets a full window shifted toward the middle)."""
    start = rank - (limit - 1) // 2
    return max(0, min(start, size - limit))
