"""Career notices (models/career_notices.py) and how the notification gate treats them
(models/interventions): status changes and matches become notices with stable keys and complete
wording; the gate sends them outside the daily cap, in-app always, still behind opt-outs, quiet
hours and duplicate keys."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from models.career import checked_prefs
from models.career_notices import (
    DIGEST_FROM,
    STATUS_WORDS,
    URGENT_STATUSES,
    ClosingJob,
    MatchNews,
    Notice,
    StatusNews,
    deadline_notices,
    match_notices,
    status_notice,
)
from models.events import APPLICATION_STATUSES
from models.interventions import (
    CAREER_TYPES,
    MAX_PER_DAY,
    NOTIFICATION_TYPES,
    TRANSACTIONAL,
    Decision,
    NotificationBook,
    UserContext,
    decide,
    deliver,
    due,
    render,
    template_for,
)
from models.notification_settings import settings_view, validated_settings
from models.nudges import notify
from models.risk_state import RiskState
from models.time_units import HOUR_MS, MINUTE_MS
from tests.models.factories import ms

T0 = ms("2026-06-01T12:00:00Z")  # noon UTC: outside the quiet hours below
NIGHT_T = ms("2026-06-01T22:00:00Z")
MORNING = ms("2026-06-02T07:00:00Z")
QUIET = ["21:00", "07:00"]


def news(status: str, **kwargs: Any) -> StatusNews:
    fields: dict[str, Any] = {"job_title": "Data Analyst", "company": "Acme", "note": None}
    fields.update(kwargs)
    return StatusNews("u-1", "app-1", status, T0, **fields)


def match(job_id: str, score: int = 75, location: str | None = "Nairobi", **kwargs: Any) -> MatchNews:
    fields: dict[str, Any] = {
        "title": f"Analyst {job_id}",
        "company": "Acme",
        "match_score": score,
        "is_perfect": score >= 90,
        "at_ms": T0,
        "location": location,
    }
    fields.update(kwargs)
    return MatchNews(user_id="u-1", job_id=job_id, **fields)


def rendered(notice: Notice, variables: dict[str, object] | None = None) -> list[dict[str, str]]:
    """The notice in every variant of its template."""
    values = {**notice.variables, **(variables or {})}
    return [render(v, values) for v in template_for(notice.type).variants]


def assert_complete(text: dict[str, str]) -> None:
    for part in ("subject", "body", "cta"):
        assert text[part].strip(), part
        assert "{" not in text[part] and "}" not in text[part], (part, text[part])


def ctx(**prefs: Any) -> UserContext:
    return UserContext(user_id="u-1", prefs=prefs, display_name="Amina")


def gate(book: NotificationBook, notice: Notice, context: UserContext, now: int | None = None) -> Decision:
    return decide(
        book,
        context,
        notice.type,
        notice.key,
        notice.at_ms if now is None else now,
        source="career",
        variables=notice.variables,
        stats=None,
        urgency=notice.urgency,
    )


def status_at(status: str, application_id: str, at: int) -> Notice:
    notice = status_notice(StatusNews("u-1", application_id, status, at, "Data Analyst", "Acme"))
    assert notice is not None
    return notice


# --- status notices ------------------------------------------------------------------------------


def test_submitting_is_the_users_own_act_and_no_news() -> None:
    assert status_notice(news("submitted")) is None


def test_every_other_status_has_words() -> None:
    assert set(STATUS_WORDS) == set(APPLICATION_STATUSES) - {"submitted"}


@pytest.mark.parametrize("status", sorted(STATUS_WORDS))
def test_a_status_change_is_one_application_update_keyed_by_application_and_status(status: str) -> None:
    notice = status_notice(news(status))
    assert notice is not None
    assert notice.type == "application_update"
    assert notice.key == f"app:app-1:{status}"
    assert notice.at_ms == T0
    assert notice.urgency == ("high" if status in URGENT_STATUSES else "medium")
    headline, text = STATUS_WORDS[status]
    assert notice.variables["status_headline"] == headline
    assert notice.variables["status_text"] == text
    assert (notice.variables["job_title"], notice.variables["about"]) == (
        "Data Analyst",
        "Data Analyst at Acme",
    )


@pytest.mark.parametrize("status", ["interview_scheduled", "offer", "hired"])
def test_interviews_offers_and_hires_are_urgent(status: str) -> None:
    notice = status_notice(news(status))
    assert notice is not None and notice.urgency == "high"


@pytest.mark.parametrize("status", ["viewed", "screening", "interviewed", "rejected", "withdrawn"])
def test_other_statuses_are_not_urgent(status: str) -> None:
    notice = status_notice(news(status))
    assert notice is not None and notice.urgency == "medium"


def test_an_unknown_status_is_no_news() -> None:
    assert status_notice(news("teleported")) is None


def test_the_note_is_included_and_bounded() -> None:
    notice = status_notice(news("interview_scheduled", note="  Bring your portfolio on Monday.  "))
    assert notice is not None
    assert notice.variables["note"] == " Note: Bring your portfolio on Monday."
    for text in rendered(notice):
        assert text["body"].endswith("has an interview scheduled. Note: Bring your portfolio on Monday.")

    long = status_notice(news("rejected", note="x" * 5000))
    assert long is not None
    assert long.variables["note"] == " Note: " + "x" * 200


@pytest.mark.parametrize("note", [None, "", "   "])
def test_no_note_adds_nothing(note: str | None) -> None:
    notice = status_notice(news("viewed", note=note))
    assert notice is not None and notice.variables["note"] == ""
    for text in rendered(notice):
        assert "Note" not in text["body"]
        assert text["body"].endswith("was viewed by the employer.")


def test_the_same_status_of_the_same_application_keeps_its_key() -> None:
    first = status_notice(news("offer", note="one"))
    again = status_notice(StatusNews("u-1", "app-1", "offer", T0 + HOUR_MS, note="two"))
    other_app = status_notice(StatusNews("u-1", "app-2", "offer", T0))
    assert first is not None and again is not None and other_app is not None
    assert first.key == again.key != other_app.key


# --- match notices -------------------------------------------------------------------------------


def test_one_perfect_match_is_one_job_match() -> None:
    [notice] = match_notices([match("j-1", 95, deadline_ms=ms("2026-06-10T18:00:00Z"))])
    assert (notice.type, notice.key, notice.urgency, notice.at_ms) == ("job_match", "match:j-1", "high", T0)
    assert notice.variables["match_pct"] == 95
    assert notice.variables["place"] == " in Nairobi"
    assert notice.variables["deadline"] == " Apply by 2026-06-10."
    [text] = rendered(notice)
    assert text["subject"] == "A 95% match: Analyst j-1"
    assert "Analyst j-1 at Acme in Nairobi fits your profile. Apply by 2026-06-10." in text["body"]


def test_a_lone_match_that_is_not_perfect_is_no_notice() -> None:
    assert match_notices([match("j-1", 75)]) == []
    assert match_notices([]) == []


def test_below_the_digest_only_the_perfect_matches_are_notified() -> None:
    assert DIGEST_FROM == 3
    found = match_notices([match("j-1", 95), match("j-2", 70)])
    assert [(n.type, n.key) for n in found] == [("job_match", "match:j-1")]
    both = match_notices([match("j-1", 95), match("j-2", 92)])
    assert [n.key for n in both] == ["match:j-1", "match:j-2"]


def test_three_or_more_matches_are_one_digest() -> None:
    matches = [
        match("j-1", 70, "Mombasa"),
        match("j-2", 96, "Nairobi", title="Data Engineer", company="Safari Data"),
        match("j-3", 80, "Nairobi"),
        match("j-4", 65, None),
        match("j-5", 91, "Kisumu", at_ms=T0 + MINUTE_MS),
    ]
    [digest] = match_notices(matches)
    assert digest.type == "match_digest"
    assert digest.key.startswith("digest:")
    assert digest.variables["count"] == 5
    # The most common location, said honestly when not all are there.
    assert digest.variables["place"] == " in Nairobi and elsewhere"
    # The best match leads.
    assert (digest.variables["job_title"], digest.variables["company"]) == ("Data Engineer", "Safari Data")
    assert digest.at_ms == T0 + MINUTE_MS  # the newest match
    [text] = rendered(digest)
    assert text["subject"] == "5 new job matches in Nairobi and elsewhere"
    assert (
        "5 new jobs fit your profile in Nairobi and elsewhere, Data Engineer at Safari Data first."
        in text["body"]
    )
    same_place = match_notices([match(f"j-{i}", 70, "Nairobi") for i in range(3)])
    assert same_place[0].variables["place"] == " in Nairobi"


def test_exactly_the_digest_threshold_makes_a_digest_even_with_perfect_matches() -> None:
    found = match_notices([match("j-1", 95), match("j-2", 99), match("j-3", 60)])
    assert [n.type for n in found] == ["match_digest"]
    assert found[0].variables["count"] == 3


def test_the_digest_key_does_not_depend_on_the_order_of_the_matches() -> None:
    matches = [match("j-1", 70), match("j-2", 96, "Mombasa"), match("j-3", 80), match("j-4", 65)]
    digests = [match_notices(list(order)) for order in itertools.permutations(matches)]
    assert all(len(d) == 1 for d in digests)
    assert len({d[0].key for d in digests}) == 1
    assert len({d[0].variables["count"] for d in digests}) == 1
    assert len({d[0].variables["job_title"] for d in digests}) == 1
    assert {d[0].variables["place"] for d in digests} == {" in Nairobi and elsewhere"}
    # Another set of jobs is another digest.
    assert match_notices(matches[:3])[0].key != digests[0][0].key


def test_a_digest_without_any_location_names_no_place() -> None:
    [digest] = match_notices([match(f"j-{i}", 70, None, company=None) for i in range(3)])
    assert digest.variables["place"] == ""
    assert "company" not in digest.variables
    [text] = rendered(digest)
    assert text["subject"] == "3 new job matches"
    assert_complete(text)


# --- rendering -----------------------------------------------------------------------------------


def every_notice() -> list[Notice]:
    found: list[Notice] = []
    for status in STATUS_WORDS:
        for kwargs in (
            {},
            {"note": "Bring your portfolio."},
            {"job_title": None, "company": None},
            {"company": None},
        ):
            notice = status_notice(news(status, **kwargs))
            assert notice is not None
            found.append(notice)
    found += match_notices([match("j-1", 95)])
    found += match_notices([match("j-2", 93, None, company=None)])
    found += match_notices([match("j-3", 90, deadline_ms=T0 + 86_400_000)])
    found += match_notices([match(f"d-{i}", 70) for i in range(4)])
    found += match_notices([match(f"e-{i}", 70, None, company=None) for i in range(3)])
    closing = [
        ClosingJob("c-1", "Welder", "Acme", T0 + 30 * 3_600_000),
        ClosingJob("c-2", "Cook", None, T0 + 40 * 3_600_000),
    ]
    found += deadline_notices(closing, "UTC", T0)
    return found


def test_every_career_notice_renders_without_placeholders() -> None:
    notices = every_notice()
    assert {n.type for n in notices} == set(CAREER_TYPES)
    for notice in notices:
        for text in rendered(notice):
            assert_complete(text)


def test_missing_optional_variables_read_as_words() -> None:
    notice = status_notice(news("offer", job_title=None, company=None))
    assert notice is not None
    assert "job_title" not in notice.variables and "company" not in notice.variables
    for text in rendered(notice):
        assert_complete(text)
    [job] = match_notices([match("j-1", 95, None, company=None)])
    [text] = rendered(job)
    assert_complete(text)
    assert "fits your profile." in text["body"] and " in None" not in text["body"]
    assert "None" not in text["body"]


@pytest.mark.parametrize("notice", every_notice(), ids=lambda n: f"{n.type}:{n.key}")
def test_every_career_notice_passes_the_gate_with_complete_text(notice: Notice) -> None:
    decision = gate(NotificationBook(), notice, ctx(channels=["EMAIL", "PUSH"]))
    assert decision.reason == "queued"
    n = decision.notification
    assert n is not None
    assert n.type == notice.type and n.key == notice.key and n.source == "career"
    assert_complete({"subject": n.subject, "body": n.body, "cta": n.cta})
    assert n.body.startswith("Hi Amina,")


def test_the_career_types_have_templates_and_are_notification_types() -> None:
    assert set(CAREER_TYPES) == TRANSACTIONAL
    for type_ in CAREER_TYPES:
        assert type_ in NOTIFICATION_TYPES
        assert template_for(type_).type == type_


# --- the gate ------------------------------------------------------------------------------------


def test_career_notices_are_never_throttled_and_do_not_use_up_the_daily_cap() -> None:
    book, user = NotificationBook(), ctx()
    statuses = ["viewed", "screening", "interview_scheduled", "interviewed", "offer"]
    for i, status in enumerate(statuses):
        decision = gate(book, status_at(status, "app-1", T0 + i * MINUTE_MS), user)
        assert decision.reason == "queued", (status, decision.reason)
    assert len(statuses) > MAX_PER_DAY
    # Matches too, the same day.
    for notice in match_notices([match("j-1", 95, at_ms=T0 + 10 * MINUTE_MS)]):
        assert gate(book, notice, user).reason == "queued"
    # ... and a nudge still has the whole cap.
    reminder = decide(
        book, user, "gentle_reminder", "risk:g", T0 + HOUR_MS, source="risk", variables={}, stats=None
    )
    assert reminder.reason == "queued"


def test_the_daily_cap_still_holds_for_nudges_but_not_for_career_news() -> None:
    book, user = NotificationBook(), ctx()
    for i in range(MAX_PER_DAY):
        decided = decide(
            book, user, "achievement_notification", f"a{i}", T0 + i, source="t", variables={}, stats=None
        )
        assert decided.reason == "queued"
    capped = decide(
        book, user, "achievement_notification", "a-more", T0 + 10, source="t", variables={}, stats=None
    )
    assert capped.reason == "throttled"
    assert gate(book, status_at("hired", "app-9", T0 + 20), user).reason == "queued"


def test_in_app_is_always_among_the_channels() -> None:
    decision = gate(NotificationBook(), status_at("viewed", "app-1", T0), ctx(channels=["EMAIL"]))
    assert decision.notification is not None
    assert set(decision.notification.channels) == {"IN_APP", "EMAIL"}
    # Every channel the user allows, whatever the urgency.
    for notice in (status_at("offer", "app-2", T0), status_at("viewed", "app-3", T0)):
        sent = gate(NotificationBook(), notice, ctx(channels=["SMS", "PUSH", "EMAIL"]))
        assert sent.notification is not None
        assert set(sent.notification.channels) == {"IN_APP", "SMS", "PUSH", "EMAIL"}
    # No stated channels: the default, in-app.
    default = gate(NotificationBook(), status_at("viewed", "app-4", T0), ctx())
    assert default.notification is not None and default.notification.channels == ("IN_APP",)


def test_a_delivered_career_notice_enters_the_inbox() -> None:
    book = NotificationBook()
    decision = gate(book, status_at("offer", "app-1", T0), ctx(channels=["EMAIL"]))
    assert decision.notification is not None
    deliver(book, decision.notification, T0)
    assert [n["type"] for n in book.public()] == ["application_update"]
    assert book.unread() == 1


def test_opting_out_of_application_updates_suppresses_them_only() -> None:
    user = ctx(channels=["EMAIL"], opt_out=["application_update"])
    book = NotificationBook()
    assert gate(book, status_at("offer", "app-1", T0), user).reason == "opted_out"
    [job] = match_notices([match("j-1", 95)])
    assert gate(book, job, user).reason == "queued"


def test_opting_out_of_job_matches_keeps_application_updates() -> None:
    user = ctx(opt_out=["job_match", "match_digest"])
    book = NotificationBook()
    [job] = match_notices([match("j-1", 95)])
    [digest] = match_notices([match(f"j-{i}", 70) for i in range(3)])
    assert gate(book, job, user).reason == "opted_out"
    assert gate(book, digest, user).reason == "opted_out"
    assert gate(book, status_at("viewed", "app-1", T0), user).reason == "queued"


@pytest.mark.parametrize("channels", [["EMAIL"], ["PUSH"], ["IN_APP", "PUSH"]])
def test_quiet_hours_defer_career_news_on_interrupting_channels(channels: list[str]) -> None:
    book, user = NotificationBook(), ctx(channels=channels, quiet_hours=QUIET)
    decision = gate(book, status_at("interview_scheduled", "app-1", NIGHT_T), user)
    assert decision.reason == "deferred"
    n = decision.notification
    assert n is not None and "IN_APP" in n.channels
    assert (n.created_ms, n.deliver_at_ms) == (NIGHT_T, MORNING)
    assert book.pending == [n]
    # Still a duplicate meanwhile, and due in the morning.
    later = status_at("interview_scheduled", "app-1", NIGHT_T + HOUR_MS)
    assert gate(book, later, user).reason == "duplicate"
    assert due(book, MORNING - 1, user) == []
    [ready] = due(book, MORNING, user)
    assert (ready.reason, ready.notification) == ("queued", n)


def test_quiet_hours_do_not_hold_back_in_app_only_career_news() -> None:
    book, user = NotificationBook(), ctx(channels=["IN_APP"], quiet_hours=QUIET)
    decision = gate(book, status_at("offer", "app-1", NIGHT_T), user)
    assert decision.reason == "queued"
    assert decision.notification is not None and decision.notification.deliver_at_ms == NIGHT_T


def test_quiet_hours_let_daytime_career_news_through() -> None:
    user = ctx(channels=["EMAIL", "PUSH"], quiet_hours=QUIET)
    assert gate(NotificationBook(), status_at("offer", "app-1", T0), user).reason == "queued"


def test_a_repeated_key_is_a_duplicate() -> None:
    book, user = NotificationBook(), ctx(channels=["EMAIL"])
    first = status_at("offer", "app-1", T0)
    assert gate(book, first, user).reason == "queued"
    assert gate(book, first, user, now=T0 + HOUR_MS).reason == "duplicate"
    [job] = match_notices([match("j-1", 95)])
    assert gate(book, job, user).reason == "queued"
    [again] = match_notices([match("j-1", 97, at_ms=T0 + HOUR_MS)])
    assert gate(book, again, user).reason == "duplicate"
    digest_of = [match(f"j-{i}", 70) for i in range(4)]
    [digest] = match_notices(digest_of)
    assert gate(book, digest, user).reason == "queued"
    [same] = match_notices(list(reversed(digest_of)))
    assert gate(book, same, user).reason == "duplicate"


def test_notify_delivers_through_the_gate_into_the_inbox() -> None:
    state = RiskState("u-1")
    notices = [status_at("offer", "app-1", T0), *match_notices([match("j-1", 95)])]
    out = notify(state, ctx(channels=["EMAIL"]), notices, lambda template: {})
    assert [n.type for n in out.delivered] == ["application_update", "job_match"]
    assert [source for source, _ in out.decisions] == ["career", "career"]
    assert {n["type"] for n in state.notifications.public()} == {"application_update", "job_match"}
    again = notify(state, ctx(channels=["EMAIL"]), notices, lambda template: {})
    assert again.delivered == []
    assert [d.reason for _, d in again.decisions] == ["duplicate", "duplicate"]


# --- settings ------------------------------------------------------------------------------------


def test_checked_prefs_keep_the_career_opt_outs() -> None:
    prefs = checked_prefs({"opt_out": ["job_match", " Match_Digest ", "application_update", "spam"]})
    assert prefs["opt_out"] == ["job_match", "match_digest", "application_update"]
    assert checked_prefs({"opt_out": ["job_match"]})["opt_out"] == ["job_match"]


def test_the_settings_accept_the_career_opt_outs() -> None:
    prefs = validated_settings({"opt_out": ["job_match", "gentle_reminder"]})
    assert prefs["opt_out"] == ["job_match", "gentle_reminder"]
    assert settings_view(prefs)["opt_out"] == ["job_match", "gentle_reminder"]
