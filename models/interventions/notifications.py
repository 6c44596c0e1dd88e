"""Notifications and the per-user book: the gate every nudge passes (`decide`), deferral,
delivery and tracking."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.boards import standing_sentence
from models.contact import safe_display_name
from models.events import format_ts
from models.interventions.bandit import VariantStats, choose_variant
from models.interventions.policy import (
    INTERRUPTING,
    RE_ENGAGEMENT,
    STAFF_CHANNEL,
    STAFF_TYPES,
    TRANSACTIONAL,
    UserContext,
    allowed_channels,
    channels_for,
    check_type,
)
from models.interventions.quiet_hours import quiet_until
from models.interventions.templates import BUILTIN_LIBRARY, TemplateLibrary, render
from models.state_budget import json_size
from models.time_units import DAY_MS, HOUR_MS

# --- throttling and state bounds ----------------------------------------------------------------

#: The HTML of one notification, bounded (an admin's template, filled).
MAX_HTML_CHARS = 16_000
MAX_PER_DAY = 3
CAP_WINDOW_MS = DAY_MS
MIN_GAP_MS: Mapping[str, int] = {
    "streak_warning": 20 * HOUR_MS,
    "gentle_reminder": 48 * HOUR_MS,
    "peer_comparison": 72 * HOUR_MS,
    "personalized_content": 72 * HOUR_MS,
    "human_outreach": 7 * DAY_MS,
    "discount_offer": 14 * DAY_MS,
}
#: How long the send log remembers: the longest per-type gap (and at least the cap window).
THROTTLE_WINDOW_MS = max(CAP_WINDOW_MS, *MIN_GAP_MS.values())
KEY_TTL_MS = 35 * DAY_MS
MAX_KEYS = 512
MAX_INBOX = 50
MAX_PENDING = 20
MAX_DELIVERED = 50
# Byte budgets: the book lives in the user's risk state, one changelog record that must stay far
# below the record limit (models.state_budget). A notification is ~600 bytes, but ~1.5 KB with a
# 128-byte user id (in its user_id, key and staff text) and a long display name, so the counts
# alone would let the notifications reach ~180 KB and the keys (most hold the user id) ~150 KB.
#: Inbox, delivered and pending notifications together; beyond it the oldest sent ones go.
NOTIFICATIONS_BUDGET_BYTES = 72 * 1024
#: Remembered idempotency keys; beyond it the oldest are forgotten, as beyond MAX_KEYS (the
#: per-type gaps and the daily cap still stop a repeat). Honest keys (~40 bytes) never reach it.
KEYS_BUDGET_BYTES = 24 * 1024
BOOK_VERSION = 1
#: Stages a tracking event can record; each implies the ones before it.
TRACK_STAGES: tuple[str, ...] = ("opened", "clicked", "converted")

# Decision reasons.
QUEUED = "queued"
DEFERRED = "deferred"
THROTTLED = "throttled"
DUPLICATE = "duplicate"
RETURNED = "returned"
OPTED_OUT = "opted_out"
NO_CHANNEL = "no_channel"


# ---------------------------------------------------------------------------------------------
# Notifications and the per-user book


def notification_id(user_id: str, key: str) -> str:
    """Deterministic id: a replay of the same trigger names the same notification. The user id
    is hashed in because keys need only be unique per user (a campaign key is shared)."""
    return "n-" + hashlib.sha1(f"{user_id}\x1f{key}".encode(), usedforsecurity=False).hexdigest()[:20]


def risk_key(user_id: str, type: str, day: int | str) -> str:
    """Idempotency key of a risk-driven nudge: one per user, type and (local) day."""
    return f"risk:{user_id}:{type}:{day}"


@dataclass
class Notification:
    """One intervention to one user (or, for human_outreach, to staff about one user)."""

    id: str
    user_id: str
    type: str
    channels: tuple[str, ...]
    template: str
    variant: str
    subject: str
    body: str
    cta: str
    created_ms: int
    deliver_at_ms: int  # > created_ms when quiet hours deferred it
    key: str  # idempotency key
    source: str  # "risk", "campaign:<id>", "streak", ...
    urgency: str = "medium"
    status: str = "pending"  # pending -> sent, or cancelled
    read: bool = False
    sent_ms: int | None = None
    opened_ms: int | None = None
    clicked_ms: int | None = None
    converted_ms: int | None = None
    #: The mail's HTML (an admin template's), for the delivery services. Kept in state only
    #: while the notification waits (quiet hours): once sent, the inbox needs the text alone.
    html: str = ""

    @property
    def primary_channel(self) -> str:
        return self.channels[0] if self.channels else STAFF_CHANNEL

    def public(self) -> dict[str, Any]:
        """What the user's notification list shows (no template, variant or key)."""
        return {
            "id": self.id,
            "type": self.type,
            "subject": self.subject,
            "body": self.body,
            "cta": self.cta,
            "channels": list(self.channels),
            "created_at": format_ts(self.sent_ms if self.sent_ms is not None else self.deliver_at_ms),
            "read": self.read,
        }

    def to_dict(self) -> dict[str, Any]:
        data = self._fields()
        if self.html and self.status == "pending":
            data["html"] = self.html
        return data

    def _fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "channels": list(self.channels),
            "template": self.template,
            "variant": self.variant,
            "subject": self.subject,
            "body": self.body,
            "cta": self.cta,
            "created_ms": self.created_ms,
            "deliver_at_ms": self.deliver_at_ms,
            "key": self.key,
            "source": self.source,
            "urgency": self.urgency,
            "status": self.status,
            "read": self.read,
            "sent_ms": self.sent_ms,
            "opened_ms": self.opened_ms,
            "clicked_ms": self.clicked_ms,
            "converted_ms": self.converted_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        def optional_ms(name: str) -> int | None:
            value = data.get(name)
            return None if value is None else int(value)

        return cls(
            id=str(data["id"]),
            user_id=str(data["user_id"]),
            type=str(data["type"]),
            channels=tuple(str(c) for c in data.get("channels") or ()),
            template=str(data["template"]),
            variant=str(data["variant"]),
            subject=str(data["subject"]),
            body=str(data["body"]),
            cta=str(data["cta"]),
            created_ms=int(data["created_ms"]),
            deliver_at_ms=int(data["deliver_at_ms"]),
            key=str(data["key"]),
            source=str(data["source"]),
            urgency=str(data.get("urgency") or "medium"),
            status=str(data.get("status") or "pending"),
            read=bool(data.get("read", False)),
            sent_ms=optional_ms("sent_ms"),
            opened_ms=optional_ms("opened_ms"),
            clicked_ms=optional_ms("clicked_ms"),
            converted_ms=optional_ms("converted_ms"),
            html=str(data.get("html") or "")[:MAX_HTML_CHARS],
        )


