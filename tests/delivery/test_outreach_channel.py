"""The delivery service's STAFF channel (delivery/outreach.py): a ``human_outreach``
notification becomes a task in the outreach queue, built from the student's risk view and inbox
as the engine serves them.

The notification is the engine's own: ``models.nudges.plan`` for a critical student, written as
the risk pipeline writes it (``notification_message``, signed), and the views are the pipeline's
(``risk_document``, ``inbox_view``). The service is built as ``elimu deliver`` builds it
(tests/delivery/conftest.py ``Harness``) and driven with ``handle_batch``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from delivery.channels import Recipient
from delivery.config import DeliveryConfig
from delivery.outreach import OutreachChannel
from infra import keys, outreach_store
from infra.channels import ChannelLog
from infra.redis_conn import RedisClient
from models.campaigns.records import UserFacts
from models.channels import OUTREACH_CHANNEL
from models.delivery import MAX_SEND_DELAY_MS, parse_notification
from models.interventions import Notification, UserContext
from models.nudges import plan
from models.outreach import assign
from models.risk import RiskScore, Signal
from models.risk_state import RiskState
from models.time_units import DAY_MS
from streams.risk import risk_document
from streams.risk_pipeline import inbox_view, notification_message
from tests.delivery.conftest import (
    Harness,
    PushPeer,
    SmsPeer,
    SmtpPeer,
    Tail,
    User,
    letters_of,
    notification,
    now_ms,
    record,
    reports_of,
    save_profile,
)

pytestmark = pytest.mark.integration

SIGNALS = (Signal("recency_d", 1.2, 6.0), Signal("events_7d", 0.6, 1.0), Signal("streak", -0.2, 3.0))
#: models/risk_explain.py's words for SIGNALS, strongest first.
WORDS = [
    "Several days have passed since the last activity.",
    "Few activities this week.",
    "Keeping a streak going.",
]


def user(unique: str, **overrides: Any) -> User:
    fields: dict[str, Any] = {
        "uid": f"u-{unique}",
        "email": f"dora.{unique}@example.org",
        "phone": "+254722" + str(int(unique, 16) % 1_000_000).zfill(6),
    }
    fields.update(overrides)
    return User(**fields)


def critical(uid: str, at_ms: int) -> RiskScore:
    return RiskScore(
        user_id=uid,
        score=93.25,
        level="critical",
        probability=0.93,
        weekly_risk=0.93,
        monthly_risk=0.99,
        confidence=0.4,
        top_signals=SIGNALS,
        scored_at_ms=at_ms,
    )


async def critical_student(redis: RedisClient, uid: str, at_ms: int) -> tuple[Notification, dict[str, Any]]:
    """The engine's sweep for a critical student at ``at_ms``: its views written as the risk
    pipeline writes them; the human_outreach notification and the inbox view."""
    state = RiskState(uid)
    state.activity.last_event_ms = at_ms - 6 * DAY_MS
    ctx = UserContext(uid, last_active_ms=at_ms - 6 * DAY_MS)
    score = critical(uid, at_ms)
    facts = UserFacts(uid, ctx.timezone, None, ctx.last_active_ms, score.score, {})
    out = plan(state, ctx, score, at_ms, campaigns=[], facts=facts, variant_counts=lambda t: {})
    [staff] = [n for n in out.delivered if n.type == "human_outreach"]
    assert staff.channels == () and state.notifications.inbox  # the student's own is in the inbox
    inbox = inbox_view(state)
    await redis.set(keys.user_risk(uid), orjson.dumps(risk_document(score, ["human_outreach"], 3)))
    await redis.set(keys.user_notifications(uid), orjson.dumps(inbox))
    return staff, inbox


async def outreach_pushes(redis: RedisClient) -> list[dict[str, Any]]:
    recovered, messages = await ChannelLog(redis).replay(OUTREACH_CHANNEL, 0)
    assert recovered or not messages
    return [m.data for m in messages]


def results(reports: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    by_channel = {r["channel"]: (r["result"], r.get("reason")) for r in reports}
    assert len(by_channel) == len(reports), reports
    return by_channel


async def test_a_human_outreach_notification_becomes_a_task_with_the_students_risk_and_inbox(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    sms_peer: SmsPeer,
    push_peer: PushPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    at = now_ms() - 60_000
    staff, inbox = await critical_student(harness.redis, who.uid, at)
    value = notification_message(staff)
    assert value["channels"] == ["STAFF"]

    await harness.service(config).handle_batch([record(value, who.uid)])

    task = await outreach_store.get(harness.redis, staff.id)
    assert task is not None
    assert (task.id, task.user_id, task.created_ms, task.status) == (staff.id, who.uid, at, "open")
    assert (task.score, task.level) == (93.25, "critical")
    assert task.signals == ("recency_d", "events_7d", "streak")
    assert list(task.explanations) == WORDS
    assert task.summary == f"{staff.subject}. {staff.body}"
    assert [dict(i) for i in task.last_interventions] == [
        {k: n[k] for k in ("type", "subject", "created_at", "read")} for n in inbox["notifications"]
    ]
    assert task.history == ((at, "created", "engine"),)
    assert [t.id for t in await outreach_store.listing(harness.redis, "open", 10)] == [staff.id]
    assert await outreach_pushes(harness.redis) == [task.public()]

    # Reported as delivered on STAFF; nothing reached the student through the staff channel.
    assert results(reports_of(await outcomes.everything(), staff.id)) == {"STAFF": ("delivered", None)}
    assert smtp_peer.messages == [] and sms_peer.requests == 0 and sum(push_peer.requests.values()) == 0
    assert letters_of(await dead_letters.everything(), who.uid) == []


async def test_a_redelivered_notification_is_still_one_task(
    harness: Harness, config: DeliveryConfig, outcomes: Tail, unique: str
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    staff, _ = await critical_student(harness.redis, who.uid, now_ms() - 60_000)
    rec = record(notification_message(staff), who.uid, offset=3)

    await harness.service(config, owner="deliver-a").handle_batch([rec])
    first = await outreach_store.get(harness.redis, staff.id)
    assert first is not None
    # An officer takes it before the record comes again (a crash before the commit, another
    # process of the group): the redelivery must not reset it.
    channels = ChannelLog(harness.redis)
    taken = await outreach_store.update(
        harness.redis, channels, staff.id, lambda t: assign(t, "wanjiru", "wanjiru", now_ms())
    )
    await harness.service(config, owner="deliver-b").handle_batch([rec])
    await harness.service(config, owner="deliver-a").handle_batch([rec])

    assert await harness.redis.hlen(keys.OUTREACH_TASKS) == 1
    assert await outreach_store.get(harness.redis, staff.id) == taken
    assert taken.status == "assigned"
    assert await harness.redis.zcard(keys.OUTREACH_OPEN) == 1
    pushes = await outreach_pushes(harness.redis)
    assert len(pushes) == 2 and pushes[0] == first.public()  # the creation once, then the change
    # Reported each time (the report's id makes it count once).
    reports = reports_of(await outcomes.everything(), staff.id)
    assert [(r["channel"], r["result"], r["id"]) for r in reports] == [
        ("STAFF", "delivered", f"dlv:delivered:STAFF:{staff.id}")
    ] * 3


async def test_the_channel_itself_never_makes_a_second_task(either_redis: RedisClient, unique: str) -> None:
    # Even past the ledger (lost, or two processes at once), the task's id is the notification's.
    uid = f"u-{unique}"
    staff, _ = await critical_student(either_redis, uid, now_ms())
    request = parse_notification(orjson.dumps(notification_message(staff)))
    channel = OutreachChannel(either_redis, ChannelLog(either_redis))

    sent = [await channel.send(request, Recipient(uid)) for _ in range(2)]

    assert [(s.provider_id, s.result) for s in sent] == [(staff.id, "delivered")] * 2
    assert await either_redis.hlen(keys.OUTREACH_TASKS) == 1
    task = await outreach_store.get(either_redis, staff.id)
    assert task is not None and task.score == 93.25 and list(task.explanations) == WORDS
    assert len(await outreach_pushes(either_redis)) == 1


@pytest.mark.parametrize(
    ("subject", "body", "summary"),
    [
        ("Reach out", "", "Reach out"),
        ("", "Call her today.", "Call her today."),
        ("Reach out", "Risk 93 (critical)...", "Reach out. Risk 93 (critical)..."),
    ],
    ids=["subject_only", "body_only", "both"],
)
async def test_a_student_without_views_still_gets_a_task(
    either_redis: RedisClient, unique: str, subject: str, body: str, summary: str
) -> None:
    uid = f"u-{unique}"
    value = notification(uid, f"n-{unique}", ["STAFF"], type="human_outreach", subject=subject, body=body)
    channel = OutreachChannel(either_redis, ChannelLog(either_redis))

    await channel.send(parse_notification(orjson.dumps(value)), Recipient(uid))

    task = await outreach_store.get(either_redis, f"n-{unique}")
    assert task is not None
    assert (task.score, task.level, task.signals, task.explanations, task.last_interventions) == (
        None,
        None,
        (),
        (),
        (),
    )
    assert task.summary == summary  # the text as written, its own full stops kept


async def test_a_too_old_notification_still_becomes_a_task(
    harness: Harness,
    config: DeliveryConfig,
    smtp_peer: SmtpPeer,
    outcomes: Tail,
    dead_letters: Tail,
    unique: str,
) -> None:
    who = user(unique)
    await save_profile(harness.redis, who)
    old = now_ms() - MAX_SEND_DELAY_MS - DAY_MS
    staff, _ = await critical_student(harness.redis, who.uid, old)
    staff_only = notification_message(staff)
    # A record asking for a mail too (not what the engine writes, but what the service must
    # handle): the stale mail is dead-lettered, the task is not.
    mixed_id = f"n-{unique}-mixed"
    mixed = notification(
        who.uid, mixed_id, ["EMAIL", "STAFF"], deliver_at_ms=old, type="human_outreach", subject="Mixed"
    )

    await harness.service(config).handle_batch(
        [record(staff_only, who.uid, offset=1), record(mixed, who.uid, offset=2)]
    )

    for nid in (staff.id, mixed_id):
        task = await outreach_store.get(harness.redis, nid)
        assert task is not None and task.created_ms == old and task.status == "open", nid
    assert smtp_peer.messages == []
    written = await outcomes.everything()
    assert results(reports_of(written, staff.id)) == {"STAFF": ("delivered", None)}
    assert results(reports_of(written, mixed_id)) == {"STAFF": ("delivered", None)}
    [letter] = letters_of(await dead_letters.everything(), who.uid)  # the mail only
    assert (letter["reason"], letter["offset"]) == ("too_late", 2)


@pytest.mark.parametrize("profile", ["in_app_only", "none"])
async def test_the_students_channel_settings_do_not_hold_back_the_task(
    harness: Harness, config: DeliveryConfig, outcomes: Tail, dead_letters: Tail, unique: str, profile: str
) -> None:
    who = user(unique, channels=("IN_APP",))
    if profile == "in_app_only":
        await save_profile(harness.redis, who)
    staff, _ = await critical_student(harness.redis, who.uid, now_ms())

    await harness.service(config).handle_batch([record(notification_message(staff), who.uid)])

    assert await outreach_store.get(harness.redis, staff.id) is not None
    assert results(reports_of(await outcomes.everything(), staff.id)) == {"STAFF": ("delivered", None)}
    assert letters_of(await dead_letters.everything(), who.uid) == []


async def test_a_student_who_opted_out_of_human_outreach_gets_no_task(
    harness: Harness, config: DeliveryConfig, outcomes: Tail, dead_letters: Tail, unique: str
) -> None:
    redis = harness.redis
    who = user(unique)
    staff, _ = await critical_student(harness.redis, who.uid, now_ms())
    # The opt-out chosen after the engine decided (it reads the settings at decision time).
    view = who.view()
    view["notification_prefs"] = {**view["notification_prefs"], "opt_out": ["human_outreach"]}
    await redis.set(keys.user_profile(who.uid), orjson.dumps(view))

    await harness.service(config).handle_batch([record(notification_message(staff), who.uid)])

    assert await outreach_store.get(redis, staff.id) is None
    assert await redis.hlen(keys.OUTREACH_TASKS) == 0
    assert await outreach_pushes(redis) == []
    # Suppressed is not a send: no report, and nothing dead-lettered.
    assert reports_of(await outcomes.everything(), staff.id) == []
    assert letters_of(await dead_letters.everything(), who.uid) == []
