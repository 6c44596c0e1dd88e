"""The receipt index in Redis, and reporting a receipt (docs/notifications.md, "Delivery
receipts"; the logic is models/receipts.py).

The delivery service remembers each SMS and mail the provider accepted under the id its later
receipt will name (``remember``); the SMS webhooks (api/routes/webhooks.py) and the bounce
listener (delivery/bounces.py) report a receipt with ``publish_receipt``: the first final word
about a send is reported, later ones (a provider repeating its callback, a second DSN) are not,
however long after: the analytics only remember recent report ids (models/outcome_ledger.py).

It also keeps the mail addresses a DSN declared dead (``suppress``), each for 90 days; a
confirmation of the address by its owner lifts that at once (``lift_suppression``).
"""

from __future__ import annotations

from typing import Any, Literal

from infra import keys
from infra.producer import EventProducer
from infra.redis_conn import RedisClient, as_text
from models.receipts import RECEIPT_TTL_MS, SUPPRESSION_TTL_MS, Final, SentMessage

# Marks the first final word on a send, atomically against a racing second one; an entry that
# expired (or never was) is not recreated. KEYS: the entry  ARGV: the result
# Returns the result already marked, "" when this call marked it, or "?" for no entry.
_MARK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return '?'
end
local held = redis.call('HGET', KEYS[1], 'final')
if held then
  return held
end
redis.call('HSET', KEYS[1], 'final', ARGV[1])
return ''
"""

#: What became of a receipt: reported (its result), nothing final in it, no send known for its
#: id (expired, or not ours), or a send already given its final word.
Outcome = Literal["delivered", "bounced", "failed", "pending", "unknown", "duplicate"]


class ReceiptIndex:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._mark = redis.register_script(_MARK_LUA)

    async def remember(self, provider_id: str, sent: SentMessage) -> None:
        key = keys.delivery_receipt(sent.channel, provider_id)
        fields: dict[Any, Any] = sent.to_fields()  # redis-py's Mapping is invariant in its key
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, RECEIPT_TTL_MS)
            await pipe.execute()

    async def lookup(self, channel: str, provider_id: str) -> SentMessage | None:
        return SentMessage.from_fields(await self.redis.hgetall(keys.delivery_receipt(channel, provider_id)))

    async def mark(self, channel: str, provider_id: str, result: Final) -> str:
        """ "" when ``result`` is now the send's final word; else the word it already had, or "?"."""
        held = await self._mark(keys=[keys.delivery_receipt(channel, provider_id)], args=[result])
        return as_text(held) if isinstance(held, bytes | str) else str(held)

    async def unmark(self, channel: str, provider_id: str) -> None:
        await self.redis.hdel(keys.delivery_receipt(channel, provider_id), "final")

    async def suppress(self, address: str) -> None:
        """Suppress ``address`` for ``SUPPRESSION_TTL_MS`` (from now: a later bounce renews it)."""
        await self.redis.set(keys.email_suppressed(address), "1", px=SUPPRESSION_TTL_MS)

    async def suppressed(self, address: str) -> bool:
        return bool(await self.redis.exists(keys.email_suppressed(address)))


async def lift_suppression(redis: RedisClient, address: str) -> bool:
    """Mail ``address`` again (its owner confirmed it works); True when it was suppressed."""
    return bool(await redis.delete(keys.email_suppressed(address)))


async def publish_receipt(
    index: ReceiptIndex,
    producer: EventProducer,
    topic: str,
    timeout_s: float,
    provider_id: str,
    sent: SentMessage,
    result: Final,
    reason: str | None,
) -> Outcome:
    """Report ``result`` for ``sent`` (the index's entry of ``provider_id``), once: the send's
    first final word goes onto ``topic`` (the outcomes topic) as a signed delivery report; a later
    word is a ``duplicate``. Raises what the producer raises (ProducerUnavailable) with the mark
    undone, so the provider's retry (or the mail server's) reports it then."""
    held = await index.mark(sent.channel, provider_id, result)
    if held == "?":
        return "unknown"  # expired since it was looked up
    if held:
        return "duplicate"
    try:
        # Keyless, like the service's reports: the topic has one partition and one reader.
        await producer.send_all(topic, [("", sent.report(result, reason))], timeout_s)
    except BaseException:
        await index.unmark(sent.channel, provider_id)
        raise
    return result
