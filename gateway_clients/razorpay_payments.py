"""Razorpay: Orders, refunds and signature checks through the official SDK, and verified webhooks.

The SDK blocks, so every call runs in a worker thread under `call_blocking`'s deadline
(`payment_timeout_s`); the same number is passed to `requests` as each call's socket timeout, so an
abandoned thread ends soon after its caller gave up. The SDK's own retries stay off.

Idempotency, which Razorpay offers only for refunds:
- Orders have no idempotency key. The receipt carries ours (at most 40 characters, hashed when
  longer), but orders cannot be looked up by receipt, so a retried create makes a second order. That
  is harmless: the caller keeps one payment row per key and stores the order id it got first; an
  order nobody pays expires at Razorpay.
- Refunds are looked up by receipt among the payment's refunds before one is created, and the
  create carries the key in `X-Refund-Idempotency`, which Razorpay honours. The lookup returns an
  earlier refund, and the header covers a retry that races a first call still in flight.

Errors, in our words: a timeout, a connection failure, Razorpay's SERVER_ERROR (5xx, or any code the
SDK does not know, such as a 409 for a refund still in progress), GATEWAY_ERROR (the bank's side) and
an answer that is not JSON are retryable; BAD_REQUEST_ERROR (invalid request, over-refund,
authentication) is not. On a connection failure or timeout the SDK prints one line to stdout; it
holds no credentials (they travel in a header).

Webhooks carry no timestamp: a replay is caught by the event id (`X-Razorpay-Event-Id`), which the
caller stores once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError
from razorpay.errors import SignatureVerificationError as RazorpaySignatureError

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

SIGNATURE_HEADER = "X-Razorpay-Signature"
EVENT_ID_HEADER = "X-Razorpay-Event-Id"
REFUND_IDEMPOTENCY_HEADER = "X-Refund-Idempotency"
EVENT_KINDS: dict[str, EventKind] = {
    "payment.captured": "payment_succeeded",
    "order.paid": "payment_succeeded",
    "payment.failed": "payment_failed",
    "refund.processed": "refund_succeeded",
    "refund.failed": "refund_failed",
}
REFUND_STATUSES: dict[str, RefundStatus] = {"processed": "succeeded", "pending": "pending", "failed": "failed"}
# Razorpay limits a receipt to 40 characters; the refund idempotency key must be 10 or more of
# letters, digits, '-' and '_'. A key that fits both is used as is, any other is hashed to fit.
RECEIPT_MAX = 40
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{10,40}")
# Refunds are listed 100 at a time (Razorpay's maximum); a payment with more than 1,000 is not ours.
REFUND_PAGE = 100
REFUND_PAGES_MAX = 10
REASON_MAX = 200

T = TypeVar("T")


def receipt_for(idempotency_key: str) -> str:
    """The receipt (and refund idempotency key) that stands for our idempotency key at Razorpay."""
    if _PLAIN_KEY.fullmatch(idempotency_key):
        return idempotency_key
    return "h-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:RECEIPT_MAX - 2]


class RazorpayPayments:
    """The `PaymentProvider` for Razorpay. `api_base` replaces https://api.razorpay.com (without /v1)."""

    name: ProviderName = "razorpay"

    def __init__(self, key_id: str, key_secret: str, *, webhook_secret: str | None = None,
                 api_base: str | None = None, timeout_s: float = 20.0) -> None:
        self.public_key: str | None = key_id
        self._webhook_secret = webhook_secret
        self._timeout_s = timeout_s
        self._session = requests.Session()
        options: dict[str, Any] = {}
        if api_base:
            # The SDK appends /v1/... to its base; accept a base given with /v1 too.
            options["base_url"] = api_base.rstrip("/").removesuffix("/v1")
        self._client: Any = razorpay.Client(session=self._session, auth=(key_id, key_secret), **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> RazorpayPayments:
        if not settings.razorpay_key_id or settings.razorpay_key_secret is None:
            raise ValueError("Razorpay needs RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET")
        webhook_secret = settings.razorpay_webhook_secret
        return cls(settings.razorpay_key_id, settings.razorpay_key_secret.get_secret_value(),
                   webhook_secret=webhook_secret.get_secret_value() if webhook_secret else None,
                   api_base=settings.razorpay_api_base, timeout_s=settings.payment_timeout_s)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await call_blocking(fn, timeout_s=self._timeout_s, what=f"razorpay {what}")
        except BadRequestError as exc:
            raise PaymentError(f"razorpay {what}: refused: {_text(exc)}", retryable=False) from None
        except (ServerError, GatewayError) as exc:
            raise PaymentError(f"razorpay {what}: {type(exc).__name__}: {_text(exc)}", retryable=True) from None
        except requests.exceptions.JSONDecodeError:
            raise PaymentError(f"razorpay {what}: the answer was not JSON", retryable=True) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PaymentError(f"razorpay {what}: Razorpay could not be reached ({type(exc).__name__})",
                               retryable=True) from None
        except requests.exceptions.RequestException as exc:
            raise PaymentError(f"razorpay {what}: {type(exc).__name__}", retryable=False) from None

    # --- the provider's API -------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        """Create a Razorpay order (auto-captured). A retry creates another order: see the module doc."""
        data = {"amount": request.amount, "currency": request.currency.upper(),
                "receipt": receipt_for(request.idempotency_key), "payment_capture": 1,
                "notes": {"order_id": request.order_id, "customer_id": request.customer_id,
                          "payment_id": request.payment_id, "kind": request.kind}}
        order = await self._call("create order", lambda: self._client.order.create(data, timeout=self._timeout_s))
        return ProviderCheckout(provider_payment_id=str(order["id"]), amount=int(order["amount"]),
                                currency=str(order["currency"]).upper(), client_secret=None)

    def verify_checkout(self, razorpay_order_id: str, razorpay_payment_id: str, signature: str) -> None:
        """Check Razorpay Checkout's signature (HMAC-SHA256 of "order_id|payment_id" with the key
        secret) for `razorpay_order_id`, which must be the order id we stored; raises SignatureError."""
        try:
            self._client.utility.verify_payment_signature({
                "razorpay_order_id": razorpay_order_id, "razorpay_payment_id": razorpay_payment_id,
                "razorpay_signature": signature})
        except (RazorpaySignatureError, TypeError):  # TypeError: a non-ASCII signature
            raise SignatureError("the Razorpay checkout signature does not verify") from None

    async def fetch(self, provider_payment_id: str) -> ProviderPayment:
        order, payments = await self._call("fetch order", lambda: self._order_and_payments(provider_payment_id))
        return _payment(order, payments)

    def _order_and_payments(self, order_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        order = self._client.order.fetch(order_id, timeout=self._timeout_s)
        listing = self._client.order.payments(order_id, timeout=self._timeout_s)
        return order, [p for p in listing.get("items") or [] if isinstance(p, dict)]

    async def refund(self, provider_payment_id: str, *, charge_id: str | None, amount: int,
                     idempotency_key: str, reason: str) -> ProviderRefund:
        """Refund `amount` of the order's captured payment (`charge_id`, pay_...; found when missing)."""
        refund = await self._call("refund", lambda: self._refund(provider_payment_id, charge_id, amount,
                                                                 receipt_for(idempotency_key), reason))
        return ProviderRefund(provider_refund_id=str(refund["id"]), amount=int(refund["amount"]),
                              status=REFUND_STATUSES.get(str(refund.get("status")), "pending"))

    def _refund(self, order_id: str, charge_id: str | None, amount: int, receipt: str,
                reason: str) -> dict[str, Any]:
        if not charge_id:
            order, payments = self._order_and_payments(order_id)
            charge_id = _payment(order, payments).charge_id
            if not charge_id:
                raise PaymentError(f"razorpay refund: order {order_id} has no captured payment", retryable=False)
        for page in range(REFUND_PAGES_MAX):
            listing = self._client.payment.fetch_multiple_refund(
                charge_id, {"count": REFUND_PAGE, "skip": page * REFUND_PAGE}, timeout=self._timeout_s)
            items = [r for r in listing.get("items") or [] if isinstance(r, dict)]
            existing = next((r for r in items if r.get("receipt") == receipt), None)
            if existing is not None:
                return existing
            if len(items) < REFUND_PAGE:
                break
        refund: dict[str, Any] = self._client.payment.refund(
            charge_id, {"amount": amount, "receipt": receipt, "notes": {"reason": reason[:REASON_MAX]},
                        "speed": "normal"},
            headers={REFUND_IDEMPOTENCY_HEADER: receipt}, timeout=self._timeout_s)
        return refund

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify `X-Razorpay-Signature` (HMAC-SHA256 of the raw body with the webhook secret) and parse."""
        if not self._webhook_secret:
            raise SignatureError("no Razorpay webhook secret is configured")
        signature = _header(headers, SIGNATURE_HEADER)
        if not signature:
            raise SignatureError(f"no {SIGNATURE_HEADER} header")
        try:
            self._client.utility.verify_webhook_signature(body.decode(), signature, self._webhook_secret)
        except (RazorpaySignatureError, TypeError):  # TypeError: a non-ASCII signature
            raise SignatureError("the Razorpay webhook signature does not verify") from None
        except UnicodeDecodeError:
            raise SignatureError("the body is not text, so Razorpay did not sign it") from None
        try:
            event = json.loads(body)
            return _event(event, _event_id(event, body, headers))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SignatureError("the body is not a Razorpay event") from None

    async def aclose(self) -> None:
        self._session.close()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """`name` from `headers`, whatever their case (aiohttp's are case-insensitive, a dict is not)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _text(exc: Exception) -> str:
    # Razorpay's error descriptions name fields and amounts, never credentials.
    return str(exc)[:300] or "no description"


def _notes(entity: Mapping[str, Any] | None) -> dict[str, str]:
    # Razorpay sends empty notes as [] rather than {}.
    notes = (entity or {}).get("notes")
    return {str(k): str(v) for k, v in notes.items()} if isinstance(notes, Mapping) else {}


def _payment(order: Mapping[str, Any], payments: list[dict[str, Any]]) -> ProviderPayment:
    """Our view of an order: paid when Razorpay says so or a payment was captured (a fully refunded
    payment's status moves on to "refunded"); failed when its latest attempt failed."""
    captured = next((p for p in payments if p.get("status") in ("captured", "refunded")), None)
    latest = max(payments, key=lambda p: int(p.get("created_at") or 0), default=None)
    status: ProviderStatus = "pending"
    failure = None
    if order.get("status") == "paid" or captured is not None:
        status = "succeeded"
    elif latest is not None and latest.get("status") == "failed":
        status = "failed"
        failure = str(latest.get("error_description") or latest.get("error_code") or "declined")
    return ProviderPayment(provider_payment_id=str(order["id"]), status=status, amount=int(order["amount"]),
                           currency=str(order["currency"]).upper(), metadata=_notes(order),
                           charge_id=str(captured["id"]) if captured is not None else None, failure_message=failure)


def _event_id(event: Mapping[str, Any], body: bytes, headers: Mapping[str, str]) -> str:
    # Razorpay sends the id as a header; a body without one still gets a stable id, so a repeat of
    # the same delivery is recognised.
    return _header(headers, EVENT_ID_HEADER) or str(event.get("id") or "") or \
        "sha256:" + hashlib.sha256(body).hexdigest()


def _entity(event: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    wrapper = (event.get("payload") or {}).get(name)
    entity = wrapper.get("entity") if isinstance(wrapper, Mapping) else None
    return entity if isinstance(entity, Mapping) else None


def _event(event: Mapping[str, Any], event_id: str) -> ProviderEvent:
    event_type = str(event["event"])
    kind = EVENT_KINDS.get(event_type, "ignored")
    payment, order, refund = _entity(event, "payment"), _entity(event, "order"), _entity(event, "refund")
    if kind in ("payment_succeeded", "payment_failed"):
        source = payment or order
        if source is None:
            raise ValueError("a payment event without a payment or order")
        order_id = (payment or {}).get("order_id") or (order or {}).get("id")
        currency = source.get("currency")
        return ProviderEvent(
            event_id=event_id, type=event_type, kind=kind, provider_payment_id=str(order_id) if order_id else None,
            charge_id=str(payment["id"]) if payment else None, amount=int(source["amount"]),
            currency=str(currency).upper() if currency else None,
            # The order's notes are ours; a payment's are whatever the checkout page added.
            metadata={**_notes(payment), **_notes(order)},
            failure_message=str(payment.get("error_description") or "declined")
            if payment and kind == "payment_failed" else None)
    if kind in ("refund_succeeded", "refund_failed"):
        if refund is None:
            raise ValueError("a refund event without a refund")
        order_id = (payment or {}).get("order_id")
        currency = refund.get("currency")
        return ProviderEvent(event_id=event_id, type=event_type, kind=kind,
                             provider_payment_id=str(order_id) if order_id else None,
                             charge_id=str(refund["payment_id"]), provider_refund_id=str(refund["id"]),
                             amount=int(refund["amount"]), currency=str(currency).upper() if currency else None)
    return ProviderEvent(event_id=event_id, type=event_type, kind="ignored")
