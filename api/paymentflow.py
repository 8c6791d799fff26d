"""The money path: payment rows and their state machine, captures, refunds, webhooks, and the
order's money fields derived from them.

Concurrency rule (the same as `core/orderflow.py`): every change to a payment is one
`find_one_and_update` conditioned on its `version` (and status), so of several racing writers
(a confirmation, its webhook, a retried webhook, another process) exactly one changes it and the
others see the change already made.

The order's money (`amount_paid`, `amount_refunded`, `amount_due`, `payment_status`) is never
incremented: `settle_order` recomputes it from the order's payments and writes it version-
conditioned. So duplicates and any arrival order converge on the same state, and a crash between
a payment's change and its order's is healed by the next settle (the sweep looks for payments
marked `applied: 0`).

Payment states (`TRANSITIONS` below):

    created ──> succeeded ──> partially_refunded ──> refunded
       │  ^         └────────────────────────────────────^
       v  │
      failed   (a failed attempt may be followed by a successful one, as with a second card)

Refunds are entries in their payment's `refunds` list, each `pending -> succeeded | failed`, keyed by
an id derived from the caller's idempotency key, which is also the provider's idempotency key.
A pending refund reserves its amount, so concurrent refunds can never exceed what was captured.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis

from api import notifications
from core import keys
from core.contracts import PAYMENT_EVENTS, PaymentEvent
from core.errors import BadGateway, Conflict, NotFound, ServiceUnavailable
from core.jsonutil import iso
from core.orderflow import OrderFlow
from core.settings import Settings
from gateway_clients.payments import (
    CheckoutRequest,
    PaymentError,
    PaymentProvider,
    ProviderEvent,
    ProviderPayment,
)

logger = logging.getLogger(__name__)

# The configured providers of this process (built by api.payments.providers_ctx).
PROVIDERS: web.AppKey[Mapping[str, PaymentProvider]] = web.AppKey("payment_providers")

PaymentStatus = Literal["created", "succeeded", "failed", "partially_refunded", "refunded"]
PaymentKind = Literal["deposit", "full", "balance"]
OrderPaymentStatus = Literal["unpaid", "deposit_paid", "paid", "partially_refunded", "refunded"]

TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"succeeded", "failed"}),
    "failed": frozenset({"succeeded", "failed"}),
    "succeeded": frozenset({"partially_refunded", "refunded"}),
    "partially_refunded": frozenset({"partially_refunded", "refunded"}),
    "refunded": frozenset(),
}
CAPTURED = frozenset({"succeeded", "partially_refunded", "refunded"})
OPEN = frozenset({"created", "failed"})
# Orders that can take money: not over, and not paid on site.
PAYABLE_ORDER = frozenset({"pending_payment", "placed", "offered", "assigned", "en_route", "arrived",
                           "setup_complete", "completed"})
_MAX_RACES = 8
# A refused cancellation refund (say, a rotated key) is retried by the sweep this many times in all.
CANCEL_REFUND_ATTEMPTS = 3
# Internal fields no API response carries.
_INTERNAL = frozenset({"checkout_key", "client_secret", "applied", "version"})


def payment_id_for(checkout_key: str) -> str:
    """Our payment id is derived from what is being paid, so racing creates meet on one row."""
    return hashlib.sha256(checkout_key.encode()).hexdigest()[:24]


def refund_id_for(payment_id: str, key: str) -> str:
    return "rf_" + hashlib.sha256(f"{payment_id}:{key}".encode()).hexdigest()[:24]


def payment_view(doc: Mapping[str, Any], *, admin: bool = False) -> dict[str, Any]:
    """A payment row as the API shows it (the customer sees no actor ids)."""
    view = {k: v for k, v in doc.items() if k not in _INTERNAL and k != "_id"}
    view["id"] = str(doc["_id"])
    refunds = [dict(r) for r in doc.get("refunds") or [] if isinstance(r, Mapping)]
    for refund in refunds:
        refund.pop("idempotency_key", None)
        if not admin:
            refund.pop("by", None)
    view["refunds"] = refunds
    if not admin:
        view["history"] = [{k: v for k, v in h.items() if k != "by"} for h in doc.get("history") or []
                           if isinstance(h, Mapping)]
    return view


@dataclass(frozen=True)
class Charge:
    """What an order owes next: the kind and the amount, computed from the order, never the client."""

    kind: PaymentKind
    amount: int
    currency: str


def next_charge(order: Mapping[str, Any]) -> Charge:
    """The deposit, the full price, or the remaining balance; Conflict when nothing can be paid."""
    status = order.get("status")
    if order.get("payment_option") == "cash":
        raise Conflict("this order is paid in cash to the partner", code="cash_order")
    if status not in PAYABLE_ORDER:
        raise Conflict(f"an order that is {status} takes no payment", code="order_closed")
    price = int(order.get("price") or 0)
    paid = int(order.get("amount_paid") or 0)
    currency = str(order.get("currency") or "INR")
    if paid >= price:
        raise Conflict("this order is paid in full", code="nothing_due")
    if paid == 0:
        if order.get("payment_option") == "deposit" and int(order.get("deposit_amount") or 0) > 0:
            return Charge("deposit", int(order["deposit_amount"]), currency)
        return Charge("full", price, currency)
    return Charge("balance", price - paid, currency)


def required_to_place(order: Mapping[str, Any]) -> int:
    """What must be captured before dispatch starts: the deposit or the full price."""
    if order.get("payment_option") == "deposit":
        return int(order.get("deposit_amount") or 0)
    return int(order.get("price") or 0)


def refund_rate_bp(cancelled_from: str | None, settings: Settings) -> int:
    """The cancellation policy: everything back before a partner is assigned, `refund_after_assign_bp`
    once one is, nothing from en_route on (an admin may still refund)."""
    if cancelled_from in ("pending_payment", "placed", "offered"):
        return 10_000
    if cancelled_from == "assigned":
        return settings.refund_after_assign_bp
    return 0


def status_before_cancel(order: Mapping[str, Any]) -> str | None:
    """The status an order was cancelled from (the history entry before the cancellation)."""
    if order.get("cancelled_from"):
        return str(order["cancelled_from"])
    history = [h for h in order.get("history") or [] if isinstance(h, Mapping)]
    for index in range(len(history) - 1, 0, -1):
        if history[index].get("status") == "cancelled":
            return str(history[index - 1].get("status"))
    return None


def provider_failure(exc: PaymentError, what: str) -> BadGateway | ServiceUnavailable:
    """The envelope for a provider that failed: 503 (retry) or 502 (refused)."""
    if exc.retryable:
        return ServiceUnavailable(f"the payment provider is not answering; {what} again in a moment",
                                  code="payment_provider_unavailable", details={"retryable": True})
    return BadGateway(f"the payment provider refused: {exc}", code="payment_refused", details={"retryable": False})


def flow_of(request: web.Request) -> PaymentFlow:
    config = request.config_dict
    return PaymentFlow(config[keys.DB], config[keys.REDIS], config[keys.SETTINGS], config[PROVIDERS])


class PaymentFlow:
    """Applies payment changes and their consequences for orders."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings,
                 providers: Mapping[str, PaymentProvider]) -> None:
        self.db = db
        self.payments = db.payments
        self.redis = redis
        self.settings = settings
        self.providers = providers
        self.orders = OrderFlow(db, redis)

    def provider(self, name: str) -> PaymentProvider:
        provider = self.providers.get(name)
        if provider is None:
            raise NotFound(f"the {name} payment provider is not configured here", code="provider_not_configured")
        return provider

    # --- checkout -----------------------------------------------------------------------------

    async def checkout(self, provider_name: str, order_id: str, customer_id: str) -> dict[str, Any]:
        """The open payment for what the order owes next through `provider_name`, created at the
        provider if need be. A retry (or a second call for the same amount) returns the same one."""
        provider = self.provider(provider_name)
        order = await self.db.orders.find_one({"_id": order_id})
        if order is None or order.get("customer_id") != customer_id:
            raise NotFound("no such order")
        charge = next_charge(order)
        checkout_key = f"{provider_name}:{order_id}:{charge.kind}:{charge.amount}"
        payment_id = payment_id_for(checkout_key)
        existing = await self.payments.find_one({"_id": payment_id})
        if existing is not None:
            if existing["status"] in OPEN:
                return existing
            raise Conflict("this amount is already paid; the order is being updated", code="already_paid")
        request = CheckoutRequest(
            payment_id=payment_id, order_id=order_id, customer_id=customer_id, kind=charge.kind,
            amount=charge.amount, currency=charge.currency, idempotency_key=f"pp-{payment_id}",
            description=f"PartyPilot order {order_id[-6:].upper()} ({charge.kind})")
        try:
            created = await provider.create_checkout(request)
        except PaymentError as exc:
            logger.warning("%s checkout for order %s failed: %s", provider_name, order_id, exc)
            raise provider_failure(exc, "pay") from None
        if created.amount != charge.amount or created.currency.upper() != charge.currency.upper():
            logger.error("%s answered %s %s for a %s %s checkout", provider_name, created.amount, created.currency,
                         charge.amount, charge.currency)
            raise BadGateway("the payment provider answered a different amount", code="payment_mismatch")
        now = iso()
        doc: dict[str, Any] = {
            "_id": payment_id, "order_id": order_id, "customer_id": customer_id, "provider": provider_name,
            "kind": charge.kind, "status": "created", "amount": charge.amount, "currency": charge.currency,
            "amount_refunded": 0, "provider_payment_id": created.provider_payment_id, "charge_id": None,
            "client_secret": created.client_secret, "checkout_key": checkout_key, "refunds": [],
            "history": [{"status": "created", "at": now, "by_role": "customer", "by": customer_id, "reason": None}],
            "version": 1, "applied": 1, "created_at": now, "updated_at": now,
        }
        try:
            await self.payments.insert_one(doc)
        except DuplicateKeyError:  # a racing retry stored the same payment first
            raced = await self.payments.find_one({"_id": payment_id})
            if raced is None:
                raise
            return raced
        logger.info("payment %s created with %s for order %s (%s)", payment_id, provider_name, order_id, charge.kind)
        return doc

    async def find_for_customer(self, provider_name: str, order_id: str, customer_id: str,
                                provider_payment_id: str) -> dict[str, Any]:
        """The payment row a client names, only if it is this order's and this customer's."""
        doc = await self.payments.find_one({"provider": provider_name, "provider_payment_id": provider_payment_id})
        if doc is None or doc.get("order_id") != order_id or doc.get("customer_id") != customer_id:
            raise NotFound("no such payment for this order")
        return doc

    # --- captures -----------------------------------------------------------------------------

    async def transition(self, payment_id: str, to: PaymentStatus, *, by_role: str, by_id: str | None = None,
                         reason: str | None = None, set_fields: Mapping[str, Any] | None = None,
                         ) -> dict[str, Any] | None:
        """Move a payment to `to` if the table allows it; None when it is already there or past it."""
        for _ in range(_MAX_RACES):
            doc = await self.payments.find_one({"_id": payment_id})
            if doc is None:
                raise NotFound("no such payment")
            current = str(doc["status"])
            if to not in TRANSITIONS.get(current, frozenset()):
                return None
            version = int(doc.get("version") or 0)
            now = iso()
            history = [dict(h) for h in doc.get("history") or [] if isinstance(h, Mapping)]
            if to != current:
                history.append({"status": to, "at": now, "by_role": by_role, "by": by_id, "reason": reason})
            after = await self.payments.find_one_and_update(
                {"_id": payment_id, "version": version, "status": current},
                {"$set": {"status": to, "version": version + 1, "history": history, "updated_at": now,
                          "applied": 0, **(set_fields or {})}},
                return_document=ReturnDocument.AFTER)
            if after is not None:
                return after
        raise Conflict("the payment is changing too quickly; try again", code="busy")

    async def record(self, doc: Mapping[str, Any], state: ProviderPayment, *, by_role: str,
                     by_id: str | None = None) -> dict[str, Any]:
        """Apply the provider's view of a payment (from a re-read or a verified webhook) exactly once,
        then settle its order. Refuses a view that does not match the row."""
        metadata_order = state.metadata.get("order_id")
        if state.amount != int(doc["amount"]) or state.currency.upper() != str(doc["currency"]).upper() or \
                (metadata_order is not None and metadata_order != doc["order_id"]):
            logger.error("payment %s: the provider reports %s %s for order %s; refusing to record it", doc["_id"],
                         state.amount, state.currency, metadata_order)
            raise Conflict("the payment does not match this order's amount", code="payment_mismatch")
        if state.status == "succeeded":
            changed = await self.transition(str(doc["_id"]), "succeeded", by_role=by_role, by_id=by_id,
                                            set_fields={"charge_id": state.charge_id, "captured_at": iso()})
            if changed is not None:
                logger.info("payment %s captured (%s %s) for order %s", doc["_id"], doc["amount"], doc["currency"],
                            doc["order_id"])
        elif state.status == "failed" and doc["status"] == "created":
            await self.transition(str(doc["_id"]), "failed", by_role=by_role, by_id=by_id,
                                  reason=(state.failure_message or "declined")[:200],
                                  set_fields={"failure_message": (state.failure_message or "declined")[:200]})
        await self.settle_order(str(doc["order_id"]))
        latest = await self.payments.find_one({"_id": doc["_id"]})
        return dict(latest or doc)

    async def confirm(self, doc: Mapping[str, Any], *, by_role: str, by_id: str | None) -> dict[str, Any]:
        """Re-read a payment from its provider and record what it says."""
        provider = self.provider(str(doc["provider"]))
        try:
            state = await provider.fetch(str(doc["provider_payment_id"]))
        except PaymentError as exc:
            raise provider_failure(exc, "confirm") from None
        customer = state.metadata.get("customer_id")
        if customer is not None and customer != doc["customer_id"]:
            raise Conflict("the payment does not belong to this customer", code="payment_mismatch")
        return await self.record(doc, state, by_role=by_role, by_id=by_id)

    # --- refunds ------------------------------------------------------------------------------

    async def refund(self, payment_id: str, *, amount: int | None, reason: str, key: str, by_role: str,
                     by_id: str | None) -> dict[str, Any]:
        """Refund `amount` (default: all that is left) of a captured payment through its provider.

        Idempotent on `key`: a retry returns the same refund, and re-asks the provider (with the same
        idempotency key) when the first attempt's answer was lost. Never more than captured minus
        refunded and pending.
        """
        refund_id = refund_id_for(payment_id, key)
        entry: dict[str, Any] | None = None
        doc: dict[str, Any] | None = None
        for _ in range(_MAX_RACES):
            doc = await self.payments.find_one({"_id": payment_id})
            if doc is None:
                raise NotFound("no such payment")
            refunds = [dict(r) for r in doc.get("refunds") or [] if isinstance(r, Mapping)]
            entry = next((r for r in refunds if r.get("id") == refund_id), None)
            if entry is not None:
                break
            if doc["status"] not in CAPTURED:
                raise Conflict("only a captured payment can be refunded", code="not_refundable",
                               details={"status": doc["status"]})
            reserved = sum(int(r["amount"]) for r in refunds if r.get("status") in ("pending", "succeeded"))
            left = int(doc["amount"]) - reserved
            wanted = left if amount is None else amount
            if wanted <= 0 or wanted > left:
                raise Conflict(f"at most {left} can be refunded from this payment", code="refund_exceeds_captured",
                               details={"refundable": left})
            entry = {"id": refund_id, "idempotency_key": key, "amount": wanted, "status": "pending",
                     "provider_refund_id": None, "reason": reason[:300], "by_role": by_role, "by": by_id,
                     "at": iso()}
            version = int(doc.get("version") or 0)
            stored = await self.payments.find_one_and_update(
                {"_id": payment_id, "version": version},
                {"$set": {"refunds": [*refunds, entry], "version": version + 1, "updated_at": iso()}},
                return_document=ReturnDocument.AFTER)
            if stored is not None:
                doc = stored
                break
            entry = None
        if entry is None or doc is None:
            raise Conflict("the payment is changing too quickly; try again", code="busy")
        if entry["status"] == "pending" and not entry.get("provider_refund_id"):
            await self._ask_provider_to_refund(doc, entry)
        await self.settle_order(str(doc["order_id"]))
        latest = await self.payments.find_one({"_id": payment_id})
        return dict(latest or doc)

    async def _ask_provider_to_refund(self, doc: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
        provider = self.provider(str(doc["provider"]))
        try:
            result = await provider.refund(str(doc["provider_payment_id"]), charge_id=doc.get("charge_id"),
                                           amount=int(entry["amount"]), idempotency_key=f"pp-{entry['id']}",
                                           reason=str(entry.get("reason") or ""))
        except PaymentError as exc:
            if exc.retryable:
                # The provider may or may not have refunded: the entry stays pending (reserving its
                # amount) and a retry, or the sweep, asks again with the same idempotency key.
                logger.warning("refund %s of payment %s: provider unavailable (%s)", entry["id"], doc["_id"], exc)
                raise provider_failure(exc, "refund") from None
            logger.warning("refund %s of payment %s refused by %s: %s", entry["id"], doc["_id"], doc["provider"], exc)
            await self.settle_refund(str(doc["_id"]), str(entry["id"]), "failed", provider_refund_id=None)
            raise provider_failure(exc, "refund") from None
        await self.settle_refund(str(doc["_id"]), str(entry["id"]), result.status,
                                 provider_refund_id=result.provider_refund_id)

    async def settle_refund(self, payment_id: str, refund_id: str, status: str, *,
                            provider_refund_id: str | None) -> bool:
        """Record a refund's outcome once (a webhook and the API answer may both report it)."""
        for _ in range(_MAX_RACES):
            doc = await self.payments.find_one({"_id": payment_id})
            if doc is None:
                return False
            refunds = [dict(r) for r in doc.get("refunds") or [] if isinstance(r, Mapping)]
            entry = next((r for r in refunds if r.get("id") == refund_id), None)
            if entry is None or entry.get("status") in ("succeeded", "failed"):
                return False
            entry["provider_refund_id"] = provider_refund_id or entry.get("provider_refund_id")
            entry["status"] = status
            if status in ("succeeded", "failed"):
                entry["settled_at"] = iso()
            refunded = sum(int(r["amount"]) for r in refunds if r.get("status") == "succeeded")
            new_status = str(doc["status"])
            if status == "succeeded":
                new_status = "refunded" if refunded >= int(doc["amount"]) else "partially_refunded"
            version = int(doc.get("version") or 0)
            now = iso()
            history = [dict(h) for h in doc.get("history") or [] if isinstance(h, Mapping)]
            if new_status != doc["status"] or status == "succeeded":
                history.append({"status": new_status, "at": now, "by_role": entry.get("by_role"), "by": entry.get("by"),
                                "reason": f"refund of {entry['amount']}: {entry.get('reason') or ''}".strip()})
            after = await self.payments.find_one_and_update(
                {"_id": payment_id, "version": version},
                {"$set": {"refunds": refunds, "amount_refunded": refunded, "status": new_status, "history": history,
                          "version": version + 1, "updated_at": now, "applied": 0}})
            if after is not None:
                if status == "succeeded":
                    logger.info("refund %s of payment %s succeeded (%s)", refund_id, payment_id, entry["amount"])
                return True
        raise Conflict("the payment is changing too quickly; try again", code="busy")

    # --- webhooks -----------------------------------------------------------------------------

    async def handle_event(self, provider_name: str, event: ProviderEvent) -> str:
        """Process a verified webhook event exactly once; returns what happened (for the log and tests)."""
        event_key = f"{provider_name}:{event.event_id}"
        try:
            await self.db.payment_events.insert_one({
                "_id": event_key, "provider": provider_name, "event_id": event.event_id, "type": event.type,
                "kind": event.kind, "provider_payment_id": event.provider_payment_id, "received_at": iso(),
                "processed": 0, "outcome": None})
        except DuplicateKeyError:
            seen = await self.db.payment_events.find_one({"_id": event_key}, {"processed": 1})
            if seen is not None and int(seen.get("processed") or 0):
                return "duplicate"
            # Seen but not finished (a crash, or a racing delivery): processing is idempotent.
        outcome = await self._apply_event(provider_name, event)
        await self.db.payment_events.update_one({"_id": event_key},
                                                {"$set": {"processed": 1, "outcome": outcome, "processed_at": iso()}})
        return outcome

    async def _apply_event(self, provider_name: str, event: ProviderEvent) -> str:
        if event.kind == "ignored":
            return "ignored"
        doc = None
        if event.provider_payment_id:
            doc = await self.payments.find_one({"provider": provider_name,
                                                "provider_payment_id": event.provider_payment_id})
        if doc is None and event.charge_id:
            doc = await self.payments.find_one({"provider": provider_name, "charge_id": event.charge_id})
        if doc is None:
            logger.info("%s webhook %s (%s) names no payment of ours", provider_name, event.event_id, event.type)
            return "unknown_payment"
        if event.kind in ("payment_succeeded", "payment_failed"):
            state = ProviderPayment(
                provider_payment_id=str(doc["provider_payment_id"]),
                status="succeeded" if event.kind == "payment_succeeded" else "failed",
                amount=int(event.amount if event.amount is not None else doc["amount"]),
                currency=str(event.currency or doc["currency"]), metadata=dict(event.metadata),
                charge_id=event.charge_id, failure_message=event.failure_message)
            try:
                await self.record(doc, state, by_role="webhook")
            except Conflict as exc:
                return exc.code
            return "recorded"
        # Refunds: ours are found by the provider's refund id, or by its amount among the pending ones
        # when the webhook outruns the API answer that carries the id.
        status = "succeeded" if event.kind == "refund_succeeded" else "failed"
        refunds = [r for r in doc.get("refunds") or [] if isinstance(r, Mapping)]
        entry = next((r for r in refunds if event.provider_refund_id and
                      r.get("provider_refund_id") == event.provider_refund_id), None)
        if entry is None:
            entry = next((r for r in refunds if r.get("status") == "pending" and not r.get("provider_refund_id")
                          and int(r["amount"]) == int(event.amount or -1)), None)
        if entry is None:
            if status == "succeeded" and event.amount:
                # Refunded at the provider's dashboard: recorded so our books match theirs.
                key = f"provider:{event.provider_refund_id or event.event_id}"
                try:
                    await self._record_external_refund(doc, int(event.amount), key, event.provider_refund_id)
                except Conflict as exc:
                    return exc.code
                return "external_refund"
            return "unknown_refund"
        await self.settle_refund(str(doc["_id"]), str(entry["id"]), status, provider_refund_id=event.provider_refund_id)
        await self.settle_order(str(doc["order_id"]))
        return "recorded"

    async def _record_external_refund(self, doc: Mapping[str, Any], amount: int, key: str,
                                      provider_refund_id: str | None) -> None:
        refund_id = refund_id_for(str(doc["_id"]), key)
        for _ in range(_MAX_RACES):
            fresh = await self.payments.find_one({"_id": doc["_id"]})
            if fresh is None:
                return
            refunds = [dict(r) for r in fresh.get("refunds") or [] if isinstance(r, Mapping)]
            if any(r.get("id") == refund_id for r in refunds):
                break
            reserved = sum(int(r["amount"]) for r in refunds if r.get("status") in ("pending", "succeeded"))
            if reserved + amount > int(fresh["amount"]):
                raise Conflict("the provider reports more refunded than we captured", code="refund_exceeds_captured")
            entry = {"id": refund_id, "idempotency_key": key, "amount": amount, "status": "pending",
                     "provider_refund_id": provider_refund_id, "reason": "refunded at the provider",
                     "by_role": "provider", "by": None, "at": iso()}
            version = int(fresh.get("version") or 0)
            if await self.payments.find_one_and_update({"_id": doc["_id"], "version": version},
                                                       {"$set": {"refunds": [*refunds, entry],
                                                                 "version": version + 1}}) is not None:
                break
        await self.settle_refund(str(doc["_id"]), refund_id, "succeeded", provider_refund_id=provider_refund_id)
        await self.settle_order(str(doc["order_id"]))

    # --- the order's money --------------------------------------------------------------------

    async def settle_order(self, order_id: str) -> dict[str, Any] | None:
        """Recompute the order's money from its payments, move it on (placed once paid; refunded
        once a cancellation's money is back), refund what a cancellation owes, send receipts."""
        for _ in range(_MAX_RACES):
            order = await self.db.orders.find_one({"_id": order_id})
            if order is None:
                return None
            payments = await self.payments.find({"order_id": order_id}).to_list(None)
            money = order_money(order, payments)
            status = order["status"]
            if status == "cancelled":
                owed = await self._refund_cancellation(order, payments)
                if owed:  # refunds changed the payments: read them again
                    payments = await self.payments.find({"order_id": order_id}).to_list(None)
                    money = order_money(order, payments)
            after: dict[str, Any] | None = None
            changed = any(order.get(k) != v for k, v in money.items())
            try:
                if status == "pending_payment" and money["amount_paid"] >= required_to_place(order):
                    after = await self.orders.transition(order_id, "placed", by_role="system", by_id=None,
                                                         reason="payment received", set_fields=money,
                                                         allowed_from=frozenset({"pending_payment"}))
                elif self._money_back(order, payments, money):
                    after = await self.orders.transition(order_id, "refunded", by_role="system", by_id=None,
                                                         reason="the money is back with the customer",
                                                         set_fields=money,
                                                         allowed_from=frozenset({"cancelled", "completed"}))
                elif changed:
                    version = int(order.get("version") or 0)
                    after = await self.db.orders.find_one_and_update(
                        {"_id": order_id, "version": version},
                        {"$set": {**money, "version": version + 1, "updated_at": iso()}},
                        return_document=ReturnDocument.AFTER)
                    if after is None:
                        continue  # the order moved on meanwhile: recompute against the new version
            except Conflict as exc:
                if exc.code in ("precondition_failed", "illegal_transition"):
                    continue  # a racing settle (or an admin) moved the order first: recompute
                raise
            current = after or order
            if after is not None:
                await self._announce(after)
            await self._notify(current, payments)
            return current
        raise Conflict("the order is changing too quickly; try again", code="busy")

    def _money_back(self, order: Mapping[str, Any], payments: list[dict[str, Any]], money: Mapping[str, Any]) -> bool:
        """Whether a cancelled or completed order has had its money returned and should be `refunded`."""
        if money["amount_refunded"] <= 0 or any(r.get("status") == "pending" for p in payments
                                                for r in p.get("refunds") or []):
            return False
        if order["status"] == "completed":
            return bool(money["amount_refunded"] >= money["amount_paid"])
        if order["status"] == "cancelled":
            rate = refund_rate_bp(status_before_cancel(order), self.settings)
            owed = sum(int(p["amount"]) * rate // 10_000 for p in payments if p["status"] in CAPTURED)
            return bool(money["amount_refunded"] >= owed)
        return False

    async def _refund_cancellation(self, order: Mapping[str, Any], payments: list[dict[str, Any]]) -> int:
        """Refund each captured payment of a cancelled order per the policy; returns how many were asked."""
        rate = refund_rate_bp(status_before_cancel(order), self.settings)
        if rate <= 0:
            return 0
        asked = 0
        for payment in payments:
            if payment["status"] not in CAPTURED:
                continue
            # One attempt at a time per payment: a refund still pending at the provider is settled
            # by its webhook (or, if its answer was lost, asked again by the sweep); one the provider
            # refused is tried again with a new key, up to CANCEL_REFUND_ATTEMPTS, then left to an admin.
            ours = [r for r in payment.get("refunds") or []
                    if str(r.get("idempotency_key") or "").startswith(f"cancel:{order['_id']}")]
            if any(r.get("status") != "failed" for r in ours):
                continue
            if len(ours) >= CANCEL_REFUND_ATTEMPTS:
                logger.error("cancellation refund of payment %s refused %d times; an admin must refund it",
                             payment["_id"], len(ours))
                continue
            key = f"cancel:{order['_id']}:{len(ours)}"
            reserved = sum(int(r["amount"]) for r in payment.get("refunds") or []
                           if r.get("status") in ("pending", "succeeded"))
            amount = min(int(payment["amount"]) * rate // 10_000, int(payment["amount"]) - reserved)
            if amount <= 0:
                continue
            try:
                await self.refund(str(payment["_id"]), amount=amount, reason="order cancelled", key=key,
                                  by_role="system", by_id=None)
            except (ServiceUnavailable, BadGateway, Conflict) as exc:
                logger.warning("cancellation refund of payment %s not done yet: %s", payment["_id"], exc.message)
            asked += 1
        return asked

    async def _announce(self, order: Mapping[str, Any]) -> None:
        event = PaymentEvent(
            order_id=str(order["_id"]), customer_id=str(order.get("customer_id") or ""),
            status=str(order["status"]), version=int(order.get("version") or 0),
            payment_status=order.get("payment_status") or "unpaid", amount_due=int(order.get("amount_due") or 0),
            amount_paid=int(order.get("amount_paid") or 0), amount_refunded=int(order.get("amount_refunded") or 0),
            currency=str(order.get("currency") or "INR"), at=iso())
        try:
            await self.redis.publish(PAYMENT_EVENTS, event.model_dump_json())
        except Exception as exc:  # committed; clients re-read over REST
            logger.warning("could not publish payment event for %s: %s", order["_id"], type(exc).__name__)

    async def _notify(self, order: Mapping[str, Any], payments: list[dict[str, Any]]) -> None:
        """Receipts and refund notices through the outbox, once each (dedupe keys), then mark applied."""
        pending = [p for p in payments if not int(p.get("applied") or 0)]
        if not pending:
            return
        customer = await self.db.users.find_one({"_id": order.get("customer_id")}, {"email": 1, "phone": 1}) or {}
        for payment in pending:
            for dedupe, subject, body in _payment_messages(order, payment, self.settings):
                if customer.get("email"):
                    await notifications.enqueue(self.db, channel="email", to=str(customer["email"]), subject=subject,
                                                body=body, dedupe_key=f"{dedupe}:email")
                elif customer.get("phone"):
                    await notifications.enqueue(self.db, channel="sms", to=str(customer["phone"]), subject=subject,
                                                body=f"PartyPilot: {subject}", dedupe_key=f"{dedupe}:sms")
            await self.payments.update_one({"_id": payment["_id"], "version": payment.get("version")},
                                           {"$set": {"applied": 1}})

    # --- expiry and the sweep -----------------------------------------------------------------

    async def expire_unpaid(self, *, limit: int = 100) -> int:
        """Cancel orders left in pending_payment past the expiry, after one last look at the provider
        (a capture whose webhook was lost places the order instead)."""
        cutoff = iso(datetime.now(UTC) - timedelta(seconds=self.settings.payment_expiry_s))
        stale = await self.db.orders.find({"status": "pending_payment", "created_at": {"$lt": cutoff}}) \
            .limit(limit).to_list(None)
        cancelled = 0
        for order in stale:
            open_payments = await self.payments.find({"order_id": order["_id"],
                                                      "status": {"$in": sorted(OPEN)}}).to_list(None)
            reachable = True
            for payment in open_payments:
                try:
                    await self.confirm(payment, by_role="system", by_id=None)
                except (ServiceUnavailable, BadGateway, NotFound, Conflict) as exc:
                    logger.warning("payment %s could not be re-read before expiry: %s", payment["_id"], exc.message)
                    reachable = reachable and not isinstance(exc, ServiceUnavailable)
            if not reachable:
                continue  # do not cancel an order whose payment we cannot see; next pass
            try:
                await self.orders.transition(
                    str(order["_id"]), "cancelled", by_role="system", by_id=None,
                    reason=f"no payment within {self.settings.payment_expiry_s // 60} minutes",
                    allowed_from=frozenset({"pending_payment"}),
                    set_fields={"cancelled_at": iso(), "cancelled_from": "pending_payment", "amount_due": 0})
                cancelled += 1
                logger.info("order %s cancelled: unpaid after %d s", order["_id"], self.settings.payment_expiry_s)
            except Conflict:
                pass  # paid (or cancelled) meanwhile
        return cancelled

    async def sweep(self, *, limit: int = 100) -> int:
        """Heal what a crash or a lost answer left: payments not applied to their orders, refunds
        still pending without a provider answer, cancelled orders still owed a refund."""
        handled = 0
        order_ids: set[str] = set()
        async for payment in self.payments.find({"applied": 0}).limit(limit):
            order_ids.add(str(payment["order_id"]))
        async for payment in self.payments.find({"refunds.status": "pending"}).limit(limit):
            for entry in payment.get("refunds") or []:
                if entry.get("status") == "pending" and not entry.get("provider_refund_id"):
                    try:
                        await self._ask_provider_to_refund(payment, entry)
                    except (ServiceUnavailable, BadGateway) as exc:
                        logger.info("pending refund %s still waiting: %s", entry.get("id"), exc.message)
            order_ids.add(str(payment["order_id"]))
        async for order in self.db.orders.find({"status": "cancelled", "payment_status": {"$in": [
                "deposit_paid", "paid", "partially_refunded"]}}, {"_id": 1}).limit(limit):
            order_ids.add(str(order["_id"]))
        for order_id in order_ids:
            await self.settle_order(order_id)
            handled += 1
        return handled


def order_money(order: Mapping[str, Any], payments: list[dict[str, Any]]) -> dict[str, Any]:
    """The order's money fields, derived from its payments (the only source of truth for money)."""
    paid = sum(int(p["amount"]) for p in payments if p.get("status") in CAPTURED)
    refunded = sum(int(p.get("amount_refunded") or 0) for p in payments)
    price = int(order.get("price") or 0)
    status: OrderPaymentStatus
    if refunded > 0:
        status = "refunded" if refunded >= paid else "partially_refunded"
    elif paid >= price and price > 0:
        status = "paid"
    elif paid > 0:
        status = "deposit_paid"
    else:
        status = "unpaid"
    closed = order.get("status") in ("cancelled", "refunded")
    return {"amount_paid": paid, "amount_refunded": refunded, "payment_status": status,
            "amount_due": 0 if closed else max(price - paid, 0)}


def _money(amount: int, currency: str) -> str:
    symbol = {"INR": "₹", "USD": "$", "EUR": "€", "GBP": "£"}.get(currency.upper(), currency.upper() + " ")
    return f"{symbol}{amount // 100:,}.{amount % 100:02d}"


def _payment_messages(order: Mapping[str, Any], payment: Mapping[str, Any],
                      settings: Settings) -> list[tuple[str, str, str]]:
    """(dedupe key, subject, body) of every receipt and refund notice this payment warrants."""
    ref = str(order["_id"])[-6:].upper()
    package = order.get("package") if isinstance(order.get("package"), Mapping) else {}
    name = str((package or {}).get("name") or "your PartyPilot package")
    currency = str(payment.get("currency") or "INR")
    link = f"{settings.public_url.rstrip('/')}/customer"
    messages: list[tuple[str, str, str]] = []
    if payment.get("status") in CAPTURED:
        paid = int(order.get("amount_paid") or 0)
        due = int(order.get("amount_due") or 0)
        body = (f"Hello,\n\nWe received {_money(int(payment['amount']), currency)} ({payment.get('kind')}) for "
                f"{name}, order {ref}.\nPaid so far: {_money(paid, currency)}. Still due: {_money(due, currency)}.\n"
                f"Payment reference: {payment['_id']} ({payment.get('provider')} "
                f"{payment.get('provider_payment_id')}).\n\nSee your orders: {link}\n\nPartyPilot\n")
        messages.append((f"receipt:{payment['_id']}", f"PartyPilot: receipt for order {ref}", body))
    for refund in payment.get("refunds") or []:
        if refund.get("status") != "succeeded":
            continue
        body = (f"Hello,\n\nWe refunded {_money(int(refund['amount']), currency)} of your payment for {name}, "
                f"order {ref}. Reason: {refund.get('reason') or 'refund'}.\nIt can take 5-7 working days to reach "
                f"your account.\nRefund reference: {refund['id']}.\n\nPartyPilot\n")
        messages.append((f"refund:{refund['id']}", f"PartyPilot: refund for order {ref}", body))
    return messages

