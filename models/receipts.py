"""Delivery receipts, without I/O: what a provider's later word about a send means
(docs/notifications.md, "Delivery receipts").

A provider accepting a send (``sent``) is not the end of it: an SMS is ``delivered`` or not hours
later (a delivery report, DLR, POSTed to a webhook), and a mail can bounce days later (a delivery
status notification, DSN, RFC 3464, mailed to the envelope sender). Here: reading those words
(forms, DSNs), checking who said them (Twilio's signature, our own tokens) and mapping them to a
delivery result. The delivery service keeps an index from the provider's id of each send to the
send (delivery/receipts.py); the webhooks (api/routes/webhooks.py) and the bounce listener
(delivery/bounces.py) look a receipt up there and report it like any send's result.

Tokens are HMACs under keys derived from ``ELIMU_SECRET`` with labels of their own, so none can
be presented as a tracking link, a record signature or a token of another kind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.policy import compat32
from typing import Any, Literal
from urllib.parse import parse_qsl

from models.delivery import delivery_report
from models.events import InvalidEvent, check_id
from models.time_units import DAY_MS

#: The channels whose sends get a later receipt (PUSH is ``delivered`` at send time; STAFF is ours).
RECEIPT_CHANNELS = frozenset({"EMAIL", "SMS"})
#: How long a send's index entry is kept for its receipt: an MTA keeps retrying a deferred mail for
#: up to five days before it gives up and sends the bounce (RFC 5321 §4.5.4.1 suggests 4-5), and an
#: SMS report comes within the message's validity (hours). A week covers both with a margin; a
#: receipt later than that is ignored (counted as unknown).
RECEIPT_TTL_MS = 7 * DAY_MS
#: How long a dead address stays suppressed: a mailbox can be re-created, a domain revived or an
#: address reassigned, and a DSN can be wrong. A new bounce renews it; the owner confirming the
#: address lifts it (delivery/receipts.py ``lift_suppression``).
SUPPRESSION_TTL_MS = 90 * DAY_MS

#: A later result: the provider delivered it, the address or number is dead (a bounce), or it
#: failed for another reason (expired, filtered, the provider's trouble).
Final = Literal["delivered", "bounced", "failed"]

#: The webhook routes (api/routes/webhooks.py), in one place for the routes and the URLs we give
#: the providers (``StatusCallback``, the dashboard's callback URL).
AFRICASTALKING_ROUTE = "/v1/webhooks/sms/africastalking/{token}"
TWILIO_ROUTE = "/v1/webhooks/sms/twilio"
#: A DLR form is a few hundred bytes; anything much larger is not one.
MAX_CALLBACK_BYTES = 16 * 1024
MAX_FORM_FIELDS = 64
#: A DSN is a short report plus (at most) the original's headers or body; ours are small mails.
MAX_DSN_BYTES = 64 * 1024
#: Parts of the report and recipient blocks read from one DSN (ours has one recipient).
MAX_DSN_PARTS = 16
MAX_DSN_RECIPIENTS = 50
#: The MIME structure a DSN may have: parts nested at most this deep (a returned mail's
#: alternatives sit at 4: report, returned part, mail, alternatives), and at most this many parts
#: in all (the delivery-status blocks not counted). Anything more complex is refused before or
#: while it is walked (``DsnTooComplex``).
MAX_MIME_DEPTH = 5
MAX_MIME_PARTS = 50
#: Enhanced status codes (RFC 3463) that say the address itself is dead: 5.1.1 no such mailbox,
#: 5.1.2 no such domain, 5.1.10 a null MX (RFC 7505). Only these suppress the address. Others
#: are reported ``bounced`` without it: 5.7.x (policy, DMARC, reputation: our fault or the
#: server's mood), 5.2.2 (mailbox full), 5.2.1 (mailbox disabled, which RFC 3463 says may be
#: temporary), 5.4.x (routing), 5.3.x (the server's trouble).
DEAD_ADDRESS_CODES = frozenset({"5.1.1", "5.1.2", "5.1.10"})
#: The longest reason text kept from a provider (it becomes a report's ``reason``).
MAX_REASON_LEN = 64


class BadReceipt(ValueError):
    """A callback or mail that is not a receipt we can read (malformed, oversized, wrong kind)."""


class DsnTooComplex(BadReceipt):
    """A mail whose structure no DSN has (nested too deep, too many parts, too costly to read):
    refused outright, unlike a plain mail that is simply not a DSN."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """One provider's word about one send: ``result`` None when it is not final yet (queued,
    sent on, delayed) and changes nothing."""

    provider_id: str
    result: Final | None
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# The index entry: what a receipt reports against


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A send the provider accepted, as the receipt index keeps it (a Redis hash of these
    fields): enough to report its later result like the service reported its send."""

    notification_id: str
    channel: str
    type: str
    template: str
    variant: str
    user_id: str
    #: The mail's recipient address (EMAIL): a DSN that names it dead suppresses it.
    address: str = ""

    _FIELDS = ("notification_id", "channel", "type", "template", "variant", "user_id", "address")

    def to_fields(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self._FIELDS}

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> SentMessage | None:
        """The entry of a stored hash (bytes or str keys), None when it is not a whole one."""
        text = {_text(k): _text(v) for k, v in fields.items()}
        if not text.get("notification_id") or not text.get("channel"):
            return None
        return cls(**{name: text.get(name, "") for name in cls._FIELDS})

    def report(self, result: Final, reason: str | None) -> dict[str, Any]:
        """The `elimu-intervention-outcomes` report of the receipt: the same id a send-time
        report of this result would have, so it counts once however often it is said."""
        return delivery_report(
            self.notification_id, self.channel, result,
            type=self.type, template=self.template, variant=self.variant, reason=reason,
        )  # fmt: skip


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reason(prefix: str, text: str) -> str:
    """A provider's reason as a short token of safe characters (it lands in reports and logs)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "", text)[:MAX_REASON_LEN]
    return f"{prefix}{cleaned}" if cleaned else prefix.rstrip("_:")


def _provider_id(value: str, name: str) -> str:
    try:
        return check_id(value, name)
    except InvalidEvent as exc:
        raise BadReceipt(f"{name}: {exc.message}") from exc


# ---------------------------------------------------------------------------------------------
# SMS delivery reports: forms


Form = Sequence[tuple[str, str]]


def parse_form(raw: bytes, content_type: str) -> Form:
    """The fields of an ``application/x-www-form-urlencoded`` body, in order (a name may repeat).
    BadReceipt for another content type, more than ``MAX_FORM_FIELDS`` fields, an oversized body
    or percent-escapes that are not UTF-8."""
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise BadReceipt(f"a delivery report is a form, not {content_type[:60]!r}")
    if len(raw) > MAX_CALLBACK_BYTES:
        raise BadReceipt(f"a delivery report is at most {MAX_CALLBACK_BYTES} bytes")
    try:
        text = raw.decode("ascii")  # a urlencoded body is ASCII; UTF-8 travels percent-escaped
        return parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadReceipt(f"not a form: {exc}"[:120]) from exc


def _field(form: Form, name: str) -> str:
    """The one value of ``name`` ("" when absent); BadReceipt when it is given twice, differently."""
    values = {v for k, v in form if k == name}
    if len(values) > 1:
        raise BadReceipt(f"{name} is given {len(values)} different values")
    return values.pop() if values else ""


def _key(text: str) -> str:
    """A status word compared the way providers vary it: case and punctuation ignored."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


