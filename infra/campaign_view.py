"""The campaigns hash (``keys.CAMPAIGNS``): the admin routes' view of the campaign definitions
(and the templates hash, ``keys.TEMPLATES``, kept the same way).

Written by every worker from the broadcast topic (streams/interventions.py), and by the API for
the definition it has just produced, so the admin who made a change reads it at once. Both go
through ``mirror_campaigns``, which never replaces a definition with an older one: whoever writes
last, the hash holds each campaign's newest definition. A deleted campaign is a marker
``{"id", "deleted": true, "updated_ms"}`` (``mirror_deleted_campaign``), newer than any of its
definitions, so a worker whose feed lags cannot bring it back; readers skip it
(``read_campaign``, ``read_campaigns``).

The API changes a campaign under ``campaign_lock``: read, produce and mirror one at a time per
campaign, so two API processes changing one campaign at once (an edit and a manual send) do not
each write a definition missing the other's change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from redis.exceptions import RedisError

from infra import keys
from infra.redis_conn import RedisClient
from models.campaigns.records import Campaign

# Each definition unless the hash holds one updated later: a worker whose broadcast feed lags, or
# an API process whose write was overtaken by a newer edit, must not put an older definition back.
# KEYS[1]: the hash. ARGV: (id, JSON, updated_ms)...
_MIRROR_LUA = """
for i = 1, #ARGV, 3 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local ok, doc = pcall(cjson.decode, held or 'null')
  local held_ms = ok and type(doc) == 'table' and tonumber(doc['updated_ms']) or -1
  if held_ms <= tonumber(ARGV[i + 2]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


async def mirror_campaigns(redis: RedisClient, campaigns: Iterable[Campaign]) -> None:
    """Write ``campaigns`` into ``keys.CAMPAIGNS`` where Redis has none or an older one."""
    await _mirror(redis, keys.CAMPAIGNS, ((c.id, c.to_dict(), c.updated_ms) for c in campaigns))


async def mirror_deleted_campaign(redis: RedisClient, campaign_id: str, updated_ms: int) -> None:
    """Mark ``campaign_id`` deleted in ``keys.CAMPAIGNS`` (unless a newer write is there)."""
    marker = {"id": campaign_id, "deleted": True, "updated_ms": updated_ms}
    await _mirror(redis, keys.CAMPAIGNS, [(campaign_id, marker, updated_ms)])


def _campaign(raw: bytes | str) -> Campaign | None:
    doc = orjson.loads(raw)
    return None if doc.get("deleted") else Campaign.from_dict(doc)


async def read_campaign(redis: RedisClient, campaign_id: str) -> tuple[Campaign | None, bool]:
    """(the campaign, whether the id is taken): (None, True) for a deleted one, (None, False)
    for an id never used (or not mirrored yet)."""
    raw = await redis.hget(keys.CAMPAIGNS, campaign_id)
    return (None, False) if raw is None else (_campaign(raw), True)


async def read_campaigns(redis: RedisClient) -> list[Campaign]:
    """Every campaign that is not deleted, oldest first (then by id)."""
    held = (_campaign(raw) for raw in await redis.hvals(keys.CAMPAIGNS))
    return sorted((c for c in held if c is not None), key=lambda c: (c.created_ms, c.id))


class CampaignBusy(Exception):
    """Another API process is changing the campaign and did not finish within the wait."""


# Deletes the lock only if it is still ours (it may have expired and been taken since).
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@contextlib.asynccontextmanager
async def campaign_lock(
    redis: RedisClient, campaign_id: str, hold_ms: int, wait_s: float = 5.0
) -> AsyncIterator[None]:
    """Hold the campaign's lock (at most ``hold_ms``: a crashed holder cannot keep it) for the
    block; CampaignBusy when it stays taken for ``wait_s``. ``hold_ms`` must outlast the block's
    slowest path (its produce timeout), or a change may interleave with one that overran."""
    key, token = keys.campaign_lock(campaign_id), uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while not await redis.set(key, token, nx=True, px=hold_ms):
        if time.monotonic() >= deadline:
            raise CampaignBusy(f"campaign {campaign_id!r} is being changed by another request")
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        # A failed release only leaves the lock to expire; it must not hide the block's outcome.
        with contextlib.suppress(RedisError, OSError):
            await redis.eval(_RELEASE_LUA, 1, key, token)


async def mirror_templates(redis: RedisClient, documents: Iterable[tuple[str, dict[str, Any], int]]) -> None:
    """The same for the admins' templates (``keys.TEMPLATES``): (id, document, updated_ms); a
    deleted template's document is ``{"id", "deleted": true, "updated_ms"}``, so a lagging
    mirror cannot bring it back."""
    await _mirror(redis, keys.TEMPLATES, documents)


async def _mirror(redis: RedisClient, key: str, documents: Iterable[tuple[str, dict[str, Any], int]]) -> None:
    args: list[str | int] = []
    for doc_id, doc, updated_ms in documents:
        args += [doc_id, orjson.dumps(doc).decode(), updated_ms]
    if args:
        await redis.eval(_MIRROR_LUA, 1, key, *args)
