"""What the delivery services (``elimu deliver``) decide, without I/O: which record of the
`notifications` topic becomes which sends, whether a send may still go out, how long to wait
before retrying one, and the outcome event each send reports back.

A `notifications` record (streams/risk_pipeline.py ``notification_message``) names its channels;
IN_APP is the worker's inbox and STAFF the outreach queue, so the services send only EMAIL, PUSH
and SMS. Each (notification, channel) is one send, idempotent by that pair.

Outcomes go back to the engine as `behavior-events` of the types in ``OUTCOME_TYPES``, keyed by
the user, with an ``event_id`` derived from the notification, the channel and the result, so a
redelivered outcome counts once. Users may not post these types (models/ingest_policy.py): they
steer the A/B choice.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from models.contact import InvalidContact, normalize_email, normalize_phone
from models.contact_verification import VERIFICATION_TYPE
from models.events import InvalidEvent, check_id, parse_ts
from models.time_units import HOUR_MS

#: Channels the delivery services send on: the user's (IN_APP is the worker's inbox), and STAFF,
#: the outreach queue a human_outreach notification becomes a task in.
SENT_CHANNELS = ("EMAIL", "PUSH", "SMS", "STAFF")
#: A notification this much older than its delivery time is not sent at all: a streak warning
#: that arrives a day late, after an outage of the services, does harm, not good.
MAX_SEND_DELAY_MS = 12 * HOUR_MS
#: Attempts per send before it is given up (dead-lettered), and the backoff between them.
MAX_ATTEMPTS = 4
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
#: The largest text a channel carries; longer is cut (a subject or an SMS is not a document).
MAX_SUBJECT_LEN = 200
MAX_BODY_LEN = 4000
MAX_SMS_LEN = 459  # three concatenated GSM-7 segments
MAX_HTML_LEN = 16_000

#: What a send's outcome can be (the delivery results of models/interventions/bandit.py).
Result = Literal["sent", "delivered", "bounced", "failed", "unsubscribed"]
#: The behaviour events a tracking link records: real actions of the user, so they are activity
#: too (the worker folds them into the notification's funnel, models/interventions).
TRACKING_TYPES = {"open": "notification_opened", "click": "notification_clicked"}


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One `notifications` record, checked: what every channel needs to send it."""

    notification_id: str
    user_id: str
    type: str
    channels: tuple[str, ...]
    subject: str
    body: str
    cta: str
    template: str
    variant: str
    deliver_at_ms: int
    #: The mail's HTML body when an admin's template gives one (links are added around it).
    html: str = ""
    #: The address a contact verification goes to (the pending one, not yet the profile's):
    #: set for that type only, and it is the only type sent anywhere but the profile's address.
    to: str = ""
    #: A contact verification's code, sealed (models/contact_verification.py ``CodeSealer``).
    code_sealed: str = ""

    def sends(self) -> tuple[str, ...]:
        """The channels the delivery services send this notification on."""
        return tuple(c for c in self.channels if c in SENT_CHANNELS)

    @property
    def verification(self) -> bool:
        """A contact verification: a transactional message, sent whatever the settings say
        (the user just asked for it) and not an intervention (no funnel, no A/B)."""
        return self.type == VERIFICATION_TYPE


