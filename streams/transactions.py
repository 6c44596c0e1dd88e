"""Exactly-once batches on brokers with transactions (docs/operations.md, "Delivery guarantees").

Each agent of a worker owns one transactional producer. A batch runs inside one transaction:
every record the batch produces (its state changelogs, its outputs, commands and referral
messages, its dead letters) and the batch's input offsets (``send_offsets_to_transaction``) are
committed together or not at all. A worker killed mid-batch leaves an open transaction that the
broker aborts, so a ``read_committed`` reader (the workers themselves, restoring state or reading
internal topics; any consumer of the output topics) never sees the half-done batch, and the
successor processes the batch again from the last committed offsets.

Transactional ids are ``<app>-<agent>-<worker name>``. A worker restarted under the same name
(``ELIMU_WORKER_NAME``; `elimu up` names its workers) fences its previous incarnation and aborts
its open transaction at once; a worker without a name gets a unique id, and an abandoned
transaction is aborted by the broker after ``TRANSACTION_TIMEOUT_MS``. aiokafka commits offsets
to a transaction by group id only (TxnOffsetCommit v0, no group generation), so unlike Kafka
Streams' EOS-v2 a worker that lost its partitions while paused is not fenced by the group: it
could still commit the batch it was working on. Its successor's dedup (event ids, command ids)
keeps state right; that one batch's outputs could then appear twice. `docs/operations.md` says so.

The mode (``ELIMU_PROCESSING_GUARANTEE``): ``exactly_once`` requires transactions, ``at_least_once``
never uses them, unset means exactly-once where the broker has transactions (Apache Kafka) and
at-least-once where it does not (Tansu), decided once at start-up and logged.

Records sent outside a batch (timers: the risk sweep, market pulse, trainer checkpoints) are not
part of any transaction: they stay at-least-once with idempotent effects, as on Tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.records import Record

log = logging.getLogger(__name__)

Guarantee = Literal["exactly_once", "at_least_once"]
GUARANTEE_VAR = "ELIMU_PROCESSING_GUARANTEE"
#: How long the broker keeps a dead worker's open transaction (and so holds read_committed
#: readers of its partitions) before aborting it, when no successor of the same name fences it.
TRANSACTION_TIMEOUT_MS = 15_000
#: The producer settings of the worker's Faust producer, kept for the transactional ones.
LINGER_MS = 5
MAX_BATCH_BYTES = 256 * 1024
PROBE_TIMEOUT_S = 15.0

#: The producer of the transaction the current batch runs in, if any (read by the worker's send).
CURRENT: contextvars.ContextVar[AIOKafkaProducer | None] = contextvars.ContextVar("elimu_txn", default=None)


class TransactionsUnavailable(RuntimeError):
    """exactly_once was asked for and the broker has no transactions."""


def parse_guarantee(value: str | None) -> Guarantee | None:
    if not value:
        return None
    if value not in ("exactly_once", "at_least_once"):
        raise ValueError(f"{GUARANTEE_VAR} must be exactly_once or at_least_once, not {value!r}")
    return value  # type: ignore[return-value]


def batch_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit after ``records``: one past the highest of each partition."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if r.offset + 1 > offsets.get(tp, -1):
            offsets[tp] = r.offset + 1
    return offsets


def resolve_guarantee(bootstrap: str, requested: Guarantee | None, security: Mapping[str, Any]) -> Guarantee:
    """The guarantee this worker runs with, decided before its consumer exists (the consumer reads
    ``read_committed`` under exactly-once). Unset: whether the broker grants a producer id to a
    transactional producer (Apache Kafka at once; Tansu answers an error at once)."""
    if requested == "at_least_once":
        return "at_least_once"

    async def probe() -> str | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=f"elimu-probe-{uuid.uuid4().hex}", **security
        )
        try:
            await asyncio.wait_for(producer.start(), PROBE_TIMEOUT_S)
            return None
        except (TimeoutError, KafkaError) as exc:
            return repr(exc)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    refused = asyncio.run(probe())
    if refused is None:
        log.warning("processing guarantee: exactly-once (a transactional producer per agent)")
        return "exactly_once"
    if requested == "exactly_once":
        raise TransactionsUnavailable(
            f"{GUARANTEE_VAR}=exactly_once, but the broker has no transactions: {refused}"
        )
    log.warning(
        "processing guarantee: at-least-once (the broker has no transactions: %s); effects stay "
        "idempotent by event and command ids",
        refused,
    )
    return "at_least_once"


class BatchTransactions:
    """The worker's transactional producers, one per agent, created on the agent's first batch."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        worker_name: str,
        guarantee: Guarantee,
        security: Mapping[str, Any],
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.worker_name = worker_name
        self.guarantee = guarantee
        self.security = dict(security)
        self._producers: dict[str, AIOKafkaProducer] = {}

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"

    def transactional_id(self, agent: str) -> str:
        return f"{self.group_id}-{agent}-{self.worker_name}"

    async def _producer(self, agent: str) -> AIOKafkaProducer | None:
        if not self.exactly_once:
            return None
        producer = self._producers.get(agent)
        if producer is None:
            # One agent runs one batch at a time, so no two batches race to create its producer.
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                transactional_id=self.transactional_id(agent),
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                linger_ms=LINGER_MS,
                max_batch_size=MAX_BATCH_BYTES,
                client_id=f"elimu-txn-{agent}",
                **self.security,
            )
            await producer.start()  # InitProducerId: fences a predecessor of the same id
            self._producers[agent] = producer
        return producer

    @contextlib.asynccontextmanager
    async def batch(self, agent: str, records: Sequence[Record]) -> AsyncIterator[None]:
        """Run the body in ``agent``'s transaction and commit it with the batch's offsets (or
        run it plainly, at least once). The body's sends find the transaction through CURRENT."""
        producer = await self._producer(agent)
        if producer is None:
            yield
            return
        await producer.begin_transaction()
        token = CURRENT.set(producer)
        try:
            yield
            await producer.send_offsets_to_transaction(batch_offsets(records), self.group_id)
            await producer.commit_transaction()
        except BaseException:
            # The caller exits the process on a failed batch; aborting first spares read_committed
            # readers the wait for the broker's timeout.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort_transaction(), 5)
            raise
        finally:
            CURRENT.reset(token)

    async def stop(self) -> None:
        producers, self._producers = list(self._producers.values()), {}
        for producer in producers:
            with contextlib.suppress(Exception):
                await producer.stop()
