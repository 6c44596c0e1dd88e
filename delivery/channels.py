"""The one interface every channel implements, and how a send fails.

A channel sends one notification to one user and says how it went: it returns (sent), or raises
``SendFailed``: ``permanent`` when trying again cannot help (no address, the mailbox does not
exist, the provider refused the number: the send is reported and dead-lettered at once), else
transient (the server is away, busy or throttling: retried with backoff, up to a bound). Channels
know nothing of Kafka, retries or idempotency: ``delivery.service`` does that once for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from models.career import DEFAULT_CHANNELS
from models.delivery import DeliveryRequest
from models.interventions.policy import STAFF_CHANNEL
from models.interventions.quiet_hours import quiet_until
from models.push import PushSubscription


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the profile view says about reaching the user (``CareerState.profile_view``)."""

    user_id: str
    email: str | None = None
    phone: str | None = None
    display_name: str | None = None
    channels: tuple[str, ...] = ()
    opt_out: tuple[str, ...] = ()

    def allows(self, channel: str, notification_type: str) -> bool:
        """Whether the user's settings, as they are now, let ``channel`` carry this kind of
        notification: the channels they chose (the default, in-app only, when they chose none,
        as the engine reads them: models/interventions/policy.py), and no opt-out of the kind."""
        if notification_type in self.opt_out:
            return False
        # STAFF is not the user's channel: a staff task needs no setting of theirs.
        return channel == STAFF_CHANNEL or channel in (self.channels or DEFAULT_CHANNELS)

    #: The browsers the user subscribed for Web Push (read only when PUSH is sent).
    push_subscriptions: tuple[PushSubscription, ...] = ()
    timezone: str = "UTC"
    quiet_hours: tuple[str, ...] | None = None

    def quiet_until(self, now_ms: int) -> int | None:
        """When the user's quiet hours around ``now_ms`` end, on their clock (None: not quiet)."""
        return quiet_until(now_ms, self.timezone, self.quiet_hours)

    @classmethod
    def verifying(cls, user_id: str, channel: str, address: str) -> Recipient:
        """The recipient of a contact verification: the pending address alone, on its channel
        (models/contact_verification.py)."""
        email, phone = (address, None) if channel == "EMAIL" else (None, address)
        return cls(user_id=user_id, email=email, phone=phone, channels=(channel,))

    @classmethod
    def from_view(
        cls, user_id: str, view: dict[str, Any] | None, push: tuple[PushSubscription, ...] = ()
    ) -> Recipient:
        view = view or {}
        prefs = view.get("notification_prefs") or {}
        return cls(
            user_id=user_id,
            email=view.get("email"),
            phone=view.get("phone"),
            display_name=view.get("display_name"),
            channels=tuple(prefs.get("channels") or ()),
            opt_out=tuple(prefs.get("opt_out") or ()),
            push_subscriptions=push,
            timezone=str(view.get("timezone") or "UTC"),
            quiet_hours=tuple(quiet) if isinstance(quiet := prefs.get("quiet_hours"), list) else None,
        )


class SendFailed(Exception):
    """A send that did not happen. ``result`` is what is reported (``failed`` or ``bounced``),
    ``reason`` a fixed word for the metric label and the dead letter."""

    def __init__(self, reason: str, message: str, *, permanent: bool, result: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        self.result = result


@dataclass(frozen=True, slots=True)
class Sent:
    """A send the provider accepted; ``provider_id`` when it names the message."""

    provider_id: str | None = None
    #: ``delivered`` when the provider's acceptance is the delivery (a push service's 201).
    result: str = "sent"


class Channel(Protocol):
    #: EMAIL, PUSH or SMS.
    name: str

    async def send(self, request: DeliveryRequest, recipient: Recipient) -> Sent: ...

    async def close(self) -> None: ...
