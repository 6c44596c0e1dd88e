"""A browser's Web Push subscription, checked before anything is stored or sent to it.

The endpoint is a URL the delivery service will POST to, handed over by a client: unchecked, it
would let anyone make our servers call any address (an internal admin port, a cloud metadata
service). So an endpoint must be ``https`` on a push service's host (``PUSH_HOSTS``, the
browsers' push services, or those an operator names in ``ELIMU_PUSH_HOSTS``), never an IP
literal unless named there, and its keys must be what RFC 8291 needs: a P-256 public key (65
bytes, uncompressed) and a 16-byte auth secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import orjson

#: The push services of the major browsers (a host matches itself or any subdomain).
PUSH_HOSTS = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.services.mozilla.com",
    "notify.windows.com",
    "push.apple.com",
)
MAX_ENDPOINT_LEN = 1024
#: Subscriptions one user may hold (a browser per device; a few devices).
MAX_SUBSCRIPTIONS = 10


class InvalidSubscription(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PushSubscription:
    endpoint: str
    p256dh: str
    auth: str

    @property
    def id(self) -> str:
        """A stable id per endpoint (one browser profile): re-subscribing replaces, not adds."""
        return hashlib.sha256(self.endpoint.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        """The shape browsers give and pywebpush takes."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def _b64url(value: object, name: str, size: int) -> str:
    if not isinstance(value, str) or len(value) > 128:
        raise InvalidSubscription(f"keys.{name} must be base64url text")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidSubscription(f"keys.{name} is not base64url") from exc
    if len(raw) != size or (name == "p256dh" and raw[0] != 4):
        raise InvalidSubscription(
            f"keys.{name} is not a {size}-byte {'P-256 key' if name == 'p256dh' else 'secret'}"
        )
    return value.rstrip("=")


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    return any(host == h or host.endswith("." + h) for h in allowed)


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError as exc:
        raise InvalidSubscription("endpoint has an invalid port") from exc


def parse_subscription(data: object, extra_hosts: tuple[str, ...] = ()) -> PushSubscription:
    """The subscription a browser's ``PushSubscription.toJSON()`` gives, checked.

    ``extra_hosts`` are hosts an operator allows besides the browsers' (``host`` or
    ``host:port``); only they may be plain ``http`` or an IP literal (a test push service).
    """
    if not isinstance(data, dict):
        raise InvalidSubscription("a subscription is an object with endpoint and keys")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_ENDPOINT_LEN:
        raise InvalidSubscription(f"endpoint must be a URL of at most {MAX_ENDPOINT_LEN} characters")
    if any(ch <= " " or ch == "\x7f" for ch in endpoint):
        raise InvalidSubscription("endpoint holds spaces or control characters")
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    netloc = parts.netloc.lower().rpartition("@")[2]
    if parts.username or parts.password:
        raise InvalidSubscription("endpoint must not carry credentials")
    operator_named = host in extra_hosts or netloc in extra_hosts
    if operator_named:
        if parts.scheme not in ("https", "http"):
            raise InvalidSubscription("endpoint must be an http(s) URL")
    elif parts.scheme != "https" or not _host_allowed(host, PUSH_HOSTS) or _port(parts) not in (None, 443):
        raise InvalidSubscription("endpoint must be https on a browser push service (port 443)")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise InvalidSubscription("keys must hold p256dh and auth")
    return PushSubscription(
        endpoint, _b64url(keys.get("p256dh"), "p256dh", 65), _b64url(keys.get("auth"), "auth", 16)
    )


def stored_subscription(raw: bytes | str) -> PushSubscription | None:
    """A subscription as the API stored it (``to_dict`` JSON); None for anything else."""
    try:
        data = orjson.loads(raw)
        return PushSubscription(str(data["endpoint"]), str(data["keys"]["p256dh"]), str(data["keys"]["auth"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
