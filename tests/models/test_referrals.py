from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from models.referrals import (
    COMPLETED,
    COMPLETION_WINDOW_MS,
    CROCKFORD_ALPHABET,
    DISPOSABLE_EMAIL_DOMAINS,
    EXPIRED,
    HELD,
    IP_VELOCITY_MAX,
    MAX_FINISHED_REFERRALS,
    MAX_KNOWN_SIGNALS,
    MAX_OPEN_REFERRALS,
    PENDING,
    REFERRER_BACKLOG,
    REFERRER_VELOCITY_MAX,
    REJECTED,
    ClaimSignals,
    Referral,
    ReferrerBook,
    ReferrerFacts,
    Signals,
    email_domain,
    fraud_flags,
    growth_analytics,
    is_disposable,
    new_referral,
    normalize_code,
    normalize_ip,
    referral_code,
)
from tests.models.factories import ms

HOUR = 3_600_000
DAY = 24 * HOUR
NOW = ms("2026-11-30T12:00:00Z")
SECRET = b"test-secret"


def claim(
    referrer: str = "alice",
    referred: str = "bob",
    device: str | None = "dev-bob",
    ip: str | None = "10.0.0.2",
    email: str | None = "bob@gmail.com",
    ip_claims: int = 1,
) -> ClaimSignals:
    return ClaimSignals(referrer, referred, device, ip, email, ip_claims)


def facts(
    devices: frozenset[str] = frozenset({"dev-alice"}),
    ips: frozenset[str] = frozenset({"10.0.0.1"}),
    completed: int = 0,
    referred_by: str | None = None,
    referrals_of_referred: frozenset[str] = frozenset(),
) -> ReferrerFacts:
    return ReferrerFacts(devices, ips, completed, referred_by, referrals_of_referred)


def book_with(*referrals: Referral, referrer: str = "alice") -> ReferrerBook:
    book = ReferrerBook(referrer, referral_code(SECRET, referrer))
    for ref in referrals:
        assert book.record_claim(ref)
    return book


# --- codes --------------------------------------------------------------------------------------


def test_referral_code_is_deterministic_hmac_in_crockford_base32() -> None:
    digest = hmac.new(SECRET, b"alice", hashlib.sha256).digest()
    bits = "".join(f"{byte:08b}" for byte in digest)[:40]
    expected = "".join(CROCKFORD_ALPHABET[int(bits[i : i + 5], 2)] for i in range(0, 40, 5))
    assert referral_code(SECRET, "alice") == expected == referral_code(SECRET, "alice")
    assert referral_code(SECRET, "bob") != expected
    assert referral_code(b"other-secret", "alice") != expected


def test_codes_avoid_ambiguous_characters() -> None:
    codes = {referral_code(SECRET, f"user-{i}") for i in range(500)}
    assert len(codes) == 500
    assert all(len(code) == 8 and not set(code) & set("ILOU") for code in codes)
    assert set("".join(codes)) == set(CROCKFORD_ALPHABET)  # the whole alphabet is used


def test_referral_code_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        referral_code(b"", "alice")


def test_normalize_code_forgives_what_people_type() -> None:
    assert normalize_code("ab01-xyz9") == "AB01XYZ9"
    assert normalize_code("abOi lyz9") == "AB011YZ9"
    assert normalize_code("AB01XYZ") is None  # too short
    assert normalize_code("AB01XYZU") is None  # U is not in the alphabet


# --- fraud flags -------------------------------------------------------------------------------


def test_a_clean_claim_has_no_flags() -> None:
    assert fraud_flags(claim(), facts(), NOW) == []


@pytest.mark.parametrize(
    ("signals", "referrer", "flag"),
    [
        (claim(referred="alice"), facts(), "self_referral"),
        (claim(device="dev-alice"), facts(), "shared_device"),
        (claim(ip="10.0.0.1"), facts(), "shared_ip"),
        (claim(), facts(completed=REFERRER_VELOCITY_MAX + 1), "referrer_velocity"),
        (claim(ip_claims=IP_VELOCITY_MAX + 1), facts(), "ip_velocity"),
        (claim(), facts(referred_by="bob"), "referral_loop"),
        (claim(), facts(referrals_of_referred=frozenset({"alice"})), "referral_loop"),
        (claim(email="x@mailinator.com"), facts(), "disposable_email"),
        (claim(email="X@Sub.YopMail.com."), facts(), "disposable_email"),
    ],
)
def test_each_flag(signals: ClaimSignals, referrer: ReferrerFacts, flag: str) -> None:
    assert fraud_flags(signals, referrer, NOW) == [flag]


