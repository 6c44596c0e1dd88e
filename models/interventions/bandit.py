"""A/B variant choice (Thompson sampling on clicks and conversions) and the funnel analytics."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.interventions.templates import Template, Variant

STATS_VERSION = 1


class CountedNotification(Protocol):
    """What the analytics count of a notification (models.interventions.notifications.Notification
    has it; a protocol here so this module does not import that one, which imports this)."""

    @property
    def type(self) -> str: ...
    @property
    def primary_channel(self) -> str: ...
    @property
    def template(self) -> str: ...
    @property
    def variant(self) -> str: ...


#: Notification lifecycle stages counted by analytics, in funnel order.
STAGES: tuple[str, ...] = ("sent", "opened", "clicked", "converted")
#: What the delivery services report of a send on EMAIL, PUSH or SMS (models/delivery.py).
DELIVERY_RESULTS: tuple[str, ...] = ("sent", "delivered", "bounced", "failed", "unsubscribed")
#: The per-variant count the A/B choice holds against a variant: people it drove to unsubscribe.
UNSUBSCRIBED = "unsubscribed"

# ---------------------------------------------------------------------------------------------
# A/B: Thompson sampling on clicks and conversions


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def _counts() -> dict[str, int]:
    return dict.fromkeys(STAGES, 0)


@dataclass
class VariantStats:
    """One template's funnel per variant: variant id -> {"sent", "opened", "clicked", "converted"}."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, variant: str, stage: str, n: int = 1) -> None:
        _check_stage(stage)
        self.counts.setdefault(variant, _counts())[stage] += n

    def as_mapping(self) -> Mapping[str, Mapping[str, int]]:
        return self.counts

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATS_VERSION, "counts": {v: dict(c) for v, c in self.counts.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantStats:
        if data.get("v") != STATS_VERSION:
            raise ValueError(f"unsupported variant stats version {data.get('v')!r}")
        return cls({str(v): _read_counts(c) for v, c in (data.get("counts") or {}).items()})


def _read_counts(raw: Mapping[str, Any]) -> dict[str, int]:
    counts = _counts()
    for stage in STAGES:
        counts[stage] = int(raw.get(stage, 0))
    return counts


def sends_and_rewards(counts: Mapping[str, int]) -> tuple[int, int]:
    """(sends, rewarded sends). A send is rewarded when clicked or converted, counted once:
    `track` makes conversions imply clicks, so max() guards only sources that do not. Each
    unsubscribe a variant caused takes one reward back: a message that clicks well but drives
    people off the channel is not the better one."""
    sends = max(0, int(counts.get("sent", 0)))
    rewards = max(int(counts.get("clicked", 0)), int(counts.get("converted", 0)), 0)
    rewards = max(0, rewards - max(0, int(counts.get(UNSUBSCRIBED, 0))))
    return sends, min(rewards, sends)


def seeded_random(*parts: str) -> random.Random:
    """A generator determined by `parts` in every process (SHA-256; `hash()` is salted)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def choose_variant(
    template: Template,
    stats: Mapping[str, Mapping[str, int]] | VariantStats | None,
    seed: str,
) -> Variant:
    """Thompson sampling: draw from Beta(1 + rewards, 1 + sends - rewards) per variant, pick the
    highest draw (ties to the earlier variant); or, for a template an admin splits by weight,
    a draw by the weights. Deterministic in (template, stats, seed)."""
    if not template.variants:
        raise ValueError(f"template {template.id!r} has no variants")
    if len(template.variants) == 1:
        return template.variants[0]
    rng = seeded_random(template.id, seed)
    if template.allocation == "split":
        total = sum(max(0.0, v.weight) for v in template.variants)
        point = rng.random() * total
        for variant in template.variants:
            point -= max(0.0, variant.weight)
            if point < 0:
                return variant
        return template.variants[-1]
    counts = stats.counts if isinstance(stats, VariantStats) else (stats or {})
    best, best_draw = template.variants[0], -1.0
    for variant in template.variants:
        sends, rewards = sends_and_rewards(counts.get(variant.id, {}))
        draw = rng.betavariate(1 + rewards, 1 + sends - rewards)
        if draw > best_draw:
            best, best_draw = variant, draw
    return best


# ---------------------------------------------------------------------------------------------
# Analytics


def _rates(counts: Mapping[str, int]) -> dict[str, float | int]:
    sent = counts.get("sent", 0)
    view: dict[str, float | int] = {stage: counts.get(stage, 0) for stage in STAGES}
    for stage, rate in (("opened", "open_rate"), ("clicked", "click_rate"), ("converted", "conversion_rate")):
        view[rate] = round(counts.get(stage, 0) / sent, 4) if sent else 0
    return view


@dataclass
class InterventionStats:
    """Global funnel counts by type, by channel and by (template, variant).

    One `record` per notification and stage: a notification on several channels is attributed to
    the channel passed (the one a tracking event names, else its primary channel), so totals
    count notifications, not copies. The per-template counts feed `choose_variant`.
    """

    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)
    by_template: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    #: Delivery results by channel, and by (template, variant) (``DELIVERY_RESULTS``).
    deliveries: dict[str, dict[str, int]] = field(default_factory=dict)
    deliveries_by_template: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def record_delivery(self, result: str, channel: str, template: str, variant: str) -> None:
        if result not in DELIVERY_RESULTS:
            raise ValueError(f"unknown delivery result {result!r}; expected one of {DELIVERY_RESULTS}")
        by_channel = self.deliveries.setdefault(channel, dict.fromkeys(DELIVERY_RESULTS, 0))
        by_channel[result] += 1
        by_variant = self.deliveries_by_template.setdefault(template, {}).setdefault(
            variant, dict.fromkeys(DELIVERY_RESULTS, 0)
        )
        by_variant[result] += 1

    def record(self, stage: str, type: str, channel: str, template: str, variant: str) -> None:
        _check_stage(stage)
        self.by_type.setdefault(type, _counts())[stage] += 1
        self.by_channel.setdefault(channel, _counts())[stage] += 1
        self.by_template.setdefault(template, {}).setdefault(variant, _counts())[stage] += 1

    def record_notification(self, stage: str, n: CountedNotification, channel: str | None = None) -> None:
        self.record(stage, n.type, channel or n.primary_channel, n.template, n.variant)

    def variant_stats(self, template: str) -> Mapping[str, Mapping[str, int]]:
        """Each variant's funnel and its unsubscribes: what ``choose_variant`` weighs."""
        gone = self.deliveries_by_template.get(template, {})
        return {
            v: {**c, UNSUBSCRIBED: gone.get(v, {}).get(UNSUBSCRIBED, 0)}
            for v, c in self.by_template.get(template, {}).items()
        }

    def view(self) -> dict[str, Any]:
        totals = _counts()
        for counts in self.by_type.values():
            for stage in STAGES:
                totals[stage] += counts.get(stage, 0)
        return {
            "by_type": {k: _rates(self.by_type[k]) for k in sorted(self.by_type)},
            "by_channel": {k: _rates(self.by_channel[k]) for k in sorted(self.by_channel)},
            "by_template": {
                t: {v: _rates(c) for v, c in sorted(self.by_template[t].items())}
                for t in sorted(self.by_template)
            },
            "totals": _rates(totals),
            "deliveries": {k: dict(self.deliveries[k]) for k in sorted(self.deliveries)},
            "deliveries_by_template": {
                t: {v: dict(c) for v, c in sorted(vs.items())}
                for t, vs in sorted(self.deliveries_by_template.items())
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATS_VERSION,
            "by_type": {k: dict(c) for k, c in self.by_type.items()},
            "by_channel": {k: dict(c) for k, c in self.by_channel.items()},
            "by_template": {t: {v: dict(c) for v, c in vs.items()} for t, vs in self.by_template.items()},
            "deliveries": {k: dict(c) for k, c in self.deliveries.items()},
            "deliveries_by_template": {
                t: {v: dict(c) for v, c in vs.items()} for t, vs in self.deliveries_by_template.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InterventionStats:
        if data.get("v") != STATS_VERSION:
            raise ValueError(f"unsupported intervention stats version {data.get('v')!r}")
        return cls(
            by_type={str(k): _read_counts(c) for k, c in (data.get("by_type") or {}).items()},
            by_channel={str(k): _read_counts(c) for k, c in (data.get("by_channel") or {}).items()},
            by_template={
                str(t): {str(v): _read_counts(c) for v, c in vs.items()}
                for t, vs in (data.get("by_template") or {}).items()
            },
            deliveries={str(k): _read_results(c) for k, c in (data.get("deliveries") or {}).items()},
            deliveries_by_template={
                str(t): {str(v): _read_results(c) for v, c in vs.items()}
                for t, vs in (data.get("deliveries_by_template") or {}).items()
            },
        )


def _read_results(raw: Mapping[str, Any]) -> dict[str, int]:
    return {result: int(raw.get(result, 0)) for result in DELIVERY_RESULTS}
