"""The privacy slice: exports and erasures of a user's data (streams/privacy.py), listed last in
the per-user agent so that what the other slices did for the user in the same batch is already
written when the erasure removes it.

The tombstones ride with each table's changelog: a slice that ran in the batch flushes its store
in its own ``persist`` wave (the tombstone among its changes); a store whose slice did not run holds
nothing but tombstones, which this slice flushes in its ``persist``, so no wave's order changes.
Then, in ``deliver``, the Redis views are removed and the answer written. A crash before the
batch commits replays the command, and erasing again is the same erasure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from infra import keys, topics
from infra.commands import EXPORT_TTL_S, RESULT_TTL_S
from streams import metrics
from streams.delivery import Send, deliver_refusals, write_until_redis_answers
from streams.erasure import Eraser
from streams.privacy import Erasure, PrivacyOutcome, PrivacyProcessor
from streams.records import Record
from streams.runner import SliceBase, Upstream
from streams.serving import Serving


class PrivacySlice(SliceBase):
    name = "privacy"
    topics = frozenset({topics.USER_COMMANDS})

    def __init__(
        self,
        processor: PrivacyProcessor,
        owners: Mapping[str, str],
        eraser: Eraser,
        serving: Serving,
        send: Send,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.processor = processor
        #: Which slice persists each of the processor's tables (table name -> slice name).
        self.owners = dict(owners)
        self.eraser = eraser
        self.serving = serving
        self.send = send
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    def process(self, records: Sequence[Record], upstream: Upstream) -> PrivacyOutcome | None:
        outcome = self.processor.process(records) if records else None
        if not outcome:
            return None
        if outcome.erased:
            outcome.unflushed = [table for table, owner in self.owners.items() if owner not in upstream]
        return outcome

    async def persist(self, outcome: PrivacyOutcome) -> None:
        for table in outcome.unflushed:
            await self.processor.tables[table].flush()

    async def deliver(self, records: Sequence[Record], outcome: PrivacyOutcome) -> None:
        await deliver_refusals(self.send, outcome.dead_letters)
        answers: list[tuple[str, dict[str, Any]]] = []
        for erasure in outcome.erased:
            answers.append((erasure.command_id, await self._erase_views(erasure)))
            metrics.USERS_ERASED.inc()
        if answers:
            await write_until_redis_answers(lambda: self._answer(answers, RESULT_TTL_S))
        if outcome.exports:
            await write_until_redis_answers(lambda: self._answer(outcome.exports, EXPORT_TTL_S))

    async def _erase_views(self, erasure: Erasure) -> dict[str, Any]:
        removed: dict[str, int] = {}

        async def erase() -> None:
            removed.update(await self.eraser.erase(erasure.user_id, erasure.traces, self.clock_ms()))

        await write_until_redis_answers(erase)
        return {"ok": True, "user_id": erasure.user_id, "tables": list(erasure.tables), "redis": removed}

    async def _answer(self, answers: list[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        docs = [(keys.command_result(command_id), orjson.dumps(answer)) for command_id, answer in answers]
        await self.serving.set_expiring(docs, ttl_s)
