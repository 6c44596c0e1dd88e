"""PUSH with the Web Push protocol: the payload encrypted for each of the user's browser
subscriptions (RFC 8291, aes128gcm) and the request signed with our VAPID key (RFC 8292), by
pywebpush and py_vapid.

A push service's 201 is the delivery (it holds the message for the browser): reported
``delivered``. 404 and 410 mean the subscription is gone (the user revoked it, the browser was
reset): it is removed, as the protocol asks. 429 and 5xx are transient. A user with several
browsers gets the notification on each; it counts as delivered when at least one took it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from py_vapid import Vapid
from pywebpush import WebPusher, WebPushException

from delivery.channels import Recipient, SendFailed, Sent
from delivery.config import DeliveryConfig
from infra.tracking import Links
from infra.vapid import private_pem
from models.delivery import DeliveryRequest
from models.push import PushSubscription

log = logging.getLogger(__name__)

#: How long a push service keeps a message for a browser that is offline (seconds).
PUSH_TTL_S = 12 * 3600
#: Plaintext bytes of a push (RFC 8291 leaves 3,993 of a 4,096-byte record; a margin for headers).
MAX_PAYLOAD_BYTES = 3_000
#: Push service origins whose signed VAPID header is kept (the browsers' services are a few).
MAX_AUDIENCES = 64
#: The VAPID JWT's lifetime; the spec allows at most 24 h, and a new one is signed well before.
VAPID_TTL_S = 12 * 3600

#: ``forget(user_id, subscription_id)``: remove a subscription the push service says is gone.
Forget = Callable[[str, str], Awaitable[Any]]


def vapid_key(config: DeliveryConfig, data_dir: Path) -> Vapid:
    return Vapid.from_pem(private_pem(config.vapid_private_key, data_dir))


class WebPushChannel:
    name = "PUSH"

    def __init__(
        self, vapid: Vapid, subject: str, links: Links, forget: Forget, timeout_s: float = 10.0
    ) -> None:
        self.vapid = vapid
        self.subject = subject
        self.links = links
        self.forget = forget
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        # One signed JWT per push service origin, reused until it nears its expiry.
        self._headers: dict[str, tuple[float, dict[str, str]]] = {}

    def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._headers.get(audience)
        if cached is None or cached[0] < now + 600:
            expires = int(now) + VAPID_TTL_S
            signed = self.vapid.sign({"aud": audience, "exp": expires, "sub": self.subject})
            cached = (float(expires), {k: str(v) for k, v in signed.items()})
            if len(self._headers) >= MAX_AUDIENCES:
                self._headers.pop(next(iter(self._headers)))  # the oldest signed
            self._headers[audience] = cached
        return dict(cached[1])

    def payload(self, request: DeliveryRequest) -> bytes:
        """The JSON a browser's service worker gets, its body cut to keep the whole within what
        push services take (4,096 bytes encrypted: ``MAX_PAYLOAD_BYTES`` of plaintext)."""
        doc = {
            "notification_id": request.notification_id,
            "type": request.type,
            "title": request.subject,
            "body": request.body,
            "cta": request.cta,
            "url": self.links.url("click", request, self.name, int(time.time() * 1000)),
        }
        data = orjson.dumps(doc)
        while len(data) > MAX_PAYLOAD_BYTES and doc["body"]:
            over = len(data) - MAX_PAYLOAD_BYTES
            doc["body"] = doc["body"][: max(0, len(doc["body"]) - max(over // 2, 16))].rstrip() + "…"
            data = orjson.dumps(doc)
        return data

    async def send(self, request: DeliveryRequest, recipient: Recipient) -> Sent:
        subscriptions = recipient.push_subscriptions
        if not subscriptions:
            raise SendFailed("no_subscription", "the user has no push subscription", permanent=True)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        data = self.payload(request)
        statuses = await asyncio.gather(*(self._one(sub, data, recipient.user_id) for sub in subscriptions))
        if any(200 <= s < 300 for s in statuses):
            return Sent(result="delivered")
        if all(s in (404, 410) for s in statuses):
            raise SendFailed(
                "subscription_gone", "every subscription has expired", permanent=True, result="bounced"
            )
        worst = max(statuses)
        transient = any(s == 429 or s >= 500 or s == 0 for s in statuses)
        raise SendFailed(
            f"push_http_{worst}", f"push services answered {sorted(set(statuses))}", permanent=not transient
        )

    async def _one(self, sub: PushSubscription, data: bytes, user_id: str) -> int:
        """The push service's status for one subscription (0: it could not be reached)."""
        try:
            pusher = WebPusher(sub.to_dict(), aiohttp_session=self._session)
            response = await pusher.send_async(
                data, headers=self._vapid_headers(sub.endpoint), ttl=PUSH_TTL_S, timeout=self.timeout_s
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("push service unreachable for %s: %s", urlsplit(sub.endpoint).netloc, exc)
            return 0
        except (WebPushException, ValueError, TypeError) as exc:
            # Keys nothing can encrypt for (stored before the checks, or damaged): as useless as
            # a subscription the service says is gone, and removed like one.
            log.warning("push subscription %s is unusable (%s); removed", sub.id, exc)
            await self.forget(user_id, sub.id)
            return 410
        status = int(getattr(response, "status", 0))
        if status in (404, 410):
            await self.forget(user_id, sub.id)
        return status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
