"""The interventions analytics agent: one partition of `elimu-intervention-outcomes`, so one
worker tallies every user partition's reports (notifications sent, opened, clicked, converted;
campaign outcomes) into the `OutcomeLedger` (models/outcome_ledger.py), in a changelog table.

After each batch it publishes the funnel counts to `elimu-broadcast` (`intervention-stats`),
where every worker's bandit reads the clicks and conversions of each variant, and the analytics
and campaign logs to Redis for `GET /v1/analytics/interventions` and the campaign routes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson

from infra import keys
from infra.kafka import BROADCAST_TOPIC
from models.outcome_ledger import OutcomeLedger
from streams.broadcast import STATS_KEY
from streams.pipeline import Send, write_until_redis_answers
from streams.records import Record
from streams.serving import ServingWriter
from streams.tables import TableStore

log = logging.getLogger(__name__)

LEDGER_KEY = "all"


class InterventionsAnalytics:
    def __init__(self, store: TableStore[OutcomeLedger], serving: ServingWriter, send: Send) -> None:
        self.store = store
        self.serving = serving
        self.send = send

    async def handle(self, records: Sequence[Record]) -> None:
        ledger = self.store.get(LEDGER_KEY) or OutcomeLedger()
        changed_runs: set[str] = set()
        for rec in records:
            try:
                campaign_id = ledger.apply(orjson.loads(rec.value or b""))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("intervention report at offset %d skipped: %s", rec.offset, exc)
                continue
            if campaign_id is not None:
                changed_runs.add(campaign_id)
        self.store.put(LEDGER_KEY, ledger)
        await self.store.flush()
        await self.send(BROADCAST_TOPIC, STATS_KEY, orjson.dumps(ledger.stats.to_dict()), 0)
        await write_until_redis_answers(lambda: self.write_views(ledger, changed_runs))

    async def write_views(self, ledger: OutcomeLedger, runs: set[str] | None = None) -> None:
        hsets = [
            (keys.CAMPAIGN_RUNS, cid, orjson.dumps(ledger.runs[cid].to_dict()).decode())
            for cid in (ledger.runs if runs is None else runs)
        ]
        sets = [(keys.INTERVENTION_ANALYTICS, orjson.dumps(ledger.stats.view()).decode())]
        await self.serving.write_documents(sets, hsets, [])
