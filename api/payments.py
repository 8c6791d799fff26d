"""/api/payments: checkout with Stripe, Razorpay or the local simulator, verified webhooks, payment
history, and the admin's payments list and refunds. The rules live in `api.paymentflow`;
docs/payments.md describes the flows."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import date
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.admin import Day, created_between, csv_cell
from api.paging import PageQuery, page_body
from api.paymentflow import (
    PROVIDERS,
    OrderPaymentStatus,
    PaymentFlow,
    PaymentKind,
    PaymentStatus,
    flow_of,
    payment_view,
)
from api.routing import RouteTable
from api.schemas import HistoryEntry, Page, closed, open_ended
from core import keys
from core.errors import BadRequest, NotFound, ValidationFailed
from core.http import json_response
from core.tasks import stop_if_cancelled
from core.tokens import Claims
from gateway_clients.payments import SignatureError, configured_providers, make_payment_providers
from gateway_clients.simulated_payments import SimulatedPayments

logger = logging.getLogger(__name__)

routes = RouteTable("payments")

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY_SHAPE = re.compile(r"^[A-Za-z0-9_\-:.]{8,128}$")
SWEEP_INTERVAL_S = 5.0
CSV_MAX_ROWS = 10_000
OrderId = Field(min_length=1, max_length=64)
ProviderId = Field(min_length=1, max_length=255)


async def ensure_indexes(db: Any) -> None:
    await db.payments.create_index([("order_id", 1), ("created_at", -1)])
    await db.payments.create_index([("customer_id", 1), ("created_at", -1)])
    await db.payments.create_index([("provider", 1), ("provider_payment_id", 1)])
    await db.payments.create_index("charge_id", sparse=True)
    await db.payments.create_index("applied")
    await db.payments.create_index("created_at")
    await db.orders.create_index([("payment_status", 1), ("status", 1)])


async def providers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build the configured payment providers for this process; close them at shutdown."""
    providers = make_payment_providers(app[keys.SETTINGS], simulator_db=app[keys.DB])
    app[PROVIDERS] = providers
    logger.info("payment providers: %s", ", ".join(providers))
    yield
    for provider in providers.values():
        await provider.aclose()


CONTEXTS = [providers_ctx]


def order_money_view(order: Mapping[str, Any]) -> dict[str, Any]:
    """An order's money, as every payment answer carries it."""
    return {"id": str(order["_id"]), "status": order.get("status"), "version": int(order.get("version") or 0),
            "payment_option": order.get("payment_option"), "price": int(order.get("price") or 0),
            "deposit_amount": int(order.get("deposit_amount") or 0), "currency": order.get("currency"),
            "payment_status": order.get("payment_status") or "unpaid",
            "amount_due": int(order.get("amount_due") or 0), "amount_paid": int(order.get("amount_paid") or 0),
            "amount_refunded": int(order.get("amount_refunded") or 0)}


async def _answer(request: web.Request, payment: Mapping[str, Any]) -> web.Response:
    order = await request.config_dict[keys.DB].orders.find_one({"_id": payment["order_id"]})
    if order is None:
        raise NotFound("no such order")
    return json_response({"payment": payment_view(payment), "order": order_money_view(order)})


# --- models -----------------------------------------------------------------------------------

class OrderRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = OrderId


class StripeConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = OrderId
    payment_intent_id: str = ProviderId


