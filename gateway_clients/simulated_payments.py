"""The offline payment provider: a small gateway of its own, so the product pays end to end with no keys.

It behaves like a real provider from the product's point of view:
- it keeps its own records (`simulator_payments` in MongoDB), keyed by the idempotency key, so a
  retried create returns the same payment;
- the customer completes a local checkout step (`complete`), which is what a card form would do;
- every outcome and refund becomes a webhook event in a durable queue (`simulator_webhooks`),
  signed like Stripe's (`t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`) with a local secret and POSTed
  to the app's own webhook endpoint with retries, so the product's webhook path runs offline too.

Headers: `Simulator-Signature`, `Simulator-Event-Id`. Event types: `payment.succeeded`,
`payment.failed`, `refund.succeeded`, each `{"id", "type", "created", "data": {...}}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

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
    SignatureError,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Simulator-Signature"
EVENT_ID_HEADER = "Simulator-Event-Id"
WEBHOOK_PATH = "/api/payments/webhooks/simulated"
EVENT_KINDS: dict[str, EventKind] = {
    "payment.succeeded": "payment_succeeded",
    "payment.failed": "payment_failed",
    "refund.succeeded": "refund_succeeded",
}
# Webhook delivery: retried with backoff like the real providers, for a day.
DELIVERY_TIMEOUT_S = 10.0
DELIVERY_BACKOFF_S = (1, 2, 5, 15, 60, 300, 900, 3600)
DELIVERY_GIVE_UP_MS = 24 * 3600 * 1000
DELIVERY_BATCH = 20


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class SimulatedPayments:
    """The local gateway. `name` and the webhook format are part of docs/payments.md."""

    name: ProviderName = "simulated"
    public_key: str | None = None

    def __init__(self, db: AsyncDatabase[dict[str, Any]], secret: str, *, webhook_url: str,
                 tolerance_s: int = 300) -> None:
        self.payments: AsyncCollection[dict[str, Any]] = db.simulator_payments
        self.webhooks: AsyncCollection[dict[str, Any]] = db.simulator_webhooks
        self._secret = secret
        self.webhook_url = webhook_url
        self._tolerance_s = tolerance_s
        self._http: aiohttp.ClientSession | None = None
        self._indexed = False

    @classmethod
    def from_settings(cls, settings: Settings, db: AsyncDatabase[dict[str, Any]]) -> SimulatedPayments:
        return cls(db, settings.payments_simulator_secret.get_secret_value(),
                   webhook_url=simulator_webhook_url(settings), tolerance_s=settings.webhook_tolerance_s)

    async def _ensure_indexes(self) -> None:
        if not self._indexed:
            await self.payments.create_index("idempotency_key", unique=True)
            await self.webhooks.create_index([("status", 1), ("next_attempt_ms", 1)])
            self._indexed = True

    # --- the provider's API -------------------------------------------------------------------

    async def create_checkout(self, request: CheckoutRequest) -> ProviderCheckout:
        await self._ensure_indexes()
        doc = await self.payments.find_one({"idempotency_key": request.idempotency_key})
        if doc is None:
            payment_id = "sim_pi_" + uuid.uuid4().hex[:24]
            doc = {
                "_id": payment_id, "idempotency_key": request.idempotency_key, "amount": request.amount,
                "currency": request.currency, "status": "pending", "client_secret":
                f"{payment_id}_secret_{secrets.token_urlsafe(12)}", "charge_id": None,
                "metadata": {"order_id": request.order_id, "customer_id": request.customer_id,
                             "payment_id": request.payment_id, "kind": request.kind},
                "refunds": [], "amount_refunded": 0, "version": 1, "created_ms": _now_ms(),
            }
            try:
                await self.payments.insert_one(doc)
            except DuplicateKeyError:  # a racing retry with the same key won
                doc = await self.payments.find_one({"idempotency_key": request.idempotency_key})
                if doc is None:
                    raise PaymentError("simulator: payment vanished", retryable=True) from None
        return ProviderCheckout(provider_payment_id=doc["_id"], amount=int(doc["amount"]),
                                currency=str(doc["currency"]), client_secret=str(doc["client_secret"]))

    async def complete(self, provider_payment_id: str, outcome: Literal["succeeded", "failed"]) -> ProviderPayment:
        """The customer finished the local checkout form. Paying twice changes nothing; a failed
        attempt may be followed by a successful one, as with a second card."""
        update: dict[str, Any] = {"status": outcome}
        if outcome == "succeeded":
            update["charge_id"] = "sim_ch_" + uuid.uuid4().hex[:24]
        doc = await self.payments.find_one_and_update(
            {"_id": provider_payment_id, "status": {"$in": ["pending", "failed"]}},
            {"$set": update, "$inc": {"version": 1}}, return_document=ReturnDocument.AFTER)
        if doc is None:
            return await self.fetch(provider_payment_id)
        await self._queue_event(f"payment.{outcome}", _payment_object(doc))
        return _payment(doc)

    async def fetch(self, provider_payment_id: str) -> ProviderPayment:
        doc = await self.payments.find_one({"_id": provider_payment_id})
        if doc is None:
            raise PaymentError("simulator: no such payment", retryable=False)
        return _payment(doc)

    async def refund(self, provider_payment_id: str, *, charge_id: str | None, amount: int,
                     idempotency_key: str, reason: str) -> ProviderRefund:
        for _ in range(8):
            doc = await self.payments.find_one({"_id": provider_payment_id})
            if doc is None:
                raise PaymentError("simulator: no such payment", retryable=False)
            for existing in doc.get("refunds") or []:
                if existing.get("idempotency_key") == idempotency_key:
                    return ProviderRefund(str(existing["id"]), int(existing["amount"]), "succeeded")
            if doc.get("status") != "succeeded":
                raise PaymentError("simulator: the payment was not captured", retryable=False)
            refunded = int(doc.get("amount_refunded") or 0)
            if amount <= 0 or refunded + amount > int(doc["amount"]):
                raise PaymentError("simulator: the refund exceeds what is left of the payment", retryable=False)
            refund = {"id": "sim_re_" + uuid.uuid4().hex[:24], "amount": amount, "idempotency_key": idempotency_key,
                      "reason": reason[:200], "created_ms": _now_ms()}
            after = await self.payments.find_one_and_update(
                {"_id": provider_payment_id, "version": doc["version"]},
                {"$set": {"refunds": [*(doc.get("refunds") or []), refund], "amount_refunded": refunded + amount,
                          "version": int(doc["version"]) + 1}}, return_document=ReturnDocument.AFTER)
            if after is not None:
                await self._queue_event("refund.succeeded", {
                    "id": refund["id"], "object": "refund", "payment": provider_payment_id, "amount": amount,
                    "currency": doc["currency"], "status": "succeeded", "metadata": dict(doc.get("metadata") or {})})
                return ProviderRefund(str(refund["id"]), amount, "succeeded")
        raise PaymentError("simulator: the payment is changing too quickly", retryable=True)

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        header = headers.get(SIGNATURE_HEADER, "")
        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        try:
            timestamp = int(parts.get("t", ""))
        except ValueError:
            raise SignatureError("no timestamp in the signature header") from None
        expected = sign(self._secret, body, timestamp).split("v1=", 1)[1]
        if not hmac.compare_digest(expected, parts.get("v1", "")):
            raise SignatureError("the signature does not match the body")
        skew = time.time() - timestamp
        if skew > self._tolerance_s or skew < -self._tolerance_s:
            raise SignatureError("the signature's timestamp is outside the tolerance")
        try:
            event = json.loads(body)
            data = event["data"]
            event_id, kind_name = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError):
            raise SignatureError("the body is not a simulator event") from None
        kind = EVENT_KINDS.get(kind_name, "ignored")
        if kind.startswith("refund"):
            return ProviderEvent(event_id=event_id, type=kind_name, kind=kind, provider_payment_id=data.get("payment"),
                                 provider_refund_id=data.get("id"), amount=data.get("amount"),
                                 currency=data.get("currency"), metadata=data.get("metadata") or {})
        return ProviderEvent(event_id=event_id, type=kind_name, kind=kind, provider_payment_id=data.get("id"),
                             charge_id=data.get("charge_id"), amount=data.get("amount"),
                             currency=data.get("currency"), metadata=data.get("metadata") or {},
                             failure_message=data.get("failure_message"))

    # --- webhook delivery ---------------------------------------------------------------------

    async def _queue_event(self, event_type: str, data: dict[str, Any]) -> None:
        event_id = "sim_evt_" + uuid.uuid4().hex[:24]
        body = {"id": event_id, "type": event_type, "created": int(time.time()), "data": data}
        now = _now_ms()
        await self.webhooks.insert_one({"_id": event_id, "body": json.dumps(body), "status": "pending",
                                        "attempts": 0, "next_attempt_ms": now, "created_ms": now})

    def signed_request(self, body: str, *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The exact bytes and headers a delivery sends (tests replay and tamper with these)."""
        raw = body.encode()
        event_id = str(json.loads(raw)["id"])
        headers = {SIGNATURE_HEADER: sign(self._secret, raw, timestamp or int(time.time())),
                   EVENT_ID_HEADER: event_id, "Content-Type": "application/json"}
        return raw, headers

    async def deliver_due(self, *, limit: int = DELIVERY_BATCH) -> int:
        """POST due webhook events to the app; returns how many were attempted."""
        attempted = 0
        while attempted < limit:
            now = _now_ms()
            doc = await self.webhooks.find_one_and_update(
                {"status": "pending", "next_attempt_ms": {"$lte": now}},
                {"$set": {"next_attempt_ms": now + int(DELIVERY_TIMEOUT_S * 2000)}, "$inc": {"attempts": 1}},
                sort=[("next_attempt_ms", 1)], return_document=ReturnDocument.AFTER)
            if doc is None:
                break
            attempted += 1
            await self._deliver(doc)
        return attempted

    async def _deliver(self, doc: Mapping[str, Any]) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_S))
        body, headers = self.signed_request(str(doc["body"]))
        try:
            async with self._http.post(self.webhook_url, data=body, headers=headers) as resp:
                delivered = 200 <= resp.status < 300
                outcome = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            delivered, outcome = False, type(exc).__name__
        attempts = int(doc.get("attempts") or 1)
        if delivered:
            await self.webhooks.update_one({"_id": doc["_id"]}, {"$set": {"status": "delivered"}})
            return
        if _now_ms() - int(doc.get("created_ms") or 0) > DELIVERY_GIVE_UP_MS:
            logger.warning("simulated webhook %s given up after %d attempts (%s)", doc["_id"], attempts, outcome)
            await self.webhooks.update_one({"_id": doc["_id"]}, {"$set": {"status": "failed"}})
            return
        delay = DELIVERY_BACKOFF_S[min(attempts - 1, len(DELIVERY_BACKOFF_S) - 1)]
        logger.info("simulated webhook %s not delivered (%s); retrying in %d s", doc["_id"], outcome, delay)
        await self.webhooks.update_one({"_id": doc["_id"]}, {"$set": {"next_attempt_ms": _now_ms() + delay * 1000}})

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def simulator_webhook_url(settings: Settings) -> str:
    """Where simulated webhooks go: this deployment's own endpoint, on loopback when bound to all."""
    if settings.payments_simulator_webhook_url:
        return settings.payments_simulator_webhook_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}{WEBHOOK_PATH}"


def _payment(doc: Mapping[str, Any]) -> ProviderPayment:
    status = doc.get("status")
    return ProviderPayment(
        provider_payment_id=str(doc["_id"]), amount=int(doc["amount"]), currency=str(doc["currency"]),
        status="succeeded" if status == "succeeded" else "failed" if status == "failed" else "pending",
        metadata={str(k): str(v) for k, v in (doc.get("metadata") or {}).items()},
        charge_id=doc.get("charge_id"),
        failure_message="the simulated card was declined" if status == "failed" else None,
    )


def _payment_object(doc: Mapping[str, Any]) -> dict[str, Any]:
    payment = _payment(doc)
    return {"id": payment.provider_payment_id, "object": "payment", "status": payment.status,
            "amount": payment.amount, "currency": payment.currency, "charge_id": payment.charge_id,
            "metadata": dict(payment.metadata), "failure_message": payment.failure_message}
