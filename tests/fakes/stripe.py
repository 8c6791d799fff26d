"""A small stand-in for Stripe's PaymentIntents and Refunds API on loopback, spoken to by the real stripe SDK."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

_BRACKETS = re.compile(r"\[([^\]]*)\]")
PARAMS = web.RequestKey("params", dict)  # the decoded form of a POST, read once by the gate


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back to nested dicts: `metadata[order_id]=x` → {"metadata": {"order_id": "x"}}."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        path = [head, *_BRACKETS.findall(key[len(head):])]
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The Stripe-Signature header value Stripe sends with `body` at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class FakeStripe:
    """POST/GET /v1/payment_intents and POST /v1/refunds with Bearer auth, as api.stripe.com answers them.

    Test controls:
    - `succeed(pi_id)`, `fail(pi_id, message)`, `cancel(pi_id)`: what the customer's card did;
    - `fail_next`: the next N requests answer 500 (an outage in front of the API: nothing is
      stored, not even the idempotency key);
    - `delay_s`: every request sleeps this long before it is answered;
    - `refund_status`: the status new refunds get ("succeeded", or "pending" as for some methods);
    - `requests` (all requests), `calls` (a Counter of "METHOD /route"), `intents` and `refunds` (by id);
    - `signed_event(type, obj, secret, timestamp=None)`: a webhook body and headers as Stripe signs them.

    An Idempotency-Key seen before with the same request answers the first answer again; with a
    different request it answers Stripe's 400 idempotency_error.
    """

    def __init__(self, secret_key: str = "sk_test_" + "f" * 24) -> None:
        self.secret_key = secret_key
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.calls: Counter[str] = Counter()
        self.fail_next = 0
        self.delay_s = 0.0
        self.refund_status = "succeeded"
        self._idempotent: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- test controls --------------------------------------------------------------------------

    def succeed(self, pi_id: str) -> dict[str, Any]:
        intent = self.intents[pi_id]
        intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None,
                      latest_charge="ch_" + uuid.uuid4().hex[:24])
        return dict(intent)

    def fail(self, pi_id: str, message: str = "Your card was declined.") -> dict[str, Any]:
        intent = self.intents[pi_id]
        intent.update(status="requires_payment_method", last_payment_error={
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": message})
        return dict(intent)

    def cancel(self, pi_id: str) -> dict[str, Any]:
        intent = self.intents[pi_id]
        intent.update(status="canceled", cancellation_reason="abandoned")
        return dict(intent)

    def signed_event(self, event_type: str, obj: dict[str, Any], secret: str, timestamp: int | None = None,
                     *, event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The exact bytes and headers of a webhook delivery of `obj` as `event_type`."""
        now = int(time.time())
        event = {"id": event_id or "evt_" + uuid.uuid4().hex[:24], "object": "event", "api_version": "2025-01-01",
                 "created": now, "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
                 "request": {"id": None, "idempotency_key": None}, "type": event_type}
        body = json.dumps(event).encode()
        return body, {"Stripe-Signature": stripe_signature(secret, body, timestamp if timestamp is not None else now),
                      "Content-Type": "application/json"}

    # --- the API --------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> web.Response:
        error: dict[str, Any] = {"type": type_, "message": message}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        return web.json_response({"error": error}, status=status,
                                 headers={"Request-Id": "req_" + uuid.uuid4().hex[:14]})

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counting, delay, auth, outages and idempotency, in that order, for every route."""
        self.requests += 1
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        self.calls[f"{request.method} {route}"] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.headers.get("Authorization", "") != f"Bearer {self.secret_key}":
            shown = request.headers.get("Authorization", "").removeprefix("Bearer ")[-4:]
            return self._error(401, f"Invalid API Key provided: sk_test_****{shown}")
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._error(500, "An unknown error occurred", type_="api_error")
        if request.method != "POST":
            return await handler(request)
        params = parse_form([(k, str(v)) for k, v in (await request.post()).items()])
        request[PARAMS] = params
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotent:
            path, first_params, status, answer = self._idempotent[key]
            if path != request.path or first_params != params:
                return self._error(400, "Keys for idempotent requests can only be used with the same parameters "
                                   f"they were first used with. Try using a key other than '{key}' if you meant "
                                   "to execute a different request.", type_="idempotency_error")
            return web.json_response(answer, status=status, headers={"Idempotent-Replayed": "true"})
        response = await handler(request)
        if key and isinstance(response, web.Response) and response.status < 500 and response.body is not None:
            assert isinstance(response.body, bytes)
            self._idempotent[key] = (request.path, params, response.status, json.loads(response.body))
        return response

    async def _create_intent(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = request[PARAMS]
        try:
            amount = int(params["amount"])
            currency = str(params["currency"])
        except (KeyError, ValueError):
            return self._error(400, "Missing required param: amount.", code="parameter_missing", param="amount")
        if amount < 1 or currency != currency.lower():
            return self._error(400, "Invalid amount or currency.", code="parameter_invalid_integer", param="amount")
        pi_id = "pi_" + uuid.uuid4().hex[:24]
        intent = {
            "id": pi_id, "object": "payment_intent", "amount": amount, "amount_received": 0, "currency": currency,
            "client_secret": f"{pi_id}_secret_{secrets.token_urlsafe(18)}", "status": "requires_payment_method",
            "metadata": dict(params.get("metadata") or {}), "description": params.get("description"),
            "automatic_payment_methods": {"enabled": params.get("automatic_payment_methods", {}).get("enabled")
                                          == "true"},
            "latest_charge": None, "last_payment_error": None, "cancellation_reason": None,
            "created": int(time.time()), "livemode": False,
        }
        self.intents[pi_id] = intent
        return web.json_response(intent)

    async def _retrieve_intent(self, request: web.Request) -> web.Response:
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return self._error(404, f"No such payment_intent: '{request.match_info['id']}'", code="resource_missing",
                               param="intent")
        return web.json_response(intent)

    async def _create_refund(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = request[PARAMS]
        pi_id = str(params.get("payment_intent") or "")
        intent = self.intents.get(pi_id)
        if intent is None:
            return self._error(400, f"No such payment_intent: '{pi_id}'", code="resource_missing",
                               param="payment_intent")
        if intent["status"] != "succeeded":
            return self._error(400, f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                               code="charge_not_found")
        refunded = sum(r["amount"] for r in self.refunds.values()
                       if r["payment_intent"] == pi_id and r["status"] in ("succeeded", "pending"))
        left = int(intent["amount_received"]) - refunded
        amount = int(params.get("amount") or left)
        if left <= 0:
            return self._error(400, f"Charge {intent['latest_charge']} has already been refunded.",
                               code="charge_already_refunded")
        if amount < 1 or amount > left:
            return self._error(400, f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                               param="amount")
        refund = {"id": "re_" + uuid.uuid4().hex[:24], "object": "refund", "amount": amount,
                  "charge": intent["latest_charge"], "currency": intent["currency"],
                  "metadata": dict(params.get("metadata") or {}), "payment_intent": pi_id,
                  "status": self.refund_status, "reason": None, "created": int(time.time())}
        self.refunds[refund["id"]] = refund
        return web.json_response(refund)

    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/v1/payment_intents", self._create_intent)
        app.router.add_get("/v1/payment_intents/{id}", self._retrieve_intent)
        app.router.add_post("/v1/refunds", self._create_refund)
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