@dataclass
class NotificationBook:
    """One user's notification state; every list and map is bounded (see the module docstring)."""

    inbox: list[Notification] = field(default_factory=list)  # IN_APP, newest last
    pending: list[Notification] = field(default_factory=list)  # deferred by quiet hours
    delivered: list[Notification] = field(default_factory=list)  # recent non-inbox, for tracking
    sent_log: list[tuple[int, str]] = field(default_factory=list)  # (ts_ms, type) of sends
    keys: dict[str, int] = field(default_factory=dict)  # idempotency key -> ts_ms

    def find(self, notification_id: str) -> Notification | None:
        for group in (self.inbox, self.delivered, self.pending):
            for n in group:
                if n.id == notification_id:
                    return n
        return None

    def mark_read(self, notification_id: str) -> bool:
        """Mark read; False when the user has no such notification (idempotent otherwise)."""
        n = self.find(notification_id)
        if n is None:
            return False
        n.read = True
        return True

    def track(self, notification_id: str, stage: str, ts_ms: int) -> list[str]:
        """Record a tracking stage; returns the stages recorded NOW, in funnel order.

        A stage implies the ones before it (a click was opened, a conversion clicked), so a
        click on an unopened notification returns ["opened", "clicked"]; a stage recorded before
        returns nothing. Unknown notifications return [] (tracking events may outlive them).
        """
        if stage not in TRACK_STAGES:
            raise ValueError(f"unknown tracking stage {stage!r}; expected one of {TRACK_STAGES}")
        n = self.find(notification_id)
        if n is None:
            return []
        recorded: list[str] = []
        for s in TRACK_STAGES[: TRACK_STAGES.index(stage) + 1]:
            attr = f"{s}_ms"
            if getattr(n, attr) is None:
                setattr(n, attr, ts_ms)
                recorded.append(s)
        return recorded

    def unread(self) -> int:
        return sum(1 for n in self.inbox if not n.read)

    def public(self) -> list[dict[str, Any]]:
        """The inbox as the API shows it, newest first."""
        return [n.public() for n in reversed(self.inbox)]

    def prune(self, now_ms: int) -> None:
        """Forget sends older than THROTTLE_WINDOW_MS and keys older than KEY_TTL_MS, and the
        oldest keys beyond MAX_KEYS or KEYS_BUDGET_BYTES."""
        self.sent_log = [(ts, t) for ts, t in self.sent_log if ts > now_ms - THROTTLE_WINDOW_MS]
        self.keys = {k: ts for k, ts in self.keys.items() if ts > now_ms - KEY_TTL_MS}
        self.fit_keys()

    def fit_keys(self) -> None:
        """Forget the oldest keys beyond MAX_KEYS or KEYS_BUDGET_BYTES."""
        # A key costs its JSON string, a colon, its time (at most 15 digits) and a comma.
        sizes = {k: json_size(k) + 17 for k in self.keys}
        if len(self.keys) > MAX_KEYS or sum(sizes.values()) > KEYS_BUDGET_BYTES:
            kept: dict[str, int] = {}
            used = 0
            for k, ts in sorted(self.keys.items(), key=lambda kv: (-kv[1], kv[0])):
                if len(kept) == MAX_KEYS or used + sizes[k] > KEYS_BUDGET_BYTES:
                    break
                kept[k] = ts
                used += sizes[k]
            self.keys = kept

    def fit(self) -> None:
        """Drop the oldest sent notifications (inbox or delivered) until the kept ones fit
        NOTIFICATIONS_BUDGET_BYTES. Pending ones are never dropped: MAX_PENDING of them take at
        most ~30 KB. Tracking a kept one later adds at most its three instants (~40 bytes)."""
        sizes = {
            id(n): len(orjson.dumps(n.to_dict())) + 1 for n in (*self.inbox, *self.delivered, *self.pending)
        }
        total = sum(sizes.values())
        while total > NOTIFICATIONS_BUDGET_BYTES and (self.delivered or self.inbox):
            groups = [group for group in (self.inbox, self.delivered) if group]
            oldest = min(groups, key=lambda group: (group[0].sent_ms or 0, group[0].created_ms))
            total -= sizes[id(oldest.pop(0))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": BOOK_VERSION,
            "inbox": [n.to_dict() for n in self.inbox],
            "pending": [n.to_dict() for n in self.pending],
            "delivered": [n.to_dict() for n in self.delivered],
            "sent_log": [[ts, t] for ts, t in self.sent_log],
            "keys": dict(self.keys),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotificationBook:
        if data.get("v") != BOOK_VERSION:
            raise ValueError(f"unsupported notification book version {data.get('v')!r}")

        def notifications(name: str) -> list[Notification]:
            return [Notification.from_dict(n) for n in data.get(name) or ()]

        return cls(
            inbox=notifications("inbox"),
            pending=notifications("pending"),
            delivered=notifications("delivered"),
            sent_log=[(int(ts), str(t)) for ts, t in data.get("sent_log") or ()],
            keys={str(k): int(ts) for k, ts in (data.get("keys") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's verdict: a notification to deliver now ("queued"), one held back ("deferred",
    already in `book.pending`), or a reason for sending nothing."""

    notification: Notification | None
    reason: str


def _throttled(book: NotificationBook, type: str, now_ms: int) -> bool:
    if type in TRANSACTIONAL:  # news the user waits for: never capped, and not counted
        return False
    if type not in STAFF_TYPES:
        recent = sum(
            1
            for ts, t in book.sent_log
            if t not in STAFF_TYPES and t not in TRANSACTIONAL and ts > now_ms - CAP_WINDOW_MS
        )
        if recent >= MAX_PER_DAY:
            return True
    gap = MIN_GAP_MS.get(type, 0)
    # Future entries (deferred sends) count too: ts > now - gap holds for them.
    return gap > 0 and any(t == type and ts > now_ms - gap for ts, t in book.sent_log)


def _chosen_channels(ctx: UserContext, type: str, urgency: str, channels: Sequence[str] | None) -> list[str]:
    if type in STAFF_TYPES:
        return []
    allowed = allowed_channels(ctx)
    if type in TRANSACTIONAL:  # every channel the user allows (or of those asked), the inbox always
        allowed = allowed if "IN_APP" in allowed else ["IN_APP", *allowed]
        if channels is None:
            return allowed
    elif channels is None:
        return channels_for(urgency, ctx)
    chosen: list[str] = []
    for c in channels:
        name = c.upper()
        if name in allowed and name not in chosen:
            chosen.append(name)
    return chosen


def context_variables(ctx: UserContext, now_ms: int) -> dict[str, object]:
    """Template variables known from the context alone; the caller's variables override them."""
    values: dict[str, object] = {"user_id": ctx.user_id, "level": ctx.level}
    # A name that reads like a link is not repeated in the engine's voice (it would be by mail).
    name = safe_display_name(ctx.display_name)
    if name:
        values["display_name"] = name
    if ctx.streak > 0:
        values["streak"] = ctx.streak
    if ctx.last_active_ms is not None and now_ms - ctx.last_active_ms >= 2 * DAY_MS:
        values["days_quiet"] = round((now_ms - ctx.last_active_ms) / DAY_MS)  # 3.9 days reads "4"
    if ctx.weakest_category:
        values["topic"] = f"a {ctx.weakest_category} practice session"
    if ctx.discount_pct is not None:
        values["discount_pct"] = ctx.discount_pct
    if ctx.peer_pct is not None:
        values["peer_pct"] = ctx.peer_pct
    values["standing"] = standing_sentence(ctx.standing)
    return values


def decide(
    book: NotificationBook,
    ctx: UserContext,
    type: str,
    key: str,
    now_ms: int,
    *,
    source: str,
    variables: Mapping[str, object],
    stats: VariantStats | Mapping[str, Mapping[str, int]] | None,
    urgency: str = "medium",
    channels: Sequence[str] | None = None,
    templates: TemplateLibrary | None = None,
    template_id: str | None = None,
) -> Decision:
    """The single gate every intervention passes, in this order: duplicate key, opt-out, user
    returned (re-engagement types), throttle, channels, then queue or defer for quiet hours.

    `channels`, when given, replaces the urgency's choice but is still limited to the channels
    the user allows (no fallback: the caller asked for specific ones). On "queued" and
    "deferred" the key and the send are recorded in `book`; a deferred notification is appended
    to `book.pending` for `due`. A queued one is the caller's to deliver (`deliver`).
    """
    check_type(type)
    book.prune(now_ms)
    if key in book.keys:
        return Decision(None, DUPLICATE)
    if ctx.opted_out(type):
        return Decision(None, OPTED_OUT)
    if type in RE_ENGAGEMENT and ctx.returned(now_ms):
        return Decision(None, RETURNED)
    if _throttled(book, type, now_ms):
        return Decision(None, THROTTLED)
    chosen = _chosen_channels(ctx, type, urgency, channels)
    if not chosen and type not in STAFF_TYPES:
        return Decision(None, NO_CHANNEL)
    deliver_at = now_ms
    if INTERRUPTING.intersection(chosen):
        until = quiet_until(now_ms, ctx.timezone, ctx.prefs.get("quiet_hours"))
        if until is not None:
            if len(book.pending) >= MAX_PENDING:
                return Decision(None, THROTTLED)
            deliver_at = until
    template = (templates or BUILTIN_LIBRARY).resolve(type, template_id)
    variant = choose_variant(template, stats, seed=f"{ctx.user_id}\x1f{key}")
    text = render(variant, {**context_variables(ctx, now_ms), **variables})
    n = Notification(
        id=notification_id(ctx.user_id, key),
        user_id=ctx.user_id,
        type=type,
        channels=tuple(chosen),
        template=template.id,
        variant=variant.id,
        subject=text["subject"],
        body=text["body"],
        cta=text["cta"],
        created_ms=now_ms,
        deliver_at_ms=deliver_at,
        key=key,
        source=source,
        urgency=urgency,
        html=text["html"][:MAX_HTML_CHARS],
    )
    book.keys[key] = now_ms
    book.fit_keys()
    if type not in TRANSACTIONAL:  # read only by the throttles, which career news skips
        book.sent_log.append((deliver_at, type))
    if deliver_at > now_ms:
        book.pending.append(n)
        book.fit()
        return Decision(n, DEFERRED)
    return Decision(n, QUEUED)


def _forget_send(book: NotificationBook, n: Notification) -> None:
    with contextlib.suppress(ValueError):  # already pruned
        book.sent_log.remove((n.deliver_at_ms, n.type))


def withdraw(book: NotificationBook, n: Notification) -> None:
    """Take back a deferred notification before its time (its send no longer counts against
    the throttle; its key stays remembered, so the trigger does not fire it again)."""
    book.pending = [p for p in book.pending if p.id != n.id]
    n.status = "cancelled"
    _forget_send(book, n)


def due(book: NotificationBook, now_ms: int, ctx: UserContext) -> list[Decision]:
    """Pop the deferred notifications whose time has come, oldest first.

    Each is "queued" (the caller delivers it), or cancelled (status "cancelled", its send no
    longer counted against the throttle, its key still remembered): "returned" for a
    re-engagement type when the user was active after it was created, "opted_out" when they
    opted out of its type in the meantime.
    """
    ready = sorted(
        (n for n in book.pending if n.deliver_at_ms <= now_ms),
        key=lambda n: (n.deliver_at_ms, n.created_ms, n.id),
    )
    if not ready:
        return []
    ready_ids = {n.id for n in ready}
    book.pending = [n for n in book.pending if n.id not in ready_ids]
    decisions: list[Decision] = []
    for n in ready:
        reason = QUEUED
        if ctx.opted_out(n.type):
            reason = OPTED_OUT
        elif n.type in RE_ENGAGEMENT and ctx.last_active_ms is not None and ctx.last_active_ms > n.created_ms:
            reason = RETURNED
        if reason != QUEUED:
            n.status = "cancelled"
            _forget_send(book, n)
        decisions.append(Decision(n, reason))
    book.prune(now_ms)
    return decisions


def deliver(book: NotificationBook, n: Notification, now_ms: int) -> None:
    """Mark `n` sent; IN_APP ones enter the inbox (oldest dropped beyond MAX_INBOX), others the
    small delivered index that tracking events look up. Idempotent."""
    book.pending = [p for p in book.pending if p.id != n.id]
    if n.status != "sent":
        n.status = "sent"
        n.sent_ms = now_ms
    group, bound = (book.inbox, MAX_INBOX) if "IN_APP" in n.channels else (book.delivered, MAX_DELIVERED)
    if all(existing.id != n.id for existing in group):
        group.append(n)
        del group[:-bound]
        book.fit()
