"""The campaigns hash (``keys.CAMPAIGNS``): the admin routes' view of the campaign definitions
(and the templates hash, ``keys.TEMPLATES``, kept the same way).

Written by every worker from the broadcast topic (streams/interventions.py), and by the API for
the definition it has just produced, so the admin who made a change reads it at once. Both go
through ``mirror_campaigns``, which never replaces a definition with an older one: whoever writes
last, the hash holds each campaign's newest definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

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
  if held_ms < tonumber(ARGV[i + 2]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


async def mirror_campaigns(redis: RedisClient, campaigns: Iterable[Campaign]) -> None:
    """Write ``campaigns`` into ``keys.CAMPAIGNS`` where Redis has none or an older one."""
    await _mirror(redis, keys.CAMPAIGNS, ((c.id, c.to_dict(), c.updated_ms) for c in campaigns))


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
