"""Per-user career state (models/career.py): what it keeps of a profile, how its matches and
applications stay within their budgets, and reading what older versions stored."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from models.applications import Application, apply_status
from models.career import (
    APPLICATIONS_BUDGET_BYTES,
    MAX_APPLICATIONS,
    NAME_BYTES,
    CareerState,
    checked_prefs,
)
from models.events import ApplicationStatusEvent, UserProfile
from models.matching import MATCH_MISSING_SKILLS_BYTES, MATCH_TITLE_BYTES, Match

T0 = 1_790_000_000_000
HOUR = 3_600_000


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ({}, {}),
        ({"channels": ["push", " in_app ", "FAX", "PUSH", 3]}, {"channels": ["PUSH", "IN_APP"]}),
        ({"channels": ["FAX"]}, {}),  # nothing usable: the default applies, as with none
        ({"channels": "PUSH"}, {}),
        ({"quiet_hours": ["21:00", "7:00"]}, {"quiet_hours": ["21:00", "07:00"]}),
        ({"quiet_hours": ["21:00", "07:00", "x"]}, {}),
        ({"quiet_hours": ["21:00", "21:00"]}, {}),  # an empty window is none
        ({"quiet_hours": ["25:00", "07:00"]}, {}),
        ({"job_alerts": False}, {"job_alerts": False}),
        ({"job_alerts": "no"}, {}),
        ({"opt_out": ["discount_offer", "spam", "discount_offer"]}, {"opt_out": ["discount_offer"]}),
        ({"opt_out": "discount_offer"}, {"opt_out": []}),
        ({"digest": "Weekly"}, {"digest": "weekly"}),
        ({"digest": "hourly"}, {}),
        ({"junk": "x" * 60_000, "nested": {"a": [1] * 1000}}, {}),
    ],
)
def test_only_known_preferences_are_kept_checked_and_normalised(
    raw: dict[str, Any], kept: dict[str, Any]
) -> None:
    assert checked_prefs(raw) == kept


def test_alert_channels_read_the_checked_preferences() -> None:
    state = CareerState("u-1")
    state.adopt_profile(UserProfile("u-1", notification_prefs={"channels": ["sms", "Carrier pigeon"]}))
    assert state.alert_channels() == ["SMS"]
    state.adopt_profile(UserProfile("u-1", notification_prefs={"channels": ["Carrier pigeon"]}))
    assert state.alert_channels() == ["IN_APP"]
    state.adopt_profile(UserProfile("u-1", notification_prefs={"job_alerts": False, "channels": ["PUSH"]}))
    assert state.alert_channels() == []


def test_the_display_name_is_cut_to_its_budget_and_skills_kept_whole() -> None:
    state = CareerState("u-1")
    skills = ("sql", *(f"{i:03}" + "z" * 125 for i in range(100)))

    candidate = state.adopt_profile(UserProfile("u-1", display_name="Amina " * 100, skills=skills))

    assert state.display_name is not None and len(orjson.dumps(state.display_name)) <= NAME_BYTES
    assert state.display_name.startswith("Amina Amina")
    assert candidate.skills[0] == "sql"
    assert all(len(skill) == 128 for skill in candidate.skills[1:])  # whole, never cut


def _match(job_id: str, score: int, title: str = "Data Analyst") -> Match:
    return Match(job_id, "u-1", title, "Acme", score, ("x" * 100,) * 20, "unknown", False, False, None)


def test_a_match_is_stored_and_alerted_with_its_text_within_budget() -> None:
    state = CareerState("u-1")
    assert state.record_match(_match("j-1", 80, title="\x01" * 512), T0)
    entry = state.matches["j-1"]

    assert len(orjson.dumps(entry["title"])) <= MATCH_TITLE_BYTES
    assert len(orjson.dumps(entry["missing_skills"])) <= MATCH_MISSING_SKILLS_BYTES
    assert entry["missing_skills"] == ["x" * 100] * 4
    # A re-score keeps when it was alerted, and is not alerted again.
    assert not state.record_match(_match("j-1", 85), T0 + HOUR)
    assert state.matches["j-1"]["alerted_at_ms"] == T0


def _application(app_id: str, statuses: list[str], start: int) -> Application:
    app = None
    for i, status in enumerate(statuses):
        event = ApplicationStatusEvent(f"{app_id}-e{i}", app_id, "u-1", f"job-{app_id}", status, start + i)
        app, _ = apply_status(app, event)
    assert app is not None
    return app


def test_beyond_the_count_closed_applications_go_first_then_the_oldest() -> None:
    state = CareerState("u-1")
    for i in range(MAX_APPLICATIONS):
        statuses = ["submitted", "rejected"] if i % 10 == 9 else ["submitted"]
        state.record_application(_application(f"a-{i:03}", statuses, T0 + i * HOUR))

    # Twenty applications more than the cap: the twenty closed ones go, old or not.
    for i in range(MAX_APPLICATIONS, MAX_APPLICATIONS + 20):
        state.record_application(_application(f"a-{i:03}", ["submitted"], T0 + i * HOUR))
    assert len(state.applications) == MAX_APPLICATIONS
    assert all(app.status == "submitted" for app in state.applications.values())
    assert "a-000" in state.applications

    # Then the least recently updated; a late event for an old one is kept (it was just recorded).
    state.record_application(_application("a-new", ["submitted"], T0 + 999 * HOUR))
    assert "a-000" not in state.applications and "a-new" in state.applications
    late = _application("a-001", ["submitted", "viewed"], T0 + HOUR)
    state.record_application(_application("a-late", ["submitted"], T0 + 1000 * HOUR))
    state.record_application(late)
    assert "a-001" in state.applications and "a-002" not in state.applications


def test_applications_are_kept_within_their_byte_budget() -> None:
    state = CareerState("u-1")
    note = "\x01" * 512
    for i in range(60):
        app = None
        for step in range(40):
            status = "submitted" if step == 0 else "viewed"
            event = ApplicationStatusEvent(
                f"e{i}-{step}", f"a{i}", "u-1", "j", status, T0 + i * HOUR + step, note
            )
            app, _ = apply_status(app, event)
            assert app is not None
            state.record_application(app)

    encoded = orjson.dumps([a.to_dict() for a in state.applications.values()])
    assert len(encoded) <= APPLICATIONS_BUDGET_BYTES
    assert "a59" in state.applications and "a0" not in state.applications


def test_a_version_1_state_is_read_and_brought_within_budget() -> None:
    app = _application("a-1", ["submitted", "viewed"], T0)
    v1 = {
        "v": 1,
        "user_id": "u-1",
        "candidate": {"user_id": "u-1", "skills": ["sql"]},
        "prefs": {"channels": ["PUSH"], "junk": "x" * 10_000},
        "tz": "Africa/Nairobi",
        "name": "Amina",
        "interests": ["data"],
        "matches": {
            "j-1": {**_match("j-1", 70, title="t" * 2000).to_dict(), "title": "t" * 2000, "alerted_at_ms": T0}
        },
        "applications": {"a-1": {**app.to_dict(), "v": 1, "h": [[T0, "submitted", "a-1-e0", None]]}},
    }

    state = CareerState.from_dict(orjson.loads(orjson.dumps(v1)))

    assert state.notification_prefs == {"channels": ["PUSH"]}
    assert len(orjson.dumps(state.matches["j-1"]["title"])) <= MATCH_TITLE_BYTES
    assert state.matches["j-1"]["alerted_at_ms"] == T0
    assert state.applications["a-1"].status == "submitted"
    # Written back as version 2, it reads the same.
    again = CareerState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert again == state and again.to_dict()["v"] == 2
    with pytest.raises(ValueError, match="version"):
        CareerState.from_dict({**v1, "v": 99})


# --- the profile as held and shown ------------------------------------------------------------

AMINA = UserProfile(
    "u-1",
    display_name="Amina",
    timezone="Africa/Nairobi",
    location="Nairobi",
    skills=("sql", "excel"),
    experience_years=2,
    education="bachelor",
    interests=("data",),
    salary_expectation=70_000,
    currency="KES",
    notification_prefs={"channels": ["push"], "junk": 1},
    email="amina@example.com",
    phone="+254712345678",
    updated_at_ms=T0 - HOUR,
)


def test_adopting_a_profile_keeps_its_contact_and_when_it_was_written() -> None:
    state = CareerState("u-1")
    state.adopt_profile(AMINA, now_ms=T0)
    assert (state.email, state.phone) == ("amina@example.com", "+254712345678")
    assert state.profile_at_ms == T0 - HOUR  # its updated_at, not when it was applied
    # A producer that does not say when: the time it was applied.
    state.adopt_profile(UserProfile("u-1", email="b@example.com"), now_ms=T0 + 5)
    assert state.profile_at_ms == T0 + 5
    # Whole records, latest wins: a profile without a phone leaves none.
    assert (state.email, state.phone) == ("b@example.com", None)


def test_the_profile_view_shows_the_profile_as_held() -> None:
    state = CareerState("u-1")
    assert state.profile_view()["updated_at"] is None  # nothing adopted yet
    state.adopt_profile(AMINA, now_ms=T0)
    assert state.profile_view() == {
        "user_id": "u-1",
        "display_name": "Amina",
        "timezone": "Africa/Nairobi",
        "location": "Nairobi",
        "skills": ["sql", "excel"],
        "experience_years": 2,
        "education": "bachelor",
        "interests": ["data"],
        "salary_expectation": 70_000,
        "currency": "KES",
        "email": "amina@example.com",
        "phone": "+254712345678",
        "notification_prefs": {"channels": ["PUSH"]},  # checked, as the workers read them
        "updated_at": T0 - HOUR,
        "school": None,
        "cohort": None,
        "leaderboard_visible": True,
    }
    # JSON as is (the serving view is its orjson encoding).
    assert orjson.loads(orjson.dumps(state.profile_view())) == state.profile_view()


def test_the_contact_and_its_time_survive_the_changelog() -> None:
    state = CareerState("u-1")
    state.adopt_profile(AMINA, now_ms=T0)
    stored = state.to_dict()
    assert (stored["email"], stored["phone"], stored["pat"]) == (
        "amina@example.com",
        "+254712345678",
        T0 - HOUR,
    )
    again = CareerState.from_dict(orjson.loads(orjson.dumps(stored)))
    assert again == state
    assert again.profile_view() == state.profile_view()


def test_a_state_stored_before_the_contact_loads_without_one() -> None:
    state = CareerState("u-1")
    state.adopt_profile(AMINA, now_ms=T0)
    older = {k: v for k, v in state.to_dict().items() if k not in ("email", "phone", "pat")}
    loaded = CareerState.from_dict(orjson.loads(orjson.dumps(older)))
    assert (loaded.email, loaded.phone, loaded.profile_at_ms) == (None, None, None)
    assert loaded.candidate == state.candidate and loaded.display_name == "Amina"
    view = loaded.profile_view()
    assert (view["email"], view["phone"], view["updated_at"]) == (None, None, None)
    assert view["skills"] == ["sql", "excel"]
    v1 = {"v": 1, "user_id": "u-2", "candidate": {"user_id": "u-2", "skills": ["sql"]}}
    assert CareerState.from_dict(v1).profile_view()["email"] is None
