"""Admins' templates on `elimu-broadcast` (streams/broadcast.py): `template:<id>` records build
the library every worker's risk processor sends from, a tombstone deletes, a malformed record is
skipped without losing the others; and the worker's mirror of them in Redis
(streams/interventions.py, infra/campaign_view.py), never over a newer definition or a delete."""

from __future__ import annotations

import logging
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from infra import keys
from infra.campaign_view import mirror_templates
from models.career_notices import Notice
from models.interventions.template_admin import parse_template
from models.interventions.templates import TEMPLATES, Template
from models.risk_state import RiskState
from streams.broadcast import Broadcasts, template_key
from streams.interventions import AnalyticsSlice
from tests.streams.test_broadcast import processor
from tests.streams.test_interventions import analytics  # noqa: F401  (the fixture)

NOW = 1_780_000_000_000


class Store:
    """The partition's risk table."""

    def __init__(self) -> None:
        self.data: dict[str, RiskState] = {}

    def get(self, key: str) -> RiskState | None:
        return self.data.get(key)

    def put(self, key: str, state: RiskState) -> None:
        self.data[key] = state


def template(
    template_id: str,
    type_: str = "gentle_reminder",
    *,
    subject: str = "",
    default: bool = False,
    updated_ms: int = NOW,
    **extra: Any,
) -> Template:
    return parse_template(
        {
            "type": type_,
            "default": default,
            "variants": [
                {"subject": subject or f"From {template_id}", "body": "Hi {display_name}", "cta": "Go"}
            ],
            **extra,
        },
        template_id,
        updated_ms,
    )


def encoded(t: Template) -> bytes:
    return orjson.dumps(t.to_dict())


def test_template_keys() -> None:
    assert template_key("warm") == b"template:warm"


def test_template_records_build_the_library() -> None:
    b = Broadcasts(processor())
    assert b.templates == {} and b.templates_version == 0
    assert b.template_library().for_type("gentle_reminder") is TEMPLATES["gentle_reminder"]

    warm = template("warm", default=True)
    split = template(
        "split",
        "streak_warning",
        allocation="split",
        variants=[
            {"subject": "a", "body": "b", "cta": "c", "weight": 3},
            {"subject": "x", "body": "y", "cta": "z"},
        ],
    )
    b.on_record(template_key("warm"), encoded(warm), 0)
    b.on_record(template_key("split"), encoded(split), 1)

    assert b.templates == {"warm": warm, "split": split}
    assert b.templates_version == 2
    library = b.template_library()
    assert library.get("warm") == warm and library.get("split") == split
    assert library.for_type("gentle_reminder") == warm  # the custom default
    assert library.for_type("streak_warning") is TEMPLATES["streak_warning"]  # not a default
    assert library.resolve("streak_warning", "split") == split
    assert [v.weight for v in split.variants] == [3.0, 1.0]


def test_a_newer_record_replaces_the_template() -> None:
    b = Broadcasts(processor())
    b.on_record(template_key("warm"), encoded(template("warm", subject="First")), 0)
    b.on_record(template_key("warm"), encoded(template("warm", subject="Second", updated_ms=NOW + 1)), 1)
    assert b.template_library().get("warm").variants[0].subject == "Second"  # type: ignore[union-attr]
    assert b.templates_version == 2


def test_a_tombstone_deletes_the_template() -> None:
    b = Broadcasts(processor())
    b.on_record(template_key("warm"), encoded(template("warm", default=True)), 0)
    b.on_record(template_key("cool"), encoded(template("cool")), 1)

    b.on_record(template_key("warm"), None, 2)

    assert set(b.templates) == {"cool"}
    assert b.templates_version == 3
    library = b.template_library()
    assert library.get("warm") is None
    assert library.for_type("gentle_reminder") is TEMPLATES["gentle_reminder"]  # back to the built-in
    assert library.resolve("gentle_reminder", "warm") is TEMPLATES["gentle_reminder"]

    b.on_record(template_key("ghost"), None, 3)  # an unknown one: harmless
    assert set(b.templates) == {"cool"}


def test_the_processor_reads_the_live_library() -> None:
    p = processor()
    b = Broadcasts(p)
    assert p.templates().for_type("gentle_reminder") is TEMPLATES["gentle_reminder"]  # before follow
    p.follow(b)
    warm = template("warm", default=True)
    b.on_record(template_key("warm"), encoded(warm), 0)
    assert p.templates().for_type("gentle_reminder") == warm
    b.on_record(template_key("warm"), None, 1)
    assert p.templates().for_type("gentle_reminder") is TEMPLATES["gentle_reminder"]


def test_the_processor_sends_a_broadcast_default_template() -> None:
    p = processor()
    b = Broadcasts(p)
    p.follow(b)
    match = template("match-v2", "job_match", default=True, subject="{job_title} fits you")
    b.on_record(template_key("match-v2"), encoded(match), 0)

    news = Notice("job_match", "match:j1", {"job_title": "Data analyst"}, NOW, urgency="high")
    out = p.on_events([], Store(), notices={"u-1": [news]})

    (sent,) = out.delivered
    assert (sent.template, sent.variant, sent.subject, sent.body) == (
        "match-v2",
        "a",
        "Data analyst fits you",
        "Hi there",
    )