def test_velocity_thresholds_are_strictly_more_than() -> None:
    assert REFERRER_VELOCITY_MAX == 10 and IP_VELOCITY_MAX == 5
    assert fraud_flags(claim(), facts(completed=10), NOW) == []
    assert fraud_flags(claim(), facts(completed=11), NOW) == ["referrer_velocity"]
    assert fraud_flags(claim(ip_claims=5), facts(), NOW) == []
    assert fraud_flags(claim(ip_claims=6), facts(), NOW) == ["ip_velocity"]


def test_missing_signals_and_unrelated_loops_do_not_flag() -> None:
    signals = claim(device=None, ip=None, email=None)
    referrer = facts(
        devices=frozenset({""}),
        ips=frozenset({""}),
        referred_by="carol",
        referrals_of_referred=frozenset({"dan"}),
    )
    assert fraud_flags(signals, referrer, NOW) == []


def test_flags_come_in_a_fixed_order() -> None:
    signals = claim(referred="alice", device="dev-alice", ip="10.0.0.1", email="a@tempmail.com", ip_claims=9)
    referrer = facts(completed=50, referred_by="alice")
    assert fraud_flags(signals, referrer, NOW) == [
        "self_referral",
        "shared_device",
        "shared_ip",
        "referrer_velocity",
        "ip_velocity",
        "referral_loop",
        "disposable_email",
    ]


def test_disposable_domains() -> None:
    assert len(DISPOSABLE_EMAIL_DOMAINS) >= 30
    assert {"mailinator.com", "guerrillamail.com", "10minutemail.com", "tempmail.com", "yopmail.com"} <= (
        DISPOSABLE_EMAIL_DOMAINS
    )
    assert is_disposable("a.b.mailinator.com")
    assert not is_disposable("notmailinator.com")
    assert not is_disposable("mailinator.com.example.org")
    assert not is_disposable("com")
    assert email_domain("Bob@Example.ORG") == "example.org"
    assert email_domain("no-at-sign") is None


# --- claims and lifecycle --------------------------------------------------------------------


def test_new_referral_status_follows_the_flags() -> None:
    clean = new_referral(claim(email="bob@Gmail.com"), facts(), NOW)
    assert (clean.status, clean.flags, clean.referral_id) == (PENDING, [], "bob")
    assert clean.signals == Signals("dev-bob", "10.0.0.2", "gmail.com")  # only the domain is kept
    held = new_referral(claim(ip="10.0.0.1"), facts(), NOW)
    assert (held.status, held.flags) == (HELD, ["shared_ip"])
    refused = new_referral(claim(referred="alice", ip="10.0.0.1"), facts(), NOW)
    assert (refused.status, refused.flags) == (REJECTED, ["self_referral", "shared_ip"])


def test_a_user_is_referred_once_per_book() -> None:
    book = book_with(new_referral(claim(), facts(), NOW))
    assert book.record_claim(new_referral(claim(), facts(), NOW + 1)) is False
    assert book.referrals["bob"].claimed_at_ms == NOW
    with pytest.raises(ValueError):
        book.record_claim(new_referral(claim(referrer="mallory"), facts(), NOW))


def test_completes_within_the_window_inclusive() -> None:
    book = book_with(new_referral(claim(), facts(), NOW))
    deadline = NOW + COMPLETION_WINDOW_MS
    assert book.expire(deadline) == []
    ref = book.complete("bob", deadline)
    assert ref is not None and (ref.status, ref.completed_at_ms) == (COMPLETED, deadline)
    assert book.complete("bob", deadline) is None  # already completed: nothing moves
    assert book.complete("nobody", NOW) is None


