"""The outreach queue in Redis (infra/keys.py ``OUTREACH_*``), shared by its two writers with
disjoint rights: the delivery service creates a task (never overwrites one: ``HSETNX``, so a
redelivered notification is the same task), the API's admin routes change one (a check-and-set
by a script, so two officers assigning at once cannot both win). Every change is pushed on
``admin:outreach`` for the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from infra import keys
from infra.channels import ChannelLog
from infra.redis_conn import RedisClient
from models.channels import OUTREACH_CHANNEL
from models.outreach import OutreachError, OutreachTask

#: Resolved tasks kept for the "resolved" list (the oldest are forgotten beyond).
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
    redis: RedisClient, status: str, limit: int, before_ms: int | None = None
) -> list[OutreachTask]:
    """Tasks newest first: unresolved (``open``, ``assigned`` or ``active`` = both) or
    ``resolved``; ``before_ms`` pages back in time."""
    index = keys.OUTREACH_DONE if status == "resolved" else keys.OUTREACH_OPEN
    top = f"({before_ms}" if before_ms is not None else "+inf"
    wanted: list[OutreachTask] = []
    # Read in pages: an open/assigned filter may skip some of each page.
    offset = 0
    while len(wanted) < limit:
        ids = await redis.zrevrangebyscore(index, top, "-inf", start=offset, num=max(limit, 50))
        if not ids:
            break
        offset += len(ids)
        raws = await redis.hmget(
            keys.OUTREACH_TASKS, [str(i, "utf-8") if isinstance(i, bytes) else str(i) for i in ids]
        )
        for raw in raws:
            if raw is None:
                continue
            task = OutreachTask.from_dict(orjson.loads(raw))
            if status in ("active", "resolved") or task.status == status:
                wanted.append(task)
    return wanted[:limit]