#: Africa's Talking's final statuses (its SMS delivery report docs): delivered, or not. The
#: others (Sent, Submitted, Buffered: on the way) say nothing final.
AT_DELIVERED = frozenset({"success"})
AT_NOT_DELIVERED = frozenset({"failed", "rejected", "absentsubscriber", "expired"})
#: Failure reasons about the number itself (it does not exist, or will never take our messages):
#: a bounce. The rest (credit, gateway, a phone that was off until the message expired) fail.
AT_NUMBER_REASONS = frozenset(
    {
        "unknownsubscriber",
        "invalidphonenumber",
        "userinblacklist",
        "userisinblacklist",
        "userindonotdisturb",
        "userisindonotdisturb",
        "userisinactive",
    }
)


def africastalking_receipt(form: Form) -> Receipt:
    """An Africa's Talking delivery report: fields ``id``, ``status``, ``failureReason`` (also
    ``phoneNumber``, ``networkCode``, ``retryCount``, not needed here)."""
    provider_id = _provider_id(_field(form, "id"), "id")
    status = _key(_field(form, "status"))
    if status in AT_DELIVERED:
        return Receipt(provider_id, "delivered")
    if status in AT_NOT_DELIVERED:
        why = _field(form, "failureReason") or _field(form, "status")
        result: Final = "bounced" if _key(why) in AT_NUMBER_REASONS else "failed"
        return Receipt(provider_id, result, _reason("dlr_", why))
    if status:
        return Receipt(provider_id, None)  # on its way, or a status we do not know: no word yet
    raise BadReceipt("status is required")


