"""GrowthState: its encoding, the answers it remembers and the byte budget it is held to."""

from __future__ import annotations

import orjson

from models.challenges import ChallengeProgress, new_goal
from models.digests import id_digest
from models.growth import MAX_ANSWER_BYTES, MAX_ANSWERS, STATE_BUDGET_BYTES, GrowthState
from models.referrals import COMPLETED, Referral, ReferrerBook
from models.rewards import grant
from tests.models.factories import ms

T = ms("2026-11-22T08:00:00Z")
DAY = 86_400_000


def roundtrip(state: GrowthState) -> GrowthState:
    return GrowthState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))


def test_answers_are_remembered_by_digest_within_a_count_and_byte_window() -> None:
    state = GrowthState("u-1")
    state.remember_answer("u-1:" + "r" * 120, {"ok": True})
    assert state.answer_to("u-1:" + "r" * 120) == {"ok": True}
    assert list(state.answers) == [id_digest("u-1:" + "r" * 120)]
    for i in range(2 * MAX_ANSWERS):
        state.remember_answer(f"c-{i}", {"ok": True})
    assert len(state.answers) <= MAX_ANSWERS and state.answer_to(f"c-{2 * MAX_ANSWERS - 1}") is not None
    assert state.answer_to("u-1:" + "r" * 120) is None  # the oldest went first
    fat = {"ok": True, "goal": {"goal_id": '"' * 64, "params": {"category": '"' * 64}}}
    for i in range(50):
        state.remember_answer(f"g-{i}", fat)
    assert len(orjson.dumps(state.answers)) <= MAX_ANSWER_BYTES + 64
    assert state.answer_to("g-49") == fat


def test_the_encoding_round_trips_and_names_each_goal_once() -> None:
    state = GrowthState("u-1")
    goal = new_goal("g-" + '"' * 60, "practice_frequency", 3, T + DAY, T)
    state.goals[goal.goal_id] = goal
    state.keep_challenge(ChallengeProgress("2026-11-22", 3, 1, None, [id_digest("e-1")]))
    grant(state.ledger, "g-1", 100, "bonus", T)
    state.remember_answer("c-1", {"ok": True})
    encoded = orjson.dumps(state.to_dict())
    assert encoded.count(orjson.dumps(goal.goal_id)) == 1
    assert roundtrip(state) == state
    assert state.growth_view()["goals"] == {goal.goal_id: goal.to_dict()}  # the API's shape


def test_a_version_1_state_is_read_with_its_ids_digested() -> None:
    goal = new_goal("g-1", "practice_frequency", 3, T + DAY, T)
    goal.event_ids = ["e-1"]
    v1 = {
        "v": 1,
        "user_id": "u-1",
        "ledger": GrowthState("u-1").ledger.to_dict() | {"v": 1},
        "book": None,
        "referred_by": None,
        "challenges": {"2026-11-22": ChallengeProgress("2026-11-22", 3, 1, None, ["e-2"]).to_dict()},
        "goals": {"g-1": goal.to_dict()},
        "answers": {"u-1:r-1": {"ok": True}},
    }
    state = GrowthState.from_dict(v1)
    assert state.answer_to("u-1:r-1") == {"ok": True}
    assert state.goals["g-1"].event_ids == [id_digest("e-1")]
    assert state.challenges["2026-11-22"].event_ids == [id_digest("e-2")]
    assert roundtrip(state) == state


def test_fit_budget_trims_only_what_no_rule_needs() -> None:
    """The backstop: a state made fat behind the caps' back is trimmed to the budget, oldest
    memories first, while lots, live goals and open referrals stay."""
    state = GrowthState("u-1")
    for i in range(40):
        state.answers[f"k{i}"] = {"ok": True, "pad": "x" * 2000}
    grant(state.ledger, "g-1", 100, "bonus", T)
    live = new_goal("live", "practice_frequency", 3, T + DAY, T)
    state.goals["live"] = live
    book = ReferrerBook("u-1", "CODE0000")
    for i in range(200):
        book.referrals[f"r{i}-" + "x" * 120] = Referral("u-1", f"r{i}-" + "x" * 120, T, COMPLETED, T + 1)
    book.referrals["open"] = Referral("u-1", "open", T)
    state.book = book
    assert state.encoded_size() > 2 * STATE_BUDGET_BYTES

    assert state.fit_budget() <= STATE_BUDGET_BYTES == 64 * 1024
    assert state.encoded_size() <= STATE_BUDGET_BYTES
    assert state.ledger.lots and state.goals["live"] is live and "open" in book.referrals
    assert book.stats(T)["claimed"] == 201  # folded into counts, not lost
    small = GrowthState("u-2")
    assert small.fit_budget() == small.encoded_size()  # nothing to do under budget
