"""Double opt-in codes (models/contact_verification.py) and what a message may call a user
(models/contact.py ``safe_display_name``), without I/O."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.contact import safe_display_name
from models.contact_verification import (
    CODE_PLACEHOLDER,
    MAX_ATTEMPTS,
    TTL_MS,
    VERIFICATION_TYPE,
    CodeBook,
    CodeSealer,
    Pending,
    canonical_address,
    normalize_code,
    pending_id_of,
    verification_message,
)

T0 = 1_790_000_000_000
BOOK = CodeBook("a-test-secret-0123456789abcdef0123")
SEALER = CodeSealer("a-test-secret-0123456789abcdef0123")


def counted(pending: Pending, attempts: int) -> Pending:
    return Pending(**{**pending.to_fields(), "expires_ms": pending.expires_ms, "attempts": attempts})  # type: ignore[arg-type]


def test_a_code_confirms_its_own_request_only() -> None:
    pending, code = BOOK.new("u-1", "EMAIL", "a@b.co", T0)
    assert len(code) == 6 and code.isdigit() and code not in pending.code_mac
    assert pending.expires_ms == T0 + TTL_MS["EMAIL"]
    assert BOOK.check("u-1", counted(pending, 1), code, T0) == "ok"
    assert BOOK.check("u-1", counted(pending, 1), f" {code[:3]}-{code[3:]} ", T0) == "ok"
    # Bound to the user, the request and the secret.
    assert BOOK.check("u-2", counted(pending, 1), code, T0) == "wrong"
    other, _ = BOOK.new("u-1", "EMAIL", "a@b.co", T0)
    assert BOOK.check("u-1", counted(other, 1), code, T0) in ("wrong", "ok")  # 1 in a million: ok
    assert CodeBook("another-secret-0123456789abcdef").check("u-1", counted(pending, 1), code, T0) == "wrong"


def test_codes_expire_and_wrong_guesses_run_out() -> None:
    pending, code = BOOK.new("u-1", "SMS", "+254700000001", T0)
    assert BOOK.check("u-1", counted(pending, 1), code, pending.expires_ms + 1) == "expired"
    wrong = "000000" if code != "000000" else "111111"
    verdicts = [BOOK.check("u-1", counted(pending, n), wrong, T0) for n in range(1, MAX_ATTEMPTS + 1)]
    assert verdicts == ["wrong"] * (MAX_ATTEMPTS - 1) + ["exhausted"]
    # Past the bound even the right code is refused (the attempt was counted before checking).
    assert BOOK.check("u-1", counted(pending, MAX_ATTEMPTS + 1), code, T0) == "exhausted"
    assert BOOK.check("u-1", None, code, T0) == "none"


@given(
    st.dictionaries(
        st.sampled_from(["id", "channel", "address", "code_mac", "expires_ms", "attempts", "x"]),
        st.text(max_size=20),
    )
)
def test_a_partial_or_garbled_hash_is_no_request(fields: dict[str, str]) -> None:
    parsed = Pending.from_fields(fields)
    if parsed is not None:
        assert parsed.channel in ("EMAIL", "SMS") and isinstance(parsed.expires_ms, int)


def test_a_request_round_trips_and_shows_no_code() -> None:
    pending, code = BOOK.new("u-1", "EMAIL", "a@b.co", T0)
    assert Pending.from_fields(pending.to_fields()) == pending
    assert "code_mac" not in pending.view() and code not in str(pending.view())


@pytest.mark.parametrize("channel", ["EMAIL", "SMS"])
def test_the_message_names_its_address_and_request(channel: str) -> None:
    address = "a@b.co" if channel == "EMAIL" else "+254700000001"
    pending, code = BOOK.new("u-1", channel, address, T0)  # type: ignore[arg-type]
    sealed = SEALER.seal("u-1", pending.id, code)
    message = verification_message(
        "u-1", pending, sealed, "2026-12-07T10:00:00Z", link_hint=channel == "EMAIL"
    )
    assert (message["type"], message["channels"], message["to"]) == (VERIFICATION_TYPE, [channel], address)
    assert pending_id_of(message["notification_id"]) == pending.id
    # The code is never in clear in the record: a placeholder, and the code sealed beside it.
    assert code not in str(message) and CODE_PLACEHOLDER in message["body"]
    assert SEALER.unseal("u-1", pending.id, message["code_sealed"]) == code
    if channel == "SMS":
        assert len(message["body"].replace(CODE_PLACEHOLDER, code)) <= 160  # one segment


def test_a_sealed_code_opens_only_for_its_user_and_request_and_secret() -> None:
    pending, code = BOOK.new("u-1", "SMS", "+254700000001", T0)
    sealed = SEALER.seal("u-1", pending.id, code)
    assert SEALER.unseal("u-2", pending.id, sealed) is None
    assert SEALER.unseal("u-1", "another", sealed) is None
    assert CodeSealer("another-secret-0123456789abcdef").unseal("u-1", pending.id, sealed) is None
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert SEALER.unseal("u-1", pending.id, flipped) is None
    for junk in ("", "!!", "x" * 10_000):
        assert SEALER.unseal("u-1", pending.id, junk) is None


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        ("Victim@Example.org", "victim@example.org"),
        ("victim+promo@example.org", "victim@example.org"),
        ("v.ic.tim@gmail.com", "victim@gmail.com"),
        ("V.ictim+x@googlemail.com", "victim@gmail.com"),
        ("a.b@example.org", "a.b@example.org"),  # dots matter elsewhere
    ],
)
def test_every_spelling_of_one_mailbox_is_paced_as_one(address: str, canonical: str) -> None:
    assert canonical_address("EMAIL", address) == canonical


def test_normalize_code_bounds_what_it_reads() -> None:
    assert normalize_code("1 2-3 456") == "123456" and len(normalize_code("9" * 10_000)) == 32


@pytest.mark.parametrize(
    "name", ["Amina", "J. Doe", "St. John", "Mary-Jane O'Neil", "Wanjirū", "Nguyễn Văn An", "O'Brien-Smith"]
)
def test_names_are_kept(name: str) -> None:
    assert safe_display_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "win.example.com",
        "Prize at bit.ly/x",
        "www.foo",
        "http://x",
        "Go to evil.ke now",
        "A.co",
        "HTTPS://X.Y",
        "win.example.shop",
        "see evil.ai",
        "win\uff0eexample\uff0ecom",  # fullwidth dots
        "win\u2024example\u2024com",  # one-dot leaders
        "http:/evil",
        "mail me@evil",
        # Strict on purpose: a dot between letters is how every host name reads.
        "Amina.Kariuki",
        "Dr.Who",
    ],
)
def test_names_that_read_as_links_are_not_repeated(name: str) -> None:
    assert safe_display_name(name) is None


@given(st.text(max_size=30), st.sampled_from(["http://", "https://", "www."]), st.text(max_size=30))
def test_no_name_with_a_scheme_or_www_passes(before: str, marker: str, after: str) -> None:
    assert safe_display_name(before + marker + after) is None


@given(st.text(max_size=2000))
def test_any_text_is_judged_and_a_kept_name_has_no_link_marks(name: str) -> None:
    kept = safe_display_name(name)
    if kept is not None:
        folded = unicodedata.normalize("NFKC", kept)
        assert not any(ch in folded for ch in "/@:") and "www" not in folded.lower()
