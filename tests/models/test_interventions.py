"""Interventions: policy table, channels, quiet hours (DST), templates, bandit, throttling, the book."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from models.interventions import (
    CHANNELS,
    INTERRUPTING,
    INTERVENTION_TYPES,
    KEY_TTL_MS,
    MAX_DELIVERED,
    MAX_INBOX,
    MAX_KEYS,
    MAX_PENDING,
    MAX_PER_DAY,
    MIN_GAP_MS,
    RE_ENGAGEMENT,
    RETURN_GRACE_MS,
    SIGNAL_TYPES,
    TEMPLATES,
    THROTTLE_WINDOW_MS,
    Decision,
    InterventionStats,
    Notification,
    NotificationBook,
    Template,
    UserContext,
    Variant,
    VariantStats,
    channels_for,
    choose_variant,
    decide,
    deliver,
    due,
    notification_id,
    quiet_until,
    recommend,
    recommend_for,
    render,
    risk_key,
    sends_and_rewards,
    template_for,
)
from models.risk import RiskScore, Signal
from models.risk_features import FEATURE_NAMES
from models.time_units import DAY_MS, HOUR_MS
from tests.models.factories import ms

T0 = ms("2026-06-01T12:00:00Z")  # a Monday, noon UTC
ALL_CHANNELS = {"channels": ["PUSH", "EMAIL", "SMS", "IN_APP"]}
NIGHT = {"channels": ["PUSH", "IN_APP"], "quiet_hours": ["21:00", "07:00"]}


def ctx(**kwargs: Any) -> UserContext:
    return UserContext(user_id=kwargs.pop("user_id", "u-1"), **kwargs)


def gate(
    book: NotificationBook,
    type_: str,
    key: str,
    now: int,
    context: UserContext | None = None,
    **kwargs: Any,
) -> Decision:
    kwargs.setdefault("source", "test")
    kwargs.setdefault("variables", {})
    kwargs.setdefault("stats", None)
    return decide(book, context or ctx(), type_, key, now, **kwargs)


def notification(nid: str, channels: tuple[str, ...] = ("IN_APP",), at: int = T0) -> Notification:
    return Notification(
        id=nid,
        user_id="u-1",
        type="achievement_notification",
        channels=channels,
        template="achievement_notification",
        variant="a",
        subject="s",
        body="b",
        cta="c",
        created_ms=at,
        deliver_at_ms=at,
        key=f"k-{nid}",
        source="test",
    )


def json_round_trip(data: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(data))


# --- policy table ---------------------------------------------------------------------------------


def test_every_feature_maps_to_a_known_type() -> None:
    assert set(SIGNAL_TYPES) == set(FEATURE_NAMES)
    assert set(SIGNAL_TYPES.values()) <= set(INTERVENTION_TYPES)


@pytest.mark.parametrize("score", [0.0, 20.0, 39.9])
def test_low_risk_recommends_nothing(score: float) -> None:
    assert recommend(score, ["recency_d", "freq_trend_7d", "xp_7d"], ctx(streak=5)) == []


def test_medium_defaults_to_a_gentle_reminder_and_follows_signals() -> None:
    assert recommend(40.0, []) == ["gentle_reminder"]
    assert recommend(55.0, ["freq_trend_7d"]) == ["peer_comparison", "gentle_reminder"]
    # Capped at two, signal order kept.
    assert recommend(55.0, ["score_trend", "freq_trend_7d", "recency_d"]) == [
        "personalized_content",
        "peer_comparison",
    ]


def test_high_adds_content_and_offers_a_discount_for_low_xp() -> None:
    assert recommend(60.0, []) == ["gentle_reminder", "personalized_content"]
    assert recommend(70.0, ["xp_7d", "recency_d"]) == [
        "discount_offer",
        "gentle_reminder",
        "personalized_content",
    ]
    # Below high a discount is not worth its cost: low XP earns content instead.
    assert recommend(45.0, ["xp_7d"]) == ["personalized_content", "gentle_reminder"]


def test_critical_starts_with_human_outreach() -> None:
    recs = recommend(80.0, ["recency_d", "freq_trend_7d", "score_trend", "xp_7d"])
    assert recs[0] == "human_outreach"
    assert recs == ["human_outreach", "gentle_reminder", "peer_comparison", "personalized_content"]
    assert recommend(79.9, ["recency_d"])[0] != "human_outreach"


def test_notification_deaf_users_get_a_person_only_when_critical() -> None:
    assert "human_outreach" not in recommend(75.0, ["notif_clicks_28d"])
    assert recommend(95.0, ["notif_clicks_28d"])[0] == "human_outreach"


def test_streak_warning_needs_a_streak_to_save() -> None:
    assert "streak_warning" not in recommend(65.0, ["streak"])
    assert "streak_warning" not in recommend(65.0, ["streak"], ctx(streak=0))
    assert recommend(65.0, ["streak"], ctx(streak=4))[0] == "streak_warning"


def test_recommend_skips_unknown_signals_and_opted_out_types() -> None:
    assert recommend(50.0, ["not_a_feature", "recency_d"]) == ["gentle_reminder"]
    opted = ctx(prefs={"opt_out": ["gentle_reminder"]})
    assert recommend(50.0, ["recency_d", "freq_trend_7d"], opted) == ["peer_comparison"]


def test_recommend_for_reads_a_risk_score() -> None:
    signals = (Signal("score_trend", 0.9, -0.2), Signal("recency_d", 0.5, 6.0))
    risk = RiskScore("u-1", 66.0, "high", 0.66, 0.66, 0.9, 0.5, signals, T0)
    assert recommend_for(risk) == ["personalized_content", "gentle_reminder"]


# --- channels -----------------------------------------------------------------------------------


def test_channels_by_urgency_when_everything_is_allowed() -> None:
    everything = ctx(prefs=ALL_CHANNELS)
    assert channels_for("critical", everything) == ["PUSH", "EMAIL", "SMS", "IN_APP"]
    assert channels_for("high", everything) == ["PUSH", "IN_APP"]
    assert channels_for("medium", everything) == ["IN_APP"]
    assert channels_for("low", everything) == ["IN_APP"]


def test_channels_default_to_in_app_without_prefs() -> None:
    assert channels_for("critical", ctx()) == ["IN_APP"]
    assert channels_for("critical", ctx(prefs={"channels": "PUSH"})) == ["IN_APP"]
    assert channels_for("high", ctx(prefs={"channels": []})) == ["IN_APP"]


def test_channels_fall_back_to_the_first_allowed_one() -> None:
    assert channels_for("medium", ctx(prefs={"channels": ["EMAIL", "SMS"]})) == ["EMAIL"]
    assert channels_for("high", ctx(prefs={"channels": ["sms", "push"]})) == ["PUSH"]
    assert channels_for("high", ctx(prefs={"channels": ["FAX", 3, "email"]})) == ["EMAIL"]


def test_channels_never_leave_the_known_set() -> None:
    pool = ["PUSH", "EMAIL", "SMS", "IN_APP", "FAX", "push", ""]
    for urgency in ("critical", "high", "medium", "low"):
        for size in range(3):
            for allowed in itertools.combinations(pool, size):
                chosen = channels_for(urgency, ctx(prefs={"channels": list(allowed)}))
                assert chosen, (urgency, allowed)
                assert set(chosen) <= set(CHANNELS), (urgency, allowed)


def test_unknown_urgency_is_a_bug() -> None:
    with pytest.raises(ValueError, match="urgency"):
        channels_for("urgent", ctx())


# --- quiet hours --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "until"),
    [
        ("2026-06-01T22:30:00Z", "2026-06-02T07:00:00Z"),  # before midnight
        ("2026-06-02T03:00:00Z", "2026-06-02T07:00:00Z"),  # after midnight
        ("2026-06-01T21:00:00Z", "2026-06-02T07:00:00Z"),  # the start is inside
        ("2026-06-02T06:59:59.999Z", "2026-06-02T07:00:00Z"),
        ("2026-06-02T07:00:00Z", None),  # the end is not
        ("2026-06-01T12:00:00Z", None),
        ("2026-06-01T20:59:00Z", None),
    ],
)
def test_quiet_hours_wrapping_midnight(now: str, until: str | None) -> None:
    assert quiet_until(ms(now), "UTC", ["21:00", "07:00"]) == (ms(until) if until else None)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        ("2026-06-01T13:00:00Z", "2026-06-01T14:00:00Z"),
        ("2026-06-01T13:45:00Z", "2026-06-01T14:00:00Z"),
        ("2026-06-01T12:59:00Z", None),
        ("2026-06-01T14:00:00Z", None),
        ("2026-06-01T23:30:00Z", None),
    ],
)
def test_quiet_hours_not_wrapping(now: str, until: str | None) -> None:
    assert quiet_until(ms(now), "UTC", ["13:00", "14:00"]) == (ms(until) if until else None)


@pytest.mark.parametrize(
    "quiet_hours",
    [None, [], ["21:00"], ["25:00", "07:00"], ["21:00", "7am"], ["21:00", "21:00"], "21:00-07:00", [21, 7]],
)
def test_absent_or_invalid_quiet_hours_never_hold_back(quiet_hours: Any) -> None:
    assert quiet_until(ms("2026-06-01T23:00:00Z"), "UTC", quiet_hours) is None


def test_quiet_hours_in_a_local_zone() -> None:
    # 23:00 UTC is 19:00 in New York (EDT, -4): not quiet there; 02:00 UTC is 22:00 local.
    assert quiet_until(ms("2026-06-01T23:00:00Z"), "America/New_York", ["21:00", "07:00"]) is None
    assert quiet_until(ms("2026-06-02T02:00:00Z"), "America/New_York", ["21:00", "07:00"]) == ms(
        "2026-06-02T11:00:00Z"
    )


def test_quiet_hours_across_spring_forward() -> None:
    # 2026-03-08 New York: 02:00 EST jumps to 03:00 EDT. 23:00 EST on the 7th is 04:00Z.
    now = ms("2026-03-08T04:00:00Z")
    # 07:00 EDT (-4) = 11:00Z: seven hours after 23:00 EST, not eight.
    assert quiet_until(now, "America/New_York", ["22:00", "07:00"]) == ms("2026-03-08T11:00:00Z")
    # 02:30 does not exist that night: the first instant after the gap, 03:00 EDT = 07:00Z.
    assert quiet_until(now, "America/New_York", ["22:00", "02:30"]) == ms("2026-03-08T07:00:00Z")
    # The same end on a normal night is 02:30 EST = 07:30Z.
    assert quiet_until(ms("2026-03-01T04:00:00Z"), "America/New_York", ["22:00", "02:30"]) == ms(
        "2026-03-01T07:30:00Z"
    )


def test_quiet_hours_across_fall_back() -> None:
    # 2026-11-01 New York: 02:00 EDT falls back to 01:00 EST. 23:00 EDT on Oct 31 is 03:00Z.
    now = ms("2026-11-01T03:00:00Z")
    assert quiet_until(now, "America/New_York", ["22:00", "07:00"]) == ms("2026-11-01T12:00:00Z")
    # 01:30 happens twice: the window ends at its first occurrence (EDT, 05:30Z)...
    assert quiet_until(now, "America/New_York", ["22:00", "01:30"]) == ms("2026-11-01T05:30:00Z")
    # ...so during the repeated hour (01:10 EST = 06:10Z) it is over, although the clock reads 01:10.
    assert quiet_until(ms("2026-11-01T06:10:00Z"), "America/New_York", ["22:00", "01:30"]) is None
    assert quiet_until(ms("2026-11-01T05:10:00Z"), "America/New_York", ["22:00", "01:30"]) == ms(
        "2026-11-01T05:30:00Z"
    )


def test_quiet_hours_in_odd_offset_zones() -> None:
    # Kathmandu is +05:45: 16:00Z is 21:45 local, quiet until 07:00 local = 01:15Z.
    assert quiet_until(ms("2026-06-01T16:00:00Z"), "Asia/Kathmandu", ["21:00", "07:00"]) == ms(
        "2026-06-02T01:15:00Z"
    )
    assert quiet_until(ms("2026-06-01T15:00:00Z"), "Asia/Kathmandu", ["21:00", "07:00"]) is None
    # Lord Howe skips half an hour (02:00 -> 02:30, +10:30 -> +11) on 2026-10-04: 02:15 does not
    # exist, so the window ends at 02:30 local = 15:30Z on the 3rd.
    assert quiet_until(ms("2026-10-03T12:00:00Z"), "Australia/Lord_Howe", ["21:00", "02:15"]) == ms(
        "2026-10-03T15:30:00Z"
    )
    # Southern hemisphere: Sydney is on AEST (+10) in June; 12:00Z is 22:00 local.
    assert quiet_until(ms("2026-06-01T12:00:00Z"), "Australia/Sydney", ["21:00", "07:00"]) == ms(
        "2026-06-01T21:00:00Z"
    )


def test_unknown_zone_reads_as_utc() -> None:
    assert quiet_until(ms("2026-06-01T22:00:00Z"), "Mars/Olympus", ["21:00", "07:00"]) == ms(
        "2026-06-02T07:00:00Z"
    )


# --- templates and rendering ---------------------------------------------------------------------


def test_every_type_has_a_template_and_most_have_an_ab_test() -> None:
    for type_ in INTERVENTION_TYPES:
        template = template_for(type_)
        assert template.type == type_
        assert TEMPLATES[template.id] is template
        assert len({v.id for v in template.variants}) == len(template.variants)
    with_ab = [t for t in INTERVENTION_TYPES if len(template_for(t).variants) >= 2]
    assert len(with_ab) >= len(INTERVENTION_TYPES) - 1
    with pytest.raises(ValueError):
        template_for("carrier_pigeon")


@pytest.mark.parametrize("template_id", sorted(TEMPLATES))
def test_every_variant_renders_with_no_variables(template_id: str) -> None:
    for variant in TEMPLATES[template_id].variants:
        text = render(variant, {})
        assert set(text) == {"subject", "body", "cta", "html"}
        assert text["html"] == ""  # the built-in templates have no HTML: the mail builds it
        for name in ("subject", "body", "cta"):
            value = text[name]
            assert value and "{" not in value and "}" not in value and "  " not in value


def test_render_fills_variables_and_defaults() -> None:
    variant = Variant(
        "x", "Hi {display_name}", "{peer_pct} of them, {days_quiet} days, {mystery}.", "Go {level}"
    )
    assert render(variant, {}) == {
        "subject": "Hi there",
        "body": "Many of them, a few days, .",
        "cta": "Go your level",
        "html": "",
    }
    filled = render(variant, {"display_name": "Amina", "peer_pct": 72.0, "days_quiet": 3, "level": 4})
    assert filled == {"subject": "Hi Amina", "body": "72% of them, 3 days, .", "cta": "Go 4", "html": ""}
    # Empty or None values read as the default, not as a blank.
    assert render(variant, {"display_name": "", "level": None})["subject"] == "Hi there"


def test_render_never_raises_on_odd_templates() -> None:
    odd = Variant("x", "{0} {a.b} {c[1]} {score:.1f} {score!r}|", "{unclosed", "{}{0}")
    text = render(odd, {"score": "high"})
    assert text["subject"] == "   high high|"
    assert text["body"] == "{unclosed"  # malformed: shown as written
    assert text["cta"] == "{}{0}"


# --- variant choice -----------------------------------------------------------------------------

AB = Template("t", "gentle_reminder", (Variant("a", "A", "", ""), Variant("b", "B", "", "")))


def picks(stats: Any, seeds: int = 300) -> list[str]:
    return [choose_variant(AB, stats, seed=f"s-{i}").id for i in range(seeds)]


def test_choose_variant_is_deterministic_per_seed() -> None:
    stats = {"a": {"sent": 10, "clicked": 2}, "b": {"sent": 10, "clicked": 3}}
    assert picks(stats) == picks(stats)
    # Not constant: without evidence both variants get traffic.
    assert set(picks({})) == {"a", "b"}
    assert set(picks(None)) == {"a", "b"}


def test_a_variant_with_many_more_clicks_wins_most_seeds() -> None:
    stats = {"a": {"sent": 200, "clicked": 10}, "b": {"sent": 200, "clicked": 50}}
    chosen = picks(stats)
    assert chosen.count("b") / len(chosen) > 0.95


def test_conversions_are_rewards_too() -> None:
    stats = {"a": {"sent": 200, "converted": 60}, "b": {"sent": 200, "clicked": 5}}
    assert picks(stats).count("a") > 0.95 * 300


def test_opens_do_not_change_the_choice() -> None:
    base = {"a": {"sent": 100, "clicked": 8}, "b": {"sent": 100, "clicked": 9}}
    opened = {"a": {"sent": 100, "opened": 95, "clicked": 8}, "b": {"sent": 100, "opened": 3, "clicked": 9}}
    assert picks(opened) == picks(base)


def test_variant_stats_object_and_mapping_choose_alike() -> None:
    vs = VariantStats()
    for _ in range(30):
        vs.record("a", "sent")
    vs.record("a", "clicked", 12)
    vs.record("b", "sent", 30)
    assert picks(vs) == picks({"a": {"sent": 30, "clicked": 12}, "b": {"sent": 30}})
    with pytest.raises(ValueError):
        vs.record("a", "liked")


def test_single_variant_templates_need_no_sampling() -> None:
    only = template_for("human_outreach")
    assert choose_variant(only, {"a": {"sent": 5}}, seed="x") is only.variants[0]


# --- the gate: dedup, opt-out, returners, throttle ------------------------------------------------


def test_same_key_is_a_duplicate() -> None:
    book = NotificationBook()
    first = gate(book, "achievement_notification", "badge:b1", T0)
    assert first.reason == "queued" and first.notification is not None
    assert first.notification.id == notification_id("u-1", "badge:b1")
    again = gate(book, "achievement_notification", "badge:b1", T0 + 1000)
    assert again == Decision(None, "duplicate")
    assert len(book.sent_log) == 1


def test_keys_expire_after_their_ttl() -> None:
    book = NotificationBook()
    assert gate(book, "achievement_notification", "k", T0).reason == "queued"
    assert gate(book, "achievement_notification", "k", T0 + KEY_TTL_MS - 1).reason == "duplicate"
    assert gate(book, "achievement_notification", "k", T0 + KEY_TTL_MS).reason == "queued"


def test_opted_out_types_are_not_sent() -> None:
    book = NotificationBook()
    user = ctx(prefs={"opt_out": ["discount_offer"]})
    assert gate(book, "discount_offer", "d1", T0, user) == Decision(None, "opted_out")
    assert gate(book, "gentle_reminder", "g1", T0, user).reason == "queued"
    assert "d1" not in book.keys


@pytest.mark.parametrize("type_", sorted(RE_ENGAGEMENT))
def test_returners_are_not_nagged(type_: str) -> None:
    just_back = ctx(last_active_ms=T0 - RETURN_GRACE_MS + 1, prefs=ALL_CHANNELS)
    assert gate(NotificationBook(), type_, "k", T0, just_back) == Decision(None, "returned")
    a_while_ago = ctx(last_active_ms=T0 - RETURN_GRACE_MS - 1, prefs=ALL_CHANNELS)
    assert gate(NotificationBook(), type_, "k", T0, a_while_ago).reason == "queued"


def test_celebrations_reach_active_users() -> None:
    active = ctx(last_active_ms=T0)
    assert gate(NotificationBook(), "milestone_celebration", "m", T0, active).reason == "queued"
    assert (
        gate(NotificationBook(), "streak_warning", "s", T0, ctx(last_active_ms=T0, streak=3)).reason
        == "queued"
    )


def test_daily_cap_over_a_rolling_24_hours() -> None:
    book = NotificationBook()
    for i in range(MAX_PER_DAY):
        assert gate(book, "achievement_notification", f"a{i}", T0 + i * HOUR_MS).reason == "queued"
    assert gate(book, "milestone_celebration", "m", T0 + 5 * HOUR_MS).reason == "throttled"
    assert "m" not in book.keys  # a throttled trigger may retry with its key
    # The first send leaves the window exactly 24 h later: one slot frees up, then the next.
    assert gate(book, "milestone_celebration", "m", T0 + DAY_MS - 1).reason == "throttled"
    assert gate(book, "milestone_celebration", "m", T0 + DAY_MS).reason == "queued"
    assert gate(book, "milestone_celebration", "m2", T0 + DAY_MS).reason == "throttled"


@pytest.mark.parametrize("type_", ["gentle_reminder", "discount_offer", "streak_warning", "peer_comparison"])
def test_per_type_minimum_gaps(type_: str) -> None:
    gap = MIN_GAP_MS[type_]
    book = NotificationBook()
    user = ctx(streak=3)
    assert gate(book, type_, "k0", T0, user).reason == "queued"
    assert gate(book, type_, "k1", T0 + gap - 1, user).reason == "throttled"
    # Another type is not held back by this one's gap.
    assert gate(book, "achievement_notification", "x", T0 + gap - 1, user).reason == "queued"
    assert gate(book, type_, "k1", T0 + gap, user).reason == "queued"


def test_gap_numbers() -> None:
    assert MIN_GAP_MS["gentle_reminder"] == 48 * HOUR_MS
    assert MIN_GAP_MS["discount_offer"] == 14 * DAY_MS
    assert MIN_GAP_MS["streak_warning"] == 20 * HOUR_MS
    assert "milestone_celebration" not in MIN_GAP_MS and "achievement_notification" not in MIN_GAP_MS
    assert max(MIN_GAP_MS.values()) == THROTTLE_WINDOW_MS


def test_celebrations_have_no_gap() -> None:
    book = NotificationBook()
    assert gate(book, "milestone_celebration", "m1", T0).reason == "queued"
    assert gate(book, "milestone_celebration", "m2", T0 + 60_000).reason == "queued"


def test_human_outreach_goes_to_staff_outside_the_cap() -> None:
    book = NotificationBook()
    for i in range(MAX_PER_DAY):
        gate(book, "achievement_notification", f"a{i}", T0)
    user = ctx(prefs=ALL_CHANNELS | {"quiet_hours": ["00:00", "23:59"]})
    decision = gate(book, "human_outreach", "h", T0, user, urgency="critical", source="risk")
    assert decision.reason == "queued"  # not capped, not held by quiet hours
    assert decision.notification is not None
    assert decision.notification.channels == ()
    assert decision.notification.source == "risk"
    assert decision.notification.primary_channel == "STAFF"
    # It does not use up the user's budget either, but it has its own week-long gap.
    assert gate(book, "human_outreach", "h2", T0 + 6 * DAY_MS, user).reason == "throttled"
    deliver(book, decision.notification, T0)
    assert not book.inbox and book.delivered == [decision.notification]


def test_send_log_is_pruned_to_the_throttle_window() -> None:
    book = NotificationBook()
    gate(book, "discount_offer", "d", T0)
    gate(book, "achievement_notification", "a", T0 + DAY_MS)
    assert len(book.sent_log) == 2
    book.prune(T0 + THROTTLE_WINDOW_MS)
    assert book.sent_log == [(T0 + DAY_MS, "achievement_notification")]


def test_explicit_channels_are_limited_to_the_users() -> None:
    book = NotificationBook()
    user = ctx(prefs={"channels": ["IN_APP", "EMAIL"]})
    decision = gate(book, "personalized_content", "c", T0, user, channels=["sms", "EMAIL", "EMAIL"])
    assert decision.notification is not None and decision.notification.channels == ("EMAIL",)
    assert gate(book, "milestone_celebration", "m", T0, user, channels=["SMS"]) == Decision(
        None, "no_channel"
    )


def test_urgency_picks_the_channels() -> None:
    user = ctx(prefs=ALL_CHANNELS)
    critical = gate(NotificationBook(), "gentle_reminder", "k", T0, user, urgency="critical")
    assert critical.notification is not None
    assert critical.notification.channels == ("PUSH", "EMAIL", "SMS", "IN_APP")
    assert critical.notification.urgency == "critical"


def test_the_notification_is_rendered_from_the_context() -> None:
    user = ctx(display_name="Amina", streak=12, last_active_ms=T0 - 5 * DAY_MS, prefs=ALL_CHANNELS)
    n = gate(NotificationBook(), "streak_warning", "s", T0, user).notification
    assert n is not None and n.template == "streak_warning" and n.variant in ("a", "b")
    assert "12 days" in n.subject + n.body
    reminder = gate(
        NotificationBook(), "gentle_reminder", "g", T0, user, stats={"b": {"sent": 1000}}
    ).notification
    assert reminder is not None and reminder.variant == "a"  # b never converts
    assert "Hi Amina, it's been 5 days" in reminder.body
    # The caller's variables win over the context's.
    n2 = gate(NotificationBook(), "streak_warning", "s", T0, user, variables={"streak": 13}).notification
    assert n2 is not None and "13 days" in n2.subject + n2.body


def test_unknown_type_is_a_bug() -> None:
    with pytest.raises(ValueError):
        gate(NotificationBook(), "telegram", "k", T0)


# --- quiet hours: deferred, then due -------------------------------------------------------------

NIGHT_T = ms("2026-06-01T22:00:00Z")
MORNING = ms("2026-06-02T07:00:00Z")


def test_interrupting_channels_are_deferred_until_the_window_ends() -> None:
    book = NotificationBook()
    user = ctx(prefs=NIGHT)
    decision = gate(book, "gentle_reminder", "g", NIGHT_T, user, urgency="high")
    assert decision.reason == "deferred"
    n = decision.notification
    assert n is not None and n.channels == ("PUSH", "IN_APP")
    assert (n.created_ms, n.deliver_at_ms) == (NIGHT_T, MORNING)
    assert book.pending == [n]
    # A deferred notification blocks its key and counts from its delivery time.
    assert gate(book, "gentle_reminder", "g", NIGHT_T + 60_000, user).reason == "duplicate"
    assert book.sent_log == [(MORNING, "gentle_reminder")]


def test_in_app_only_is_stored_at_once_during_quiet_hours() -> None:
    book = NotificationBook()
    decision = gate(book, "gentle_reminder", "g", NIGHT_T, ctx(prefs=NIGHT), urgency="medium")
    assert decision.reason == "queued"
    assert decision.notification is not None and decision.notification.deliver_at_ms == NIGHT_T
    assert not book.pending
    assert {"PUSH", "SMS", "EMAIL"} == INTERRUPTING


def test_deferred_sends_fill_the_next_days_budget() -> None:
    book = NotificationBook()
    user = ctx(prefs=NIGHT)
    for i in range(MAX_PER_DAY):
        assert (
            gate(book, "achievement_notification", f"a{i}", NIGHT_T, user, urgency="high").reason
            == "deferred"
        )
    assert gate(book, "achievement_notification", "late", MORNING + HOUR_MS, user, urgency="high").reason == (
        "throttled"
    )


def test_due_pops_what_is_due_and_the_caller_delivers_it() -> None:
    book = NotificationBook()
    user = ctx(prefs=NIGHT, last_active_ms=NIGHT_T - 3 * DAY_MS)
    deferred = gate(book, "gentle_reminder", "g", NIGHT_T, user, urgency="high").notification
    assert deferred is not None
    assert due(book, MORNING - 1, user) == []
    assert book.pending == [deferred]
    [decision] = due(book, MORNING, user)
    assert decision == Decision(deferred, "queued")
    assert book.pending == []
    assert due(book, MORNING + 1, user) == []
    deliver(book, deferred, MORNING)
    assert deferred.status == "sent" and deferred.sent_ms == MORNING
    assert book.inbox == [deferred]
    assert book.public()[0]["created_at"] == "2026-06-02T07:00:00Z"


def test_deferred_reminders_are_cancelled_when_the_user_came_back() -> None:
    book = NotificationBook()
    user = ctx(prefs=NIGHT, last_active_ms=NIGHT_T - 3 * DAY_MS)
    reminder = gate(book, "gentle_reminder", "g", NIGHT_T, user, urgency="high").notification
    badge = gate(book, "achievement_notification", "a", NIGHT_T, user, urgency="high").notification
    assert reminder is not None and badge is not None
    back = ctx(prefs=NIGHT, last_active_ms=NIGHT_T + HOUR_MS)
    decisions = due(book, MORNING, back)
    assert {d.notification.id: d.reason for d in decisions if d.notification} == {
        reminder.id: "returned",
        badge.id: "queued",
    }
    assert reminder.status == "cancelled"
    # The cancelled send no longer counts against the throttle; its key still blocks a replay.
    assert (MORNING, "gentle_reminder") not in book.sent_log
    assert gate(book, "gentle_reminder", "g", MORNING + 3 * HOUR_MS, back).reason == "duplicate"
    assert gate(book, "gentle_reminder", "g2", MORNING + 3 * HOUR_MS, back).reason == "queued"


def test_deferred_notifications_respect_a_later_opt_out() -> None:
    book = NotificationBook()
    gate(book, "peer_comparison", "p", NIGHT_T, ctx(prefs=NIGHT), urgency="high")
    [decision] = due(book, MORNING, ctx(prefs=NIGHT | {"opt_out": ["peer_comparison"]}))
    assert decision.reason == "opted_out"
    assert decision.notification is not None and decision.notification.status == "cancelled"


def test_pending_is_bounded() -> None:
    book = NotificationBook(pending=[notification(f"p{i}", ("PUSH",), MORNING) for i in range(MAX_PENDING)])
    assert (
        gate(book, "milestone_celebration", "m", NIGHT_T, ctx(prefs=NIGHT), urgency="high").reason
        == "throttled"
    )


# --- delivery, inbox, tracking --------------------------------------------------------------------


def test_deliver_is_idempotent_and_the_inbox_bounded() -> None:
    book = NotificationBook()
    first = notification("n0")
    deliver(book, first, T0)
    deliver(book, first, T0 + 5)
    assert book.inbox == [first] and first.sent_ms == T0
    for i in range(1, MAX_INBOX + 10):
        deliver(book, notification(f"n{i}"), T0 + i)
    assert len(book.inbox) == MAX_INBOX
    assert book.inbox[0].id == "n10" and book.inbox[-1].id == f"n{MAX_INBOX + 9}"
    assert book.public()[0]["id"] == f"n{MAX_INBOX + 9}"  # newest first
    for i in range(MAX_DELIVERED + 5):
        deliver(book, notification(f"e{i}", ("EMAIL",)), T0)
    assert len(book.delivered) == MAX_DELIVERED and book.delivered[0].id == "e5"


def test_mark_read() -> None:
    book = NotificationBook()
    deliver(book, notification("n1"), T0)
    assert book.unread() == 1
    assert book.mark_read("n1") is True
    assert book.inbox[0].read and book.unread() == 0
    assert book.mark_read("n1") is True
    assert book.mark_read("nope") is False


def test_public_view_hides_internals() -> None:
    n = notification("n1")
    view = n.public()
    assert set(view) == {"id", "type", "subject", "body", "cta", "channels", "created_at", "read"}
    assert view["created_at"] == "2026-06-01T12:00:00Z"


def test_track_is_idempotent_and_fills_earlier_stages() -> None:
    book = NotificationBook()
    deliver(book, notification("n1", ("PUSH",)), T0)  # not in the inbox: the delivered index
    assert book.track("n1", "clicked", T0 + 10) == ["opened", "clicked"]
    assert book.track("n1", "clicked", T0 + 20) == []
    assert book.track("n1", "opened", T0 + 30) == []
    n = book.find("n1")
    assert n is not None and (n.opened_ms, n.clicked_ms, n.converted_ms) == (T0 + 10, T0 + 10, None)
    assert book.track("n1", "converted", T0 + 40) == ["converted"]
    assert n.converted_ms == T0 + 40
    assert book.track("unknown", "opened", T0) == []
    with pytest.raises(ValueError):
        book.track("n1", "sent", T0)


def test_conversion_alone_records_the_whole_funnel() -> None:
    book = NotificationBook()
    deliver(book, notification("n1"), T0)
    assert book.track("n1", "converted", T0 + 1) == ["opened", "clicked", "converted"]


# --- analytics ------------------------------------------------------------------------------------


def test_stats_view_rates() -> None:
    stats = InterventionStats()
    for _ in range(3):
        stats.record("sent", "gentle_reminder", "PUSH", "gentle_reminder", "a")
    stats.record("opened", "gentle_reminder", "PUSH", "gentle_reminder", "a")
    stats.record("clicked", "gentle_reminder", "PUSH", "gentle_reminder", "a")
    stats.record("sent", "discount_offer", "EMAIL", "discount_offer", "b")
    stats.record("opened", "peer_comparison", "IN_APP", "peer_comparison", "a")  # never sent: rate 0
    view = stats.view()
    reminder = view["by_type"]["gentle_reminder"]
    assert reminder == {
        "sent": 3,
        "opened": 1,
        "clicked": 1,
        "converted": 0,
        "open_rate": 0.3333,
        "click_rate": 0.3333,
        "conversion_rate": 0,
    }
    assert view["by_type"]["peer_comparison"]["open_rate"] == 0
    assert view["by_channel"]["EMAIL"]["sent"] == 1
    assert view["by_template"]["gentle_reminder"]["a"]["click_rate"] == 0.3333
    assert view["totals"]["sent"] == 4 and view["totals"]["opened"] == 2
    assert view["totals"]["open_rate"] == 0.5
    with pytest.raises(ValueError):
        stats.record("bounced", "gentle_reminder", "PUSH", "gentle_reminder", "a")


def test_stats_feed_the_bandit() -> None:
    stats = InterventionStats()
    n = notification("n1", ("EMAIL", "IN_APP"))
    stats.record_notification("sent", n)
    stats.record_notification("clicked", n, channel="IN_APP")
    assert stats.variant_stats("achievement_notification") == {
        "a": {"sent": 1, "opened": 0, "clicked": 1, "converted": 0, "unsubscribed": 0}
    }
    assert stats.view()["by_channel"]["EMAIL"]["sent"] == 1
    assert stats.view()["by_channel"]["IN_APP"]["clicked"] == 1
    assert stats.variant_stats("unknown") == {}


def test_delivery_results_are_counted_and_unsubscribes_count_against_a_variant() -> None:
    stats = InterventionStats()
    for variant, clicks, unsubscribes in (("a", 5, 5), ("b", 3, 0)):
        for i in range(10):
            n = Notification(
                id=f"{variant}{i}", user_id="u", type="gentle_reminder", channels=("EMAIL",),
                template="gentle_reminder", variant=variant, subject="", body="", cta="",
                created_ms=0, deliver_at_ms=0, key=f"k{variant}{i}", source="risk",
            )  # fmt: skip
            stats.record_notification("sent", n)
            stats.record_delivery("sent", "EMAIL", "gentle_reminder", variant)
            if i < clicks:
                stats.record_notification("clicked", n)
            if i < unsubscribes:
                stats.record_delivery("unsubscribed", "EMAIL", "gentle_reminder", variant)
    stats.record_delivery("bounced", "EMAIL", "gentle_reminder", "b")
    view = stats.view()
    assert view["deliveries"]["EMAIL"] == {
        "sent": 20,
        "delivered": 0,
        "bounced": 1,
        "failed": 0,
        "unsubscribed": 5,
    }
    assert view["deliveries_by_template"]["gentle_reminder"]["a"]["unsubscribed"] == 5
    counts = stats.variant_stats("gentle_reminder")
    # "a" clicks more, but every click was followed by an unsubscribe: "b" is the better one.
    assert sends_and_rewards(counts["a"]) == (10, 0)
    assert sends_and_rewards(counts["b"]) == (10, 3)
    with pytest.raises(ValueError):
        stats.record_delivery("exploded", "EMAIL", "gentle_reminder", "a")
    again = InterventionStats.from_dict(orjson.loads(orjson.dumps(stats.to_dict())))
    assert again.view() == view


def test_stats_stored_before_delivery_results_still_load() -> None:
    old = {"v": 1, "by_type": {}, "by_channel": {}, "by_template": {"t": {"a": {"sent": 2}}}}
    stats = InterventionStats.from_dict(old)
    assert stats.variant_stats("t")["a"]["unsubscribed"] == 0 and stats.deliveries == {}


# --- determinism and persistence ----------------------------------------------------------------


def scenario() -> NotificationBook:
    book = NotificationBook()
    user = ctx(prefs=NIGHT, display_name="Amina", streak=4, last_active_ms=NIGHT_T - 2 * DAY_MS)
    for i, type_ in enumerate(("gentle_reminder", "streak_warning")):
        decision = gate(
            book, type_, risk_key("u-1", type_, 20605), NIGHT_T - 2 * HOUR_MS + i, user, urgency="high"
        )
        assert decision.reason == "queued" and decision.notification is not None
        deliver(book, decision.notification, NIGHT_T - 2 * HOUR_MS)
    assert gate(book, "peer_comparison", "p", NIGHT_T, user, urgency="high").reason == "deferred"
    for decision in due(book, MORNING, user):
        if decision.notification is not None:
            deliver(book, decision.notification, MORNING)
    book.track(book.inbox[0].id, "clicked", MORNING + 5)
    book.mark_read(book.inbox[1].id)
    return book


def test_a_replay_gives_the_same_ids_variants_and_state() -> None:
    first, second = scenario(), scenario()
    assert first.to_dict() == second.to_dict()
    assert [n.id for n in first.inbox] == [n.id for n in second.inbox]
    assert [n.type for n in first.inbox] == ["gentle_reminder", "streak_warning", "peer_comparison"]
    assert [n.variant for n in first.inbox] == [n.variant for n in second.inbox]


def test_risk_key_and_ids() -> None:
    assert risk_key("u-1", "gentle_reminder", 20605) == "risk:u-1:gentle_reminder:20605"
    assert notification_id("u-1", "campaign:c1") == notification_id("u-1", "campaign:c1")
    assert notification_id("u-1", "campaign:c1") != notification_id("u-2", "campaign:c1")
    assert notification_id("u-1", "campaign:c1").startswith("n-")


def test_book_json_round_trip() -> None:
    book = scenario()
    gate(book, "discount_offer", "later", NIGHT_T + DAY_MS, ctx(prefs=NIGHT), urgency="high")
    assert book.pending and book.inbox and book.sent_log and book.keys
    deliver(book, notification("e1", ("EMAIL",)), MORNING)
    restored = NotificationBook.from_dict(json_round_trip(book.to_dict()))
    assert restored == book
    assert isinstance(restored.sent_log[0], tuple)
    with pytest.raises(ValueError, match="version"):
        NotificationBook.from_dict({"v": 99})


def test_notification_json_round_trip() -> None:
    n = notification("n1", ("PUSH", "IN_APP"))
    n.read, n.opened_ms, n.status = True, T0 + 1, "sent"
    assert Notification.from_dict(json_round_trip(n.to_dict())) == n


def test_stats_json_round_trip() -> None:
    stats = InterventionStats()
    stats.record("sent", "gentle_reminder", "PUSH", "gentle_reminder", "a")
    stats.record("converted", "discount_offer", "EMAIL", "discount_offer", "b")
    restored = InterventionStats.from_dict(json_round_trip(stats.to_dict()))
    assert restored == stats and restored.view() == stats.view()
    vs = VariantStats()
    vs.record("b", "clicked", 2)
    assert VariantStats.from_dict(json_round_trip(vs.to_dict())) == vs
    with pytest.raises(ValueError):
        InterventionStats.from_dict({"v": 0})


def test_keys_are_bounded() -> None:
    book = NotificationBook(keys={f"k{i}": T0 + i for i in range(MAX_KEYS + 100)})
    book.prune(T0 + MAX_KEYS + 100)
    assert len(book.keys) == MAX_KEYS
    assert "k0" not in book.keys and f"k{MAX_KEYS + 99}" in book.keys