#: Twilio's message statuses: delivered (``read``: a channel that reports reads), or not.
TWILIO_DELIVERED = frozenset({"delivered", "read"})
TWILIO_NOT_DELIVERED = frozenset({"undelivered", "failed"})
#: Twilio error codes (twilio.com/docs/api/errors) meaning the number will not take messages:
#: 30003 unreachable handset, 30004 blocked by the recipient, 30005 unknown handset, 30006
#: landline or unreachable carrier, 21610 the recipient replied STOP, 21614 not a mobile number.
#: The rest (30007 carrier filtering, 30008 unknown, queue overflow, our account) fail.
TWILIO_NUMBER_ERRORS = frozenset({30003, 30004, 30005, 30006, 21610, 21614})


def twilio_receipt(form: Form) -> Receipt:
    """A Twilio status callback: ``MessageSid``, ``MessageStatus``, ``ErrorCode``."""
    provider_id = _provider_id(_field(form, "MessageSid") or _field(form, "SmsSid"), "MessageSid")
    status = _key(_field(form, "MessageStatus") or _field(form, "SmsStatus"))
    if status in TWILIO_DELIVERED:
        return Receipt(provider_id, "delivered")
    if status in TWILIO_NOT_DELIVERED:
        code = _field(form, "ErrorCode").strip()
        number = int(code) if code.isdigit() and len(code) <= 6 else None
        result: Final = "bounced" if number in TWILIO_NUMBER_ERRORS else "failed"
        return Receipt(provider_id, result, f"sms_error_{number}" if number is not None else f"dlr_{status}")
    if status:
        return Receipt(provider_id, None)  # queued, sending, sent, …: no word yet
    raise BadReceipt("MessageStatus is required")


def twilio_signature(auth_token: str, url: str, form: Form) -> str:
    """``X-Twilio-Signature`` of a POST to ``url``: base64(HMAC-SHA1(auth token, the URL and then
    every parameter's name and value, sorted by name, each name's values sorted)), as Twilio's
    own validators compute it."""
    data = url
    for name in sorted({k for k, _ in form}):
        for value in sorted({v for k, v in form if k == name}):
            data += name + value
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def twilio_signature_valid(auth_token: str, url: str, form: Form, given: str) -> bool:
    """Whether ``given`` is Twilio's signature of this request (constant-time comparison)."""
    if not auth_token or not given:
        return False
    expected = twilio_signature(auth_token, url, form)
    return hmac.compare_digest(expected.encode("ascii"), given.strip().encode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------------
# Tokens derived from ELIMU_SECRET


def _derived_key(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), label, hashlib.sha256).digest()