class RazorpayVerify(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = OrderId
    razorpay_order_id: str = ProviderId
    razorpay_payment_id: str = ProviderId
    razorpay_signature: str = Field(min_length=1, max_length=512)


class SimulatedCheckout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = OrderId
    outcome: Literal["succeeded", "failed"] = Field(description="what the simulated card does")


class PaymentsConfig(BaseModel):
    model_config = closed({"providers": ["stripe", "simulated"], "currency": "INR", "deposit_rate_bp": 3000,
                           "payment_expiry_s": 1800, "refund_after_assign_bp": 5000,
                           "stripe_publishable_key": "pk_test_51HxYz", "razorpay_key_id": None})
    providers: list[Literal["stripe", "razorpay", "simulated"]]
    currency: str
    deposit_rate_bp: int
    payment_expiry_s: int = Field(description="unpaid orders are cancelled this long after they were placed")
    refund_after_assign_bp: int = Field(description="share refunded when cancelled after a partner was assigned")
    stripe_publishable_key: str | None = None
    razorpay_key_id: str | None = None


class StripeIntent(BaseModel):
    model_config = closed({"client_secret": "pi_3QxYz2AbCdEf_secret_Gh5Jk", "payment_intent_id": "pi_3QxYz2AbCdEf",
                           "amount": 300_000, "currency": "INR", "publishable_key": "pk_test_51HxYz",
                           "payment_id": "5d1c0b9a8f7e6d5c4b3a2918", "kind": "deposit"})
    client_secret: str
    payment_intent_id: str
    amount: int
    currency: str
    publishable_key: str | None
    payment_id: str
    kind: Literal["deposit", "full", "balance"]


class RazorpayCheckout(BaseModel):
    model_config = closed({"razorpay_order_id": "order_NZx1y2z3A4b5C6", "amount": 300_000, "currency": "INR",
                           "key_id": "rzp_test_1DP5mmOlF5G5ag", "payment_id": "5d1c0b9a8f7e6d5c4b3a2918",
                           "kind": "deposit"})
    razorpay_order_id: str
    amount: int
    currency: str
    key_id: str | None
    payment_id: str
    kind: Literal["deposit", "full", "balance"]


class SimulatedPayment(BaseModel):
    model_config = closed({"payment_id": "5d1c0b9a8f7e6d5c4b3a2918", "provider_payment_id": "sim_pi_7Hc2Kd9Lm3",
                           "amount": 300_000, "currency": "INR", "kind": "deposit", "status": "created"})
    payment_id: str
    provider_payment_id: str
    amount: int
    currency: str
    kind: Literal["deposit", "full", "balance"]
    status: str


_PAYMENT_EXAMPLE: dict[str, Any] = {
    "id": "5d1c0b9a8f7e6d5c4b3a2918", "order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d",
    "customer_id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "provider": "stripe", "kind": "deposit",
    "status": "partially_refunded", "amount": 300_000, "currency": "INR", "amount_refunded": 100_000,
    "provider_payment_id": "pi_3QxYz2AbCdEf", "charge_id": "ch_3QxYz2AbCdEf",
    "refunds": [{"id": "rf_0f1e2d3c4b5a69788796a5b4", "amount": 100_000, "status": "succeeded",
                 "provider_refund_id": "re_3QxYz2AbCdEf", "reason": "one hour shorter than booked",
                 "by_role": "admin", "at": "2026-12-04T11:00:00.000Z"}],
    "history": [{"status": "created", "at": "2026-12-03T10:00:05.000Z", "by_role": "customer", "reason": None},
                {"status": "succeeded", "at": "2026-12-03T10:01:10.000Z", "by_role": "customer", "reason": None},
                {"status": "partially_refunded", "at": "2026-12-04T11:00:02.000Z", "by_role": "admin",
                 "reason": "one hour shorter than booked"}],
    "created_at": "2026-12-03T10:00:05.000Z", "updated_at": "2026-12-04T11:00:02.000Z"}


class Refund(BaseModel):
    """One refund of a payment: pending until the provider answers. Admins also see `by`."""

    model_config = open_ended()
    id: str
    amount: int
    status: Literal["pending", "succeeded", "failed"]
    provider_refund_id: str | None = None
    reason: str | None = None
    by_role: str | None = Field(None, description="admin, system (a cancellation) or provider (refunded there)")
    at: str | None = None


class Payment(BaseModel):
    """One attempt to pay (part of) an order, with its refunds and status history (`payment_view`)."""

    model_config = open_ended(_PAYMENT_EXAMPLE)
    id: str
    order_id: str
    customer_id: str
    provider: Literal["stripe", "razorpay", "simulated"]
    kind: PaymentKind
    status: PaymentStatus
    amount: int = Field(description="minor units")
    currency: str
    amount_refunded: int
    provider_payment_id: str | None = Field(None, description="the PaymentIntent, Razorpay order or simulator id")
    charge_id: str | None = None
    refunds: list[Refund]
    history: list[HistoryEntry]
    created_at: str
    updated_at: str | None = None


class PaymentPage(Page[Payment]):
    pass


class CustomerCard(BaseModel):
    model_config = closed()
    name: str
    email: str
    phone: str


class AdminPayment(Payment):
    """A payment as admins see it: actor ids kept, and the customer's name and contacts."""

    model_config = open_ended({**_PAYMENT_EXAMPLE, "customer": {"name": "Asha Rao", "email": "asha@example.com",
                                                                "phone": "+919845012345"}})
    customer: CustomerCard


class MoneyTotals(BaseModel):
    model_config = closed()
    captured: int
    refunded: int
    net: int


class AdminPaymentPage(Page[AdminPayment]):
    totals: dict[str, MoneyTotals] = Field(description="per currency, over every match (not just this page)")


class OrderMoney(BaseModel):
    """An order's money, as every payment answer carries it (`order_money_view`)."""

    model_config = closed({"id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "status": "placed", "version": 3,
                           "payment_option": "deposit", "price": 1_500_000, "deposit_amount": 300_000,
                           "currency": "INR", "payment_status": "deposit_paid", "amount_due": 1_200_000,
                           "amount_paid": 300_000, "amount_refunded": 0})
    id: str
    status: str | None
    version: int
    payment_option: str | None
    price: int
    deposit_amount: int
    currency: str | None
    payment_status: OrderPaymentStatus
    amount_due: int
    amount_paid: int
    amount_refunded: int


class PaymentResult(BaseModel):
    """The payment as recorded, and the order's money after it."""

    model_config = closed()
    payment: Payment
    order: OrderMoney


class RefundResult(BaseModel):
    model_config = closed()
    payment: AdminPayment
    order: OrderMoney | None = Field(description="null if the order is gone")


class WebhookReceipt(BaseModel):
    model_config = closed({"received": True, "outcome": "recorded"})
    received: bool
    outcome: str = Field(description="what the event did: recorded, duplicate, ignored, unknown_payment, ...")


class HistoryQuery(PageQuery):
    order_id: str | None = Field(None, max_length=64)


class AdminPaymentQuery(PageQuery):
    status: PaymentStatus | None = None
    provider: Literal["stripe", "razorpay", "simulated"] | None = None
    order_id: str | None = Field(None, max_length=64)
    date_from: Day | None = Field(None, description="created on or after (YYYY-MM-DD, UTC)")
    date_to: Day | None = Field(None, description="created on or before (YYYY-MM-DD, UTC)")
    format: Literal["json", "csv"] = "json"


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    amount: int | None = Field(None, ge=1, description="minor units; all that is left when absent")
    reason: str = Field(min_length=1, max_length=300)


# --- configuration ----------------------------------------------------------------------------

@routes.get("/payments/config", summary="Which payment providers this deployment offers, and their public keys",
            response=PaymentsConfig)
async def payments_config(request: web.Request) -> web.Response:
    settings = request.config_dict[keys.SETTINGS]
    providers = request.config_dict[PROVIDERS]
    body = PaymentsConfig(providers=list(configured_providers(settings)), currency=settings.currency,
                          deposit_rate_bp=settings.deposit_rate_bp, payment_expiry_s=settings.payment_expiry_s,
                          refund_after_assign_bp=settings.refund_after_assign_bp,
                          stripe_publishable_key=providers["stripe"].public_key if "stripe" in providers else None,
                          razorpay_key_id=providers["razorpay"].public_key if "razorpay" in providers else None)
    return json_response(body.model_dump(), headers={"Cache-Control": "no-cache"})


# --- Stripe -----------------------------------------------------------------------------------

@routes.post("/payments/stripe/create-intent", summary="A Stripe PaymentIntent for what the order owes next",
             body=OrderRef, roles=("customer",), response=StripeIntent,
             responses={404: "no such order, or Stripe is not configured", 409: "nothing to pay",
                        503: "Stripe is not answering (retryable)"})
async def stripe_create_intent(request: web.Request, *, body: OrderRef, user: Claims) -> web.Response:
    flow = flow_of(request)
    payment = await flow.checkout("stripe", body.order_id, user.user_id)
    return json_response(StripeIntent(
        client_secret=str(payment.get("client_secret") or ""), payment_intent_id=payment["provider_payment_id"],
        amount=payment["amount"], currency=payment["currency"], publishable_key=flow.provider("stripe").public_key,
        payment_id=str(payment["_id"]), kind=payment["kind"]).model_dump())


@routes.post("/payments/stripe/confirm", summary="Record a Stripe payment after the browser confirmed it",
             body=StripeConfirm, roles=("customer",), response=PaymentResult,
             responses={404: "no such payment for this order", 409: "the payment does not match the order"})
async def stripe_confirm(request: web.Request, *, body: StripeConfirm, user: Claims) -> web.Response:
    flow = flow_of(request)
    doc = await flow.find_for_customer("stripe", body.order_id, user.user_id, body.payment_intent_id)
    return await _answer(request, await flow.confirm(doc, by_role="customer", by_id=user.user_id))


# --- Razorpay ---------------------------------------------------------------------------------

@routes.post("/payments/razorpay/create-order", summary="A Razorpay order for what the order owes next",
             body=OrderRef, roles=("customer",), response=RazorpayCheckout,
             responses={404: "no such order, or Razorpay is not configured", 409: "nothing to pay",
                        503: "Razorpay is not answering (retryable)"})
async def razorpay_create_order(request: web.Request, *, body: OrderRef, user: Claims) -> web.Response:
    flow = flow_of(request)
    payment = await flow.checkout("razorpay", body.order_id, user.user_id)
    return json_response(RazorpayCheckout(
        razorpay_order_id=payment["provider_payment_id"], amount=payment["amount"], currency=payment["currency"],
        key_id=flow.provider("razorpay").public_key, payment_id=str(payment["_id"]),
        kind=payment["kind"]).model_dump())


@routes.post("/payments/razorpay/verify", summary="Verify Razorpay Checkout's signature and record the payment",
             body=RazorpayVerify, roles=("customer",), response=PaymentResult,
             responses={400: "the signature does not verify", 404: "no such payment for this order"})
async def razorpay_verify(request: web.Request, *, body: RazorpayVerify, user: Claims) -> web.Response:
    flow = flow_of(request)
    doc = await flow.find_for_customer("razorpay", body.order_id, user.user_id, body.razorpay_order_id)
    provider: Any = flow.provider("razorpay")
    try:
        # Checked against the Razorpay order id we stored for this order, never one the client chose.
        provider.verify_checkout(str(doc["provider_payment_id"]), body.razorpay_payment_id, body.razorpay_signature)
    except SignatureError:
        logger.warning("razorpay checkout signature refused for payment %s", doc["_id"])
        raise BadRequest("the payment signature does not verify", code="invalid_signature") from None
    return await _answer(request, await flow.confirm(doc, by_role="customer", by_id=user.user_id))


# --- the simulator ----------------------------------------------------------------------------

@routes.post("/payments/simulated/create-payment", summary="The simulator's payment for what the order owes next",
             body=OrderRef, roles=("customer",), response=SimulatedPayment,
             responses={404: "no such order, or the simulator is off", 409: "nothing to pay"})
async def simulated_create_payment(request: web.Request, *, body: OrderRef, user: Claims) -> web.Response:
    payment = await flow_of(request).checkout("simulated", body.order_id, user.user_id)
    return json_response(SimulatedPayment(
        payment_id=str(payment["_id"]), provider_payment_id=payment["provider_payment_id"], amount=payment["amount"],
        currency=payment["currency"], kind=payment["kind"], status=payment["status"]).model_dump())


@routes.post("/payments/simulated/checkout", summary="Pay (or fail to pay) what the order owes next, offline",
             body=SimulatedCheckout, roles=("customer",), response=PaymentResult,
             responses={404: "no such order, or the simulator is off", 409: "nothing to pay"})
async def simulated_checkout(request: web.Request, *, body: SimulatedCheckout, user: Claims) -> web.Response:
    flow = flow_of(request)
    simulator = flow.provider("simulated")
    assert isinstance(simulator, SimulatedPayments)
    payment = await flow.checkout("simulated", body.order_id, user.user_id)
    # The card form's answer goes to the simulator (which queues its webhook); then, like Stripe's
    # confirm, the product re-reads the payment and records it at once.
    await simulator.complete(str(payment["provider_payment_id"]), body.outcome)
    return await _answer(request, await flow.confirm(payment, by_role="customer", by_id=user.user_id))


# --- webhooks ---------------------------------------------------------------------------------

async def _webhook(request: web.Request, provider_name: str) -> web.Response:
    flow = flow_of(request)
    provider = flow.provider(provider_name)
    body = await request.read()
    try:
        event = provider.verify_webhook(body, request.headers)
    except SignatureError as exc:
        logger.warning("%s webhook refused: %s", provider_name, exc)
        raise BadRequest("the webhook signature does not verify", code="invalid_signature") from None
    outcome = await flow.handle_event(provider_name, event)
    logger.info("%s webhook %s (%s): %s", provider_name, event.event_id, event.type, outcome)
    return json_response({"received": True, "outcome": outcome})


@routes.post("/payments/webhooks/stripe", summary="Stripe's webhook (Stripe-Signature verified; each event once)",
             response=WebhookReceipt,
             responses={400: "the signature does not verify", 404: "Stripe is not configured here"})
async def stripe_webhook(request: web.Request) -> web.Response:
    return await _webhook(request, "stripe")


@routes.post("/payments/webhooks/razorpay",
             summary="Razorpay's webhook (X-Razorpay-Signature verified; each event once)", response=WebhookReceipt,
             responses={400: "the signature does not verify", 404: "Razorpay is not configured here"})
async def razorpay_webhook(request: web.Request) -> web.Response:
    return await _webhook(request, "razorpay")


@routes.post("/payments/webhooks/simulated",
             summary="The simulator's webhook (Simulator-Signature verified; each event once)", response=WebhookReceipt,
             responses={400: "the signature does not verify", 404: "the simulator is off"})
async def simulated_webhook(request: web.Request) -> web.Response:
    return await _webhook(request, "simulated")


# --- history, admin list and refunds ----------------------------------------------------------

@routes.get("/payments/history", summary="My payments, newest first", query=HistoryQuery, roles=("customer",),
            response=PaymentPage)
async def payment_history(request: web.Request, *, query: HistoryQuery, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    where: dict[str, Any] = {"customer_id": user.user_id}
    if query.order_id:
        where["order_id"] = query.order_id
    total = await db.payments.count_documents(where)
    docs = await db.payments.find(where).sort("created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    return json_response(page_body([payment_view(d) for d in docs], total, query))


def _admin_filter(query: AdminPaymentQuery) -> dict[str, Any]:
    where: dict[str, Any] = {}
    for field in ("status", "provider", "order_id"):
        value = getattr(query, field)
        if value:
            where[field] = value
    where.update(created_between(query.date_from, query.date_to))
    return where


CSV_COLUMNS = ("id", "created_at", "order_id", "customer_id", "provider", "kind", "status", "amount",
               "amount_refunded", "currency", "provider_payment_id", "charge_id")


def payments_csv(docs: Iterable[Mapping[str, Any]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for doc in docs:
        writer.writerow([csv_cell(doc.get("_id") if column == "id" else doc.get(column)) for column in CSV_COLUMNS])
    return out.getvalue()


@routes.get("/admin/payments", summary="Payments with filters and totals; ?format=csv exports every match",
            query=AdminPaymentQuery, roles=("admin",), response=AdminPaymentPage)
async def admin_list_payments(request: web.Request, *, query: AdminPaymentQuery) -> web.Response:
    db = request.config_dict[keys.DB]
    where = _admin_filter(query)
    if query.format == "csv":
        docs = await db.payments.find(where).sort("created_at", -1).limit(CSV_MAX_ROWS).to_list(None)
        return web.Response(text=payments_csv(docs), content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="payments-{date.today().isoformat()}.csv"',
            "Cache-Control": "no-store"})
    total = await db.payments.count_documents(where)
    docs = await db.payments.find(where).sort("created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    # Totals over every match (not just this page), per currency, in minor units.
    totals: dict[str, dict[str, int]] = {}
    async for doc in db.payments.find(where, {"status": 1, "amount": 1, "amount_refunded": 1, "currency": 1}):
        bucket = totals.setdefault(str(doc.get("currency") or ""), {"captured": 0, "refunded": 0, "net": 0})
        if doc.get("status") in ("succeeded", "partially_refunded", "refunded"):
            bucket["captured"] += int(doc.get("amount") or 0)
        bucket["refunded"] += int(doc.get("amount_refunded") or 0)
        bucket["net"] = bucket["captured"] - bucket["refunded"]
    body = page_body(await admin_rows(db, docs), total, query)
    body["totals"] = totals
    return json_response(body)


async def admin_rows(db: Any, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Payment rows as admins see them, each with its customer's name and contacts (one query)."""
    ids = list({str(d.get("customer_id")) for d in docs})
    people = {str(u["_id"]): u for u in await db.users.find({"_id": {"$in": ids}}, {"name": 1, "email": 1, "phone": 1})
              .to_list(None)} if ids else {}
    rows = []
    for doc in docs:
        row = payment_view(doc, admin=True)
        person = people.get(str(doc.get("customer_id")), {})
        row["customer"] = {"name": person.get("name") or "", "email": person.get("email") or "",
                           "phone": person.get("phone") or ""}
        rows.append(row)
    return rows


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not _KEY_SHAPE.match(key):
        raise ValidationFailed(
            f"send an {IDEMPOTENCY_HEADER} header (8-128 letters, digits or -_:.) so a retry cannot refund twice",
            details=[{"field": IDEMPOTENCY_HEADER, "message": "missing or malformed", "type": "header"}])
    return key


@routes.post("/admin/payments/{id}/refund", summary="Refund all or part of a payment (idempotent)",
             body=RefundRequest, roles=("admin",), headers=(IDEMPOTENCY_HEADER,), response=RefundResult,
             responses={404: "no such payment", 409: "more than is left, or not captured",
                        502: "the provider refused", 503: "the provider is not answering (retry with the same key)"})
async def admin_refund(request: web.Request, *, body: RefundRequest, user: Claims) -> web.Response:
    if await request.config_dict[keys.DB].payments.find_one({"_id": request.match_info["id"]}, {"_id": 1}) is None:
        raise NotFound("no such payment")
    key = _idempotency_key(request)
    doc = await flow_of(request).refund(request.match_info["id"], amount=body.amount, reason=body.reason,
                                        key=f"admin:{key}", by_role="admin", by_id=user.user_id)
    db = request.config_dict[keys.DB]
    order = await db.orders.find_one({"_id": doc["order_id"]})
    return json_response({"payment": (await admin_rows(db, [doc]))[0],
                          "order": order_money_view(order) if order else None})


# --- workers ----------------------------------------------------------------------------------

async def payments_worker(app: web.Application) -> None:
    """Expire unpaid orders and heal what crashes and lost answers left, every few seconds."""
    failing = False
    while True:
        stop_if_cancelled()  # PyMongo may swallow a cancellation and return normally
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            flow = PaymentFlow(app[keys.DB], app[keys.REDIS], app[keys.SETTINGS], app[PROVIDERS])
            await flow.expire_unpaid()
            await flow.sweep()
            failing = False
        except Exception as exc:
            stop_if_cancelled()
            if not failing:
                logger.warning("payments sweep failed (%s); retrying every %.0f s", type(exc).__name__,
                               SWEEP_INTERVAL_S)
                failing = True


async def simulator_webhooks_worker(app: web.Application) -> None:
    """Deliver the simulator's webhooks to this deployment (only while the simulator runs)."""
    simulator = app[PROVIDERS].get("simulated")
    if not isinstance(simulator, SimulatedPayments):
        return
    while True:
        stop_if_cancelled()  # PyMongo may swallow a cancellation and return normally
        try:
            if await simulator.deliver_due() == 0:
                await asyncio.sleep(0.5)
        except Exception as exc:
            stop_if_cancelled()
            logger.warning("simulated webhook delivery failed: %s", type(exc).__name__)
            await asyncio.sleep(SWEEP_INTERVAL_S)


WORKERS = [payments_worker, simulator_webhooks_worker]