def test_expires_after_the_window() -> None:
    book = book_with(new_referral(claim(), facts(), NOW))
    late = NOW + COMPLETION_WINDOW_MS + 1
    assert book.complete("bob", late) is None
    assert book.referrals["bob"].status_at(late) == EXPIRED
    assert [r.referred_id for r in book.expire(late)] == ["bob"]
    assert book.referrals["bob"].status == EXPIRED
    assert book.expire(late + DAY) == []


def test_lesson_before_the_claim_does_not_count() -> None:
    book = book_with(new_referral(claim(), facts(), NOW))
    assert book.complete("bob", NOW - 1) is None
    assert book.referrals["bob"].status == PENDING


def test_a_late_delivered_lesson_revives_an_expired_referral() -> None:
    book = book_with(new_referral(claim(), facts(), NOW))
    book.expire(NOW + 20 * DAY)
    ref = book.complete("bob", NOW + 2 * DAY)
    assert ref is not None and ref.status == COMPLETED


def test_held_referral_remembers_the_lesson_and_approval_completes_it() -> None:
    book = book_with(new_referral(claim(ip="10.0.0.1"), facts(ips=frozenset({"10.0.0.1"})), NOW))
    assert book.complete("bob", NOW + DAY) is None
    assert book.referrals["bob"].completed_at_ms == NOW + DAY
    assert book.expire(NOW + 30 * DAY) == []  # held referrals wait for the reviewer
    ref = book.review("bob", approve=True, now_ms=NOW + 30 * DAY)
    assert (ref.status, ref.completed_at_ms, ref.flags) == (COMPLETED, NOW + DAY, ["shared_ip"])
    with pytest.raises(ValueError):
        book.review("bob", approve=True, now_ms=NOW + 30 * DAY)


@pytest.mark.parametrize(
    ("approve", "review_at", "status"),
    [(True, NOW + DAY, PENDING), (True, NOW + 15 * DAY, EXPIRED), (False, NOW + DAY, REJECTED)],
)
def test_review_without_a_lesson(approve: bool, review_at: int, status: str) -> None:
    book = book_with(new_referral(claim(email="b@yopmail.com"), facts(), NOW))
    assert book.review("bob", approve, review_at).status == status


def test_recheck_at_completion_can_hold_before_credit() -> None:
    book = book_with(new_referral(claim(), facts(), NOW))
    ref = book.complete("bob", NOW + HOUR)
    assert ref is not None
    book.hold("bob", ["referrer_velocity", "referrer_velocity"])
    assert (ref.status, ref.flags) == (HELD, ["referrer_velocity"])
    assert book.stats(NOW + HOUR)["credits_earned"] == 0
    assert book.review("bob", True, NOW + 2 * HOUR).status == COMPLETED
    with pytest.raises(ValueError):
        book.review("bob", True, NOW)  # no longer held


def test_hold_refuses_final_states() -> None:
    book = book_with(new_referral(claim(referred="alice"), facts(), NOW))
    with pytest.raises(ValueError):
        book.hold("alice", ["shared_ip"])


def test_facts_count_completions_in_the_last_24_hours() -> None:
    refs = [new_referral(claim(referred=f"u{i}"), facts(), NOW - 2 * DAY) for i in range(3)]
    book = book_with(*refs)
    book.complete("u0", NOW - 2 * DAY)  # outside the window
    book.complete("u1", NOW - DAY + 1)  # just inside
    book.complete("u2", NOW)
    book.observe("dev-alice", "10.0.0.1")
    got = book.facts(NOW, referred_by="carol", referrals_of_referred={"dan"})
    assert got == ReferrerFacts(frozenset({"dev-alice"}), frozenset({"10.0.0.1"}), 2, "carol", {"dan"})
    assert book.facts(NOW - DAY + 1).completed_last_24h == 1  # u1 only; u2 is in its future
    assert book.facts(NOW - DAY - 1).completed_last_24h == 1  # u0 only
    assert book.facts(NOW - DAY).completed_last_24h == 0  # u0 is exactly 24 h old: out


