"""SMS delivery reports: the providers' webhooks (docs/notifications.md, "Delivery receipts").

An SMS the provider accepted is ``sent``; whether it reached the phone comes later, POSTed here
as a form. Each report is checked as its provider allows, read (models/receipts.py), matched
to the send by the provider's message id (the delivery service indexed it: delivery/receipts.py)
and reported like the send's own result, signed, on the outcomes topic: the first final word
on a send counts, a repeated callback does not.

* Africa's Talking signs nothing: its callback URL carries a token derived from ``ELIMU_SECRET``
  (``elimu sms-callback-url`` prints the URL to set in the dashboard); a wrong token is a 404.
* Twilio signs each callback (``X-Twilio-Signature``) with the account's auth token over the URL
  it called, which is the ``StatusCallback`` we gave it: built from ``ELIMU_PUBLIC_URL``, never
  from the request's Host (behind a proxy that is not the URL Twilio called). 403 when it does
  not match.

A report for an id we do not know (older than the index, or another system's) is answered 200
and ignored (``elimu_api_delivery_receipts_total{outcome="unknown"}``): the provider would only
retry it. Bodies are bounded and each source is rate limited: a Twilio report after its
signature is checked, one that fails the check (or is no form) in a bucket of its own, so junk
cannot use up a source's allowance for the real reports.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from api import metrics
from api.bodies import read_bounded
from api.delivery_settings import delivery_config
from api.deps import StateDep
from api.errors import ApiError
from api.rate_limit import RateLimiter
from api.responses import OrjsonResponse
from api.state import AppState
from delivery.config import BadSetting, DeliveryConfig
from delivery.receipts import Outcome, ReceiptIndex, publish_receipt
from infra.producer import ProducerUnavailable
from models.receipts import (
    AFRICASTALKING_ROUTE,
    MAX_CALLBACK_BYTES,
    TWILIO_ROUTE,
    BadReceipt,
    Form,
    Receipt,
    africastalking_receipt,
    callback_token_valid,
    parse_form,
    twilio_receipt,
    twilio_signature_valid,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

#: Per source address. A provider posts a few reports per message (sent, delivered), from a few
#: addresses, so a campaign's burst must pass; a flood of junk must not reach Redis and Kafka.
RATE_SCOPE, RATE_PER_S, RATE_BURST = "webhook", 100.0, 1000
#: Requests that fail the check of their sender (a bad Twilio signature, or a body no provider
#: sends) are charged here, per source, not to the bucket above: junk from an address a provider
#: shares cannot get the provider's real reports refused.
UNSIGNED_SCOPE, UNSIGNED_PER_S, UNSIGNED_BURST = "webhook-unsigned", 10.0, 100
#: The SMS channel's receipts are indexed under this channel (the service's name for it).
CHANNEL = "SMS"


def delivery_settings(state: StateDep) -> DeliveryConfig:
    """The delivery settings (``ELIMU_SMS_*``, ``ELIMU_PUBLIC_URL``), read as ``elimu deliver``
    reads them: the API checks Twilio's signature with the same auth token and URL. A dependency,
    so a test can give its own."""
    try:
        return delivery_config(state.settings.api_port)
    except BadSetting as exc:
        log.error("the delivery settings are unusable, SMS reports are refused: %s", exc)
        raise ApiError(503, "unavailable", "the delivery settings are unusable") from exc


DeliveryDep = Annotated[DeliveryConfig, Depends(delivery_settings)]
Token = Path(min_length=1, max_length=64)


async def _paced(state: AppState, request: Request, provider: str, *, signed: bool = True) -> None:
    """Charge the request to its source's bucket (``signed``: it passed its provider's check,
    or there is none to pass before this; else the bucket of failed checks): 429 when empty."""
    limiter = (
        RateLimiter(state.redis, RATE_SCOPE, RATE_PER_S, RATE_BURST)
        if signed
        else RateLimiter(state.redis, UNSIGNED_SCOPE, UNSIGNED_PER_S, UNSIGNED_BURST)
    )
    source = request.client.host if request.client else "unknown"
    decision = await limiter.take(source)
    if not decision.allowed:
        metrics.DELIVERY_RECEIPTS.labels(provider, "rate_limited").inc()
        raise ApiError(
            429,
            "rate_limited",
            "too many reports",
            headers={"Retry-After": limiter.retry_after_header(decision)},
        )


async def _form(request: Request, provider: str) -> Form:
    raw = await read_bounded(request, MAX_CALLBACK_BYTES, "delivery report")
    try:
        return parse_form(raw, request.headers.get("content-type", ""))
    except BadReceipt as exc:
        metrics.DELIVERY_RECEIPTS.labels(provider, "bad_receipt").inc()
        raise ApiError(400, "bad_receipt", str(exc)) from exc


def _receipt(form: Form, provider: str) -> Receipt:
    try:
        return africastalking_receipt(form) if provider == "africastalking" else twilio_receipt(form)
    except BadReceipt as exc:
        metrics.DELIVERY_RECEIPTS.labels(provider, "bad_receipt").inc()
        raise ApiError(400, "bad_receipt", str(exc)) from exc


async def _report(state: AppState, provider: str, receipt: Receipt) -> OrjsonResponse:
    outcome: Outcome
    if receipt.result is None:
        outcome = "pending"  # on its way: nothing to report yet
    else:
        index = ReceiptIndex(state.redis)
        sent = await index.lookup(CHANNEL, receipt.provider_id)
        if sent is None:
            outcome = "unknown"
        else:
            try:
                outcome = await publish_receipt(
                    index, state.producer, state.config.outcomes_topic, state.config.produce_timeout_s,
                    receipt.provider_id, sent, receipt.result, receipt.reason,
                )  # fmt: skip
            except ProducerUnavailable as exc:
                # Not marked: the provider's retry reports it.
                raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    metrics.DELIVERY_RECEIPTS.labels(provider, outcome).inc()
    return OrjsonResponse({"outcome": outcome})


@router.post(AFRICASTALKING_ROUTE, include_in_schema=False)
async def africastalking_report(request: Request, state: StateDep, token: str = Token) -> OrjsonResponse:
    if not callback_token_valid(state.secret, token):
        metrics.DELIVERY_RECEIPTS.labels("africastalking", "bad_token").inc()
        raise ApiError(404, "not_found", "no such webhook")
    await _paced(state, request, "africastalking")
    form = await _form(request, "africastalking")
    return await _report(state, "africastalking", _receipt(form, "africastalking"))


@router.post(TWILIO_ROUTE, include_in_schema=False)
async def twilio_report(request: Request, state: StateDep, delivery: DeliveryDep) -> OrjsonResponse:
    sms = delivery.sms
    url = delivery.sms_status_callback
    if sms is None or sms.kind != "twilio" or url is None:
        # Without Twilio's auth token and our public URL no signature can be checked.
        raise ApiError(404, "not_found", "no Twilio account is configured (ELIMU_SMS_*, ELIMU_PUBLIC_URL)")
    # The signature first: only a report Twilio signed is charged to the source's bucket.
    try:
        form = await _form(request, "twilio")
    except ApiError:
        await _paced(state, request, "twilio", signed=False)
        raise
    if not twilio_signature_valid(sms.api_key, url, form, request.headers.get("x-twilio-signature", "")):
        await _paced(state, request, "twilio", signed=False)
        metrics.DELIVERY_RECEIPTS.labels("twilio", "bad_signature").inc()
        raise ApiError(403, "forbidden", "the report is not signed by our Twilio account")
    await _paced(state, request, "twilio")
    return await _report(state, "twilio", _receipt(form, "twilio"))
