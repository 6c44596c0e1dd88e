"""Job match news in a daily or weekly digest (models/match_digests.py, models/nudges.py):
the inbox at once, the other channels once a day or a week at 9:00 on the user's clock."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from models.career_notices import MatchNews, match_notices
from models.match_digests import MAX_HELD, due_at, from_rows, hold, to_rows
from models.nudges import digest_due, next_look, notify
from models.risk_state import RiskSettings, RiskState
from tests.models.test_nudges import NAIROBI, CountsSpy, context, facts_for, ms, run

CHANNELS = {"channels": ["IN_APP", "EMAIL", "PUSH"]}


def match(job: str, at: str, score: int = 95, location: str | None = "Nairobi") -> MatchNews:
    return MatchNews("u-1", job, f"Analyst {job}", "Acme", score, score >= 90, ms(at), location)


def prefs(digest: str) -> dict[str, Any]:
    return {**CHANNELS, "digest": digest}


def channels_of(out: Any) -> list[tuple[str, tuple[str, ...]]]:
    return [(n.type, n.channels) for n in out.delivered]


def test_without_a_digest_a_perfect_match_is_news_at_once_everywhere() -> None:
    state, ctx = RiskState("u-1"), context(tz=NAIROBI, prefs=prefs("off"))
    out = notify(state, ctx, match_notices([match("j-1", "2026-03-10T10:00:00Z")]), CountsSpy())
    assert channels_of(out) == [("job_match", ("IN_APP", "EMAIL", "PUSH"))]
    assert state.digest == []


def test_a_daily_reader_gets_the_inbox_now_and_one_digest_at_nine_next_morning() -> None:
    state, ctx = RiskState("u-1"), context(tz=NAIROBI, prefs=prefs("daily"))
    # 13:00 and 15:00 in Nairobi (UTC+3): a perfect match, then a burst of three.
    first = notify(state, ctx, match_notices([match("j-1", "2026-03-10T10:00:00Z")]), CountsSpy())
    burst = [match(f"j-{i}", "2026-03-10T12:00:00Z", 70 + i) for i in (2, 3, 4)]
    second = notify(state, ctx, match_notices(burst), CountsSpy())
    assert channels_of(first) + channels_of(second) == [
        ("job_match", ("IN_APP",)),
        ("match_digest", ("IN_APP",)),
    ]
    assert [m.job_id for m in state.digest] == ["j-1", "j-2", "j-3", "j-4"]
    nine = ms("2026-03-11T09:00:00+03:00")
    assert digest_due(state, ctx) == nine
    assert next_look(state, ctx, RiskSettings(), []) == nine

    early = run(state, ctx, None, nine - 60_000, facts=facts_for(ctx))
    assert [n.type for n in early.delivered] == [] and len(state.digest) == 4
    due = run(state, ctx, None, nine, facts=facts_for(ctx))
    (digest,) = due.delivered
    # The inbox has had each match since it came: the digest goes to the other channels.
    assert (digest.type, digest.channels) == ("match_digest", ("EMAIL", "PUSH"))
    assert digest.subject == "4 new job matches in Nairobi" and "Analyst j-1 at Acme first" in digest.body
    assert state.digest == [] and digest_due(state, ctx) is None
    again = run(state, ctx, None, nine + 3_600_000, facts=facts_for(ctx))
    assert again.delivered == []


def test_a_weekly_digest_waits_for_monday_and_one_match_is_told_as_a_match() -> None:
    state, ctx = RiskState("u-1"), context(tz=NAIROBI, prefs=prefs("weekly"))
    notify(state, ctx, match_notices([match("j-9", "2026-03-11T10:00:00Z")]), CountsSpy())  # a Wednesday
    monday = ms("2026-03-16T09:00:00+03:00")
    assert digest_due(state, ctx) == monday
    (told,) = run(state, ctx, None, monday, facts=facts_for(ctx)).delivered
    assert told.type == "job_match" and "EMAIL" in told.channels and "Analyst j-9" in told.subject


def test_turning_the_digest_off_sends_what_was_held_at_once() -> None:
    state = RiskState("u-1")
    notify(
        state,
        context(tz=NAIROBI, prefs=prefs("daily")),
        match_notices([match("j-1", "2026-03-10T10:00:00Z")]),
        CountsSpy(),
    )
    ctx = context(tz=NAIROBI, prefs=prefs("off"))
    assert digest_due(state, ctx) == ms("2026-03-10T10:00:00Z")
    (told,) = run(state, ctx, None, ms("2026-03-10T11:00:00Z"), facts=facts_for(ctx)).delivered
    assert told.type == "job_match" and state.digest == []


def test_news_the_inbox_already_had_is_not_held_again() -> None:
    state, ctx = RiskState("u-1"), context(tz=NAIROBI, prefs=prefs("daily"))
    news = match_notices([match("j-1", "2026-03-10T10:00:00Z")])
    notify(state, ctx, news, CountsSpy())
    nine = ms("2026-03-11T09:00:00+03:00")
    run(state, ctx, None, nine, facts=facts_for(ctx))  # day 1's digest tells j-1
    again = notify(state, ctx, news, CountsSpy())  # the same news again (a replayed posting)
    assert again.delivered == [] and state.digest == [] and digest_due(state, ctx) is None


def test_a_digest_reader_with_the_inbox_only_gets_no_second_copy() -> None:
    state, ctx = RiskState("u-1"), context(tz=NAIROBI, prefs={"channels": ["IN_APP"], "digest": "daily"})
    notify(state, ctx, match_notices([match("j-1", "2026-03-10T10:00:00Z")]), CountsSpy())
    out = run(state, ctx, None, ms("2026-03-11T09:00:00+03:00"), facts=facts_for(ctx))
    assert out.delivered == [] and state.digest == []


def test_status_news_is_never_held() -> None:
    from models.career_notices import StatusNews, status_notice

    state, ctx = RiskState("u-1"), context(tz=NAIROBI, prefs=prefs("weekly"))
    notice = status_notice(StatusNews("u-1", "a-1", "offer", ms("2026-03-10T10:00:00Z"), "Analyst", "Acme"))
    assert notice is not None
    out = notify(state, ctx, [notice], CountsSpy())
    assert channels_of(out) == [("application_update", ("IN_APP", "EMAIL", "PUSH"))] and state.digest == []


def test_held_matches_are_one_per_job_and_the_best_kept() -> None:
    news = [match(f"j-{i}", "2026-03-10T10:00:00Z", score=50 + i) for i in range(MAX_HELD + 10)]
    held = hold([], match_notices(news))
    assert len(held) == MAX_HELD and min(m.match_score for m in held) == 60
    again = hold(held, match_notices([match("j-39", "2026-03-10T11:00:00Z", 99)] * 3))
    assert len(again) == MAX_HELD and [m.match_score for m in again if m.job_id == "j-39"] == [99]


def test_held_matches_survive_the_state_round_trip_and_garbage_is_dropped() -> None:
    state = RiskState(
        "u-1", digest=[match("j-1", "2026-03-10T10:00:00Z"), match("j-2", "2026-03-10T11:00:00Z", 80, None)]
    )
    assert RiskState.from_dict(state.to_dict()).digest == state.digest
    assert from_rows([["j", "t", None, "x", True, 1, None], "no", [1, 2]], "u-1") == []
    assert from_rows(to_rows(state.digest), "u-1") == state.digest
    assert "digest" not in RiskState("u-2").to_dict()


@given(
    at=st.integers(min_value=ms("2026-01-01T00:00:00Z"), max_value=ms("2028-01-01T00:00:00Z")),
    tz=st.sampled_from(["UTC", NAIROBI, "America/New_York", "Pacific/Chatham"]),
    weekly=st.booleans(),
)
def test_a_digest_is_due_after_its_first_match_within_a_week_at_nine(at: int, tz: str, weekly: bool) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    news = MatchNews("u-1", "j", "t", None, 95, True, at)
    due = due_at([news], tz, "weekly" if weekly else "daily")
    assert due is not None and at < due <= at + (8 if weekly else 2) * 86_400_000
    local = datetime.fromtimestamp(due / 1000, tz=UTC).astimezone(ZoneInfo(tz))
    assert (local.hour, local.minute) in ((9, 0), (10, 0))  # 10:00 only across a DST gap
    if weekly:
        assert local.weekday() == 0
