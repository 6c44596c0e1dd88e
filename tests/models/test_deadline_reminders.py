"""Reminders of matched jobs about to close (models/career_notices.py): two days before the
deadline, at 9:00 on the user's clock, once per job, never too late to act."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from models.career_notices import (
    MIN_LEFT_MS,
    REMINDER_LEAD_MS,
    ClosingJob,
    deadline_notices,
    next_reminder,
    reminder_instant,
)
from models.interventions import render, template_for
from models.time_units import HOUR_MS


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


def job(deadline: str, job_id: str = "j-1", company: str | None = "Acme") -> ClosingJob:
    return ClosingJob(job_id, "Data Analyst", company, ms(deadline))


def test_the_reminder_is_at_nine_local_two_days_before() -> None:
    # Closes Friday 17:00 Nairobi (UTC+3): 48 h before is Wednesday 17:00, so Thursday 09:00.
    closing = job("2026-12-11T17:00:00+03:00")
    assert reminder_instant(closing, "Africa/Nairobi") == ms("2026-12-10T09:00:00+03:00")
    # The same deadline seen from New York: 48 h before is Wednesday 09:00 there, that very hour.
    assert reminder_instant(closing, "America/New_York") == ms("2026-12-09T09:00:00-05:00")


def test_a_deadline_just_after_nine_is_reminded_the_day_before() -> None:
    # Closes Friday 10:00: 48 h before is Wednesday 10:00, past that day's 9:00: Thursday 9:00.
    assert reminder_instant(job("2026-12-11T10:00:00+00:00"), "UTC") == ms("2026-12-10T09:00:00+00:00")


def test_due_once_between_the_reminder_and_the_deadline() -> None:
    closing = job("2026-12-11T17:00:00+03:00")
    assert deadline_notices([closing], "Africa/Nairobi", ms("2026-12-10T08:59:00+03:00")) == []
    (notice,) = deadline_notices([closing], "Africa/Nairobi", ms("2026-12-10T09:00:00+03:00"))
    assert (notice.type, notice.key, notice.urgency) == ("deadline_reminder", "deadline:j-1", "high")
    assert notice.variables["closing"] == "in 32 hours"
    assert deadline_notices([closing], "Africa/Nairobi", closing.deadline_ms) == []
    text = render(template_for("deadline_reminder").variants[0], notice.variables)
    assert text["subject"] == "Data Analyst closes in 32 hours"
    assert "at Acme matched your profile" in text["body"]


def test_the_next_reminder_is_the_earliest_to_come() -> None:
    early, late = job("2026-12-11T17:00:00+00:00", "j-1"), job("2026-12-20T17:00:00+00:00", "j-2")
    first = reminder_instant(early, "UTC")
    assert first is not None
    assert next_reminder([late, early], "UTC", 0) == first
    assert next_reminder([late, early], "UTC", first) == reminder_instant(late, "UTC")
    assert next_reminder([], "UTC", 0) is None


@given(
    deadline=st.integers(
        min_value=ms("2026-01-01T00:00:00+00:00"), max_value=ms("2030-01-01T00:00:00+00:00")
    ),
    tz=st.sampled_from(["UTC", "Africa/Nairobi", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]),
)
def test_a_reminder_is_never_early_never_too_late_and_at_nine_local(deadline: int, tz: str) -> None:
    at = reminder_instant(ClosingJob("j", "t", None, deadline), tz)
    if at is None:
        return
    assert deadline - REMINDER_LEAD_MS <= at <= deadline - MIN_LEFT_MS
    assert at - (deadline - REMINDER_LEAD_MS) < 24 * HOUR_MS + HOUR_MS  # the first 9:00 after
    local = datetime.fromtimestamp(at / 1000, tz=UTC).astimezone(ZoneInfo(tz))
    assert (local.hour, local.minute) in ((9, 0), (10, 0))  # 10:00 only across a DST gap at 9
