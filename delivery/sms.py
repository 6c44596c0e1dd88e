"""SMS through a provider's HTTP API, in Africa's Talking's request shape (the default; another
provider is another class with the same ``send``).

The request: ``POST`` form fields ``username``, ``to``, ``message`` (and ``from`` when a sender
id is set), the key in the ``apiKey`` header. The answer names each recipient's status code:
100–102 accepted; a number the network will never take (invalid, unsupported, blacklisted,
do-not-disturb) is permanent; balance, routing and gateway trouble is transient, as are HTTP
429 and 5xx.
"""

from __future__ import annotations

import httpx

from delivery.channels import Recipient, SendFailed, Sent
from delivery.config import SmsProvider
from models.delivery import DeliveryRequest, sms_text

#: The provider's per-recipient status codes.
ACCEPTED = frozenset({100, 101, 102})
PERMANENT = frozenset({401, 402, 403, 404, 406, 409})
#: Of those, the ones about the number (a bounce); 401/402 are our account's (risk hold, sender id).
NUMBER_REFUSED = frozenset({403, 404, 406, 409})


class SmsChannel:
    name = "SMS"

    def __init__(self, provider: SmsProvider, timeout_s: float = 10.0) -> None:
        self.provider = provider
        self._http = httpx.AsyncClient(timeout=timeout_s, trust_env=False)

    async def send(self, request: DeliveryRequest, recipient: Recipient) -> Sent:
        if not recipient.phone:
            raise SendFailed("no_address", "the profile has no phone number", permanent=True)
        form = {"username": self.provider.username, "to": recipient.phone, "message": sms_text(request)}
        if self.provider.sender_id:
            form["from"] = self.provider.sender_id
        try:
            response = await self._http.post(
                self.provider.url,
                data=form,
                headers={"apiKey": self.provider.api_key, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise SendFailed("sms_unreachable", f"the SMS provider: {exc!r}"[:200], permanent=False) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SendFailed(
                f"sms_http_{response.status_code}", "the SMS provider is busy or failing", permanent=False
            )
        if response.status_code >= 400:
            raise SendFailed(
                f"sms_http_{response.status_code}",
                response.text[:200] or "the SMS provider refused",
                permanent=True,
            )
        try:
            recipients = response.json()["SMSMessageData"]["Recipients"]
            status = int(recipients[0]["statusCode"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise SendFailed(
                "sms_bad_answer", "the SMS provider's answer has no recipient status", permanent=False
            ) from exc
        if status in ACCEPTED:
            return Sent(provider_id=str(recipients[0].get("messageId") or "") or None)
        raise SendFailed(
            f"sms_status_{status}",
            str(recipients[0].get("status") or status)[:100],
            permanent=status in PERMANENT,
            result="bounced" if status in NUMBER_REFUSED else "failed",
        )

    async def close(self) -> None:
        await self._http.aclose()


class TwilioSmsChannel:
    """SMS through Twilio's Messages API: ``POST`` form ``To``, ``From``, ``Body`` with HTTP basic
    auth (account SID, auth token). 201 is accepted; a 400 whose error code says the number is
    invalid, unreachable or opted out is a bounce; 401/403 are our account's (failed, permanent);
    429 and 5xx transient."""

    name = "SMS"
    #: Twilio error codes about the recipient (https://www.twilio.com/docs/api/errors).
    NUMBER_REFUSED = frozenset({21211, 21214, 21408, 21610, 21612, 21614})

    def __init__(
        self, provider: SmsProvider, timeout_s: float = 10.0, status_callback: str | None = None
    ) -> None:
        self.provider = provider
        #: Where Twilio reports each message's later status (api/routes/webhooks.py), when the
        #: API has a public address (``DeliveryConfig.sms_status_callback``).
        self.status_callback = status_callback
        self._http = httpx.AsyncClient(
            timeout=timeout_s, trust_env=False, auth=(provider.username, provider.api_key)
        )

    async def send(self, request: DeliveryRequest, recipient: Recipient) -> Sent:
        if not recipient.phone:
            raise SendFailed("no_address", "the profile has no phone number", permanent=True)
        form = {"To": recipient.phone, "From": self.provider.sender_id or "", "Body": sms_text(request)}
        if self.status_callback:
            form["StatusCallback"] = self.status_callback
        try:
            response = await self._http.post(self.provider.url, data=form)
        except httpx.HTTPError as exc:
            raise SendFailed("sms_unreachable", f"the SMS provider: {exc!r}"[:200], permanent=False) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise SendFailed(
                f"sms_http_{response.status_code}", "the SMS provider is busy or failing", permanent=False
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (200, 201):
            return Sent(provider_id=str(body.get("sid") or "") or None)
        code = body.get("code") if isinstance(body, dict) else None
        bounced = isinstance(code, int) and code in self.NUMBER_REFUSED
        raise SendFailed(
            f"sms_error_{code}" if isinstance(code, int) else f"sms_http_{response.status_code}",
            str(body.get("message") if isinstance(body, dict) else response.text)[:200],
            permanent=True,
            result="bounced" if bounced else "failed",
        )

    async def close(self) -> None:
        await self._http.aclose()
