"""The outreach queue in Redis (infra/keys.py ``OUTREACH_*``), shared by its two writers with
disjoint rights: the delivery service creates a task (never overwrites one: ``HSETNX``, so a
redelivered notification is the same task), the API's admin routes change one (a check-and-set
by a script, so two officers assigning at once cannot both win). Every change is pushed on
``admin:outreach`` for the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import orjson

from infra import keys
from infra.channels import ChannelLog
from infra.redis_conn import RedisClient, as_text
from models.channels import OUTREACH_CHANNEL
from models.outreach import OutreachError, OutreachTask

#: Resolved tasks kept (the oldest are forgotten beyond, task and all: the queue's memory is
#: bounded; the ledger's done marks, not the task, keep a redelivered notification from
#: creating it again within a day, and Kafka redelivers nothing older).
MAX_DONE = 10_000
_CAS_TRIES = 5

_SET_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
  -- The oldest resolved tasks beyond the bound are forgotten, index and task alike.
  local old = redis.call('ZRANGE', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
  for _, id in ipairs(old) do redis.call('HDEL', KEYS[1], id) end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
end
return 1
"""

_CREATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


async def create(redis: RedisClient, channels: ChannelLog, task: OutreachTask) -> bool:
    """Add ``task`` unless a task of that id exists; True when it was new (and pushed)."""
    created = await redis.eval(
        _CREATE,
        2,
        keys.OUTREACH_TASKS,
        keys.OUTREACH_OPEN,
        task.id,
        orjson.dumps(task.to_dict()).decode(),
        str(task.created_ms),
    )
    if int(created) == 1:
        await channels.publish(
            OUTREACH_CHANNEL, "outreach_task", task.public(), dedup_key=f"{task.id}:created"
        )
        return True
    return False


async def get(redis: RedisClient, task_id: str) -> OutreachTask | None:
    raw = await redis.hget(keys.OUTREACH_TASKS, task_id)
    return None if raw is None else OutreachTask.from_dict(orjson.loads(raw))


async def update(
    redis: RedisClient, channels: ChannelLog, task_id: str, change: Callable[[OutreachTask], OutreachTask]
) -> OutreachTask:
    """Apply ``change`` to the task as stored, atomically against other changes (a script sets
    it only if it is still what ``change`` saw). OutreachError ``not_found`` for an unknown id;
    ``change``'s own OutreachError passes through."""
    for _ in range(_CAS_TRIES):
        raw = await redis.hget(keys.OUTREACH_TASKS, task_id)
        if raw is None:
            raise OutreachError("not_found", f"no outreach task {task_id!r}")
        changed = change(OutreachTask.from_dict(orjson.loads(raw)))
        done = await redis.eval(
            _SET_IF_UNCHANGED,
            3,
            keys.OUTREACH_TASKS,
            keys.OUTREACH_OPEN,
            keys.OUTREACH_DONE,
            task_id,
            raw,
            orjson.dumps(changed.to_dict()).decode(),
            "1" if changed.status == "resolved" else "0",
            str(changed.updated_ms),
            str(MAX_DONE),
        )
        if int(done) == 1:
            await channels.publish(OUTREACH_CHANNEL, "outreach_task", changed.public())
            return changed
    raise OutreachError("busy", "the task changed under us repeatedly; try again")


async def listing(
    redis: RedisClient, status: str, limit: int, before: tuple[int, str] | None = None
) -> list[OutreachTask]:
    """Tasks newest first: unresolved (``open``, ``assigned`` or ``active`` = both) or
    ``resolved``. ``before`` = (time, id) of the last task of the previous page: the next page
    starts right after it, tasks of the same millisecond included (ties are ordered by id)."""
    index = keys.OUTREACH_DONE if status == "resolved" else keys.OUTREACH_OPEN
    top = str(before[0]) if before is not None else "+inf"
    wanted: list[OutreachTask] = []
    offset = 0
    # Read in pages: a status filter, and the ties of the cursor's millisecond, skip some.
    while len(wanted) < limit:
        rows = cast(
            list[tuple[bytes | str, float]],
            await redis.zrevrangebyscore(
                index, top, "-inf", start=offset, num=max(limit, 50), withscores=True
            ),
        )
        if not rows:
            break
        offset += len(rows)
        ids: list[str] = []
        for member, score in rows:
            task_id = as_text(member)
            # Equal scores come in reverse order of id: past the cursor means a smaller id.
            if before is not None and int(score) == before[0] and task_id >= before[1]:
                continue
            ids.append(task_id)
        if not ids:
            continue
        for raw in await redis.hmget(keys.OUTREACH_TASKS, ids):
            if raw is None:
                continue
            task = OutreachTask.from_dict(orjson.loads(raw))
            if status in ("active", "resolved") or task.status == status:
                wanted.append(task)
    return wanted[:limit]


def cursor_of(task: OutreachTask, status: str) -> str:
    """The page cursor after ``task``: the time it is indexed by, and its id."""
    return f"{task.updated_ms if status == 'resolved' else task.created_ms}:{task.id}"


def parse_cursor(cursor: str) -> tuple[int, str]:
    """ValueError unless ``cursor`` is what ``cursor_of`` makes."""
    ms, sep, task_id = cursor.partition(":")
    if not sep or not ms.isdigit() or not task_id:
        raise ValueError("not a cursor of this list")
    return int(ms), task_id
