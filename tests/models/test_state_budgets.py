"""Byte budgets of per-user state under adversarial input (Trust: "bounded by construction").

Each state type is driven through its real model functions with what a hostile producer may send
on the public topics: any value models/events.py accepts (ids of 128 bytes that are 256 bytes of
JSON, free text of 512 control characters that is 3 KB of JSON, lists of 100 entries, values up
to 64 KiB), thousands of distinct applications, postings and event types, far-apart timestamps.
What is measured is what a changelog carries, ``orjson.dumps(state.to_dict())``, against
``STATE_BUDGET_BYTES`` (128 KiB, half the record limit the worker enforces), and each part
against its own budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.applications import HISTORY_CAP, NOTE_BYTES, Application, apply_status
from models.campaigns.records import UserFacts
from models.career import (
    APPLICATIONS_BUDGET_BYTES,
    INTERESTS_BYTES,
    MATCHES_BUDGET_BYTES,
    MAX_APPLICATIONS,
    MAX_MATCHES,
    NAME_BYTES,
    PLACE_BYTES,
    SKILLS_BYTES,
    CareerState,
)
from models.digests import DIGEST_CHARS
from models.events import (
    APPLICATION_STATUSES,
    MAX_ID_LEN,
    MAX_VALUE_BYTES,
    BehaviorEvent,
    InvalidEvent,
    is_valid_id,
    parse_application_status,
    parse_posting,
    parse_profile,
)
from models.interventions import UserContext, decide, deliver
from models.interventions.notifications import (
    KEYS_BUDGET_BYTES,
    MAX_DELIVERED,
    MAX_INBOX,
    MAX_PENDING,
    NOTIFICATIONS_BUDGET_BYTES,
)
from models.matching import (
    MATCH_COMPANY_BYTES,
    MATCH_CURRENCY_BYTES,
    MATCH_INDUSTRY_BYTES,
    MATCH_MISSING_SKILLS_BYTES,
    MATCH_TITLE_BYTES,
    CandidateIndex,
    match_posting,
)
from models.nudges import Celebration, celebrate, plan
from models.risk import RiskModel
from models.risk_features import FEATURE_NAMES
from models.risk_state import (
    MAX_PENDING_LABELS,
    RiskSettings,
    RiskState,
    expire,
    observe_activity,
    rescore,
    score_where_it_happens,
)
from models.state_budget import STATE_BUDGET_BYTES, clip_text, fit_texts, json_size
from models.time_units import DAY_MS, HOUR_MS

NOW = 1_790_000_000_000
CTRL = "\x01"  # six bytes of JSON each: the costliest character free text may hold
T = TypeVar("T")

# Worst-case sizes of one kept entry, from the budgets (what the state may hold of each, plus
# the JSON of its field names and numbers, which no input controls).
WORST_ID_JSON = 2 * MAX_ID_LEN + 2
MATCH_ENTRY_BOUND = (
    WORST_ID_JSON
    + MATCH_TITLE_BYTES
    + MATCH_COMPANY_BYTES
    + MATCH_MISSING_SKILLS_BYTES
    + MATCH_INDUSTRY_BYTES
    + MATCH_CURRENCY_BYTES
    + 320
)
HISTORY_ROW_BOUND = NOTE_BYTES + DIGEST_CHARS + 2 + 64  # + time, status, brackets and commas
APPLICATION_BOUND = 3 * WORST_ID_JSON + HISTORY_CAP * HISTORY_ROW_BOUND + 64


def encoded(obj: Any) -> int:
    return len(orjson.dumps(obj))


def worst_id(n: int) -> str:
    """A distinct, valid id of 128 bytes that is 256 bytes of JSON (quotes are printable)."""
    tag = f"{n:x}"
    return tag + '"' * (MAX_ID_LEN - len(tag))


def accepted(doc: dict[str, Any], parse: Callable[[bytes, int], T]) -> T:
    raw = orjson.dumps(doc)
    assert len(raw) <= MAX_VALUE_BYTES, "the test must send only values the parsers accept"
    return parse(raw, NOW)


def padded(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """``doc`` with a "junk" string of control characters in its object ``name``, filling the
    value to 64 KiB."""
    room = MAX_VALUE_BYTES - encoded({**doc, name: {**doc.get(name, {}), "junk": ""}}) - 8
    return {**doc, name: {**doc.get(name, {}), "junk": CTRL * (room // 6)}}


def hostile_profile(user_id: str, **extra: Any) -> dict[str, Any]:
    """Every field a profile may fill, at its most expensive; junk in the preferences pads it to
    64 KiB."""
    doc = {
        "user_id": user_id,
        "display_name": CTRL * 512,
        "location": CTRL * 512,
        "education": CTRL * 512,
        "timezone": "America/Argentina/Buenos_Aires",
        "currency": CTRL * 16,
        "experience_years": 40,
        "salary_expectation": 1e308,
        # Two real skills first (postings below match on them), then 128-character junk ones.
        "skills": ["sql", "python"] + ['"' * 124 + f"{i:04}" for i in range(40)],
        "interests": ['"' * 124 + f"{i:04}" for i in range(40)],
        **extra,
    }
    return padded(doc, "notification_prefs")


def hostile_posting(n: int) -> dict[str, Any]:
    """A posting matching the hostile candidate at 70, its text at the parser's limits, and two
    missing skills that together just fit the shown budget."""
    return {
        "job_id": worst_id(n),
        "title": CTRL * 512,
        "company": CTRL * 512,
        "posted_at": NOW - HOUR_MS,
        "deadline": NOW + DAY_MS,
        "skills": ["sql", "python", '"' * 120 + f"{n:08}", "\\" * 120 + f"{n:08}"],
        "industry": CTRL * 512,
        "source": CTRL * 512,
    }


def hostile_status(user_id: str, app: int, n: int, status: str, ts_ms: int) -> dict[str, Any]:
    return {
        "event_id": worst_id(n),
        "application_id": worst_id(app),
        "user_id": user_id,
        "job_id": worst_id(app + 1_000_000),
        "status": status,
        "ts": ts_ms,
        "note": CTRL * 512,
    }


def career_parts(state: CareerState) -> dict[str, int]:
    data = state.to_dict()
    return {
        "total": encoded(data),
        "matches": encoded(data["matches"]),
        "applications": encoded(data["applications"]),
        "profile": encoded({k: v for k, v in data.items() if k not in ("matches", "applications")}),
    }


def assert_career_within_budgets(state: CareerState) -> dict[str, int]:
    parts = career_parts(state)
    assert parts["total"] <= STATE_BUDGET_BYTES, parts
    assert parts["matches"] <= MATCHES_BUDGET_BYTES + 2, parts
    assert parts["applications"] <= APPLICATIONS_BUDGET_BYTES + 2, parts
    assert len(state.matches) <= MAX_MATCHES and len(state.applications) <= MAX_APPLICATIONS
    return parts


# ---------------------------------------------------------------------------------------------
# The encoding arithmetic every budget rests on

_ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)


@given(text=_ANY_TEXT, budget=st.integers(2, 200))
def test_json_size_is_orjsons_size_and_clip_text_keeps_a_prefix_within_budget(text: str, budget: int) -> None:
    assert json_size(text) == encoded(text)
    clipped = clip_text(text, budget)
    assert text.startswith(clipped)
    assert encoded(clipped) <= budget
    # Nothing more could have been kept.
    assert clipped == text or encoded(text[: len(clipped) + 1]) > budget


@given(items=st.lists(_ANY_TEXT, max_size=30), budget=st.integers(2, 400))
def test_fit_texts_keeps_whole_items_in_order_within_budget(items: list[str], budget: int) -> None:
    kept = fit_texts(items, budget)
    assert encoded(list(kept)) <= budget
    # A subsequence of the items: whole, in their order.
    rest = iter(items)
    assert all(any(item == other for other in rest) for item in kept)
    # Nothing is left out of a list that fits whole.
    if encoded(items) <= budget:
        assert kept == tuple(items)


# ---------------------------------------------------------------------------------------------
# CareerState


def test_the_profile_part_is_bounded_and_keeps_only_known_preferences() -> None:
    user = worst_id(1)
    prefs = {"channels": ["push", "IN_APP", "FAX", "push", 7], "quiet_hours": ["21:00", "7:00"]}
    doc = hostile_profile(user, notification_prefs={**prefs, "opt_out": ["x" * 100] * 50})
    raw_prefs = encoded(doc["notification_prefs"])
    state = CareerState(user)

    candidate = state.adopt_profile(accepted(doc, parse_profile))

    assert raw_prefs > 30_000  # what the profile carried (the rest of the 64 KiB is the other fields)
    assert state.notification_prefs == {
        "channels": ["PUSH", "IN_APP"],
        "quiet_hours": ["21:00", "07:00"],
        "opt_out": [],
    }
    assert candidate.skills[:2] == ("sql", "python")
    assert encoded(list(candidate.skills)) <= SKILLS_BYTES
    assert encoded(list(state.interests)) <= INTERESTS_BYTES
    assert encoded(state.display_name) <= NAME_BYTES
    assert encoded(candidate.location) <= PLACE_BYTES and encoded(candidate.education) <= PLACE_BYTES
    profile_bytes = career_parts(state)["total"]
    # user id twice, the budgets above, the currency (16 control characters) and field names.
    assert (
        profile_bytes
        <= 2 * WORST_ID_JSON + SKILLS_BYTES + INTERESTS_BYTES + NAME_BYTES + 2 * PLACE_BYTES + 1024
    )


def _drive_career_to_its_worst(postings: int, applications: int) -> CareerState:
    """One hostile user: the worst profile, `postings` hostile postings matched through the
    index, and `applications` applications of HISTORY_CAP + 8 hostile events each."""
    user = worst_id(1)
    state = CareerState(user)
    index = CandidateIndex()
    index.upsert(state.adopt_profile(accepted(hostile_profile(user), parse_profile)))
    for n in range(postings):
        for match in match_posting(accepted(hostile_posting(n), parse_posting), index, NOW):
            state.record_match(match, NOW)
    event = 0
    for app in range(applications):
        current: Application | None = None
        for step in range(HISTORY_CAP + 8):
            status = "submitted" if step == 0 else "viewed" if step % 2 else "screening"
            ts = NOW - 30 * DAY_MS + app * HOUR_MS + step
            raw = hostile_status(user, app, event, status, ts)
            event += 1
            current, change = apply_status(current, accepted(raw, parse_application_status))
            if not change.duplicate:
                state.record_application(current)
        assert current is not None
        assert encoded(current.to_dict()) <= APPLICATION_BOUND
    return state


def test_career_state_worst_case_stays_within_budget() -> None:
    state = _drive_career_to_its_worst(postings=200, applications=40)

    parts = assert_career_within_budgets(state)

    assert all(encoded(entry) <= MATCH_ENTRY_BOUND for entry in state.matches.values())
    # The budgets were what stopped it, not a lack of input.
    assert parts["matches"] > MATCHES_BUDGET_BYTES - MATCH_ENTRY_BOUND
    assert parts["applications"] > APPLICATIONS_BUDGET_BYTES - APPLICATION_BOUND
    # The newest application is kept; the oldest went.
    assert worst_id(39) in state.applications and worst_id(0) not in state.applications
    # What is stored reads back as the same state, within the same budget.
    restored = CareerState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored == state
    assert career_parts(restored) == parts


def test_an_honest_users_matches_and_applications_are_not_cut() -> None:
    state = CareerState("u-42")
    index = CandidateIndex()
    profile = {"user_id": "u-42", "skills": ["sql", "python", "excel"], "location": "Nairobi"}
    index.upsert(state.adopt_profile(accepted(profile, parse_profile)))
    for n in range(MAX_MATCHES):
        posting = {
            "job_id": f"j-{n:05}",
            "title": "Junior Data Analyst",
            "company": "Acme Analytics Ltd",
            "location": "Nairobi",
            "skills": ["sql", "python", "tableau", "power bi"],
            "posted_at": NOW - HOUR_MS,
        }
        for match in match_posting(accepted(posting, parse_posting), index, NOW):
            state.record_match(match, NOW)
    for app in range(150):
        current = None
        for step, status in enumerate(("submitted", "viewed", "interview_scheduled")):
            event = {
                "event_id": f"a-{app}-{step}",
                "application_id": f"app-{app}",
                "user_id": "u-42",
                "job_id": f"j-{app:05}",
                "status": status,
                "ts": NOW - DAY_MS + app * 1000 + step,
                "note": "Panel on Monday with the analytics team",
            }
            current, _ = apply_status(current, accepted(event, parse_application_status))
            state.record_application(current)

    assert len(state.matches) == MAX_MATCHES
    assert len(state.applications) == 150
    assert_career_within_budgets(state)


_HOSTILE_CHARS = st.sampled_from(['"', "\\", CTRL, "\n", "a", "é", "中", "🙂", "\u2028"])
_hostile_text = st.text(_HOSTILE_CHARS, max_size=512)
# Up to 32 characters of up to 4 bytes each, or 128 bytes of quotes: always a valid id.
_hostile_id = st.one_of(
    st.text(st.sampled_from(['"', "\\", "a", "é", "中", "🙂"]), min_size=1, max_size=32),
    st.integers(0, 10**6).map(worst_id),
)
_hostile_list = st.lists(st.text(_HOSTILE_CHARS, min_size=1, max_size=128), max_size=100)


@st.composite
def _career_input(draw: st.DrawFn, user: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["profile", "posting", "status"]))
    text = draw(_hostile_text)
    doc: dict[str, Any]
    if kind == "profile":
        skills = ["sql", *draw(_hostile_list)][:100]
        doc = {"user_id": user, "display_name": text, "location": text, "skills": skills}
        doc["interests"] = draw(_hostile_list)
        doc["notification_prefs"] = {"channels": draw(_hostile_list), "quiet_hours": draw(_hostile_list)}
    elif kind == "posting":
        doc = {"job_id": draw(_hostile_id), "title": text or "t", "company": text, "posted_at": NOW}
        doc["skills"] = ["sql", *draw(_hostile_list)][:100]
    else:
        app = draw(_hostile_id)
        doc = {"event_id": draw(_hostile_id), "application_id": app, "user_id": user, "job_id": app}
        doc.update(status=draw(st.sampled_from(APPLICATION_STATUSES)), ts=NOW - draw(st.integers(0, 10**9)))
        doc["note"] = text
    return {"kind": kind, "doc": doc}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_hostile_career_stream_keeps_every_part_within_its_budget(data: st.DataObject) -> None:
    user = data.draw(_hostile_id)
    assert is_valid_id(user)
    state = CareerState(user)
    index = CandidateIndex()
    index.upsert(state.adopt_profile(accepted({"user_id": user, "skills": ["sql"]}, parse_profile)))
    for item in data.draw(st.lists(_career_input(user), min_size=1, max_size=25)):
        doc = item["doc"]
        if encoded(doc) > MAX_VALUE_BYTES:
            continue  # the parser refuses it; refusals are tested in test_events
        try:
            if item["kind"] == "profile":
                index.upsert(state.adopt_profile(parse_profile(orjson.dumps(doc), NOW)))
            elif item["kind"] == "posting":
                for match in match_posting(parse_posting(orjson.dumps(doc), NOW), index, NOW):
                    state.record_match(match, NOW)
            else:
                event = parse_application_status(orjson.dumps(doc), NOW)
                current, change = apply_status(state.applications.get(event.application_id), event)
                if not change.duplicate:
                    state.record_application(current)
        except (InvalidEvent, ValueError):
            continue
        assert_career_within_budgets(state)
        assert all(encoded(entry) <= MATCH_ENTRY_BOUND for entry in state.matches.values())
        assert all(encoded(a.to_dict()) <= APPLICATION_BOUND for a in state.applications.values())


# ---------------------------------------------------------------------------------------------
# JobPosting (one per key in the `jobs` and `open-postings` tables)


def _largest_postings() -> Iterator[dict[str, Any]]:
    base: dict[str, Any] = {"job_id": worst_id(9), "title": "t", "posted_at": NOW, "deadline": NOW}
    numbers: dict[str, Any] = {"salary_min": -1.7976931348623157e308, "salary_max": 1.7976931348623157e308}
    numbers.update(experience_years=5e-324, currency=CTRL * 16)
    # All free text as control characters, as far as 64 KiB allows.
    text: dict[str, Any] = {**base, **numbers}
    for name in ("title", "company", "location", "industry", "education", "source"):
        text[name] = CTRL * 512
    room = MAX_VALUE_BYTES - encoded(text) - 16
    text["skills"] = [CTRL * 127 + chr(0x4E00 + i) for i in range(min(100, room // 772))]
    yield text
    # Skills that lower-casing makes longer ("İ" is two bytes, "i̇" three).
    yield dict(base, skills=["İ" * 127 + chr(0x4E00 + i) for i in range(100)])


@pytest.mark.parametrize("doc", list(_largest_postings()), ids=["control-text", "expanding-skills"])
def test_the_largest_posting_a_producer_can_send_fits_the_budget(doc: dict[str, Any]) -> None:
    posting = accepted(doc, parse_posting)

    size = encoded(posting.to_dict())

    assert size <= STATE_BUDGET_BYTES
    assert (
        posting.to_dict() == type(posting).from_dict(orjson.loads(orjson.dumps(posting.to_dict()))).to_dict()
    )


@settings(max_examples=60, deadline=None)
@given(title=_hostile_text, company=_hostile_text, skills=_hostile_list, job_id=_hostile_id)
def test_any_accepted_posting_stays_within_the_budget(
    title: str, company: str, skills: list[str], job_id: str
) -> None:
    doc: dict[str, Any] = {"job_id": job_id, "title": title or "t", "company": company, "location": company}
    doc.update(industry=title, education=company, source=title, skills=skills, posted_at=NOW)
    if encoded(doc) > MAX_VALUE_BYTES:
        return
    posting = parse_posting(orjson.dumps(doc), NOW)
    # Nothing a posting keeps is longer than what was sent, but lower-casing its skills.
    assert encoded(posting.to_dict()) <= 1.5 * encoded(doc) + 512 <= STATE_BUDGET_BYTES


# ---------------------------------------------------------------------------------------------
# RiskState


SETTINGS = RiskSettings()


def _context(user: str, career: CareerState, state: RiskState) -> UserContext:
    """The context the engine builds (streams.user_context): names and preferences come from
    the career state, so they are bounded there."""
    return UserContext(
        user_id=user,
        prefs=career.notification_prefs,
        display_name=career.display_name,
        streak=3,
        level=4,
        last_active_ms=state.activity.last_event_ms,
        signup_ms=state.activity.first_seen_ms,
    )


def _hostile_event(user: str, n: int, ts_ms: int) -> BehaviorEvent:
    return BehaviorEvent(
        event_id=worst_id(n),
        user_id=user,
        type=worst_id(n % 997),  # many distinct unknown types
        ts_ms=ts_ms,
        session_id=worst_id(n),
        device=CTRL * 128,
        platform=CTRL * 128,
        props={
            "duration_s": 1.7e308,
            "score": 1e308,
            "category": worst_id(n),
            "notification_id": worst_id(n),
        },
    )


def _risk_step(
    state: RiskState, career: CareerState, model: RiskModel, event: BehaviorEvent, sweep: bool
) -> None:
    """What the engine does with one applied event (streams.risk): fold it in, score where it
    happens, celebrate, and (when `sweep`) look at the user as the sweep does."""
    observe_activity(state, event, 1e308, SETTINGS)
    now = state.activity.last_event_ms
    assert now is not None
    if score_where_it_happens(state, SETTINGS):
        rescore(state, model, now, None, SETTINGS)
    ctx = _context(state.user_id, career, state)
    achieved = [
        Celebration(
            "achievement_notification", f"badge:{state.user_id}:{event.event_id}", {"badge": CTRL * 64}
        ),
        Celebration("milestone_celebration", f"level:{state.user_id}:{event.event_id}", {"milestone": "x"}),
    ]
    celebrate(state, ctx, achieved, now, lambda template: {})
    state.notifications.track(worst_id(event.ts_ms % 7), "clicked", now)
    for n in list(state.notifications.inbox[-3:]):
        state.notifications.track(n.id, "converted", now)
    if sweep:
        expire(state, now, SETTINGS)
        score = rescore(state, model, now, 3, SETTINGS)
        facts = UserFacts(state.user_id, "UTC", ctx.signup_ms, ctx.last_active_ms, score.score, {})
        plan(state, ctx, score, now, campaigns=[], facts=facts, variant_counts=lambda template: {})


def test_risk_state_worst_case_stays_within_budget() -> None:
    user = worst_id(5)
    career = CareerState(user)
    channels = {"channels": ["PUSH", "EMAIL", "SMS", "IN_APP"], "quiet_hours": ["00:00", "23:59"]}
    career.adopt_profile(accepted(hostile_profile(user, notification_prefs=channels), parse_profile))
    state = RiskState(user)
    model = RiskModel(SETTINGS.horizon_ms, grace_ms=SETTINGS.grace_ms)
    largest = most_pending = 0
    n = 0
    # 1. Back-dated events 8 days apart from 1970 on, each past the last label's horizon: the
    #    event path snapshots a label per event and only the sweep (not here) would expire them.
    for step in range(1000):
        _risk_step(state, career, model, _hostile_event(user, n, step * 8 * DAY_MS), False)
        n += 1
        most_pending = max(most_pending, len(state.pending))
    largest = encoded(state.to_dict())
    # 2. Activity every 3 hours for 40 days with every celebration it can earn: the inbox,
    #    pending (quiet hours all day long) and idempotency keys fill up.
    start = NOW - 200 * DAY_MS
    for hour in range(0, 40 * 24, 3):
        _risk_step(state, career, model, _hostile_event(user, n, start + hour * HOUR_MS), hour % 5 == 0)
        n += 1
        largest = max(largest, encoded(state.to_dict()))
    # 3. Push only: the delivered list fills up too.
    career.notification_prefs = {"channels": ["PUSH"]}
    start += 40 * DAY_MS
    for hour in range(0, 8 * 24, 3):
        _risk_step(state, career, model, _hostile_event(user, n, start + hour * HOUR_MS), hour % 5 == 0)
        n += 1
        largest = max(largest, encoded(state.to_dict()))

    book = state.notifications
    assert largest <= STATE_BUDGET_BYTES
    assert most_pending == MAX_PENDING_LABELS
    assert len(book.inbox) <= MAX_INBOX and len(book.delivered) <= MAX_DELIVERED
    assert len(book.pending) <= MAX_PENDING
    assert encoded(book.to_dict()["keys"]) <= KEYS_BUDGET_BYTES
    # It did fill: the book was cut by bytes, not by count.
    assert book.inbox and book.delivered and len(book.inbox) + len(book.delivered) < MAX_INBOX + MAX_DELIVERED
    # Every number is finite, so what is stored can be read back.
    restored = RiskState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored.to_dict() == state.to_dict()


def test_the_notification_book_at_its_caps_with_the_costliest_texts_fits_its_budgets() -> None:
    user = worst_id(6)
    career = CareerState(user)
    career.adopt_profile(accepted(hostile_profile(user), parse_profile))
    state = RiskState(user)
    book = state.notifications
    # Eight hours apart: the daily cap (3) never says no, and 36 days of keys stay remembered.
    for i in range(MAX_INBOX + MAX_DELIVERED + 10):
        channels = ["IN_APP"] if i % 2 else ["PUSH"]
        ctx = UserContext(user, prefs={"channels": channels}, display_name=career.display_name)
        kind = ("achievement_notification", "milestone_celebration")[i % 2]
        key = f"campaign:{worst_id(i)}:{worst_id(i + 1)}"
        at = NOW + i * 8 * HOUR_MS
        decision = decide(
            book, ctx, kind, key, at, source="x" * 128, variables={"badge": CTRL * 64}, stats={}
        )
        assert decision.notification is not None
        deliver(book, decision.notification, at)
    for n in book.inbox + book.delivered:
        book.track(n.id, "converted", NOW + 1000 * DAY_MS)

    data = book.to_dict()
    notifications = encoded(data["inbox"]) + encoded(data["delivered"]) + encoded(data["pending"])
    # Tracking after delivery adds at most three instants to each notification kept.
    assert notifications <= NOTIFICATIONS_BUDGET_BYTES + (MAX_INBOX + MAX_DELIVERED) * 3 * 16
    assert encoded(data["keys"]) <= KEYS_BUDGET_BYTES
    assert encoded(state.to_dict()) <= STATE_BUDGET_BYTES


@st.composite
def _risk_stream(draw: st.DrawFn) -> list[tuple[int, int, str, bool]]:
    """(gap after the previous event, in hours, possibly far; type; whether the sweep looks)."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 5_000),
                st.integers(0, 999),
                st.sampled_from(["lesson_complete", "notification_clicked", "job_apply", "x"]),
                st.booleans(),
            ),
            max_size=120,
        )
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_risk_stream(), user=_hostile_id)
def test_any_event_stream_keeps_risk_state_within_budget_and_readable(
    stream: list[tuple[int, int, str, bool]], user: str
) -> None:
    career = CareerState(user)
    career.adopt_profile(accepted(hostile_profile(user), parse_profile))
    state = RiskState(user)
    model = RiskModel(SETTINGS.horizon_ms, grace_ms=SETTINGS.grace_ms)
    ts = 0
    for i, (gap_hours, n, kind, sweep) in enumerate(stream):
        ts += gap_hours * HOUR_MS
        event = replace(_hostile_event(user, n, ts), type=kind)
        _risk_step(state, career, model, event, sweep)
        assert len(state.pending) <= MAX_PENDING_LABELS, i
    data = state.to_dict()
    assert encoded(data) <= STATE_BUDGET_BYTES
    assert len(data["activity"]["days"]) <= 56
    assert all(set(p["features"]) == set(FEATURE_NAMES) for p in data["pending"])
    assert RiskState.from_dict(orjson.loads(orjson.dumps(data))).to_dict() == data
