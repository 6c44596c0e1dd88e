"""Double opt-in for a user's email address and phone number, without I/O.

Anyone can type any address into a form. Were a profile's new ``email`` or ``phone`` used at
once, a user could have the engine mail or text a stranger, at our cost and under our name. So an
address a user sets through the API (api/routes/contact.py) is held aside as *pending* and gets a
one-time code (and, for email, a signed link); only when the code comes back is it written into
the profile, where the delivery services read it. Addresses written to ``user-profiles`` by the
platform itself are the platform's word and are used as they are (CONTRACT §4).

A code is six digits: guessable one time in a million, and ``MAX_ATTEMPTS`` wrong guesses end
the pending address. It is kept as an HMAC, never in clear. Sends are paced per user and per
address (``USER_SENDS`` / ``ADDRESS_SENDS``), so the routes cannot be turned into a way to flood
a stranger's inbox or phone with codes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
#: Codes sent: per user (any address) and per address (any user), as (count, per ms).
USER_SENDS = (5, HOUR_MS)
ADDRESS_SENDS = (3, DAY_MS)

_LABEL = b"elimu-pulse/contact-codes/v1"

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


def normalize_code(code: str) -> str:
    """What a person may type: spaces and dashes between the digits are dropped."""
    return "".join(ch for ch in code[:32] if ch not in " -")


def verification_message(
    user_id: str, pending: Pending, code: str, now_iso: str, link_hint: bool
) -> dict[str, Any]:
    """The `notifications` record that carries the code to the pending address. ``to`` names the
    address (models/delivery.py reads it for this type only); the id is the pending request's,
    which the email's confirmation link names."""
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
    }


def pending_id_of(notification_id: str) -> str:
    """The pending request a verification notification's id names."""
    return notification_id.removeprefix("verify:")
