"""Signed tracking links: the open pixel, click-through and one-click unsubscribe of a message
sent outside the app (docs/notifications.md).

A link carries who it is for and what it records, signed with a key derived from
``ELIMU_SECRET`` (a label of its own, so a link can never be presented as a token or a record
signature, nor the reverse). The tracking routes record exactly what the link says and nothing
a client adds: a user cannot click someone else's notification, and a link cannot be edited
into an unsubscribe of another user. Links expire (``LINK_TTL_MS``): a mail forwarded a year
later does not steer this year's A/B tests.

Format: ``<payload>.<mac>``, both base64url without padding; the payload is compact JSON
``{"k": kind, "n": notification id, "u": user id, "c": channel, "e": expiry ms}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import orjson

from models.delivery import DeliveryRequest
from models.time_units import DAY_MS

#: What a link records: an open (the pixel), a click, an unsubscribe; a contact verification's
#: confirmation (models/contact_verification.py); and the trap, a link no person can see, that
#: only a machine following every link of a mail (a mail scanner) ever loads.
Kind = Literal["open", "click", "unsubscribe", "verify", "trap"]
KINDS: tuple[Kind, ...] = ("open", "click", "unsubscribe", "verify", "trap")
#: How long a link works after the message was sent.
LINK_TTL_MS = 60 * DAY_MS
#: MAC bytes kept: 128 bits, plenty for a link, and short URLs.
_MAC_BYTES = 16
#: Longest token accepted before decoding (ids are at most 128 bytes each).
MAX_TOKEN_LEN = 1024
_LABEL = b"elimu-pulse/tracking-links/v1"
#: The routes (api/routes/tracking.py) each kind lands on.
ROUTES: dict[Kind, str] = {
    "open": "/v1/t/open/",
    "click": "/v1/t/click/",
    "unsubscribe": "/v1/t/unsubscribe/",
    "verify": "/v1/t/verify/",
    "trap": "/v1/t/more/",
}


@dataclass(frozen=True, slots=True)
class Link:
    kind: Kind
    notification_id: str
    user_id: str
    channel: str
    expires_ms: int
    #: The notification's template and variant: an unsubscribe counts against them (A/B).
    template: str = ""
    variant: str = ""


class BadLink(ValueError):
    """A token that was not minted here, was altered, or has expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode("utf-8"), _LABEL, hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def token(self, link: Link) -> str:
        fields: dict[str, str | int] = {
            "k": link.kind,
            "n": link.notification_id,
            "u": link.user_id,
            "c": link.channel,
            "e": link.expires_ms,
        }
        if link.template:
            fields.update(t=link.template, v=link.variant)
        payload = orjson.dumps(fields)
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, now_ms: int) -> Link:
        if len(token) > MAX_TOKEN_LEN or token.count(".") != 1:
            raise BadLink("not a tracking link")
        encoded, mac = token.split(".")
        try:
            payload, given = _unb64(encoded), _unb64(mac)
        except (binascii.Error, ValueError) as exc:
            raise BadLink("not a tracking link") from exc
        if not hmac.compare_digest(self._mac(payload), given):
            raise BadLink("the link's signature does not match")
        try:
            data = orjson.loads(payload)
            link = Link(
                data["k"], str(data["n"]), str(data["u"]), str(data["c"]), int(data["e"]),
                str(data.get("t", "")), str(data.get("v", "")),
            )  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadLink("not a tracking link") from exc
        if link.kind not in KINDS:
            raise BadLink("not a tracking link")
        if link.expires_ms < now_ms:
            raise BadLink("the link has expired")
        return link


class Links:
    """Mints the URLs a message carries, under the API's public address (``ELIMU_PUBLIC_URL``)."""

    def __init__(self, signer: LinkSigner, public_url: str) -> None:
        self._signer = signer
        self._base = public_url.rstrip("/")

    def url(self, kind: Kind, request: DeliveryRequest, channel: str, now_ms: int) -> str:
        link = Link(
            kind, request.notification_id, request.user_id, channel, now_ms + LINK_TTL_MS,
            request.template, request.variant,
        )  # fmt: skip
        token = self._signer.token(link)
        return f"{self._base}{ROUTES[kind]}{quote(token, safe='.-_')}"