def _b32(data: bytes) -> str:
    """Lower-case base32 without padding: letters and digits only, and unchanged by an MTA or a
    URL that lower-cases it."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


_CALLBACK_LABEL = b"elimu-pulse/sms-callback-url/v1"


def callback_token(secret: str) -> str:
    """The path token of Africa's Talking's callback URL. Africa's Talking does not sign its
    callbacks, so the URL itself is the credential: only the dashboard we configure it in knows
    it (160 bits, derived from the secret, so every API process agrees without storing it)."""
    return _b32(
        hmac.new(_derived_key(secret, _CALLBACK_LABEL), b"africastalking", hashlib.sha256).digest()[:20]
    )


def africastalking_callback_url(public_url: str, secret: str) -> str:
    """The URL to set as the delivery reports callback in Africa's Talking's dashboard."""
    return public_url.rstrip("/") + AFRICASTALKING_ROUTE.format(token=callback_token(secret))


def callback_token_valid(secret: str, token: str) -> bool:
    return hmac.compare_digest(
        callback_token(secret).encode("ascii"), token.lower().encode("utf-8", "replace")
    )


#: VERP: the envelope sender of each mail, where its bounce comes back.
VERP_PREFIX = "bounces+"
_VERP_LABEL = b"elimu-pulse/verp/v1"
#: A token: 10 bytes naming the send (the receipt index's key), then 5 of MAC over them. 24
#: characters: ``bounces+<token>`` stays far inside the 64 of an SMTP local part (RFC 5321).
_VERP_ID_BYTES = 10
_VERP_MAC_BYTES = 5
VERP_TOKEN_LEN = 24


class VerpSigner:
    """Mints and checks the token of a mail's bounce address. The token is derived from the
    notification (the same mail always gets the same one, so a resend is indexed once) and
    carries its own MAC, so the listener refuses a forged or mistyped recipient without a
    lookup, and nobody can make us take a bounce for a mail we did not send."""

    def __init__(self, secret: str) -> None:
        self._key = _derived_key(secret, _VERP_LABEL)

    def token(self, notification_id: str, channel: str = "EMAIL") -> str:
        ident = hmac.new(self._key, f"id\x00{channel}\x00{notification_id}".encode(), hashlib.sha256).digest()
        ident = ident[:_VERP_ID_BYTES]
        return _b32(ident) + _b32(self._mac(ident))

    def _mac(self, ident: bytes) -> bytes:
        return hmac.new(self._key, b"mac\x00" + ident, hashlib.sha256).digest()[:_VERP_MAC_BYTES]

    def valid(self, token: str) -> bool:
        """Whether ``token`` (any case) is one we minted."""
        token = token.lower()
        if len(token) != VERP_TOKEN_LEN or not re.fullmatch(r"[a-z2-7]+", token):
            return False
        try:
            ident = base64.b32decode(token[:16].upper())
            mac = base64.b32decode(token[16:].upper())
        except ValueError:  # binascii.Error is a ValueError
            return False
        return hmac.compare_digest(self._mac(ident), mac)


@dataclass(frozen=True)
class BounceAddresses:
    """The VERP bounce addresses of a bounce domain: ``bounces+<token>@<domain>``."""

    signer: VerpSigner
    domain: str

    def for_mail(self, notification_id: str) -> tuple[str, str]:
        """(token, envelope sender) of the mail of ``notification_id``."""
        token = self.signer.token(notification_id)
        return token, f"{VERP_PREFIX}{token}@{self.domain}"

    def token_of(self, address: str) -> str | None:
        """The token of ``address`` (lower-cased) when it is one of ours with a valid MAC; None
        for any other address, forged or mistyped."""
        address = address.strip().strip("<>").strip()
        local, at, host = address.rpartition("@")
        if not at or host.lower().rstrip(".") != self.domain.lower().rstrip("."):
            return None
        if not local.lower().startswith(VERP_PREFIX):
            return None
        token = local[len(VERP_PREFIX) :].lower()
        return token if self.signer.valid(token) else None


# ---------------------------------------------------------------------------------------------
# Mail bounces: delivery status notifications (RFC 3464)

_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_DELIVERY_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
#: What each per-recipient ``Action`` means here. ``delayed`` (still trying) and ``relayed``
#: (passed to a system that will not report) say nothing final.
_DELIVERED_ACTIONS = frozenset({"delivered", "expanded"})


@dataclass(frozen=True, slots=True)
class Bounce:
    """What a DSN says of the mail: ``result`` None when nothing final; ``dead`` the recipient
    addresses (lower-cased) it says are dead for good (``DEAD_ADDRESS_CODES``)."""

    result: Final | None
    reason: str | None = None
    dead: frozenset[str] = frozenset()

    @property
    def hard(self) -> bool:
        return self.result == "bounced"

    def suppresses(self, address: str) -> bool:
        """Whether the DSN says ``address`` (the one the mail went to) is dead: a dead-address
        code in a block whose Final- or Original-Recipient is that address (any case)."""
        return bool(address) and address.strip().lower() in self.dead


def parse_dsn(raw: bytes) -> Bounce:
    """Read a delivery status notification: ``multipart/report; report-type=delivery-status``
    with a ``message/delivery-status`` part whose per-recipient blocks say ``Action`` and
    ``Status``. A permanent failure (``failed`` with 5.x.x) is ``bounced``; another failure
    ``failed``; ``delivered``/``expanded`` ``delivered``; ``delayed``/``relayed`` nothing. With
    several recipients the worst word wins. The recipients of failed blocks with a dead-address
    code are ``dead``. BadReceipt for anything that is not a DSN (an auto-reply, spam, an
    oversized or broken mail); DsnTooComplex for one nested deeper than ``MAX_MIME_DEPTH`` or with
    more than ``MAX_MIME_PARTS`` parts."""
    if len(raw) > MAX_DSN_BYTES:
        raise BadReceipt(f"a DSN is at most {MAX_DSN_BYTES} bytes")
    # Before the parser sees it: its nesting is recursion, so a mail of containers in containers
    # costs time and stack. Each container declares itself; more of them than parts allowed is
    # refused unread (a folded header still matches: ``\s`` takes the line break).
    if len(_CONTAINER.findall(raw)) > MAX_MIME_PARTS:
        raise DsnTooComplex(f"more than {MAX_MIME_PARTS} MIME containers")
    try:
        message = BytesParser(policy=compat32).parsebytes(raw)
        _check_structure(message)
        blocks = list(_recipient_blocks(message))
    except BadReceipt:
        raise
    except RecursionError as exc:
        raise DsnTooComplex("nested too deep to read") from exc
    except Exception as exc:  # the parser is lenient, but a hostile mail must never crash us
        raise BadReceipt(f"unreadable mail: {type(exc).__name__}") from exc
    if not blocks:
        raise BadReceipt("the report names no recipient")
    outcomes: list[Bounce] = []
    dead: set[str] = set()
    for block in blocks[:MAX_DSN_RECIPIENTS]:
        action = _key(str(block.get("Action", "")))
        status = _STATUS.match(str(block.get("Status", "")))
        code = ".".join(str(int(n)) for n in status.groups()) if status else ""
        if action == "failed":
            hard = code.startswith("5.")
            outcomes.append(Bounce("bounced" if hard else "failed", f"dsn_{code or 'failed'}"))
            if code in DEAD_ADDRESS_CODES:
                dead.update(_recipients(block))
        elif action in _DELIVERED_ACTIONS:
            outcomes.append(Bounce("delivered"))
    for wanted in ("bounced", "failed", "delivered"):
        for outcome in outcomes:
            if outcome.result == wanted:
                return Bounce(outcome.result, outcome.reason, frozenset(dead))
    return Bounce(None)


#: A header declaring a part that holds parts (a multipart or an encapsulated message).
#: A line may end in CR, LF or both, as the parser splits them.
_CONTAINER = re.compile(rb"(?i)(?:^|[\r\n])content-type:\s*(?:multipart|message)/")
#: The address types of a recipient field: ``rfc822`` (RFC 3464) and ``utf-8`` (RFC 6533).
_ADDRESS_TYPES = frozenset({"rfc822", "utf-8"})


def _recipients(block: Message) -> set[str]:
    """The addresses (lower-cased) a block's ``Final-Recipient`` and ``Original-Recipient`` name
    (``rfc822;addr``, any spacing, any case)."""
    found: set[str] = set()
    for name in ("Final-Recipient", "Original-Recipient"):
        for value in block.get_all(name) or ():
            kind, sep, address = str(value).partition(";")
            if sep and kind.strip().lower() in _ADDRESS_TYPES:
                address = address.strip().strip("<>").strip().lower()
                if "@" in address:
                    found.add(address)
    return found


def _check_structure(message: Message) -> None:
    """DsnTooComplex when the parsed mail nests deeper than ``MAX_MIME_DEPTH`` or has more than
    ``MAX_MIME_PARTS`` parts (walked without recursion; a delivery-status part's blocks are
    header blocks, bounded by ``MAX_DSN_RECIPIENTS`` where they are read, not parts)."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    parts = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if parts > MAX_MIME_PARTS:
            raise DsnTooComplex(f"more than {MAX_MIME_PARTS} MIME parts")
        if depth > MAX_MIME_DEPTH:
            raise DsnTooComplex(f"MIME parts nested deeper than {MAX_MIME_DEPTH}")
        if part.get_content_type() in _DELIVERY_STATUS_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))


