"""A profile's contact (models/contact.py): one mailbox per address and E.164 numbers, and nothing
that could inject a mail header or a second recipient on the way to the delivery services."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from models.contact import (
    MAX_EMAIL_LEN,
    MAX_LOCAL_PART_LEN,
    MAX_PHONE_DIGITS,
    MIN_PHONE_DIGITS,
    InvalidContact,
    normalize_email,
    normalize_phone,
)

E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def reason_of(normalize: object, value: str) -> str:
    assert callable(normalize)
    with pytest.raises(InvalidContact) as info:
        normalize(value)
    assert info.value.message and str(info.value) == info.value.message
    return info.value.reason


def is_clean(text: str) -> bool:
    """No whitespace, no control/format/unassigned character, nothing that separates recipients."""
    return not any(c.isspace() or unicodedata.category(c).startswith("C") or c in ',<>;"' for c in text)


# --- email ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("amina@example.com", "amina@example.com"),
        ("Amina.Otieno@Example.CO.KE", "Amina.Otieno@example.co.ke"),  # only the domain lowered
        ("  amina@example.com \n", "amina@example.com"),  # surrounding whitespace stripped
        ("first.last+tag@mail.example.org", "first.last+tag@mail.example.org"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("x_y-z@sub-domain.example.com", "x_y-z@sub-domain.example.com"),
        ("a@xn--80ak6aa92e.com", "a@xn--80ak6aa92e.com"),  # an IDN written in punycode
        ("a" * MAX_LOCAL_PART_LEN + "@example.com", "a" * MAX_LOCAL_PART_LEN + "@example.com"),
        ("a@" + "b" * 63 + ".com", "a@" + "b" * 63 + ".com"),  # the longest label
    ],
)
def test_valid_addresses_are_kept_with_their_domain_lowered(value: str, expected: str) -> None:
    assert normalize_email(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        # Header injection: a second line, a second recipient.
        "a@b.com\r\nBcc: x@y.z",
        "a@b.com\nBcc: x@y.z",
        "a@b.com\rBcc: x@y.z",
        "a@b.com%0d%0aBcc:x@y.z",
        "a@b.com,x@y.z",
        "a@b.com;x@y.z",
        "a,b@c.com",
        "<a@b.com>",
        "Amina <a@b.com>",
        "a<b@c.com",
        "a@b.com>",
        # Spaces, quotes, control characters anywhere inside.
        "a b@c.com",
        "a@b .com",
        "a\t@b.com",
        '"a b"@c.com',
        '"a"@b.com',
        "a\x00@b.com",
        "a@b.com\x00",
        "a\x7f@b.com",
        "a\u200b@b.com",  # zero-width space
        "a@b\u2028.com",
        # Not one mailbox at all.
        "",
        "   ",
        "amina",
        "@example.com",
        "amina@",
        "a@b",  # a single label is no host name here
        "a@@b.com",
        "a@b@c.com",
        # Dot-atom rules.
        ".a@b.com",
        "a.@b.com",
        "a..b@c.com",
        "a@.b.com",
        "a@b..com",
        "a@b.com.",
        "a@-b.com",
        "a@b-.com",
        "a@b_c.com",
        # Non-ASCII: mail to it needs SMTPUTF8, which the delivery services do not promise.
        "amína@example.com",
        "a@exämple.com",
        "a@b\u0662.com",  # an Arabic-Indic digit
        "a@b.\u212a",  # the Kelvin sign, which lower-cases to an ASCII k
        # Too long.
        "a" * (MAX_LOCAL_PART_LEN + 1) + "@example.com",
        "a@" + "b" * 64 + ".com",
    ],
)
def test_invalid_addresses_are_refused_as_bad_email(value: str) -> None:
    assert reason_of(normalize_email, value) == "bad_email"


def test_address_length_limit_is_inclusive() -> None:
    local = "a" * MAX_LOCAL_PART_LEN
    labels = ["b" * 63, "c" * 63]
    domain = ".".join(labels)
    filler = MAX_EMAIL_LEN - len(local) - 1 - len(domain) - 1  # one more label and its dot
    assert 0 < filler <= 63
    longest = f"{local}@{domain}.{'e' * filler}"
    assert len(longest) == MAX_EMAIL_LEN
    assert normalize_email(longest) == longest
    assert reason_of(normalize_email, longest + "e") == "bad_email"
    # The limit holds on what is left once stripped: padding does not count, content does.
    assert normalize_email(f"  {longest}  ") == longest


# --- phone ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+254712345678", "+254712345678"),
        ("+254 712 345 678", "+254712345678"),
        ("+254-712-345-678", "+254712345678"),
        ("+254.712.345.678", "+254712345678"),
        ("+254 (712) 345-678", "+254712345678"),
        ("  +254712345678  ", "+254712345678"),
        ("00254712345678", "+254712345678"),  # the international prefix written out
        ("00 254 712 345 678", "+254712345678"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+" + "1" * MIN_PHONE_DIGITS, "+" + "1" * MIN_PHONE_DIGITS),
        ("+" + "1" * MAX_PHONE_DIGITS, "+" + "1" * MAX_PHONE_DIGITS),
    ],
)
def test_numbers_are_written_in_e164(value: str, expected: str) -> None:
    assert normalize_phone(value) == expected
    assert E164.fullmatch(normalize_phone(value))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "+",
        "0712345678",  # national: no country code
        "254712345678",  # no +
        "+0254712345678",  # a leading 0 after +: no country code starts with 0
        "000254712345678",  # 00 then a 0
        "++254712345678",
        "+254+712345678",
        "+254712345678\r\nBcc: x@y.z",
        "+254712345678,+254700000000",
        "<+254712345678>",
        "+254712345678 ext 12",
        "+254/712/345678",
        "tel:+254712345678",
        "+" + "1" * (MIN_PHONE_DIGITS - 1),  # too short
        "+" + "1" * (MAX_PHONE_DIGITS + 1),  # too long
        "+\u0662\u0665\u0664\u0667\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",  # Arabic-Indic
        "+\uff12\uff15\uff14\uff17\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",  # fullwidth
        "+25471234567\u00b2",  # a superscript two: isdigit() says yes
    ],
)
def test_invalid_numbers_are_refused_as_bad_phone(value: str) -> None:
    assert reason_of(normalize_phone, value) == "bad_phone"


# --- properties -------------------------------------------------------------------------------

_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
_LDH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=12)
_labels = st.builds(
    lambda first, middle, last: first + middle + last if middle or last else first,
    st.sampled_from(_LDH),
    st.text(alphabet=_LDH + "-", max_size=10),
    st.text(alphabet=_LDH, max_size=1),
).filter(lambda label: not label.endswith("-"))
good_addresses = st.builds(
    lambda local, domain: ".".join(local) + "@" + ".".join(domain),
    st.lists(_atoms, min_size=1, max_size=4),
    st.lists(_labels, min_size=2, max_size=4),
).filter(lambda a: len(a.partition("@")[0]) <= MAX_LOCAL_PART_LEN)
# Mostly near-misses: pieces of addresses and everything that must never pass.
_hostile = st.sampled_from(
    ["@", ".", ",", "<", ">", ";", " ", "\r", "\n", "\t", "\x00", "\x0b", "\x1c", "\x85", "\u2028", '"']
)
address_like = st.one_of(
    good_addresses,
    st.emails(),
    st.text(),
    st.lists(st.one_of(_atoms, _hostile, st.characters()), max_size=20).map("".join),
    st.builds(lambda a, h, b: a + h + b, good_addresses, _hostile, good_addresses),
)


@given(good_addresses)
def test_every_dot_atom_address_on_a_host_name_is_accepted(address: str) -> None:
    local, _, domain = address.partition("@")
    assert normalize_email(address) == f"{local}@{domain.lower()}"


@given(address_like)
@example("a@b.com\r\nBcc: x@y.z")
@example("a@b.com\x1c")
@example(" a@B.com\u2028")
def test_an_accepted_address_is_clean_and_normalising_it_again_changes_nothing(value: str) -> None:
    try:
        normalized = normalize_email(value)
    except InvalidContact as exc:
        assert exc.reason == "bad_email"
        return
    assert is_clean(normalized), normalized
    assert normalized.count("@") == 1
    assert len(normalized) <= MAX_EMAIL_LEN
    assert normalize_email(normalized) == normalized


good_numbers = st.builds(
    lambda prefix, first, rest, seps: (
        prefix + first + "".join(d + s for d, s in zip(rest, seps + [""] * len(rest), strict=False))
    ),
    st.sampled_from(["+", "00", "+ ", "00 "]),
    st.sampled_from("123456789"),
    st.text(alphabet="0123456789", min_size=MIN_PHONE_DIGITS - 1, max_size=MAX_PHONE_DIGITS - 1),
    st.lists(st.sampled_from(["", " ", "-", ".", "(", ")"]), max_size=14),
)
number_like = st.one_of(
    good_numbers,
    st.text(),
    st.text(alphabet="+0123456789 -.()\r\n\t\x1c\u00a0\u0662\uff11\u00b2xe,<>"),
    st.builds(lambda a, b: a + b, good_numbers, st.text(max_size=4)),
)


@given(good_numbers)
def test_every_number_written_with_separators_is_accepted_as_its_digits(value: str) -> None:
    digits = "".join(c for c in value if c.isdigit())
    expected = "+" + (digits[2:] if value.startswith("00") else digits)
    assert normalize_phone(value) == expected


@given(number_like)
@example("+254712345678\r\nBcc: x")
@example("+25471234567\u00b2")
@example("0000254712345678")
def test_an_accepted_number_is_e164_and_normalising_it_again_changes_nothing(value: str) -> None:
    try:
        normalized = normalize_phone(value)
    except InvalidContact as exc:
        assert exc.reason == "bad_phone"
        return
    assert E164.fullmatch(normalized), normalized
    assert normalize_phone(normalized) == normalized
