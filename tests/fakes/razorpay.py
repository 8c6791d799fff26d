"""A small stand-in for Razorpay's Orders, Payments and Refunds API on loopback, spoken to by the real razorpay SDK."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from aiohttp import BasicAuth, web
from aiohttp.typedefs import Handler

_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{10,}")


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class FakeRazorpay:
    """The routes razorpay==2.0.1 calls (its base URL has no /v1; the paths carry it), with Basic auth:
    POST /v1/orders, GET /v1/orders/{id}, GET /v1/orders/{id}/payments, POST /v1/payments/{id}/refund
    (honouring X-Refund-Idempotency), GET /v1/payments/{id}/refunds.

    Test controls:
    - `pay(order_id) -> (payment_id, signature)`: a captured payment and Checkout's signature
      (hex HMAC-SHA256 of "order_id|payment_id" with the key secret);
    - `fail_payment(order_id, description) -> payment_id`: a failed attempt;
    - `fail_next`: the next N requests answer 500 SERVER_ERROR;
    - `delay_s`: every request sleeps this long before it is answered;
    - `refund_status`: the status new refunds get ("processed", or "pending");
    - `requests`, `calls` (a Counter of "METHOD /route"), `orders`, `payments`, `refunds` (by id);
    - `signed_webhook(event, entities, secret)`: a webhook body and headers as Razorpay signs them.
    """

    def __init__(self, key_id: str = "rzp_test_" + "f" * 14, key_secret: str = "fake-razorpay-key-secret") -> None:  # noqa: S107 - a fake
        self.key_id = key_id
        self.key_secret = key_secret
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.calls: Counter[str] = Counter()
        self.fail_next = 0
        self.delay_s = 0.0
        self.refund_status = "processed"
        self._refund_keys: dict[str, tuple[str, Any, str]] = {}
        self._clock = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def _now(self) -> int:
        # Strictly increasing, so "the latest payment" is well defined within one second.
        self._clock = max(self._clock + 1, int(time.time()))
        return self._clock

    # --- test controls --------------------------------------------------------------------------

    def _new_payment(self, order_id: str, status: str, **fields: Any) -> dict[str, Any]:
        order = self.orders[order_id]
        payment = {
            "id": "pay_" + uuid.uuid4().hex[:14], "entity": "payment", "amount": order["amount"],
            "currency": order["currency"], "status": status, "order_id": order_id, "invoice_id": None,
            "international": False, "method": "card", "amount_refunded": 0, "refund_status": None,
            "captured": status == "captured", "description": None, "email": "customer@example.com",
            "contact": "+919876543210", "notes": [], "fee": None, "tax": None, "error_code": None,
            "error_description": None, "created_at": self._now(), **fields,
        }
        self.payments[payment["id"]] = payment
        order["attempts"] += 1
        return payment

    def pay(self, order_id: str) -> tuple[str, str]:
        payment = self._new_payment(order_id, "captured")
        order = self.orders[order_id]
        order.update(status="paid", amount_paid=order["amount"], amount_due=0)
        return payment["id"], self.checkout_signature(order_id, payment["id"])

    def fail_payment(self, order_id: str, description: str = "Your payment has been declined by your bank.") -> str:
        payment = self._new_payment(order_id, "failed", error_code="BAD_REQUEST_ERROR",
                                    error_description=description)
        if self.orders[order_id]["status"] == "created":
            self.orders[order_id]["status"] = "attempted"
        return str(payment["id"])

    def checkout_signature(self, order_id: str, payment_id: str) -> str:
        return _hmac_hex(self.key_secret, f"{order_id}|{payment_id}".encode())

    def signed_webhook(self, event: str, entities: Mapping[str, Mapping[str, Any]], secret: str, *,
                       event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The exact bytes and headers of a delivery of `event` carrying `entities` ({"payment": {...}})."""
        body = json.dumps({"entity": "event", "account_id": "acc_" + "f" * 14, "event": event,
                           "contains": list(entities),
                           "payload": {name: {"entity": dict(entity)} for name, entity in entities.items()},
                           "created_at": int(time.time())}).encode()
        return body, {"X-Razorpay-Signature": _hmac_hex(secret, body),
                      "X-Razorpay-Event-Id": event_id or "evt_" + uuid.uuid4().hex[:14],
                      "Content-Type": "application/json"}

    # --- the API --------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, description: str, *, code: str = "BAD_REQUEST_ERROR", field: str | None = None,
               ) -> web.Response:
        return web.json_response({"error": {"code": code, "description": description, "source": "NA", "step": "NA",
                                            "reason": "NA", "metadata": {}, "field": field}}, status=status)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counting, delay, auth and outages, in that order, for every route."""
        self.requests += 1
        resource = request.match_info.route.resource
        self.calls[f"{request.method} {resource.canonical if resource else request.path}"] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        try:
            auth = BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            return self._error(401, "Authentication failed")
        if (auth.login, auth.password) != (self.key_id, self.key_secret):
            return self._error(401, "Authentication failed")
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._error(500, "The server encountered an error. The incident has been reported to admins.",
                               code="SERVER_ERROR")
        return await handler(request)

    @staticmethod
    def _collection(items: list[dict[str, Any]], request: web.Request) -> web.Response:
        count = min(int(request.query.get("count", "10")), 100)
        skip = int(request.query.get("skip", "0"))
        page = items[skip:skip + count]
        return web.json_response({"entity": "collection", "count": len(page), "items": page})

    async def _create_order(self, request: web.Request) -> web.Response:
        data = await request.json()
        amount, currency, receipt = data.get("amount"), data.get("currency"), data.get("receipt")
        if not isinstance(amount, int) or amount < 100:
            return self._error(400, "The amount must be atleast INR 1.00", field="amount")
        if currency not in ("INR", "USD", "EUR", "GBP", "SGD", "AED", "MYR"):
            return self._error(400, "Currency is not supported", field="currency")
        if receipt is not None and len(str(receipt)) > 40:
            return self._error(400, "receipt: the length must be no more than 40.", field="receipt")
        notes = data.get("notes") or []
        if len(notes) > 15:
            return self._error(400, "notes: the number of keys must be no more than 15.", field="notes")
        order = {"id": "order_" + uuid.uuid4().hex[:14], "entity": "order", "amount": amount, "amount_paid": 0,
                 "amount_due": amount, "currency": currency, "receipt": receipt, "offer_id": None,
                 "status": "created", "attempts": 0, "notes": notes, "created_at": self._now()}
        self.orders[order["id"]] = order
        return web.json_response(order)

    async def _fetch_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self._error(400, "The id provided does not exist")
        return web.json_response(order)

    async def _order_payments(self, request: web.Request) -> web.Response:
        order_id = request.match_info["id"]
        if order_id not in self.orders:
            return self._error(400, "The id provided does not exist")
        items = sorted((p for p in self.payments.values() if p["order_id"] == order_id),
                       key=lambda p: p["created_at"], reverse=True)
        return self._collection(items, request)

    async def _create_refund(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return self._error(400, "The id provided does not exist")
        data = await request.json()
        key = request.headers.get("X-Refund-Idempotency")
        if key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(key):
                return self._error(400, "The idempotency key is invalid")
            if key in self._refund_keys:
                payment_id, first, refund_id = self._refund_keys[key]
                if payment_id != payment["id"] or first != data:
                    return self._error(400, "Different request with the same idempotency key has already been "
                                       "processed.")
                return web.json_response(self.refunds[refund_id])
        if payment["status"] not in ("captured", "refunded"):
            return self._error(400, "The payment has not been captured")
        left = payment["amount"] - payment["amount_refunded"]
        amount = data.get("amount", left)
        if left <= 0:
            return self._error(400, "The payment has been fully refunded already")
        if not isinstance(amount, int) or amount < 100 or amount > left:
            return self._error(400, "The requested refund amount is greater than the refundable amount",
                               field="amount")
        refund = {"id": "rfnd_" + uuid.uuid4().hex[:14], "entity": "refund", "amount": amount,
                  "currency": payment["currency"], "payment_id": payment["id"], "notes": data.get("notes") or [],
                  "receipt": data.get("receipt"), "acquirer_data": {"arn": None}, "created_at": self._now(),
                  "batch_id": None, "status": self.refund_status, "speed_processed": "normal",
                  "speed_requested": data.get("speed", "normal")}
        self.refunds[refund["id"]] = refund
        if key is not None:
            self._refund_keys[key] = (payment["id"], data, refund["id"])
        payment["amount_refunded"] += amount
        full = payment["amount_refunded"] >= payment["amount"]
        payment.update(refund_status="full" if full else "partial", status="refunded" if full else "captured")
        return web.json_response(refund)

    async def _payment_refunds(self, request: web.Request) -> web.Response:
        payment_id = request.match_info["id"]
        if payment_id not in self.payments:
            return self._error(400, "The id provided does not exist")
        items = sorted((r for r in self.refunds.values() if r["payment_id"] == payment_id),
                       key=lambda r: r["created_at"], reverse=True)
        return self._collection(items, request)

    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/v1/orders", self._create_order)
        app.router.add_get("/v1/orders/{id}", self._fetch_order)
        app.router.add_get("/v1/orders/{id}/payments", self._order_payments)
        app.router.add_post("/v1/payments/{id}/refund", self._create_refund)
        app.router.add_get("/v1/payments/{id}/refunds", self._payment_refunds)
        # A short shutdown: a request left sleeping in `delay_s` must not hold up the test's teardown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
