"""Double opt-in for a user's email address and phone number, without I/O.

Anyone can type any address into a form. Were a profile's new ``email`` or ``phone`` used at
once, a user could have the engine mail or text a stranger, at our cost and under our name. So an
address a user sets through the API (api/routes/contact.py) is held aside as *pending* and gets a
one-time code (and, for email, a signed link); only when the code comes back is it written into
the profile, where the delivery services read it. Addresses written to ``user-profiles`` by the
platform itself are the platform's word and are used as they are (CONTRACT §4).

A code is six digits: guessable one time in a million, and ``MAX_ATTEMPTS`` wrong guesses end
the pending address. It is kept as an HMAC in Redis, and travels to the deliverer sealed
(``CodeSealer``, AES-GCM with a key derived from the secret): the `notifications` record, and any
dead-letter copy of it, carries ``{code}`` in its text and the sealed code beside it, so whoever
can read Kafka cannot confirm an address. Sends are paced per user, per user and address, per
address whoever asks, and per channel in all (``SEND_LIMITS``), so the routes cannot be turned
into a way to flood a stranger's inbox or phone with codes, nor to run up an SMS bill; the
address is paced in its canonical form (``canonical_address``), so spelling it another way does
not buy more codes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from models.time_units import DAY_MS, HOUR_MS, MINUTE_MS

#: The notification type of a verification message (the delivery services send it to the
#: address it names, not the profile's: models/delivery.py).
VERIFICATION_TYPE = "contact_verification"
#: The channels an address can be verified on, and the profile field each one fills.
Channel = Literal["EMAIL", "SMS"]
FIELDS: dict[Channel, str] = {"EMAIL": "email", "SMS": "phone"}
#: How long a code works: a mail may sit unread for a while; a text is read at once.
TTL_MS: dict[Channel, int] = {"EMAIL": DAY_MS, "SMS": 15 * MINUTE_MS}
#: Wrong codes before the pending address is dropped (a fresh one must be asked for).
MAX_ATTEMPTS = 5
CODE_DIGITS = 6
#: Codes sent at most, as (count, per ms), by what the bucket is keyed on: the user (any
#: address); the user and the address (the owner's own allowance); the address whoever asks (what
#: a stranger can receive); the channel in all (an SMS bill has a ceiling).
SEND_LIMITS: dict[str, tuple[int, int]] = {
    "user": (5, HOUR_MS),
    "user-address": (3, DAY_MS),
    "address": (10, DAY_MS),
    "channel-SMS": (500, HOUR_MS),
    "channel-EMAIL": (5000, HOUR_MS),
}
#: Mail providers that ignore dots in the local part.
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
#: The placeholder the code takes in a verification's text until the deliverer unseals it.
CODE_PLACEHOLDER = "{code}"

_LABEL = b"elimu-pulse/contact-codes/v1"
_SEAL_LABEL = b"elimu-pulse/contact-codes-sealed/v1"

Check = Literal["ok", "wrong", "expired", "exhausted", "none"]


@dataclass(frozen=True, slots=True)
class Pending:
    """An address waiting for its code. ``id`` names this one request: a link or code minted
    for an earlier address never confirms a later one."""

    id: str
    channel: Channel
    address: str
    code_mac: str
    expires_ms: int
    attempts: int = 0

    def to_fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "channel": self.channel,
            "address": self.address,
            "code_mac": self.code_mac,
            "expires_ms": str(self.expires_ms),
            "attempts": str(self.attempts),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Pending | None:
        """The pending request a Redis hash holds; None when the hash is not a whole one."""
        try:
            channel = fields["channel"]
            if channel not in FIELDS:
                return None
            return cls(
                id=fields["id"],
                channel=channel,
                address=fields["address"],
                code_mac=fields["code_mac"],
                expires_ms=int(fields["expires_ms"]),
                attempts=int(fields.get("attempts") or 0),
            )
        except (KeyError, ValueError):
            return None

    def attempts_left(self) -> int:
        return max(0, MAX_ATTEMPTS - self.attempts)

    def view(self) -> dict[str, Any]:
        """What the user is shown: the address is theirs (they typed it), the code never."""
        return {
            "channel": self.channel,
            "field": FIELDS[self.channel],
            "address": self.address,
            "expires_ms": self.expires_ms,
            "attempts_left": self.attempts_left(),
        }


class CodeBook:
    """Mints codes and checks them against the HMAC kept, with a key derived from the secret
    (a label of its own: a code's MAC is never a token or a record signature)."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode("utf-8"), _LABEL, hashlib.sha256).digest()

    def _mac(self, user_id: str, pending_id: str, code: str) -> str:
        message = f"{user_id}\x00{pending_id}\x00{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def new(self, user_id: str, channel: Channel, address: str, now_ms: int) -> tuple[Pending, str]:
        """A fresh pending request for ``address`` and its code (shown to no one but the
        address's owner)."""
        pending_id = secrets.token_urlsafe(12)
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        pending = Pending(
            id=pending_id,
            channel=channel,
            address=address,
            code_mac=self._mac(user_id, pending_id, code),
            expires_ms=now_ms + TTL_MS[channel],
        )
        return pending, code

    def check(self, user_id: str, pending: Pending | None, code: str, now_ms: int) -> Check:
        """Whether ``code`` confirms ``pending`` (the caller has already counted this attempt
        into ``pending.attempts``)."""
        if pending is None:
            return "none"
        if now_ms > pending.expires_ms:
            return "expired"
        if pending.attempts > MAX_ATTEMPTS:
            return "exhausted"
        given = self._mac(user_id, pending.id, normalize_code(code))
        if hmac.compare_digest(given, pending.code_mac):
            return "ok"
        return "exhausted" if pending.attempts >= MAX_ATTEMPTS else "wrong"


def canonical_address(channel: Channel, address: str) -> str:
    """One spelling per mailbox, for pacing: the whole address lower-cased, a ``+tag`` dropped,
    dots dropped where the provider ignores them; a number is already E.164."""
    if channel != "EMAIL":
        return address
    local, _, domain = address.lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _DOTLESS:
        local, domain = local.replace(".", ""), _DOTLESS[domain]
    return f"{local}@{domain}"


class CodeSealer:
    """Seals a code for the `notifications` record and unseals it in the deliverer (AES-GCM,
    bound to the user and the pending request, so a sealed code cannot be moved to another)."""

    def __init__(self, secret: str) -> None:
        key = hmac.new(secret.encode("utf-8"), _SEAL_LABEL, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, user_id: str, pending_id: str, code: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, code.encode(), f"{user_id}\x00{pending_id}".encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, user_id: str, pending_id: str, sealed: str) -> str | None:
        """The code, or None when ``sealed`` is not one sealed here for this user and request."""
        try:
            raw = base64.urlsafe_b64decode(sealed.encode()[:256])
            code = self._aead.decrypt(raw[:12], raw[12:], f"{user_id}\x00{pending_id}".encode()).decode()
        except (ValueError, InvalidTag, binascii.Error, UnicodeDecodeError):
            return None
        return code if code.isdigit() and len(code) == CODE_DIGITS else None


def normalize_code(code: str) -> str:
    """What a person may type: spaces and dashes between the digits are dropped."""
    return "".join(ch for ch in code[:32] if ch not in " -")


def verification_message(
    user_id: str, pending: Pending, sealed_code: str, now_iso: str, link_hint: bool
) -> dict[str, Any]:
    """The `notifications` record that carries the code to the pending address. ``to`` names the
    address (models/delivery.py reads it for this type only); the id is the pending request's,
    which the email's confirmation link names. The text holds ``{code}``; the code travels
    sealed (``CodeSealer``) in ``code_sealed``."""
    code = CODE_PLACEHOLDER
    minutes = TTL_MS[pending.channel] // MINUTE_MS
    if pending.channel == "EMAIL":
        subject = "Confirm your email address for Elimu Pulse"
        body = (
            f"Your confirmation code is {code}.\n"
            "Someone, hopefully you, added this address to an Elimu Pulse account. "
            + ("Use the code or the link below " if link_hint else "Enter the code in the app ")
            + f"within {minutes // 60} hours to start getting emails here.\n"
            "If it was not you, ignore this mail: nothing will be sent to this address."
        )
        cta = "Confirm this address"
    else:
        subject = ""
        body = f"Your Elimu Pulse code is {code}. It expires in {minutes} minutes. Not you? Ignore this text."
        cta = ""
    return {
        "notification_id": f"verify:{pending.id}",
        "user_id": user_id,
        "type": VERIFICATION_TYPE,
        "channels": [pending.channel],
        "to": pending.address,
        "subject": subject,
        "body": body,
        "cta": cta,
        "template": "",
        "variant": "",
        "created_at": now_iso,
        "deliver_at": now_iso,
        "code_sealed": sealed_code,
    }


def pending_id_of(notification_id: str) -> str:
    """The pending request a verification notification's id names."""
    return notification_id.removeprefix("verify:")