def parse_notification(raw: bytes) -> DeliveryRequest:
    """Decode one `notifications` value; InvalidEvent (a dead-letter reason) when it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", "the value is not JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", "the value is not a JSON object")
    channels = obj.get("channels", [])  # none: not for the delivery services (a perk's record)
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise InvalidEvent("bad_type", "channels must be a list of strings")
    try:
        deliver_at = parse_ts(obj.get("deliver_at") or obj.get("created_at"))
    except InvalidEvent as exc:
        raise InvalidEvent("bad_ts", f"deliver_at: {exc.message}") from exc
    kind = _text(obj, "type", 64)
    channels_ = tuple(dict.fromkeys(c.upper() for c in channels[:8]))
    return DeliveryRequest(
        notification_id=check_id(_text(obj, "notification_id", 128), "notification_id"),
        user_id=check_id(_text(obj, "user_id", 128), "user_id"),
        type=kind,
        channels=channels_,
        subject=_text(obj, "subject", MAX_SUBJECT_LEN, required=False),
        body=_text(obj, "body", MAX_BODY_LEN, required=False),
        cta=_text(obj, "cta", MAX_SUBJECT_LEN, required=False),
        template=_text(obj, "template", 128, required=False),
        variant=_text(obj, "variant", 64, required=False),
        deliver_at_ms=deliver_at,
        html=_html(obj.get("html")),
        to=_verification_address(obj, channels_) if kind == VERIFICATION_TYPE else "",
        code_sealed=_text(obj, "code_sealed", 256) if kind == VERIFICATION_TYPE else "",
    )


def _verification_address(obj: Mapping[str, Any], channels: tuple[str, ...]) -> str:
    """The checked address of a contact verification: one channel, EMAIL or SMS, and an
    address of that channel's kind (normalised the way the profile's are)."""
    if channels not in (("EMAIL",), ("SMS",)):
        raise InvalidEvent("bad_channels", "a verification goes on exactly one of EMAIL or SMS")
    address = _text(obj, "to", 254)
    try:
        return normalize_email(address) if channels == ("EMAIL",) else normalize_phone(address)
    except InvalidContact as exc:
        raise InvalidEvent(exc.reason, exc.message) from exc


def _html(value: object) -> str:
    if not isinstance(value, str):
        return ""
    return value[:MAX_HTML_LEN]


def _text(obj: Mapping[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise InvalidEvent("missing_field", f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string")
    # Control and line-separating characters would let a subject break out into a header of its
    # own; a line break in a body is kept (the text part shows it).
    if name == "body":
        return "\n".join(header_text(line) for line in value.split("\n"))[:limit]
    return header_text(value)[:limit]


def header_text(value: str) -> str:
    """``value`` with every control, line and paragraph separator (Unicode Cc, Zl, Zp: what could
    end a header line or break one) made a space."""
    return "".join(" " if unicodedata.category(ch) in _BREAKING else ch for ch in value)


_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def too_late(request: DeliveryRequest, now_ms: int) -> bool:
    """Whether the notification is too stale to send at all (``MAX_SEND_DELAY_MS``)."""
    return now_ms - request.deliver_at_ms > MAX_SEND_DELAY_MS


def backoff_s(attempt: int) -> float:
    """The wait before attempt ``attempt + 1`` (attempts count from 1): doubling, capped."""
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1)))


def sms_text(request: DeliveryRequest) -> str:
    """An SMS: the body, then the call to action, within three segments."""
    text = request.body if not request.cta else f"{request.body} {request.cta}".strip()
    return text if len(text) <= MAX_SMS_LEN else text[: MAX_SMS_LEN - 1].rstrip() + "…"


def delivery_report(
    notification_id: str,
    channel: str,
    result: str,
    *,
    type: str,
    template: str,
    variant: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """The `elimu-intervention-outcomes` report of a send's result, for the interventions
    analytics and the A/B choice (models/outcome_ledger.py, kind ``delivery``). Its id makes a
    redelivered report count once."""
    report: dict[str, Any] = {
        "id": f"dlv:{result}:{channel}:{notification_id}",
        "kind": "delivery",
        "result": result,
        "channel": channel,
        "type": type,
        "template": template,
        "variant": variant,
    }
    if reason:
        report["reason"] = reason[:200]
    return report


def tracking_event(kind: str, notification_id: str, user_id: str, channel: str, ts_ms: int) -> dict[str, Any]:
    """The `behavior-events` record of an open or a click through a tracking link: counted once
    per notification and kind, however often the pixel loads or the link is followed."""
    return {
        "event_id": f"{kind}:{notification_id}"[:128],
        "user_id": user_id,
        "type": TRACKING_TYPES[kind],
        "ts": ts_ms,
        "props": {"notification_id": notification_id, "via": channel.lower()},
    }
