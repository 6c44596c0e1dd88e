"""Leaderboards with people on them (models/boards.py): group names, listings, seats that move
and hide, and where a user stands among the others (the peer comparison's percentile)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.boards import (
    DEFAULT_SEAT,
    MAX_GROUP_LEN,
    MAX_LEFT,
    MIN_BOARD_PEERS,
    STANDING_UNKNOWN,
    BoardSeat,
    InvalidGroup,
    Listing,
    Standing,
    WeekBoards,
    board_name,
    canonical_group,
    checked_group,
    group_digest,
    percent_ahead,
    standing_of,
    standing_sentence,
    week_scores,
)
from models.events import InvalidEvent, UserProfile, validate_profile
from models.gamification import UserState, apply_profile
from models.interventions import UserContext
from models.interventions.notifications import context_variables
from models.interventions.templates import TEMPLATES, render

NOW = 1_796_000_000_000


# ---------------------------------------------------------------------------------------------
# School and cohort names


def test_spellings_of_one_school_share_a_board() -> None:
    same = ["Nairobi High", "  nairobi   HIGH ", "NAIROBI\tHigh", "Ｎａｉｒｏｂｉ Ｈｉｇｈ"]  # full-width too
    assert {canonical_group(name) for name in same} == {"nairobi high"}
    assert len({group_digest("school", name) for name in same}) == 1
    assert group_digest("school", "Nairobi High") != group_digest("school", "Nairobi Highs")
    # A school and a cohort of one name are two boards.
    assert group_digest("school", "2027") != group_digest("cohort", "2027")
    with pytest.raises(ValueError, match="kind"):
        group_digest("daily", "x")


@given(st.text(max_size=80))
def test_a_digest_is_fixed_size_hex_whatever_the_name(name: str) -> None:
    digest = group_digest("school", name)
    assert len(digest) == 32 and set(digest) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x" * (MAX_GROUP_LEN + 1), "id_too_long"),
        ("Nairobi\x00High", "bad_id"),
        ("Nairobi\nHigh", "bad_id"),
        ("a\u202eb", "bad_id"),  # a right-to-left override: not printable
        ("\u200b", "bad_id"),  # a zero-width space alone: nothing visible
    ],
)
def test_hostile_group_names_are_refused(value: str, reason: str) -> None:
    with pytest.raises(InvalidGroup) as caught:
        checked_group(value, "school")
    assert caught.value.reason == reason


def test_group_names_are_trimmed_and_blank_is_none() -> None:
    assert checked_group("  Moi Girls ", "school") == "Moi Girls"
    assert checked_group("   ", "school") is None
    # Trimming happens before the bound: 64 characters with spaces around them are fine.
    assert checked_group("  " + "x" * MAX_GROUP_LEN + "  ", "cohort") == "x" * MAX_GROUP_LEN
    # Words of other keys are only names.
    assert checked_group("daily:2026-12-07", "school") == "daily:2026-12-07"


def test_the_profile_carries_school_cohort_and_visibility() -> None:
    profile = validate_profile(
        {"user_id": "u-1", "school": " Alliance ", "cohort": "2027", "leaderboard_visible": False}, NOW
    )
    assert (profile.school, profile.cohort, profile.leaderboard_visible) == ("Alliance", "2027", False)
    plain = validate_profile({"user_id": "u-1"}, NOW)
    assert (plain.school, plain.cohort, plain.leaderboard_visible) == (None, None, True)
    for field, value, reason in [
        ("school", 7, "bad_type"),
        ("school", "x" * 65, "id_too_long"),
        ("cohort", "a\x1bb", "bad_id"),
        ("leaderboard_visible", "no", "bad_type"),
        ("leaderboard_visible", 0, "bad_type"),
    ]:
        with pytest.raises(InvalidEvent) as caught:
            validate_profile({"user_id": "u-1", field: value}, NOW)
        assert caught.value.reason == reason, (field, value)


# ---------------------------------------------------------------------------------------------
# Names on public boards


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Amina", "Amina"),
        ("  Amina W. ", "Amina W."),
        ("Win at prize.example.com", None),  # reads like a link: the messages' rule
        ("https://x", None),
        ("ｗｗｗ．ｅｖｉｌ", None),  # full-width "www.evil": folded, then refused
        ("a" * 65, None),  # too long: null, never cut
        ("Amina\u202e", None),  # not printable
        ("", None),
        (None, None),
    ],
)
def test_board_names(name: str | None, shown: str | None) -> None:
    assert board_name(name) == shown


def test_a_card_shows_school_and_cohort_unless_they_read_like_links() -> None:
    card = Listing("Amina", "Alliance", "www.cohort.example", True).card()
    assert card == {"display_name": "Amina", "school": "Alliance", "cohort": None}


# ---------------------------------------------------------------------------------------------
# Seats: moving and hiding


def profile(**fields: object) -> UserProfile:
    return UserProfile("u-1", **fields)  # type: ignore[arg-type]


def test_moving_school_leaves_the_old_board_for_removal() -> None:
    state = UserState("u-1")
    assert apply_profile(state, profile(display_name="Amina", school="Alliance"))
    alliance = ("school", group_digest("school", "Alliance"))
    assert state.boards.scopes() == (None, alliance)
    assert state.boards.removals() == ()
    # Another spelling of the same school: shown as now written, still on the same board.
    assert apply_profile(state, profile(display_name="Amina", school="ALLIANCE"))
    assert state.boards.scopes() == (None, alliance) and state.boards.removals() == ()
    assert apply_profile(state, profile(display_name="Amina", school="Moi Girls"))
    moi = ("school", group_digest("school", "Moi Girls"))
    assert state.boards.scopes() == (None, moi)
    assert state.boards.removals() == (alliance,)
    # Back again: Alliance is theirs, not to be removed; Moi Girls is.
    apply_profile(state, profile(school="Alliance"))
    assert state.boards.scopes() == (None, alliance) and state.boards.removals() == (moi,)


def test_the_groups_left_are_bounded() -> None:
    seat = DEFAULT_SEAT
    for i in range(20):
        seat = seat.moved_to(Listing(school=f"school {i}"))
    assert len(seat.left) == MAX_LEFT
    assert seat.left[0] == ("school", group_digest("school", "school 18"))  # newest first


def test_a_hidden_user_belongs_on_no_board_and_comes_back_with_their_groups() -> None:
    state = UserState("u-1")
    apply_profile(state, profile(school="Alliance", cohort="2027", leaderboard_visible=False))
    groups = state.boards.listing.groups
    assert state.boards.scopes() == ()
    assert set(state.boards.removals()) == {None, *groups}
    apply_profile(state, profile(school="Alliance", cohort="2027"))
    assert state.boards.scopes() == (None, *groups) and state.boards.removals() == ()


def test_the_state_codec_keeps_the_seat_and_reads_states_without_one() -> None:
    state = UserState("u-1")
    before = state.to_dict()
    assert "boards" not in before  # nothing new in the changelog for users without a listing
    assert UserState.from_dict(before).boards == DEFAULT_SEAT  # old states decode
    apply_profile(state, profile(display_name="Amina", school="Alliance", leaderboard_visible=False))
    apply_profile(state, profile(display_name="Amina", school="Moi", leaderboard_visible=False))
    again = UserState.from_dict(state.to_dict())
    assert again.boards == state.boards and again == state


def test_the_state_keeps_only_the_name_a_board_may_show() -> None:
    state = UserState("u-1")
    apply_profile(state, profile(display_name="n" * 512))
    assert state.boards.listing.display_name is None
    digest = group_digest("school", "x")
    assert BoardSeat.from_dict({"left": [["school", digest]] * 50}).left == (("school", digest),) * MAX_LEFT
    assert BoardSeat.from_dict({"left": [["daily", digest], ["school", "}:"]]}).left == ()


# ---------------------------------------------------------------------------------------------
# Standing: the peer comparison's percentile


def test_percent_ahead_counts_the_others_strictly_below() -> None:
    scores = sorted([10 * i for i in range(25)])  # 0..240, the user's 120 among them
    assert percent_ahead(scores, 120, own=120) == 50.0  # 12 of the 24 others
    assert percent_ahead(scores, 0, own=0) == 0.0
    assert percent_ahead(scores, 240, own=240) == 100.0
    # Not listed (hidden): compared with all 25; a tie is not "ahead".
    assert percent_ahead(scores, 120) == 48.0
    # A snapshot holding the user's older score: that score is not someone they beat.
    assert percent_ahead(scores, 1000, own=120) == 100.0
    assert percent_ahead(scores, 125, own=120) == 50.0
    # Too few others: no number.
    assert percent_ahead(scores[:20], 50, own=50) is None
    assert percent_ahead([], 50) is None
    assert MIN_BOARD_PEERS == 20


def seat_of(school: str | None = None, visible: bool = True) -> BoardSeat:
    return DEFAULT_SEAT.moved_to(Listing(school=school, visible=visible))


def test_standing_prefers_the_school_when_it_is_big_enough() -> None:
    learners = [(f"a-{i}", seat_of("Alliance"), 10 * i) for i in range(30)]
    learners += [(f"o-{i}", seat_of(), 1000 + i) for i in range(30)]
    boards = week_scores(learners)
    me = seat_of("Alliance")
    # a-15 (150) beats 15 of the 29 other pupils; among everyone it would beat 15 of 59.
    assert standing_of("a-15", me, 150, boards) == Standing(51.7, "Alliance")
    small = seat_of("Moi Girls")  # a school of one: everyone's board instead
    with_small = week_scores([*learners, ("m-1", small, 150)])
    assert standing_of("m-1", small, 150, with_small) == Standing(25.0)  # 15 of the 60 others
    # A pupil with no score this week (on no board): compared at 0 with all 30.
    assert standing_of("a-new", me, None, boards) == Standing(0.0, "Alliance")
    assert standing_of("a-15", me, 150, WeekBoards()) is None


def test_hidden_learners_are_not_in_anyone_else_s_percentile() -> None:
    hidden = [(f"h-{i}", seat_of(visible=False), 1000) for i in range(50)]
    listed = [(f"l-{i}", seat_of(), i) for i in range(21)]
    boards = week_scores(hidden + listed)
    assert boards.scores[None] == list(range(21))  # only the listed
    assert "h-0" not in boards.listed
    # The hidden user still learns where they stand among the listed ones.
    assert standing_of("h-0", seat_of(visible=False), 1000, boards) == Standing(100.0)
    assert standing_of("l-10", seat_of(), 10, boards) == Standing(50.0)


@pytest.mark.parametrize(
    ("standing", "sentence"),
    [
        (Standing(62.0), "You're ahead of 62% of learners this week. Keep it going."),
        (
            Standing(12.5, "Alliance"),
            "You're ahead of 12.5% of learners at Alliance this week. One session could move you up.",
        ),
        (None, STANDING_UNKNOWN),
    ],
)  # fmt: skip
def test_standing_sentences(standing: Standing | None, sentence: str) -> None:
    assert standing_sentence(standing) == sentence


def test_the_peer_comparison_states_the_computed_percentile() -> None:
    learners = [(f"a-{i}", seat_of("Alliance"), 10 * i) for i in range(41)]
    boards = week_scores(learners)
    standing = standing_of("a-30", seat_of("Alliance"), 300, boards)  # 30 of the 40 others are below
    assert standing == Standing(75.0, "Alliance")
    template = TEMPLATES["peer_comparison"]
    ctx = UserContext("u-1", display_name="Amina", standing=standing)
    for variant in template.variants:
        body = render(variant, context_variables(ctx, NOW))["body"]
        assert "You're ahead of 75% of learners at Alliance this week." in body
    # Unknown: something true, with no number in it.
    for ctx in (UserContext("u-1"), UserContext("u-1", peer_pct=80.0)):
        for variant in template.variants:
            body = render(variant, context_variables(ctx, NOW))["body"]
            assert STANDING_UNKNOWN in body and "%" not in body and "ahead of" not in body
