"""How a user is reached outside the app: their email address and phone number, checked.

A profile's ``email`` and ``phone`` (CONTRACT §7, profile) are where the delivery services send
mail and SMS, so they are held to what those services can use, and nothing that could inject a
header or a second recipient passes: an address is one mailbox (RFC 5321 lengths, no spaces,
quotes, angle brackets, commas or control characters), a number is E.164 (``+`` and 8 to 15
digits, spaces, dots, dashes and brackets between the digits dropped).

Pure functions, no I/O; the refusal's reason is a fixed word for the dead-letter label and the
API's 422.
"""

from __future__ import annotations

import re
import unicodedata

#: RFC 5321: a path is at most 256 octets with its brackets, so an address at most 254; the
#: local part at most 64.
MAX_EMAIL_LEN = 254
MAX_LOCAL_PART_LEN = 64
#: E.164: a country code and subscriber number of at most 15 digits.
MIN_PHONE_DIGITS = 8
MAX_PHONE_DIGITS = 15

# The local part: the dot-atom of RFC 5322 (no quoted strings: no one needs them, and every
# mail library quotes them differently). The domain: LDH labels, at least two, no empty label.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_PHONE_SEPARATORS = re.compile(r"[\s.\-()]")


class InvalidContact(ValueError):
    """An address or number the delivery services cannot use; ``reason`` is a fixed word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def normalize_email(value: str) -> str:
    """``value`` as one mailbox, its domain lower-cased; InvalidContact("bad_email") if not."""
    address = value.strip()
    if len(address) > MAX_EMAIL_LEN:
        raise InvalidContact("bad_email", f"an email address is at most {MAX_EMAIL_LEN} characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidContact("bad_email", "an email address is local-part@domain")
    if len(local) > MAX_LOCAL_PART_LEN or not _LOCAL.match(local):
        raise InvalidContact("bad_email", "the part before @ holds a character mail cannot carry")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidContact("bad_email", "the domain after @ is not a host name")
    return f"{local}@{domain.lower()}"


def normalize_phone(value: str) -> str:
    """``value`` in E.164 (``+254712345678``); InvalidContact("bad_phone") if it cannot be."""
    if len(value) > 4 * MAX_PHONE_DIGITS:
        raise InvalidContact("bad_phone", "a phone number is at most 15 digits (E.164)")
    compact = _PHONE_SEPARATORS.sub("", value)
    if compact.startswith("00"):  # the international prefix written out
        compact = "+" + compact[2:]
    digits = compact[1:]
    if (
        not compact.startswith("+")
        or not digits.isascii()
        or not digits.isdigit()
        or not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS
        or digits.startswith("0")
    ):
        raise InvalidContact(
            "bad_phone", "a phone number is + and the country code, 8 to 15 digits in all (E.164)"
        )
    return compact


# After NFKC (which folds fullwidth and other look-alike dots and slashes to ASCII): a letter or
# digit, a dot, a letter or digit is how every host name reads; a name rarely needs it.
_DOT_BETWEEN = re.compile(r"[^\W_]\.[^\W_]")
#: Characters a link or an address needs and a name does not.
_LINK_MARKS = frozenset("/@:\\")
#: Dots a name could hide a host name with that NFKC does not fold to ".".
_DOT_LIKE = frozenset("\u2024\u2027\u00b7\u0701\u0702\u2e31\u30fb\uff61\u3002")


def safe_display_name(name: str | None) -> str | None:
    """``name`` as a message may show it, or None ("there") when it holds something a reader
    could follow as a link: a name is the user's own text, and a stranger-chosen "name" such as
    "Prize at win.example.com" must not ride to an inbox in the engine's voice. Strict on
    purpose (linear, no backtracking): "J.Doe" reads "there" too; "J. Doe" is kept."""
    if not name:
        return None
    text = unicodedata.normalize("NFKC", name)
    if any(ch in _LINK_MARKS or ch in _DOT_LIKE for ch in text) or "www" in text.lower():
        return None
    if _DOT_BETWEEN.search(text):
        return None
    return name
