"""Per-principal token bucket, kept in Redis.

A call takes ``cost`` tokens at once, so the unit is the caller's: a request, or each event of an
ingest batch (a 1,000-event batch costs 1,000 tokens, one event costs one).

The bucket lives in Redis (one small hash per principal, refilled lazily inside one Lua call) so
the limit holds across every API process behind a load balancer, and uses Redis' clock so the
processes need not agree on time. Buckets of idle principals expire on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from api.errors import ApiError
from infra import keys
from infra.redis_conn import RedisClient

# KEYS: bucket   ARGV: rate per second, burst, cost
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(wait)}
"""


def bucket_key(scope: str, principal: str) -> str:
    return f"{keys.PREFIX}:ratelimit:{scope}:{principal}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Seconds until the request would be allowed (0 when allowed).
    retry_after_s: float


class RateLimiter:
    """``rate_per_s <= 0`` disables limiting (every call is allowed without touching Redis)."""

    def __init__(self, redis: RedisClient, scope: str, rate_per_s: float, burst: int) -> None:
        self.redis = redis
        self.scope = scope
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._script = redis.register_script(_TAKE_LUA)

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    async def take(self, principal: str, cost: int = 1) -> Decision:
        """Take ``cost`` tokens (all or none). ``cost`` above the burst could never be allowed:
        callers cap what one call may cost (see ``max_cost``), so that is a bug, not a refusal."""
        if not self.enabled:
            return Decision(True, 0.0)
        if not 1 <= cost <= self.burst:
            raise ValueError(f"cost {cost} is outside 1..{self.burst} (the burst)")
        allowed, wait = await self._script(
            keys=[bucket_key(self.scope, principal)], args=[self.rate_per_s, self.burst, cost]
        )
        return Decision(bool(int(allowed)), float(wait))

    async def require(
        self, principal: str, message: str = "too many requests; slow down", code: str = "rate_limited"
    ) -> None:
        """Take a token, or refuse the request: 429 with ``Retry-After``."""
        decision = await self.take(principal)
        if not decision.allowed:
            raise ApiError(429, code, message, headers={"Retry-After": self.retry_after_header(decision)})

    def max_cost(self, limit: int) -> int:
        """The most one call may cost: ``limit``, or the burst when that is smaller."""
        return min(limit, self.burst) if self.enabled else limit

    @staticmethod
    def retry_after_header(decision: Decision) -> str:
        return str(max(1, math.ceil(decision.retry_after_s)))
