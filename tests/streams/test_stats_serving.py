"""The statistics view and ranking the serving writer keeps (real redis-servers, one and a
cluster): written with the user's view, rebuilt by a re-projection, each student ranked once."""

from __future__ import annotations

import orjson
import pytest

from infra import keys
from infra.channels import ChannelLog
from infra.redis_conn import RedisClient
from infra.settings import DEFAULT_RULES
from models.gamification import UserState, apply_event
from models.rules import Rules
from models.stats import stats_document
from models.time_units import DAY_MS, HOUR_MS
from streams.engagement import BatchOutcome
from streams.serving import ServingWriter
from tests.models.factories import event, ms

RULES = Rules.from_toml(DEFAULT_RULES.read_text())
T = ms("2026-12-07T10:00:00Z")


@pytest.fixture
async def serving(either_redis: RedisClient) -> ServingWriter:
    writer = ServingWriter(either_redis, ChannelLog(either_redis), RULES)
    await writer.start()
    return writer


def student(user_id: str, *scores: float) -> UserState:
    state = UserState(user_id)
    for i, score in enumerate(scores):
        ev = event("lesson_complete", T + i * HOUR_MS, user_id=user_id, score=score, duration_s=300)
        apply_event(state, ev, RULES, 7 * DAY_MS)
    return state


async def ranking(redis: RedisClient) -> dict[str, float]:
    rows: list[tuple[bytes, float]] = await redis.zrange(  # type: ignore[assignment]
        keys.STATS_RANKING, 0, -1, withscores=True
    )
    return {member.decode(): score for member, score in rows}


async def test_a_reprojection_writes_every_view_and_ranks_each_student_once(
    either_redis: RedisClient, serving: ServingWriter
) -> None:
    states = [student("{a}", 60, 70, 80), student("b:x", 90, 95, 100), student("new", 100)]
    assert await serving.project(states) == 3
    assert await serving.project(states) == 3  # a second rebuild counts nobody twice
    for state in states:
        raw = await either_redis.get(keys.user_stats(state.user_id))
        assert raw is not None
        assert orjson.loads(raw) == orjson.loads(
            orjson.dumps(
                stats_document(
                    state.user_id, state.weekly, state.category_stats, state.xp, state.updated_at_ms
                )
            )
        )
    # "new" has one scored session: not ranked yet.
    assert await ranking(either_redis) == {"{a}": 70.0, "b:x": 95.0}


async def test_a_batch_moves_the_students_own_entry(
    either_redis: RedisClient, serving: ServingWriter
) -> None:
    a, b = student("a", 60, 70, 80), student("b", 90, 90, 90)
    await serving.project([a, b])
    more = event("lesson_complete", T + DAY_MS, user_id="a", score=100)
    apply_event(a, more, RULES, 7 * DAY_MS)
    await serving.write(BatchOutcome(touched={"a": a}), {})
    await serving.write(BatchOutcome(touched={"a": a}), {})  # a redelivered batch: the same entry
    assert await ranking(either_redis) == {"a": 77.5, "b": 90.0}
    view = orjson.loads(await either_redis.get(keys.user_stats("a")))  # type: ignore[arg-type]
    assert view["weekly"][1:3] == [4, 310]  # total sessions and score sum
