"""The interventions analytics slice: one partition of `elimu-intervention-outcomes`, so one
worker tallies every user partition's reports (notifications sent, opened, clicked, converted;
campaign outcomes) into the `OutcomeLedger` (models/outcome_ledger.py), in a changelog table.

After each batch it publishes the funnel counts to `elimu-broadcast` (`intervention-stats`),
where every worker's bandit reads the clicks and conversions of each variant, and the analytics
and campaign logs to Redis for `GET /v1/analytics/interventions` and the campaign routes.

Everything those routes read comes back after Redis is wiped (``reproject``, called by the
worker's serving check): the analytics and run logs from the ledger table, by the worker that
owns it; the campaign definitions from `elimu-broadcast`, which every worker holds whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from infra import keys, topics
from infra.campaign_view import mirror_campaigns, mirror_templates
from infra.redis_conn import RedisClient
from models.outcome_ledger import OutcomeLedger
from streams.broadcast import STATS_KEY, Broadcasts
from streams.delivery import Send, write_until_redis_answers
from streams.records import Record
from streams.runner import SliceBase, Upstream
from streams.serving import Serving
from streams.stores import Store

log = logging.getLogger(__name__)

LEDGER_KEY = "all"


@dataclass
class LedgerChange:
    ledger: OutcomeLedger
    #: Campaigns whose run log changed in the batch.
    runs: set[str]


class AnalyticsSlice(SliceBase):
    name = agent = "interventions"
    topics = frozenset({topics.INTERVENTION_OUTCOMES})

    def __init__(self, store: Store[OutcomeLedger], serving: Serving, send: Send, redis: RedisClient) -> None:
        self.store = store
        self.serving = serving
        self.send = send
        self.redis = redis
        #: (serving epoch, campaigns version) last mirrored, and the epoch the ledger's views
        #: were last re-projected in by this worker.
        self._campaigns_mirrored: tuple[bytes | str | None, int] | None = None
        self._templates_mirrored: tuple[bytes | str | None, int] | None = None
        self._ledger_epoch: bytes | str | None = None

    def process(self, records: Sequence[Record], upstream: Upstream) -> LedgerChange | None:
        if not records:
            return None
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
        return LedgerChange(ledger, changed_runs)

    async def persist(self, outcome: LedgerChange) -> None:
        await self.store.flush()

    async def deliver(self, records: Sequence[Record], outcome: LedgerChange) -> None:
        stats = orjson.dumps(outcome.ledger.stats.to_dict())
        await self.send(topics.BROADCAST, STATS_KEY, stats, 0)
        await write_until_redis_answers(lambda: self.write_views(outcome.ledger, outcome.runs))

    async def write_views(self, ledger: OutcomeLedger, runs: set[str] | None = None) -> None:
        hsets = [
            (keys.CAMPAIGN_RUNS, cid, orjson.dumps(ledger.runs[cid].to_dict()).decode())
            for cid in (ledger.runs if runs is None else runs)
        ]
        sets = [(keys.INTERVENTION_ANALYTICS, orjson.dumps(ledger.stats.view()).decode())]
        await self.serving.write_documents(sets, hsets, [])

    async def reproject(self, epoch: bytes | str | None, owns_ledger: bool, broadcasts: Broadcasts) -> None:
        """Bring back what the admin routes read, from Kafka, when Redis lost it.

        ``epoch`` is the serving epoch (infra/keys.py): a new one means Redis was wiped (or its
        layout changed). Every worker mirrors the campaign definitions then, and whenever its
        broadcast feed applies campaign records (so a definition that arrives after the wipe
        is mirrored too); the ledger's owner writes the analytics and every run log. Each step
        is marked done only once written, so a failed write is tried again at the next check.
        """
        mirrored = (epoch, broadcasts.campaigns_version)
        if mirrored != self._campaigns_mirrored:
            await mirror_campaigns(self.redis, list(broadcasts.campaigns.values()))
            self._campaigns_mirrored = mirrored
        templates = (epoch, broadcasts.templates_version)
        if templates != self._templates_mirrored:
            await mirror_templates(
                self.redis, [(t.id, t.to_dict(), t.updated_ms) for t in broadcasts.templates.values()]
            )
            self._templates_mirrored = templates
        if owns_ledger and epoch != self._ledger_epoch:
            ledger = self.store.get(LEDGER_KEY)
            if ledger is not None:
                await self.write_views(ledger)
                log.info("re-projected intervention analytics and %d campaign run logs", len(ledger.runs))
            self._ledger_epoch = epoch