BAD_VALUES = [
    pytest.param(b"{not json", id="bad-json"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(orjson.dumps([1, 2]), id="not-an-object"),
    pytest.param(orjson.dumps({"id": "warm", "type": "gentle_reminder"}), id="no-variants"),
    pytest.param(
        orjson.dumps(
            template("warm").to_dict()
            | {"variants": [{"id": "a", "subject": "{display_name.__class__}", "body": "b", "cta": "c"}]}
        ),
        id="attribute-placeholder",
    ),
    pytest.param(
        orjson.dumps(
            template("warm").to_dict()
            | {"variants": [{"id": "a", "subject": "{secret}", "body": "b", "cta": "c"}]}
        ),
        id="undeclared-variable",
    ),
    pytest.param(orjson.dumps(template("warm").to_dict() | {"type": "fortune"}), id="unknown-type"),
]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_malformed_template_record_is_skipped_without_losing_the_others(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    b = Broadcasts(processor())
    good = template("warm", default=True)
    b.on_record(template_key("warm"), encoded(good), 0)
    b.on_record(template_key("cool"), encoded(template("cool")), 1)

    with caplog.at_level(logging.ERROR, logger="streams.broadcast"):
        b.on_record(template_key("warm"), value, 7)

    assert b.template_library().get("warm") == good  # the last good definition stays
    assert b.template_library().for_type("gentle_reminder") == good
    assert set(b.templates) == {"warm", "cool"}
    assert any("offset 7 skipped" in r.getMessage() for r in caplog.records)

    # The feed goes on.
    later = template("later")
    b.on_record(template_key("later"), encoded(later), 8)
    assert b.templates["later"] == later


def test_a_record_cannot_replace_a_builtin_template() -> None:
    b = Broadcasts(processor())
    forged = template("warm").to_dict() | {"id": "gentle_reminder", "default": True}
    b.on_record(template_key("gentle_reminder"), orjson.dumps(forged), 0)
    assert b.templates == {}
    assert b.template_library().get("gentle_reminder") is TEMPLATES["gentle_reminder"]


def test_template_records_leave_campaigns_alone() -> None:
    b = Broadcasts(processor())
    b.on_record(template_key("warm"), encoded(template("warm")), 0)
    assert b.campaigns == {} and b.campaigns_version == 0 and b.take_campaigns_changed() is False


# ---------------------------------------------------------------------------------------------
# The worker's mirror (real Redis)


async def held(redis: Redis) -> dict[str, Any]:
    rows = cast(dict[bytes, bytes], await redis.hgetall(keys.TEMPLATES))
    return {k.decode(): orjson.loads(v) for k, v in rows.items()}


async def test_every_worker_mirrors_the_templates_it_applied(
    redis: Redis,
    analytics: AnalyticsSlice,  # noqa: F811
) -> None:
    b = Broadcasts(processor())
    warm = template("warm")
    b.on_record(template_key("warm"), encoded(warm), 0)
    await analytics.reproject(b"e", False, b)
    assert await held(redis) == {"warm": warm.to_dict()}

    # One arriving later is mirrored at the next check; a wipe's new epoch brings all back.
    cool = template("cool")
    b.on_record(template_key("cool"), encoded(cool), 1)
    await analytics.reproject(b"e", False, b)
    assert set(await held(redis)) == {"warm", "cool"}
    await redis.flushall()
    await analytics.reproject(b"e2", False, b)
    assert await held(redis) == {"warm": warm.to_dict(), "cool": cool.to_dict()}


async def test_a_lagging_worker_never_undoes_an_edit_or_a_delete(
    redis: Redis,
    analytics: AnalyticsSlice,  # noqa: F811
) -> None:
    # The API mirrored an edit of "warm" and a delete of "gone" before this worker's feed got there.
    edited = template("warm", subject="Edited", updated_ms=NOW + 5000)
    await mirror_templates(
        redis,
        [
            ("warm", edited.to_dict(), edited.updated_ms),
            ("gone", {"id": "gone", "deleted": True, "updated_ms": NOW + 5000}, NOW + 5000),
        ],
    )
    lagging = Broadcasts(processor())
    lagging.on_record(template_key("warm"), encoded(template("warm", subject="Old")), 0)
    lagging.on_record(template_key("gone"), encoded(template("gone")), 1)
    await analytics.reproject(b"e", False, lagging)

    mirrored = await held(redis)
    assert mirrored["warm"]["variants"][0]["subject"] == "Edited"
    assert mirrored["gone"] == {"id": "gone", "deleted": True, "updated_ms": NOW + 5000}

    # A later definition does replace it, and one recreated after the delete comes back.
    lagging.on_record(
        template_key("warm"), encoded(template("warm", subject="Newest", updated_ms=NOW + 9000)), 2
    )
    lagging.on_record(template_key("gone"), encoded(template("gone", updated_ms=NOW + 9000)), 3)
    await analytics.reproject(b"e", False, lagging)
    mirrored = await held(redis)
    assert mirrored["warm"]["variants"][0]["subject"] == "Newest"
    assert "deleted" not in mirrored["gone"] and mirrored["gone"]["updated_ms"] == NOW + 9000