def _recipient_blocks(message: Message) -> Iterable[Message]:
    if message.get_content_type() != "multipart/report":
        raise BadReceipt(f"not a report but {message.get_content_type()[:60]}")
    if str(message.get_param("report-type", "")).lower() != "delivery-status":
        raise BadReceipt("a report, but not of delivery status")
    parts = message.get_payload()
    if not isinstance(parts, list):
        raise BadReceipt("a report without parts")
    for part in parts[:MAX_DSN_PARTS]:
        if isinstance(part, Message) and part.get_content_type() in _DELIVERY_STATUS_TYPES:
            for block in _blocks(part):
                if block.get("Action") is not None:
                    yield block
            return
    raise BadReceipt("the report has no delivery-status part")


def _blocks(part: Message) -> Iterable[Message]:
    """The header blocks of a delivery-status part. The parser splits ``message/delivery-status``
    into blocks itself; a ``global-delivery-status`` (RFC 6533) arrives as one message whose body
    holds the remaining blocks, read here."""
    payload = part.get_payload()
    items = payload if isinstance(payload, list) else [payload]
    for item in items[: MAX_DSN_RECIPIENTS + 1]:
        if isinstance(item, Message):
            yield item
            body = item.get_payload()
            if isinstance(body, str) and body.strip():
                yield from _text_blocks(body)
        elif isinstance(item, str):
            yield from _text_blocks(item)


def _text_blocks(text: str) -> Iterable[Message]:
    for chunk in re.split(r"\r?\n\s*\r?\n", text.strip())[: MAX_DSN_RECIPIENTS + 1]:
        yield HeaderParser(policy=compat32).parsestr(chunk.strip() + "\n", headersonly=True)
