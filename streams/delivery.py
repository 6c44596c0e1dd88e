"""How a slice's consequences leave the worker: sends, acks, Redis writes, refusals.

The order matters for at-least-once (streams/runner.py): every consequence (dead letters,
re-routed records, output topic messages, the Redis view and pushes) is handed to the producer or
written before the batch returns, and offsets are committed only after the batch returns and the
producer is flushed (or in the batch's transaction). A crash anywhere re-delivers the batch;
dedup by ``event_id`` makes that harmless.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError

from infra import topics
from streams import metrics, redis_faults
from streams.records import DeadLetter, Record

#: ``send(topic, key, value, partition)``: hand a message to the producer. Awaiting it must
#: not wait for the broker's ack (Faust flushes the producer before committing offsets).
Send = Callable[[str, bytes | None, bytes | None, int | None], Awaitable[Any]]


#: (topic, key, value, partition) of a message to hand to the producer.
Outbound = tuple[str, bytes | None, bytes, int | None]


async def send_durably(send: Send, messages: Sequence[Outbound]) -> None:
    """Send ``messages`` and wait until Kafka has them, before the caller writes its state.

    For consequences the state records as done (an action awarded, a referral message sent, a
    posting fanned out): were the state's changelog record to reach Kafka and not the message, a
    replay would find the work done and never send it. Waiting for the acks first means a crash
    can only leave the message without the state, and the replay sends it again, which the
    receivers dedup (event ids, referral and posting idempotence).
    """
    await await_delivery(
        [await send(topic, key, value, partition) for topic, key, value, partition in messages]
    )


async def await_delivery(sent: Sequence[Any]) -> None:
    """Wait until Kafka has acked every record whose ``send`` returned a delivery future."""
    awaitables = [f for f in sent if inspect.isawaitable(f)]
    if awaitables:
        await asyncio.gather(*awaitables)


async def write_until_redis_answers(write: Callable[[], Awaitable[Any]]) -> None:
    """Run a Redis write of the serving view, retrying with backoff while a retry can help.

    Redis away, slow, failing over or out of memory (infra/redis_errors.py): retried with
    backoff (0.1 s doubling to 5 s) until it answers. Failing the batch would make the worker
    exit (``streams.app``) and, were it not to, Faust would ack the batch anyway; blocking here
    holds the offsets back while Redis cannot take writes (lag grows, /readyz says so), and the
    state is already safe in the changelog. Every write is idempotent, so a retry is harmless.

    An error no retry can fix (WRONGTYPE, any other error reply) is reported (an error log with
    what Redis said, ``elimu_serving_failures_total{action="skipped"}``) and the write skipped,
    so the batch goes on: looping would stall every user for one bad key, and the view is
    rebuildable from the tables.
    """
    delay = 0.1
    while True:
        try:
            await write()
            return
        except (RedisError, OSError) as exc:
            if not redis_faults.report(exc, delay=delay):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def deliver_refusals(
    send: Send, dead_letters: Sequence[DeadLetter], misrouted: Sequence[tuple[Record, bytes, int]] = ()
) -> None:
    """Dead letters to ``dead-letter`` (counted by topic and reason), and records found on a
    partition their owner does not live on back to the owner's partition (counted by topic)."""
    for dl in dead_letters:
        # The Kafka key is bounded like the excerpt: a refused record's key may be the attack.
        await send(topics.DEAD_LETTER, dl.kafka_key(), orjson.dumps(dl.as_dict()), None)
        metrics.DEAD_LETTERS.labels(dl.record.topic, dl.reason).inc()
    for rec, key, owner in misrouted:
        await send(rec.topic, key, rec.value or b"", owner)
        metrics.MISROUTED.labels(rec.topic).inc()