def test_known_signals_are_bounded_most_recent_kept() -> None:
    book = ReferrerBook("alice", "CODE0000")
    for i in range(MAX_KNOWN_SIGNALS + 5):
        book.observe(f"dev-{i}", None)
    book.observe("dev-10", "10.0.0.1")  # seen again: becomes the newest
    assert len(book.known_devices) == MAX_KNOWN_SIGNALS
    assert book.known_devices[0] == "dev-5" and book.known_devices[-1] == "dev-10"
    assert book.known_ips == ["10.0.0.1"]


# --- stats and analytics ----------------------------------------------------------------------


def _ref(referrer: str, referred: str, claimed: int, status: str, completed: int | None = None) -> Referral:
    return Referral(referrer, referred, claimed, status, completed)


def sample_books() -> list[ReferrerBook]:
    alice = book_with(
        _ref("alice", "b1", NOW - 10 * DAY, COMPLETED, NOW - 10 * DAY + 12 * HOUR),
        _ref("alice", "b2", NOW - 5 * DAY, COMPLETED, NOW - 5 * DAY + 48 * HOUR),
        _ref("alice", "b3", NOW - 20 * DAY, PENDING),  # past its window: expired as of NOW
        _ref("alice", "b4", NOW - DAY, HELD),
        _ref("alice", "b5", NOW - 2 * HOUR, PENDING),
    )
    carol = book_with(
        _ref("carol", "d1", NOW - 3 * DAY, COMPLETED, NOW - 3 * DAY + 6 * HOUR),
        _ref("carol", "carol", NOW - 2 * DAY, REJECTED),
        _ref("carol", "d2", NOW - 40 * DAY, COMPLETED, NOW - 40 * DAY + 24 * HOUR),  # before by_day
        referrer="carol",
    )
    return [alice, carol, ReferrerBook("erin", referral_code(SECRET, "erin"))]


def test_stats_for_one_referrer() -> None:
    alice = sample_books()[0]
    assert alice.stats(NOW) == {
        "code": referral_code(SECRET, "alice"),
        "claimed": 5,
        "pending": 1,
        "completed": 2,
        "held": 1,
        "rejected": 0,
        "expired": 1,
        "conversion_rate": 0.4,
        "credits_earned": 400,
    }
    assert ReferrerBook("x", "C").stats(NOW)["conversion_rate"] == 0.0


def test_growth_analytics_on_a_hand_computed_set() -> None:
    report = growth_analytics(sample_books(), total_users=50, now_ms=NOW)
    # 8 claims, 4 completed: (8 / 50) × (4 / 8) = 0.08
    assert report["viral_coefficient"] == 0.08
    assert report["invites_per_user"] == 0.16
    assert report["conversion_rate"] == 0.5
    assert report["funnel"] == {
        "codes_generated": 3,
        "claimed": 8,
        "pending": 1,
        "completed": 4,
        "held": 1,
        "rejected": 1,
        "expired": 1,
    }
    # hours to complete: 6, 12, 24, 48 → nearest-rank p50 = 12, p90 = 48, mean 22.5
    assert report["time_to_complete_hours"] == {"p50": 12.0, "p90": 48.0, "mean": 22.5}
    days = report["by_day"]
    assert len(days) == 30 and days[0]["day"] == "2026-11-01" and days[-1]["day"] == "2026-11-30"
    busy = {d["day"]: (d["claimed"], d["completed"]) for d in days if d["claimed"] or d["completed"]}
    assert busy == {
        "2026-11-10": (1, 0),
        "2026-11-20": (1, 0),
        "2026-11-21": (0, 1),
        "2026-11-25": (1, 0),
        "2026-11-27": (1, 2),
        "2026-11-28": (1, 0),
        "2026-11-29": (1, 0),
        "2026-11-30": (1, 0),
    }


def test_growth_analytics_with_nothing_to_report() -> None:
    report = growth_analytics([], total_users=0, now_ms=NOW)
    assert report["viral_coefficient"] == 0.0
    assert report["funnel"]["codes_generated"] == 0
    assert report["time_to_complete_hours"] == {"p50": None, "p90": None, "mean": None}
    assert sum(d["claimed"] for d in report["by_day"]) == 0


# --- encoding -----------------------------------------------------------------------------------


