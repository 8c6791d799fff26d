"""Stripe: PaymentIntents and refunds through the official SDK, and verified webhooks.

The SDK blocks, so every call runs in a worker thread under `call_blocking`'s deadline
(`payment_timeout_s`); the same number is the HTTP client's socket timeout, so an abandoned thread
ends soon after its caller gave up. The SDK does not retry (`max_network_retries=0`): one call is one
attempt, and the caller retries with the same idempotency key, which Stripe answers with the same
intent or refund.

Errors, in our words: a timeout, a connection failure, 429, 409 (a concurrent request with the same
idempotency key) and 5xx are retryable; every other refusal (card declined, invalid request,
authentication) is not. Messages carry Stripe's type, status, code and message, with anything
shaped like a key masked; never the request or the key.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
import stripe
from stripe.params import PaymentIntentCreateParams

from core.settings import Settings
from gateway_clients.payments import (
    CheckoutRequest,
    EventKind,
    PaymentError,
    ProviderCheckout,
    ProviderEvent,
    ProviderName,
    ProviderPayment,
    ProviderRefund,
    ProviderStatus,
    RefundStatus,
    SignatureError,
    call_blocking,
)

SIGNATURE_HEADER = "Stripe-Signature"
PAYMENT_EVENTS: dict[str, EventKind] = {
    "payment_intent.succeeded": "payment_succeeded",
    "payment_intent.payment_failed": "payment_failed",
    "payment_intent.canceled": "payment_failed",
}
# Each carries a refund object; only its final states are acted on.
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "charge.refund.updated"})
REFUND_STATUSES: dict[str, RefundStatus] = {
    "succeeded": "succeeded", "pending": "pending", "requires_action": "pending",
    "failed": "failed", "canceled": "failed",
}
# Stripe's metadata values are limited to 500 characters; 200 keeps the reason readable in the dashboard.
REASON_MAX = 200
# 409: another request with the same idempotency key is still running at Stripe; trying again is the fix.
_RETRYABLE_STATUSES = frozenset({409, 429})
# Keys, and Stripe's own partly masked echo of one ("sk_test_****abcd").
_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")

T = TypeVar("T")


class StripePayments:
    """The `PaymentProvider` for Stripe. `api_base` replaces https://api.stripe.com (tests use a fake)."""

    name: ProviderName = "stripe"

    def __init__(self, secret_key: str, *, publishable_key: str | None = None, webhook_secret: str | None = None,
                 api_base: str | None = None, timeout_s: float = 20.0, tolerance_s: int = 300) -> None:
        self.public_key = publishable_key
        self._secret_key = secret_key
        self._webhook_secret = webhook_secret
        self._timeout_s = timeout_s
        self._tolerance_s = tolerance_s
        # One session shared by the worker threads (the SDK's own default is one per thread, which
        # could not all be closed from `aclose`).
        self._session = requests.Session()
        http_client = stripe.RequestsClient(timeout=timeout_s, session=self._session)
        self._client = stripe.StripeClient(
            secret_key, base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            max_network_retries=0, http_client=http_client)

    @classmethod
    def from_settings(cls, settings: Settings) -> StripePayments:
        if settings.stripe_secret_key is None:
            raise ValueError("Stripe needs STRIPE_SECRET_KEY")
        webhook_secret = settings.stripe_webhook_secret
        return cls(settings.stripe_secret_key.get_secret_value(), publishable_key=settings.stripe_publishable_key,
                   webhook_secret=webhook_secret.get_secret_value() if webhook_secret else None,
                   api_base=settings.stripe_api_base, timeout_s=settings.payment_timeout_s,
                   tolerance_s=settings.webhook_tolerance_s)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await call_blocking(fn, timeout_s=self._timeout_s, what=f"stripe {what}")
        except stripe.StripeError as exc:
            raise self._payment_error(what, exc) from None

    def _payment_error(self, what: str, exc: stripe.StripeError) -> PaymentError:
        if isinstance(exc, stripe.APIConnectionError):
            return PaymentError(f"stripe {what}: Stripe could not be reached", retryable=True)
        status = exc.http_status
        retryable = (isinstance(exc, stripe.RateLimitError) or status is None or status >= 500
                     or status in _RETRYABLE_STATUSES)
        detail = self._mask(exc.user_message or "")
        code = f", {exc.code}" if exc.code else ""
        return PaymentError(f"stripe {what}: {type(exc).__name__} (HTTP {status}{code}): {detail}".rstrip(": "),
                            retryable=retryable)

    def _mask(self, text: str) -> str:
        return _KEY_SHAPED.sub("***", text.replace(self._secret_key, "***"))[:300]

    # --- the provider's API -------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        """Create the PaymentIntent; Stripe answers a repeated idempotency key with the same intent."""
        params: PaymentIntentCreateParams = {
            "amount": request.amount, "currency": request.currency.lower(),
            "automatic_payment_methods": {"enabled": True},
            "metadata": {"order_id": request.order_id, "customer_id": request.customer_id,
                         "payment_id": request.payment_id, "kind": request.kind},
        }
        if request.description:
            params["description"] = request.description
        intent = await self._call("create payment intent", lambda: self._client.v1.payment_intents.create(
            params=params, options={"idempotency_key": request.idempotency_key}))
        return ProviderCheckout(provider_payment_id=intent.id, amount=intent.amount, currency=intent.currency.upper(),
                                client_secret=intent.client_secret)

    async def fetch(self, provider_payment_id: str) -> ProviderPayment:
        intent = await self._call("retrieve payment intent",
                                  lambda: self._client.v1.payment_intents.retrieve(provider_payment_id))
        return _payment(intent.to_dict())

    async def refund(self, provider_payment_id: str, *, charge_id: str | None, amount: int,
                     idempotency_key: str, reason: str) -> ProviderRefund:
        """Refund against the intent (Stripe finds its charge); the idempotency key makes a retry safe."""
        refund = await self._call("create refund", lambda: self._client.v1.refunds.create(
            params={"payment_intent": provider_payment_id, "amount": amount,
                    "metadata": {"reason": reason[:REASON_MAX]}},
            options={"idempotency_key": idempotency_key}))
        return ProviderRefund(provider_refund_id=refund.id, amount=refund.amount,
                              status=REFUND_STATUSES.get(refund.status or "", "pending"))

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """The SDK checks the signature and refuses old timestamps; we also refuse ones from the future."""
        if not self._webhook_secret:
            raise SignatureError("no Stripe webhook secret is configured")
        header = _header(headers, SIGNATURE_HEADER)
        if not header:
            raise SignatureError(f"no {SIGNATURE_HEADER} header")
        try:
            self._client.construct_event(body, header, self._webhook_secret, tolerance=self._tolerance_s)
            event = json.loads(body)
        except stripe.SignatureVerificationError as exc:
            raise SignatureError(f"stripe: {exc.user_message or 'the signature does not verify'}") from None
        except ValueError:  # not UTF-8, not JSON, or not a snapshot event
            raise SignatureError("the body is not a Stripe event") from None
        # The signature covers the timestamp, so a future one was signed that way: a skewed or
        # forged clock, refused like an old one.
        timestamp = _signed_timestamp(header)
        if timestamp is None or timestamp > time.time() + self._tolerance_s:
            raise SignatureError("the signature's timestamp is too far in the future")
        try:
            return _event(event)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SignatureError("the body is not a Stripe event") from None

    async def aclose(self) -> None:
        self._session.close()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """`name` from `headers`, whatever their case (aiohttp's are case-insensitive, a dict is not)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _signed_timestamp(header: str) -> int | None:
    # The first t= item, as the SDK reads it.
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object carrying one."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}


def _failure_message(obj: Mapping[str, Any]) -> str | None:
    error = obj.get("last_payment_error")
    return str(error.get("message") or error.get("code") or "declined") if isinstance(error, Mapping) else None


def _payment(intent: Mapping[str, Any]) -> ProviderPayment:
    status = intent.get("status")
    ours: ProviderStatus = "pending"
    if status == "succeeded":
        ours = "succeeded"
    elif status == "canceled" or (status == "requires_payment_method" and intent.get("last_payment_error")):
        ours = "failed"
    return ProviderPayment(provider_payment_id=str(intent["id"]), status=ours, amount=int(intent["amount"]),
                           currency=str(intent["currency"]).upper(), metadata=_metadata(intent),
                           charge_id=_id(intent.get("latest_charge")), failure_message=_failure_message(intent))


def _event(event: Mapping[str, Any]) -> ProviderEvent:
    event_id, event_type = str(event["id"]), str(event["type"])
    obj: Mapping[str, Any] = event["data"]["object"]
    payment_kind = PAYMENT_EVENTS.get(event_type)
    if payment_kind is not None:
        amount = obj.get("amount_received") or obj.get("amount")
        currency = obj.get("currency")
        return ProviderEvent(event_id=event_id, type=event_type, kind=payment_kind,
                             provider_payment_id=str(obj["id"]), charge_id=_id(obj.get("latest_charge")),
                             amount=int(amount) if amount is not None else None,
                             currency=str(currency).upper() if currency else None, metadata=_metadata(obj),
                             failure_message=_failure_message(obj) if payment_kind == "payment_failed" else None)
    if event_type in REFUND_EVENTS and obj.get("object") == "refund":
        status = REFUND_STATUSES.get(str(obj.get("status")))
        if status in ("succeeded", "failed"):
            currency = obj.get("currency")
            return ProviderEvent(event_id=event_id, type=event_type,
                                 kind="refund_succeeded" if status == "succeeded" else "refund_failed",
                                 provider_payment_id=_id(obj.get("payment_intent")), charge_id=_id(obj.get("charge")),
                                 provider_refund_id=str(obj["id"]), amount=int(obj["amount"]),
                                 currency=str(currency).upper() if currency else None, metadata=_metadata(obj))
    return ProviderEvent(event_id=event_id, type=event_type, kind="ignored")
