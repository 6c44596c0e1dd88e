"""The growth processor without Faust: dict stores, records as Kafka gives them, and a relay that
plays the broker between the referred user's side and the referrer's."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import orjson
import pytest

from infra import topics
from infra.settings import DEFAULT_RULES
from models.challenges import MAX_CATEGORY_LEN, challenge_for, completion_props
from models.events import BehaviorEvent
from models.gamification import FREEZE_BOUGHT, UserState
from models.growth import STATE_BUDGET_BYTES, GrowthState
from models.rewards import MAX_BALANCE, MAX_GRANT, MAX_LOTS, MAX_REASON_BYTES, balance
from models.rules import Rules
from streams.growth import GrowthOutcome, GrowthProcessor
from streams.records import Record, owner_partition

NOW = 1_795_000_000_000  # 2026-11-18
DAY = 86_400_000
PARTS = 4
_offsets = itertools.count()


class Store(dict[str, GrowthState]):
    def put(self, key: str, state: GrowthState) -> None:
        self[key] = state


@pytest.fixture(scope="module")
def rules() -> Rules:
    return Rules.from_toml(DEFAULT_RULES.read_text())


def command(user: str, type_: str, command_id: str, ts: int = NOW, **fields: Any) -> Record:
    value = {"command_id": command_id, "type": type_, "user_id": user, "ts": ts, **fields}
    return Record(
        topics.USER_COMMANDS,
        owner_partition(user.encode(), PARTS),
        next(_offsets),
        user.encode(),
        orjson.dumps(value),
        ts,
    )


def relay(out: GrowthOutcome) -> list[Record]:
    """What the broker would deliver to the referrers' partitions."""
    return [
        Record(
            topics.REFERRALS,
            owner_partition(r.encode(), PARTS),
            next(_offsets),
            r.encode(),
            orjson.dumps(m),
            NOW,
        )
        for r, m in out.referral_messages
    ]


def event(
    user: str, etype: str, ts: int, event_id: str | None = None, **props: Any
) -> tuple[BehaviorEvent, UserState]:
    ev = BehaviorEvent(event_id or f"e-{next(_offsets)}", user, etype, ts, None, None, None, props)
    return ev, UserState(user_id=user)


