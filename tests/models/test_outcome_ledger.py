"""The interventions' global tallies (models/outcome_ledger.py): funnel stages and campaign
outcomes counted once per report id, malformed reports refused, a bounded memory of ids."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from models.outcome_ledger import LEDGER_VERSION, MAX_SEEN, OutcomeLedger


def stage(report_id: str = "n-1:sent", stage: str = "sent", **overrides: Any) -> dict[str, Any]:
    report = {
        "id": report_id,
        "kind": "stage",
        "stage": stage,
        "type": "gentle_reminder",
        "channel": "IN_APP",
        "template": "gentle_reminder",
        "variant": "a",
    }
    report.update(overrides)
    return report


def campaign(
    report_id: str = "campaign:c1:u-1:once:sent", outcome: str = "sent", at_ms: int = 1_000, **overrides: Any
) -> dict[str, Any]:
    report = {"id": report_id, "kind": "campaign", "campaign_id": "c1", "outcome": outcome, "at_ms": at_ms}
    report.update(overrides)
    return report


def test_stage_reports_are_counted_by_type_channel_and_variant() -> None:
    ledger = OutcomeLedger()
    assert ledger.apply(stage("n-1:sent")) is None
    assert ledger.apply(stage("n-2:sent", variant="b", channel="PUSH")) is None
    assert ledger.apply(stage("n-1:opened", "opened")) is None
    assert ledger.apply(stage("n-1:clicked", "clicked")) is None

    assert ledger.stats.by_type["gentle_reminder"] == {"sent": 2, "opened": 1, "clicked": 1, "converted": 0}
    assert ledger.stats.by_channel["IN_APP"]["sent"] == 1
    assert ledger.stats.by_channel["PUSH"]["sent"] == 1
    variants = ledger.stats.variant_stats("gentle_reminder")
    assert variants["a"] == {"sent": 1, "opened": 1, "clicked": 1, "converted": 0, "unsubscribed": 0}
    assert variants["b"] == {"sent": 1, "opened": 0, "clicked": 0, "converted": 0, "unsubscribed": 0}
    assert list(ledger.seen) == ["n-1:sent", "n-2:sent", "n-1:opened", "n-1:clicked"]
    assert ledger.runs == {}


def test_campaign_reports_are_counted_per_campaign_with_their_span() -> None:
    ledger = OutcomeLedger()
    assert ledger.apply(campaign("r1", "evaluated", 5_000)) == "c1"
    assert ledger.apply(campaign("r2", "sent", 2_000)) == "c1"
    assert ledger.apply(campaign("r3", "suppressed:throttled", 9_000)) == "c1"
    assert ledger.apply(campaign("r4", "not_targeted", 3_000, campaign_id="c2")) == "c2"

    run = ledger.runs["c1"]
    assert run.counts == {"evaluated": 1, "sent": 1, "suppressed:throttled": 1}
    assert (run.first_ms, run.last_ms) == (2_000, 9_000)
    assert ledger.runs["c2"].counts == {"not_targeted": 1}
    assert ledger.stats.by_type == {}


def delivery(report_id: str = "dlv:sent:EMAIL:n-1", result: str = "sent", **overrides: Any) -> dict[str, Any]:
    report = {
        "id": report_id, "kind": "delivery", "result": result, "channel": "EMAIL",
        "type": "gentle_reminder", "template": "gentle_reminder", "variant": "a",
    }  # fmt: skip
    report.update(overrides)
    return report


def test_delivery_reports_are_counted_by_channel_and_variant_once_each() -> None:
    ledger = OutcomeLedger()
    assert ledger.apply(delivery()) is None
    assert ledger.apply(delivery()) is None  # the redelivered report
    assert ledger.apply(delivery("dlv:bounced:SMS:n-2", "bounced", channel="SMS")) is None
    assert ledger.apply(delivery("dlv:unsubscribed:EMAIL:n-1", "unsubscribed")) is None
    assert ledger.stats.deliveries["EMAIL"]["sent"] == 1
    assert ledger.stats.deliveries["EMAIL"]["unsubscribed"] == 1
    assert ledger.stats.deliveries["SMS"]["bounced"] == 1
    assert ledger.stats.variant_stats("gentle_reminder") == {}  # no sends counted: no funnel
    assert ledger.stats.deliveries_by_template["gentle_reminder"]["a"]["unsubscribed"] == 1
    with pytest.raises(ValueError):
        ledger.apply(delivery("dlv:x", "exploded"))
    assert OutcomeLedger.from_dict(ledger.to_dict()).to_dict() == ledger.to_dict()


def test_a_repeated_report_id_changes_nothing() -> None:
    ledger = OutcomeLedger()
    ledger.apply(stage("n-1:sent"))
    ledger.apply(campaign("r1"))
    before = copy.deepcopy(ledger.to_dict())

    assert ledger.apply(stage("n-1:sent")) is None
    assert ledger.apply(campaign("r1")) is None  # not "c1": nothing changed
    # Same id, other content (a replay is the same report): still ignored.
    assert ledger.apply(campaign("r1", "deferred", 99_000)) is None

    assert ledger.to_dict() == before
    assert ledger.stats.by_type["gentle_reminder"]["sent"] == 1
    assert ledger.runs["c1"].counts == {"sent": 1}


def test_report_ids_are_compared_as_text() -> None:
    ledger = OutcomeLedger()
    ledger.apply(stage(7))  # type: ignore[arg-type]
    assert ledger.apply(stage("7")) is None
    assert ledger.stats.by_type["gentle_reminder"]["sent"] == 1


@pytest.mark.parametrize(
    ("report", "error"),
    [
        (stage(kind="nudge"), ValueError),
        (stage(stage="bounced"), ValueError),
        (stage(stage="SENT"), ValueError),
        ({k: v for k, v in stage().items() if k != "id"}, KeyError),
        ({k: v for k, v in stage().items() if k != "kind"}, KeyError),
        ({k: v for k, v in stage().items() if k != "stage"}, KeyError),
        ({k: v for k, v in stage().items() if k != "variant"}, KeyError),
        ({k: v for k, v in campaign().items() if k != "campaign_id"}, KeyError),
    ],
    ids=[
        "unknown-kind",
        "unknown-stage",
        "stage-case",
        "no-id",
        "no-kind",
        "no-stage",
        "no-variant",
        "no-campaign-id",
    ],
)
def test_a_malformed_report_raises_and_changes_nothing(
    report: dict[str, Any], error: type[Exception]
) -> None:
    ledger = OutcomeLedger()
    ledger.apply(stage("n-0:sent"))
    ledger.apply(campaign("r0"))
    before = copy.deepcopy(ledger.to_dict())

    with pytest.raises(error):
        ledger.apply(report)

    assert ledger.to_dict() == before  # counts, runs and the remembered ids alike


@pytest.mark.parametrize(
    "report",
    [
        campaign("bad-1", outcome="exploded", campaign_id="c-new"),
        campaign("bad-2", outcome="suppressed:Not Valid", campaign_id="c-new"),
        {k: v for k, v in campaign("bad-3", campaign_id="c-new").items() if k != "outcome"},
        {k: v for k, v in campaign("bad-4", campaign_id="c-new").items() if k != "at_ms"},
        campaign("bad-5", at_ms="soon", campaign_id="c-new"),  # type: ignore[arg-type]
    ],
    ids=["unknown-outcome", "bad-suppression-reason", "no-outcome", "no-at", "bad-at"],
)
def test_a_malformed_campaign_report_leaves_no_empty_run(report: dict[str, Any]) -> None:
    ledger = OutcomeLedger()
    with pytest.raises((ValueError, KeyError)):
        ledger.apply(report)
    assert ledger.runs == {}
    assert list(ledger.seen) == []


def test_a_malformed_campaign_report_for_a_known_campaign_counts_nothing() -> None:
    ledger = OutcomeLedger()
    ledger.apply(campaign("r0", "sent", 1_000))
    before = copy.deepcopy(ledger.to_dict())
    with pytest.raises(ValueError):
        ledger.apply(campaign("r1", "exploded", 5_000))
    assert ledger.to_dict() == before


def test_seen_ids_are_bounded_to_max_seen() -> None:
    ledger = OutcomeLedger()
    for i in range(MAX_SEEN + 1):
        ledger.apply(stage(f"n-{i}:sent"))
    assert len(ledger.seen) == MAX_SEEN
    assert ledger.seen[0] == "n-1:sent" and ledger.seen[-1] == f"n-{MAX_SEEN}:sent"
    assert ledger.stats.by_type["gentle_reminder"]["sent"] == MAX_SEEN + 1

    # The most recent ids are still recognised; the evicted oldest one is not any more.
    assert ledger.apply(stage(f"n-{MAX_SEEN}:sent")) is None
    assert ledger.stats.by_type["gentle_reminder"]["sent"] == MAX_SEEN + 1
    ledger.apply(stage("n-0:sent"))
    assert ledger.stats.by_type["gentle_reminder"]["sent"] == MAX_SEEN + 2
    assert len(ledger.seen) == MAX_SEEN


def filled() -> OutcomeLedger:
    ledger = OutcomeLedger()
    ledger.apply(stage("n-1:sent"))
    ledger.apply(stage("n-1:clicked", "clicked"))
    ledger.apply(
        stage("n-2:sent", variant="b", channel="PUSH", type="streak_warning", template="streak_warning")
    )
    ledger.apply(campaign("r1", "evaluated", 1_000))
    ledger.apply(campaign("r2", "suppressed:returned", 4_000))
    ledger.apply(campaign("r3", "sent", 2_000, campaign_id="c2"))
    return ledger


def test_json_round_trip_is_exact() -> None:
    ledger = filled()
    data = ledger.to_dict()
    assert data["v"] == LEDGER_VERSION

    restored = OutcomeLedger.from_dict(orjson.loads(orjson.dumps(data)))

    assert restored.to_dict() == data
    assert restored.stats == ledger.stats
    assert restored.runs == ledger.runs
    assert list(restored.seen) == list(ledger.seen)
    assert restored.seen.maxlen == MAX_SEEN
    # The restored ledger still ignores the ids it remembers.
    assert restored.apply(campaign("r1", "evaluated", 1_000)) is None
    assert restored.runs["c1"].counts == {"evaluated": 1, "suppressed:returned": 1}


def test_empty_ledger_round_trips() -> None:
    data = OutcomeLedger().to_dict()
    assert OutcomeLedger.from_dict(orjson.loads(orjson.dumps(data))).to_dict() == data


def test_from_dict_refuses_another_version() -> None:
    data = filled().to_dict()
    data["v"] = LEDGER_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        OutcomeLedger.from_dict(data)
    del data["v"]
    with pytest.raises(ValueError, match="version"):
        OutcomeLedger.from_dict(data)


def test_from_dict_bounds_an_oversized_seen_list() -> None:
    data = OutcomeLedger().to_dict()
    data["seen"] = [f"id-{i}" for i in range(MAX_SEEN + 10)]
    restored = OutcomeLedger.from_dict(data)
    assert len(restored.seen) == MAX_SEEN
    assert restored.seen[0] == "id-10"