def test_book_round_trips_through_json() -> None:
    book = sample_books()[0]
    book.observe("dev-alice", "10.0.0.1")
    book.referrals["b4"].flags.append("shared_ip")
    book.referrals["b4"].signals = Signals("dev-x", "10.0.0.1", "gmail.com")
    copy = ReferrerBook.from_dict(orjson.loads(orjson.dumps(book.to_dict())))
    assert copy == book
    with pytest.raises(ValueError):
        ReferrerBook.from_dict({**book.to_dict(), "v": 2})
    with pytest.raises(ValueError):
        Referral("a", "b", NOW, "lost")


# --- bounds (docs/growth.md, "State budget") ----------------------------------------------------


def test_open_referrals_are_capped_and_the_rest_refused_as_backlog() -> None:
    book = ReferrerBook("alice", "CODE0000")
    for i in range(MAX_OPEN_REFERRALS + 5):
        assert book.record_claim(
            new_referral(claim(referred=f"u{i}", ip=None, device=None), facts(), NOW + i)
        )
    statuses = [book.referrals[f"u{i}"].status for i in range(MAX_OPEN_REFERRALS + 5)]
    assert statuses == [PENDING] * MAX_OPEN_REFERRALS + [REJECTED] * 5
    assert book.referrals[f"u{MAX_OPEN_REFERRALS}"].flags == [REFERRER_BACKLOG]
    # A referral that lapsed frees its place for the next claim.
    late = NOW + COMPLETION_WINDOW_MS + DAY
    assert book.record_claim(new_referral(claim(referred="fresh"), facts(), late))
    assert book.referrals["fresh"].status == PENDING


def test_finished_referrals_fold_into_counts_and_stats_stay_exact() -> None:
    book = ReferrerBook("alice", "CODE0000")
    n = 3 * MAX_FINISHED_REFERRALS
    for i in range(n):
        book.record_claim(
            new_referral(claim(referred=f"u{i}", ip=None, device=None), facts(), NOW + i * HOUR)
        )
        assert book.complete(f"u{i}", NOW + i * HOUR + 1) is not None
    assert len(book.referrals) == MAX_FINISHED_REFERRALS
    assert set(book.referrals) == {f"u{i}" for i in range(n - MAX_FINISHED_REFERRALS, n)}  # the newest
    assert book.archived == {COMPLETED: n - MAX_FINISHED_REFERRALS}
    stats = book.stats(NOW + n * HOUR)
    assert (stats["claimed"], stats["completed"], stats["credits_earned"]) == (n, n, n * 200)
    assert growth_analytics([book], 10, NOW + n * HOUR)["funnel"]["completed"] == n
    # Velocity still counts every completion of the last 24 h (more than the threshold).
    assert book.facts(NOW + n * HOUR).completed_last_24h > REFERRER_VELOCITY_MAX
    assert ReferrerBook.from_dict(orjson.loads(orjson.dumps(book.to_dict()))) == book


def test_a_book_names_its_referrer_once_and_reads_older_books() -> None:
    book = sample_books()[0]
    stored = book.to_dict()
    assert all("referrer" not in r for r in stored["referrals"])
    older = {**stored, "referrals": [r.to_dict() for r in book.referrals.values()]}
    del older["archived"]
    assert ReferrerBook.from_dict(older) == book


def test_signals_are_kept_only_when_bounded() -> None:
    ref = new_referral(claim(device="d" * 129, ip="not-an-ip", email="x@" + "a" * 70 + ".com"), facts(), NOW)
    assert ref.signals == Signals(None, None, None)
    ref = new_referral(claim(device="d" * 128, ip="::FFFF:10.0.0.2", email="x@Sub.Example.COM"), facts(), NOW)
    assert ref.signals == Signals("d" * 128, "::ffff:a00:2", "sub.example.com")
    assert normalize_ip("10.0.0.1") == "10.0.0.1" and normalize_ip("10.0.0.1\n") is None
    book = ReferrerBook("alice", "CODE0000")
    book.observe("dev\x00", "300.1.1.1")
    assert (book.known_devices, book.known_ips) == ([], [])