def test_a_referral_completes_once_and_credits_the_referrer(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    proc.process(
        [command("rita", "referral_generate", "c1", code="ABCD2345", device_id="d-rita", ip="1.1.1.1")],
        [],
        store,
    )
    claim = proc.process(
        [
            command(
                "uma",
                "referral_claim",
                "c2",
                referrer_id="rita",
                device_id="d-uma",
                ip="2.2.2.2",
                ip_claims_24h=1,
            )
        ],
        [],
        store,
    )
    assert claim.answers == [("c2", {"ok": True, "code": "claimed", "referrer_id": "rita"})]
    proc.process(relay(claim), [], store)
    assert store["rita"].book is not None and store["rita"].book.referrals["uma"].status == "pending"

    lesson = proc.process([], [event("uma", "lesson_complete", NOW + DAY)], store)
    done = proc.process(relay(lesson), [], store)
    assert balance(store["rita"].ledger, NOW + DAY) == 200
    assert [a["event_id"] for a in done.actions] == ["referral:uma"]
    # A second lesson sends nothing; a redelivered completion pays nothing more.
    assert relay(proc.process([], [event("uma", "lesson_complete", NOW + 2 * DAY)], store)) == []
    again = proc.process(relay(lesson), [], store)
    assert balance(store["rita"].ledger, NOW + DAY) == 200 and again.pushes == []


def test_a_claim_sharing_the_referrers_device_is_held_not_dropped(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    proc.process([command("rita", "referral_generate", "c1", code="ABCD2345", device_id="d-1")], [], store)
    claim = proc.process(
        [command("sam", "referral_claim", "c2", referrer_id="rita", device_id="d-1")], [], store
    )
    proc.process(relay(claim), [], store)
    ref = store["rita"].book.referrals["sam"]  # type: ignore[union-attr]
    assert ref.status == "held" and "shared_device" in ref.flags
    # Completing while held pays nothing until an admin approves.
    proc.process(relay(proc.process([], [event("sam", "lesson_complete", NOW + 1000)], store)), [], store)
    assert balance(store["rita"].ledger, NOW + 2000) == 0
    review = proc.process(
        [command("rita", "referral_review", "c3", referred_id="sam", approve=True)], [], store
    )
    assert review.answers[0][1] == {"ok": True, "status": "completed"}
    assert balance(store["rita"].ledger, NOW + 2000) == 200


def test_users_are_referred_once_and_never_by_themselves(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    proc.process([command("uma", "referral_claim", "c1", referrer_id="rita")], [], store)
    second = proc.process([command("uma", "referral_claim", "c2", referrer_id="ravi")], [], store)
    assert second.answers[0][1]["code"] == "already_referred"
    own = proc.process([command("ravi", "referral_claim", "c3", referrer_id="ravi")], [], store)
    assert own.answers[0][1] == {"ok": False, "code": "self_referral"}


def test_racing_redemptions_spend_a_balance_once_and_retries_answer_the_same(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    proc.process([command("ann", "grant", "g1", grant_id="g1", amount=400, reason="welcome")], [], store)
    out = proc.process(
        [
            command("ann", "redeem", "ann:r1", perk_id="discount_10"),
            command("ann", "redeem", "ann:r2", perk_id="discount_10"),
        ],
        [],
        store,
    )
    codes = [answer["code"] for _, answer in out.answers]
    assert codes == ["ok", "insufficient_balance"]
    assert balance(store["ann"].ledger, NOW) == 100
    retry = proc.process([command("ann", "redeem", "ann:r1", perk_id="discount_10")], [], store)
    assert retry.answers[0][1]["code"] == "ok" and retry.answers[0][1]["duplicate"] is True
    assert balance(store["ann"].ledger, NOW) == 100 and retry.redemptions == []


def test_the_daily_challenge_completes_once_and_earns_its_action(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    day = date(2026, 11, 18)
    challenge = challenge_for(day)
    minutes = challenge.params.get("minutes", 0)
    category = challenge.params.get("category", "behavioral")
    etype = "interview_session_complete" if challenge.template == "category_focus" else "lesson_complete"
    actions: list[str] = []
    completions: list[dict[str, Any]] = []
    for i in range(10):
        out = proc.process(
            [],
            [
                event(
                    "kim",
                    etype,
                    NOW + i * 1000,
                    f"k{i}",
                    category=category,
                    duration_s=max(60, minutes * 60),
                    score=80,  # passes a variant's minimum score (category focus asks 70)
                )
            ],
            store,
        )
        actions += [a["event_id"] for a in out.actions]
        completions += [a for a in out.actions if a["type"] == "daily_challenge_complete"]
    assert actions == [f"challenge:{challenge.id}"]
    # The completion carries the variant's own reward, which the engagement fold pays.
    assert [c["props"] for c in completions] == [completion_props(challenge)]
    assert completions[0]["props"]["reward_xp"] == challenge.xp
    progress = store["kim"].challenge_progress(challenge.id)
    assert progress is not None and progress.completed


def test_goals_are_created_by_command_validated_and_completed_once(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    bad = proc.process(
        [command("lee", "goal_create", "lee:g0", kind="nonsense", target=3, deadline_ms=NOW + DAY)], [], store
    )
    assert bad.answers[0][1]["code"] == "invalid_goal"
    made = proc.process(
        [
            command(
                "lee", "goal_create", "lee:g1", kind="practice_frequency", target=2, deadline_ms=NOW + 5 * DAY
            )
        ],
        [],
        store,
    )
    assert made.answers[0][1]["ok"] is True
    achieved: list[str] = []
    for i in range(4):
        out = proc.process([], [event("lee", "lesson_complete", NOW + 1000 * (i + 1))], store)
        achieved += [a["event_id"] for a in out.actions if a["type"] == "goal_achieved"]
    assert achieved == ["goal:g1"]


def test_challenge_outcomes_do_not_depend_on_arrival_order_across_days(rules: Rules) -> None:
    days = [NOW - 2 * DAY, NOW - DAY, NOW]
    events = [
        event("ola", "lesson_complete", d + i * 60_000, f"o{j}-{i}", duration_s=3600)
        for j, d in enumerate(days)
        for i in range(5)
    ]

    def completed(order: list[tuple[BehaviorEvent, UserState]]) -> list[str]:
        proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
        ids: list[str] = []
        for e in order:
            ids += [a["event_id"] for a in proc.process([], [e], store).actions]
        return sorted(ids)

    assert completed(events) == completed(list(reversed(events)))
    assert len(completed(events)) >= 2  # most templates complete with 5 hour-long lessons


def test_events_that_advance_nothing_write_no_state(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    proc.process([], [event("vic", "job_view", NOW)], store)
    assert "vic" not in store


def test_lapsed_goals_expire_in_the_worker_and_free_their_place(rules: Rules) -> None:
    """Ten goals whose deadline passed used to count as active forever (the eleventh answered
    too_many_goals for good); the owner of the state expires them on the user's next command."""
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    for i in range(10):
        made = proc.process(
            [
                command(
                    "gia",
                    "goal_create",
                    f"gia:goal:g{i}",
                    NOW,
                    kind="practice_frequency",
                    target=5,
                    deadline_ms=NOW + DAY,
                )
            ],
            [],
            store,
        )
        assert made.answers[0][1]["ok"] is True
    full = proc.process(
        [
            command(
                "gia",
                "goal_create",
                "gia:goal:g10",
                NOW + 1,
                kind="practice_frequency",
                target=5,
                deadline_ms=NOW + DAY,
            )
        ],
        [],
        store,
    )
    assert full.answers[0][1]["code"] == "too_many_goals"  # ten live goals: the cap is right
    later = NOW + 2 * DAY
    again = proc.process(
        [
            command(
                "gia",
                "goal_create",
                "gia:goal:g11",
                later,
                kind="practice_frequency",
                target=5,
                deadline_ms=later + DAY,
            )
        ],
        [],
        store,
    )
    assert again.answers[0][1]["ok"] is True
    statuses = sorted(g.status for g in store["gia"].goals.values())
    assert statuses == ["active"] + ["expired"] * 10
    # An event settles goals too, and the state it writes says so.
    proc.process([], [event("gia", "job_view", later + 2 * DAY)], store)
    assert all(g.status == "expired" for g in store["gia"].goals.values())


def test_a_retried_goal_request_answers_the_goal_it_made(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    create = command(
        "kai", "goal_create", "kai:goal:g-7", NOW, kind="practice_frequency", target=3, deadline_ms=NOW + DAY
    )
    first = proc.process([create], [], store).answers[0][1]
    proc.process([], [event("kai", "lesson_complete", NOW + 1000)], store)
    store["kai"].answers.clear()  # the answer is forgotten (a short memory), the goal is not
    retry = proc.process([create], [], store).answers[0][1]
    assert retry["goal"]["goal_id"] == first["goal"]["goal_id"] == "g-7"
    assert retry["goal"]["progress"] == 1  # the same goal, its progress kept


def test_a_forged_grant_is_bounded_whoever_sent_it(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    out = proc.process(
        [command("max", "grant", "max:grant:g1", grant_id="g1", amount=1_000_000, reason="forged")], [], store
    )
    assert out.dead_letters == []
    assert out.answers[0][1] == {
        "ok": False,
        "code": "grant_too_large",
        "message": "a grant is at most 10000 credits",
    }
    assert balance(store["max"].ledger, NOW) == 0
    grants = [
        command("max", "grant", f"max:grant:g{i}", grant_id=f"g{i}", amount=MAX_GRANT, reason="bonus")
        for i in range(2, 2 + MAX_BALANCE // MAX_GRANT + 1)
    ]
    answers = [a for _, a in proc.process(grants, [], store).answers]
    assert [a["ok"] for a in answers] == [True] * (MAX_BALANCE // MAX_GRANT) + [False]
    assert answers[-1]["code"] == "balance_cap"
    assert balance(store["max"].ledger, NOW) == MAX_BALANCE


def test_commands_and_messages_with_unbounded_fields_are_refused_or_trimmed(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS, clock_ms=lambda: NOW), Store()
    out = proc.process(
        [
            command("ned", "redeem", "ned:\x01" * 3, perk_id="streak_freeze"),
            command("ned", "redeem", "ned:r1", NOW + 10 * DAY, perk_id="streak_freeze"),  # the future
        ],
        [],
        store,
    )
    assert [d.reason for d in out.dead_letters] == ["bad_id", "ts_in_future"]
    claim = proc.process(
        [
            command(
                "ned",
                "referral_claim",
                "ned:c",
                referrer_id="rita",
                device_id="d" * 500,
                ip="x" * 500,
                email=7,
            )
        ],
        [],
        store,
    )
    (_, message) = claim.referral_messages[0]
    assert (message["device_id"], message["ip"], message["email"]) == (None, None, None)


def test_the_worker_records_the_referral_code_it_derives_not_the_one_it_is_told(rules: Rules) -> None:
    code_of = {"rita": "RITA2345", "sam": "SAM23456"}.__getitem__
    proc, store = GrowthProcessor(rules, lambda t: PARTS, code_of=code_of), Store()
    forged = proc.process([command("sam", "referral_generate", "sam:c1", code="RITA2345")], [], store)
    assert forged.answers[0][1]["code"] == "bad_code" and "sam" not in forged.changed_books
    assert store["sam"].book is None
    proc.process([command("rita", "referral_generate", "rita:c1", code="RITA2345")], [], store)
    assert store["rita"].book is not None and store["rita"].book.code == "RITA2345"
    # A referrer's book made by an incoming claim knows the code too, for the serving view.
    claim = proc.process([command("uma", "referral_claim", "uma:c1", referrer_id="sam")], [], store)
    proc.process(relay(claim), [], store)
    assert store["sam"].book is not None and store["sam"].book.code == "SAM23456"


def test_a_redemption_names_itself_for_its_fulfilment(rules: Rules) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS), Store()
    proc.process([command("ann", "grant", "g1", grant_id="g1", amount=400, reason="welcome")], [], store)
    out = proc.process([command("ann", "redeem", "ann:r1", perk_id="discount_10")], [], store)
    assert out.redemptions == [
        {"redemption_id": "ann:r1", "user_id": "ann", "perk_id": "discount_10", "cost": 300, "at_ms": NOW}
    ]


# -- bounded state ------------------------------------------------------------------------------


def _fat(tag: str, n: int, size: int = 128) -> str:
    """A distinct printable id of ``size`` UTF-8 bytes that doubles in JSON: ``"`` escapes to two
    bytes, the worst a printable id can do (control characters are refused at the door)."""
    head = f"{tag}{n}"
    return head + '"' * (size - len(head))


def _ipv6(n: int) -> str:
    return f"fd00:{n % 65536:x}:ffff:ffff:ffff:ffff:ffff:ffff"  # the longest canonical form


def _referral(victim: str, message: dict[str, Any]) -> Record:
    key = victim.encode()
    return Record(
        topics.REFERRALS,
        owner_partition(key, PARTS),
        next(_offsets),
        key,
        orjson.dumps(message),
        message["at_ms"],
    )


def test_growth_state_stays_under_its_byte_budget_under_adversarial_input(
    rules: Rules, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of commands with 128-byte ids, thousands of referrals, hundreds of goals and
    events, every string at its longest and JSON-escaping: the JSON the table stores stays under
    STATE_BUDGET_BYTES (docs/growth.md), and the state still does its job."""
    before_guard: list[int] = []
    fit = GrowthState.fit_budget

    def recording_fit(self: GrowthState, budget: int = STATE_BUDGET_BYTES) -> int:
        before_guard.append(self.encoded_size())
        return fit(self, budget)

    monkeypatch.setattr(GrowthState, "fit_budget", recording_fit)
    proc = GrowthProcessor(rules, lambda t: PARTS, clock_ms=lambda: NOW + 400 * DAY)
    store = Store()
    victim = _fat("u", 0)
    sizes: list[int] = []

    def run(records: list[Record], events: list[tuple[BehaviorEvent, UserState]] | None = None) -> None:
        out = proc.process(records, events or [], store)
        assert out.dead_letters == [], out.dead_letters[:1]
        if victim in store:
            sizes.append(store[victim].encoded_size())

    for i in range(40):  # the referrer's own devices and IPs, more than are remembered
        device = _fat("d", i)
        run(
            [
                command(
                    victim,
                    "referral_generate",
                    _fat("cg", i, 250),
                    code="ABCD2345",
                    device_id=device,
                    ip=_ipv6(i),
                )
            ]
        )
    # Grants (expiring far apart, so lots must merge) and redemptions, longest ids and reasons.
    for i in range(1500):
        ts = NOW + i * 60_000
        grant_cmd = command(
            victim,
            "grant",
            _fat("cmd-g", i, 250),
            ts,
            grant_id=_fat("g", i),
            amount=500,
            reason='"' * MAX_REASON_BYTES,
            expires_at_ms=ts + (10 + i % 80) * DAY,
        )
        perk = "discount_10" if i % 2 else "nope"
        run([grant_cmd, command(victim, "redeem", _fat("r", i), ts, perk_id=perk)])
    # Claims from thousands of referred users with every signal at its longest; a third complete.
    for i in range(3000):
        referred, at = _fat("ref", i), NOW + i * 1000
        claim = {
            "type": "claim",
            "referrer_id": victim,
            "referred_id": referred,
            "at_ms": at,
            "device_id": _fat("dev", i),
            "ip": _ipv6(i),
            "email": "x@" + "a" * 48 + ".mailinator.com",
            "ip_claims_24h": i,
            "loop": True,
        }
        done = {"type": "complete", "referrer_id": victim, "referred_id": referred, "at_ms": at + 1}
        run([_referral(victim, claim), *([_referral(victim, done)] if i % 3 == 0 else [])])
    run([command(victim, "referral_claim", _fat("cc", 0, 250), referrer_id=_fat("boss", 0), ip=_ipv6(1))])
    # Hundreds of goals with the longest ids and categories, many lapsing, some completing.
    category = "\\" * MAX_CATEGORY_LEN
    for i in range(600):
        ts = NOW + i * DAY // 4
        mastery = command(
            victim,
            "goal_create",
            f"{victim}:goal:{_fat('G', i, 64)}",
            ts,
            kind="category_mastery",
            target=1000,
            deadline_ms=ts + (1 + i % 5) * DAY,
            params={"category": category},
        )
        practice = command(
            victim,
            "goal_create",
            f"{victim}:goal:{_fat('P', i, 64)}",
            ts,
            kind="practice_frequency",
            target=2 + i % 3,
            deadline_ms=ts + 30 * DAY,
        )
        scored = [
            event(
                victim, "interview_session_complete", ts + j, _fat(f"e{i}-", j), category=category, score=95
            )
            for j in range(3)
        ]
        run([mastery, practice], scored)
    # Time challenges over many days, one second each, with the longest event ids.
    for i in range(2000):
        ts = NOW + 200 * DAY + (i % 9) * DAY + i * 1000
        run([], [event(victim, "lesson_complete", ts, _fat("t", i), duration_s=1)])

    state = store[victim]
    assert max(sizes) <= STATE_BUDGET_BYTES
    assert state.encoded_size() == len(orjson.dumps(state.to_dict()))
    # It stayed bounded because every part is capped, not because anything broke: the state still
    # works (the book counts every claim, credits were paid, goals were created and expired).
    assert state.book is not None and state.book.stats(NOW + 400 * DAY)["claimed"] == 3000
    assert state.ledger.granted > 0 and len(state.ledger.lots) <= MAX_LOTS
    assert sum(g.status == "expired" for g in state.goals.values()) > 0
    print(f"growth state: peak {max(sizes)} bytes, {max(before_guard)} before the guard")


def test_a_streak_freeze_is_fulfilled_on_the_stream_once_and_other_perks_by_the_platform(
    rules: Rules,
) -> None:
    proc, store = GrowthProcessor(rules, lambda t: PARTS, clock_ms=lambda: NOW), Store()
    proc.process([command("fay", "grant", "g1", grant_id="g1", amount=1000, reason="welcome")], [], store)
    out = proc.process(
        [
            command("fay", "redeem", "fay:r1", perk_id="streak_freeze"),
            command("fay", "redeem", "fay:r2", perk_id="discount_10"),
        ],
        [],
        store,
    )
    (freeze,) = [a for a in out.actions if a["type"] == FREEZE_BOUGHT]
    assert freeze["user_id"] == "fay" and freeze["event_id"].startswith("freeze:") and freeze["ts"] == NOW
    assert [r["perk_id"] for r in out.redemptions] == ["discount_10"]  # the platform fulfils that one
    retry = proc.process([command("fay", "redeem", "fay:r1", perk_id="streak_freeze")], [], store)
    assert [a for a in retry.actions if a["type"] == FREEZE_BOUGHT] == []  # a retry buys nothing more
