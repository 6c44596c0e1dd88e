"""Every worker's view of `elimu-broadcast`: the state one writer publishes for all workers.

Keys and their writers:
- `risk-scorer`: the risk model to score with (the risk trainer, streams/risk_trainer.py);
- `risk-checkpoint` and `risk-checkpoint/<i>`: the trainer's whole state as a manifest and its
  chunks (streams/chunks.py), buffered here and joined only by a worker that becomes the trainer;
- `intervention-stats`: the interventions' funnel counts, whose per-variant clicks and
  conversions drive the A/B bandit (the analytics agent, streams/interventions.py);
- `campaign:<id>`: a campaign's definition (the API's admin routes; a tombstone deletes it);
- `template:<id>`: an admin's notification template (the API's admin routes; a tombstone
  deletes it).
Records are applied in topic order; a bad one is logged and skipped, never fatal.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from models.campaigns.records import Campaign
from models.interventions import InterventionStats
from models.interventions.template_admin import parse_stored_template
from models.interventions.templates import Template, TemplateLibrary
from models.risk import IncompatibleModel, RiskModel
from streams import metrics
from streams.chunks import ChunkBuffer
from streams.risk import RiskProcessor

log = logging.getLogger(__name__)

SCORER_KEY = b"risk-scorer"
CHECKPOINT_KEY = b"risk-checkpoint"
STATS_KEY = b"intervention-stats"
CAMPAIGN_PREFIX = b"campaign:"
TEMPLATE_PREFIX = b"template:"


def template_key(template_id: str) -> bytes:
    return TEMPLATE_PREFIX + template_id.encode()


def campaign_key(campaign_id: str) -> bytes:
    return CAMPAIGN_PREFIX + campaign_id.encode()


class Broadcasts:
    def __init__(self, processor: RiskProcessor) -> None:
        self.processor = processor
        #: The trainer's checkpoint: its latest manifest and chunk records (bounded by
        #: streams/chunks.py), joined and verified only when a restore asks for it.
        self.checkpoint = ChunkBuffer(CHECKPOINT_KEY)
        self.stats = InterventionStats()
        self.campaigns: dict[str, Campaign] = {}
        #: Set when a campaign changed: every user's next look must be recomputed.
        self.campaigns_changed = False
        #: Campaign records applied so far: the Redis mirror of the definitions catches up when
        #: it moves (streams/interventions.py); the flag above is the risk sweep's to clear.
        self.campaigns_version = 0
        self.templates: dict[str, Template] = {}
        self.templates_version = 0
        self._library = TemplateLibrary()

    def take_campaigns_changed(self) -> bool:
        """Whether a campaign changed since the last call (the risk sweep's signal to recompute
        everyone's next look); clears it."""
        changed, self.campaigns_changed = self.campaigns_changed, False
        return changed

    def active_campaigns(self) -> list[Campaign]:
        """The campaigns the sweep evaluates: the active ones, and any with an admin's manual
        send (which fires whatever the status; the schedule of a draft or paused one does not)."""
        return [c for c in self.campaigns.values() if c.status == "active" or c.sends]

    def stats_for(self, template: str) -> Any:
        return self.stats.variant_stats(template)

    def template_library(self) -> TemplateLibrary:
        """The built-in templates and the admins' as last broadcast."""
        return self._library

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            self._apply(key or b"", value)
        except Exception as exc:  # one bad record must not stop the feed (infra/feed.py)
            log.error("broadcast record %r at offset %d skipped: %s", key, offset, exc)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        if self.checkpoint.owns(key):
            self.checkpoint.on_record(key, value)  # a tombstone counts: it deletes a stale chunk
        elif key.startswith(TEMPLATE_PREFIX):
            template_id = key[len(TEMPLATE_PREFIX) :].decode()
            if value is None:
                self.templates.pop(template_id, None)
            else:
                # Checked again on the way in: the topic is signed, but a reader trusts nothing.
                self.templates[template_id] = parse_stored_template(orjson.loads(value))
            self._library = TemplateLibrary(self.templates)
            self.templates_version += 1
            metrics.BROADCAST_APPLIED.labels("template").inc()
        elif key.startswith(CAMPAIGN_PREFIX):
            campaign_id = key[len(CAMPAIGN_PREFIX) :].decode()
            if value is None:
                self.campaigns.pop(campaign_id, None)
            else:
                self.campaigns[campaign_id] = Campaign.from_dict(orjson.loads(value))
            self.campaigns_changed = True
            self.campaigns_version += 1
            metrics.BROADCAST_APPLIED.labels("campaign").inc()
        elif value is None:
            return
        elif key == STATS_KEY:
            self.stats = InterventionStats.from_dict(orjson.loads(value))
        elif key == SCORER_KEY:
            try:
                # Plain data, checked and bounded (1 MiB, no book): never code (models/risk_codec.py).
                model = RiskModel.from_bytes(value, scoring_only=True)
            except IncompatibleModel as exc:
                log.error("risk model not adopted: %s", exc)
                return
            self.processor.adopt_model(model)
            metrics.RISK_MODEL_LABELS.set(model.n_learned)
