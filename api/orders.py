"""/api/orders: place an order (idempotently), read it, cancel it, review it."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from api import ratelimit, reviews
from api.catalog import catalog_of
from api.paging import PageQuery, find_page, page_body, public
from api.paymentflow import OrderPaymentStatus, flow_of
from api.routing import RouteTable
from api.schemas import HistoryEntry, Page, closed, open_ended
from api.windows import ArrivalWindow, arrival_window, local_today, slots_for
from core import jsonutil, keys
from core.errors import AppError, Conflict, NotFound, RateLimited, ValidationFailed
from core.http import json_response
from core.jsonutil import iso
from core.orderflow import ACTIVE, STATUSES, OrderFlow
from core.tokens import Claims, decode_tracking_token, issue_tracking_token
from geo.areas import ServiceArea, ServiceAreas

logger = logging.getLogger(__name__)

routes = RouteTable("orders")

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY_SHAPE = re.compile(r"^[A-Za-z0-9_\-:.]{8,128}$")
MAX_DAYS_AHEAD = 730
# What a customer may cancel from; admins may cancel any non-terminal order.
CUSTOMER_CANCELLABLE = frozenset({"pending_payment", "placed", "offered", "assigned"})
# Internal bookkeeping nobody outside the server needs to see.
_INTERNAL = frozenset({"request_hash", "idempotency_key", "notify_pending", "notified_upto"})
# Dispatch state that is nobody's business but the admin's.
_DISPATCH = frozenset({"offer_partner_ids", "declined_partner_ids", "offer_fence", "offer_expires_ms",
                       "dispatch_at", "dispatch_at_ms", "missed_partner_ids", "dispatch_radius_m",
                       "dispatch_exhausted", "dispatch_attempts", "dispatch_retry_ms", "dispatch_alert_ms"})

OrderStatus = Literal["pending_payment", "placed", "offered", "assigned", "en_route", "arrived",
                      "setup_complete", "completed", "cancelled", "refunded"]
assert set(get_args(OrderStatus)) == set(STATUSES)


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    line1: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=80)
    postal_code: str = Field(min_length=3, max_length=12, pattern=r"^[A-Za-z0-9 \-]+$")
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class OrderCreate(BaseModel):
    """What a customer sends. Prices are not accepted: the server computes them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    package_id: str = Field(min_length=1, max_length=64)
    event_date: date
    address: Address
    guests: int = Field(ge=1, le=100_000)
    notes: str = Field("", max_length=1000)
    payment_option: Literal["deposit", "full", "cash"]
    arrive_after: AwareDatetime | None = Field(
        None, description="start of the arrival window, ISO-8601 with an offset, on the event date (local time of "
        "the service area); send both ends or neither")
    arrive_before: AwareDatetime | None = Field(None, description="end of the arrival window (30 min to 12 h long)")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=300)


class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    rating: int = Field(ge=1, le=5)
    text: str = Field("", max_length=2000)


class OrderListQuery(PageQuery):
    status: OrderStatus | None = None


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    # Keys are stored scoped as "<customer_id>:<key>"; sparse so orders made without one
    # (admin tools, tests) do not collide on a missing value.
    await db.orders.create_index("idempotency_key", unique=True, sparse=True)
    await db.orders.create_index([("customer_id", 1), ("created_at", -1)])
    await db.orders.create_index([("partner_id", 1), ("created_at", -1)])
    await db.orders.create_index([("status", 1), ("created_at", -1)])
    await db.orders.create_index("created_at")
    await reviews.ensure_indexes(db)


@functools.lru_cache(maxsize=8)
def service_areas(path: Path | None) -> ServiceAreas:
    """Parsed once per file: polygons do not change while the process runs."""
    return ServiceAreas.load(path)


def request_hash(body: OrderCreate) -> str:
    canonical = jsonutil.dumpb(body.model_dump(mode="json"))
    return hashlib.sha256(canonical).hexdigest()


# --- what the order routes answer ---------------------------------------------------------------

_ORDER_EXAMPLE: dict[str, Any] = {
    "id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "customer_id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
    "package_id": "3f9c2a7e5b1d4c8e9a0b1c2d3e4f5a6b",
    "package": {"name": "Superhero Birthday Bash", "price": 1_500_000, "currency": "INR", "category": "Kids",
                "duration_min": 180},
    "event_date": "2026-12-19", "address": {"line1": "12 Church Street", "city": "Bengaluru",
                                            "postal_code": "560001", "lat": 12.9752, "lng": 77.6033},
    "guests": 25, "notes": "Gate code 4711", "payment_option": "deposit", "price": 1_500_000, "currency": "INR",
    "status": "assigned", "version": 4,
    "history": [{"status": "pending_payment", "at": "2026-12-03T10:00:00.000Z", "by_role": "customer", "reason": None},
                {"status": "placed", "at": "2026-12-03T10:01:10.000Z", "by_role": "system",
                 "reason": "payment received"},
                {"status": "assigned", "at": "2026-12-03T10:02:31.000Z", "by_role": "partner", "reason": None}],
    "payment_status": "deposit_paid", "amount_due": 1_200_000, "amount_paid": 300_000, "amount_refunded": 0,
    "deposit_amount": 300_000, "service_area": "Bengaluru Central", "arrive_after": "2026-12-19T04:30:00.000Z",
    "arrive_before": "2026-12-19T07:30:00.000Z", "asap": 0, "timezone": "Asia/Kolkata",
    "partner_id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "assigned_at": "2026-12-03T10:02:31.000Z", "reviewed": 0,
    "created_at": "2026-12-03T10:00:00.000Z", "updated_at": "2026-12-03T10:02:31.000Z",
}


class OrderPackage(BaseModel):
    """The package as it was when the order was placed: later edits to the package do not change it."""

    model_config = open_ended()
    name: str | None = None
    price: int | None = None
    currency: str | None = None
    category: str | None = None
    duration_min: int | None = None


class OrderAddress(BaseModel):
    """The venue. A partner whose job is over sees only the city and postal code; the orders of a
    deleted account keep no street line and a rounded position."""

    model_config = open_ended()
    line1: str | None = None
    city: str | None = None
    postal_code: str | None = None
    lat: float | None = None
    lng: float | None = None


class Order(BaseModel):
    """An order as its customer sees it (`customer_view`); the partner's and the admin's views add to it.
    Each state change may leave its own timestamp (`en_route_at`, `cancelled_at`, ...)."""

    model_config = open_ended(_ORDER_EXAMPLE)
    id: str
    customer_id: str
    package_id: str
    package: OrderPackage
    event_date: str = Field(description="YYYY-MM-DD")
    address: OrderAddress
    guests: int
    notes: str
    payment_option: Literal["deposit", "full", "cash"]
    price: int = Field(description="minor units, computed by the server")
    currency: str
    status: OrderStatus
    version: int = Field(description="grows with every change: a pushed update with a lower one is stale")
    history: list[HistoryEntry] = Field(description="every status change, oldest first")
    payment_status: OrderPaymentStatus | None = None
    amount_due: int | None = Field(None, description="minor units still to pay")
    amount_paid: int | None = None
    amount_refunded: int | None = None
    deposit_amount: int | None = Field(None, description="with payment_option deposit")
    service_area: str | None = None
    arrive_after: str | None = Field(None, description="the arrival window's start (ISO-8601, UTC)")
    arrive_before: str | None = Field(None, description="the arrival window's end (ISO-8601, UTC)")
    asap: int | None = Field(None, description="1 when the order is for today, as soon as possible")
    timezone: str | None = Field(None, description="the service area's IANA time zone")
    partner_id: str | None = Field(None, description="once assigned")
    assigned_at: str | None = None
    reviewed: int | None = Field(None, description="1 once the customer rated it")
    created_at: str
    updated_at: str


class PartnerCard(BaseModel):
    """Who is coming, as the customer sees them."""

    model_config = closed()
    id: str
    first_name: str | None = None
    vehicle_type: str | None = None


class CustomerContact(BaseModel):
    model_config = closed()
    name: str = Field(description="only the first name once the job is over")
    phone: str = Field(description="empty once the job is over")


class AssignedOrder(Order):
    """An order as its assigned partner sees it: how to reach the customer while the job is active."""

    model_config = open_ended({**_ORDER_EXAMPLE, "customer": {"name": "Asha Rao", "phone": "+919845012345"}})
    customer: CustomerContact


class OrderRecord(Order):
    """An order as admins see it: every stored field but the request hash, dispatch state included."""

    model_config = open_ended({**_ORDER_EXAMPLE, "offer_partner_ids": [], "offer_fence": 1, "offer_expires_ms": 0,
                               "declined_partner_ids": [], "idempotency_key": "0c1d2e3f:checkout-7f3a9b"})
    offer_partner_ids: list[str] | None = Field(None, description="who holds the current offer")
    offer_fence: int | None = Field(None, description="the current offer's fencing number")
    declined_partner_ids: list[str] | None = None


class OrderView(Order):
    """GET /api/orders/{id}: the customer's view (with `partner` once assigned), the assigned partner's
    (with `customer`), or an admin's record."""

    partner: PartnerCard | None = Field(None, description="for the customer, once a partner is assigned")
    customer: CustomerContact | None = Field(None, description="for the assigned partner")


class OrderPage(Page[Order]):
    pass


class AssignedOrderPage(Page[AssignedOrder]):
    pass


class OrderRecordPage(Page[OrderRecord]):
    pass


class Review(BaseModel):
    model_config = closed({"id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d",
                           "package_id": "3f9c2a7e5b1d4c8e9a0b1c2d3e4f5a6b",
                           "customer_id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "rating": 5,
                           "text": "On time and the kids loved it.", "created_at": "2026-12-20T18:00:00.000Z"})
    id: str = Field(description="the order's id: one review per order")
    order_id: str
    package_id: str
    customer_id: str
    rating: int = Field(ge=1, le=5)
    text: str
    created_at: str


def customer_view(order: Mapping[str, Any]) -> dict[str, Any]:
    view = public(order, _INTERNAL | _DISPATCH)
    # Customers see who acted by role, not the internal ids of admins and partners.
    view["history"] = [{k: v for k, v in entry.items() if k != "by"}
                       for entry in view.get("history") or [] if isinstance(entry, Mapping)]
    return view


def admin_view(order: Mapping[str, Any]) -> dict[str, Any]:
    return public(order, frozenset({"request_hash"}))


async def assigned_views(db: AsyncDatabase[dict[str, Any]],
                         orders: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the assigned partner sees: the exact address and how to reach the customer."""
    ids = list({str(o.get("customer_id")) for o in orders})
    customers = {str(c["_id"]): c for c in await db.users.find({"_id": {"$in": ids}}, {"name": 1, "phone": 1})
                 .to_list(None)} if ids else {}
    views = []
    for order in orders:
        customer = customers.get(str(order.get("customer_id")), {})
        view = public(order, _INTERNAL | _DISPATCH)
        if order.get("status") in ACTIVE:
            view["customer"] = {"name": customer.get("name") or "", "phone": customer.get("phone") or ""}
        else:
            # The job is over: the partner keeps the record, not the customer's contact details.
            address = order.get("address") or {}
            view["customer"] = {"name": (customer.get("name") or "").split(" ")[0], "phone": ""}
            view["address"] = {"city": address.get("city"), "postal_code": address.get("postal_code")}
        views.append(view)
    return views


async def assigned_view(db: AsyncDatabase[dict[str, Any]], order: Mapping[str, Any]) -> dict[str, Any]:
    return (await assigned_views(db, [order]))[0]


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not _KEY_SHAPE.match(key):
        raise ValidationFailed(
            f"send an {IDEMPOTENCY_HEADER} header (8-128 letters, digits or -_:.) so a retry cannot "
            "create a second order",
            details=[{"field": IDEMPOTENCY_HEADER, "message": "missing or malformed", "type": "header"}])
    return key


def _field_error(field: str, message: str, kind: str) -> ValidationFailed:
    return ValidationFailed("the request is invalid", details=[{"field": field, "message": message, "type": kind}])


async def _check_order(request: web.Request, body: OrderCreate,
                       ) -> tuple[dict[str, Any], ServiceArea, ArrivalWindow]:
    """The package, capacity, date, service-area and arrival-window rules; raises a 422 naming the field."""
    snap = await catalog_of(request).snapshot()
    package = snap.by_id.get(body.package_id)
    if package is None:
        raise _field_error("package_id", "no such active package", "package_unavailable")
    if body.guests > package["capacity"]:
        raise _field_error("guests", f"this package hosts at most {package['capacity']} guests", "over_capacity")
    now = datetime.now(UTC)
    if body.event_date > now.date() + timedelta(days=MAX_DAYS_AHEAD):
        raise _field_error("event_date", "the event date is too far ahead", "date_too_far")
    settings = request.config_dict[keys.SETTINGS]
    area = service_areas(settings.service_areas_file).locate(body.address.lat, body.address.lng)
    if area is None:
        raise _field_error("address", "we do not serve this address yet", "outside_service_area")
    # Today (in the area's time zone) is allowed: it means "as soon as possible".
    window = arrival_window(body.event_date, area.timezone, body.arrive_after, body.arrive_before, now=now,
                            duration_min=int(package.get("duration_min") or 0), settings=settings)
    return package, area, window


async def _replay(db: AsyncDatabase[dict[str, Any]], scoped_key: str, digest: str) -> dict[str, Any] | None:
    existing = await db.orders.find_one({"idempotency_key": scoped_key})
    if existing is None:
        return None
    if existing.get("request_hash") != digest:
        raise Conflict("this Idempotency-Key was already used for a different order",
                       code="idempotency_mismatch")
    return existing


@routes.post("/orders", summary="Place an order (idempotent with the Idempotency-Key header)",
             body=OrderCreate, roles=("customer",), status=201, headers=(IDEMPOTENCY_HEADER,), response=Order,
             responses={200: "a retry: the order this key already created",
                        409: "the key was used with a different body", 429: "too many orders this hour"})
async def create_order(request: web.Request, *, body: OrderCreate, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    settings = request.config_dict[keys.SETTINGS]
    key = _idempotency_key(request)
    scoped_key = f"{user.user_id}:{key}"
    digest = request_hash(body)
    try:
        package, area, window = await _check_order(request, body)
    except ValidationFailed:
        # A retry of an order that was accepted before (say, the package has since been
        # archived) still gets its order back rather than a validation error.
        existing = await _replay(db, scoped_key, digest)
        if existing is not None:
            return json_response(customer_view(existing), status=200)
        raise

    now = iso()
    price = int(package["price"])
    # Online payment options wait for the money before dispatch; cash goes straight to dispatch.
    deposit = price * settings.deposit_rate_bp // 10_000
    nothing_upfront = body.payment_option == "cash" or (body.payment_option == "deposit" and deposit == 0)
    status = "placed" if nothing_upfront else "pending_payment"
    order: dict[str, Any] = {
        "_id": uuid.uuid4().hex, "customer_id": user.user_id, "package_id": package["id"],
        "package": {"name": package["name"], "price": price, "currency": package["currency"],
                    "category": package["category"], "duration_min": package["duration_min"]},
        "event_date": body.event_date.isoformat(), "address": body.address.model_dump(),
        "guests": body.guests, "notes": body.notes, "payment_option": body.payment_option,
        "price": price, "currency": package["currency"],
        "status": status, "version": 1,
        "history": [{"status": status, "at": now, "by_role": "customer", "by": user.user_id, "reason": None}],
        "payment_status": "unpaid", "amount_due": price, "amount_paid": 0, "amount_refunded": 0,
        "offer_partner_ids": [], "offer_fence": 0, "offer_expires_ms": 0, "declined_partner_ids": [],
        "service_area": area.name, "idempotency_key": scoped_key, "request_hash": digest,
        "arrive_after": iso(window.after), "arrive_before": iso(window.before), "asap": 1 if window.asap else 0,
        "timezone": window.timezone, "dispatch_at": iso(window.dispatch_at),
        "dispatch_at_ms": int(window.dispatch_at.timestamp() * 1000),
        "arrive_before_ms": int(window.before.timestamp() * 1000),
        "created_at": now, "updated_at": now, "notify_pending": 1, "notified_upto": 0, "reviewed": 0,
    }
    if body.payment_option == "deposit":
        order["deposit_amount"] = deposit
    # Anti-automation: a customer places a bounded number of orders an hour; a retry of one of
    # them still gets its order back.
    try:
        await ratelimit.hit(request.config_dict[keys.REDIS], f"orders:customer:{user.user_id}",
                            settings.orders_per_customer_per_hour, 3600,
                            message="too many orders placed in the last hour; try again later")
    except RateLimited:
        existing = await _replay(db, scoped_key, digest)
        if existing is None:
            raise
        return json_response(customer_view(existing), status=200)
    # The unique index on the scoped key decides: no read before the write, so the common
    # case costs one round trip, and racing retries cannot both insert.
    try:
        await db.orders.insert_one(order)
    except DuplicateKeyError:
        existing = await _replay(db, scoped_key, digest)
        if existing is None:
            raise
        return json_response(customer_view(existing), status=200)
    logger.info("order %s %s for package %s", order["_id"], status, package["id"])
    await OrderFlow(db, request.config_dict[keys.REDIS]).announce(order, prev_status=None, by_role="customer")
    return json_response(customer_view(order), status=201)


async def list_customer_orders(db: AsyncDatabase[dict[str, Any]], customer_id: str,
                               query: OrderListQuery) -> dict[str, Any]:
    """One page of a customer's orders, newest first."""
    where: dict[str, Any] = {"customer_id": customer_id}
    if query.status is not None:
        where["status"] = query.status
    docs, total = await find_page(db.orders, where, query, [("created_at", -1)])
    return page_body([customer_view(d) for d in docs], total, query)


class SlotsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_date: date | None = Field(None, description="the event date, YYYY-MM-DD; without it, today in the area's "
                                    "time zone (what the form asks before a date is chosen)")
    lat: float | None = Field(None, ge=-90, le=90, description="the venue; without it, the first service area")
    lng: float | None = Field(None, ge=-180, le=180)


class ArrivalSlot(BaseModel):
    model_config = closed()
    label: str = Field(description="local time, e.g. 10:00-13:00")
    arrive_after: str = Field(description="ISO-8601 with the area's offset: send it back as the order's arrive_after")
    arrive_before: str


class ArrivalSlots(BaseModel):
    model_config = closed({
        "event_date": "2026-12-19", "timezone": "Asia/Kolkata", "area": "Bengaluru Central", "asap": False,
        "asap_window_min": 120, "default": "10:00-13:00",
        "slots": [{"label": "10:00-13:00", "arrive_after": "2026-12-19T10:00:00+05:30",
                   "arrive_before": "2026-12-19T13:00:00+05:30"},
                  {"label": "13:00-16:00", "arrive_after": "2026-12-19T13:00:00+05:30",
                   "arrive_before": "2026-12-19T16:00:00+05:30"}]})
    event_date: date
    timezone: str = Field(description="the service area's IANA time zone")
    area: str
    asap: bool = Field(description="the date is today there: without a slot the order means as soon as possible")
    asap_window_min: int
    default: str | None = Field(description="the slot a later order gets without one (its label), if offered")
    slots: list[ArrivalSlot]


@routes.get("/orders/arrival-slots", summary="The arrival slots the order form offers for a date and venue",
            query=SlotsQuery, response=ArrivalSlots,
            responses={422: "outside_service_area (the venue is not served), date_not_future"})
async def arrival_slots(request: web.Request, *, query: SlotsQuery) -> web.Response:
    settings = request.config_dict[keys.SETTINGS]
    areas = service_areas(settings.service_areas_file)
    if query.lat is not None and query.lng is not None:
        area = areas.locate(query.lat, query.lng)
        if area is None:
            raise _field_error("address", "we do not serve this address yet", "outside_service_area")
    elif not areas.areas:
        raise _field_error("address", "no service areas are configured", "outside_service_area")
    else:
        area = areas.areas[0]
    now = datetime.now(UTC)
    today = local_today(area.timezone, now)
    event_date = today if query.event_date is None else query.event_date
    if event_date < today:
        raise _field_error("event_date", "the event date has passed", "date_not_future")
    slots = slots_for(event_date, area.timezone, now=now, settings=settings)
    default = settings.default_arrival_window if event_date > today else None
    labels = {s.label for s in slots}
    return json_response({
        "event_date": event_date.isoformat(), "timezone": area.timezone, "area": area.name,
        "asap": event_date == today, "asap_window_min": settings.asap_window_min,
        "default": default if default in labels else None,
        "slots": [{"label": s.label, "arrive_after": s.after.isoformat(), "arrive_before": s.before.isoformat()}
                  for s in slots],
    }, headers={"Cache-Control": "no-store"})


@routes.get("/orders/myorders", summary="My orders, newest first", query=OrderListQuery, roles=("customer",),
            response=OrderPage)
async def my_orders(request: web.Request, *, query: OrderListQuery, user: Claims) -> web.Response:
    return json_response(await list_customer_orders(request.config_dict[keys.DB], user.user_id, query))


async def _partner_card(db: AsyncDatabase[dict[str, Any]], partner_id: str) -> dict[str, Any]:
    doc = await db.partners.find_one({"_id": partner_id}, {"first_name": 1, "contact_name": 1, "vehicle_type": 1})
    if doc is None:
        return {"id": partner_id}
    first = doc.get("first_name") or str(doc.get("contact_name") or "").split(" ")[0]
    return {"id": partner_id, "first_name": first, "vehicle_type": doc.get("vehicle_type")}


@routes.get("/orders/{id}", summary="One order: its customer, its assigned partner or an admin",
            roles=("customer", "partner", "admin"), response=OrderView, responses={404: "no such order visible to you"})
async def get_order(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    order = await db.orders.find_one({"_id": request.match_info["id"]})
    if order is None:
        raise NotFound("no such order")
    if user.role == "admin":
        return json_response(admin_view(order))
    if user.role == "customer" and order.get("customer_id") == user.user_id:
        view = customer_view(order)
        if order.get("partner_id"):
            view["partner"] = await _partner_card(db, str(order["partner_id"]))
        return json_response(view)
    if user.role == "partner" and order.get("partner_id") == user.user_id:
        return json_response(await assigned_view(db, order))
    # Not yours: indistinguishable from a missing order.
    raise NotFound("no such order")


class TrackingLink(BaseModel):
    model_config = closed({"token": "eyJhbGciOiJIUzI1NiJ9.eyJvcmQiOiI5YjJmIn0.c2ln",
                           "url": "https://partypilot.example/track?t=eyJhbGciOiJIUzI1NiJ9.eyJvcmQiOiI5YjJmIn0.c2ln",
                           "expires_at": "2026-12-20T10:00:00.000Z"})
    token: str
    url: str
    expires_at: str


class TrackQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    t: str = Field(min_length=1, max_length=2000, description="the token of a tracking link")


class TrackedPackage(BaseModel):
    model_config = closed()
    name: str | None


class TrackedVenue(BaseModel):
    """The venue's point for the map, not its street line: a link may be forwarded."""

    model_config = closed()
    city: str | None
    lat: float | None
    lng: float | None


class TrackedStep(BaseModel):
    model_config = closed()
    status: str | None
    at: str | None


class TrackedPartner(BaseModel):
    model_config = closed()
    first_name: str | None


class TrackedOrder(BaseModel):
    """What a tracking link shows to anyone who has it."""

    model_config = closed({
        "id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "status": "en_route", "version": 6, "event_date": "2026-12-19",
        "package": {"name": "Superhero Birthday Bash"},
        "address": {"city": "Bengaluru", "lat": 12.9752, "lng": 77.6033},
        "history": [{"status": "placed", "at": "2026-12-03T10:01:10.000Z"},
                    {"status": "assigned", "at": "2026-12-03T10:02:31.000Z"},
                    {"status": "en_route", "at": "2026-12-19T04:10:00.000Z"}],
        "partner": {"first_name": "Ravi"}})
    id: str
    status: OrderStatus
    version: int
    event_date: str | None
    package: TrackedPackage
    address: TrackedVenue
    history: list[TrackedStep]
    partner: TrackedPartner | None = Field(None, description="once a partner is assigned")


@routes.post("/orders/{id}/tracking-link", summary="A link that follows this order without signing in",
             roles=("customer",), response=TrackingLink, status=201,
             responses={404: "no such order", 409: "the order is over", 429: "too many links this hour"})
async def create_tracking_link(request: web.Request, *, user: Claims) -> web.Response:
    db, settings = request.config_dict[keys.DB], request.config_dict[keys.SETTINGS]
    order = await db.orders.find_one({"_id": request.match_info["id"]}, {"customer_id": 1, "status": 1})
    if order is None or order.get("customer_id") != user.user_id:
        raise NotFound("no such order")
    if order.get("status") not in ACTIVE:
        raise Conflict("this order is over: there is nothing left to track", code="order_finished")
    await ratelimit.hit(request.config_dict[keys.REDIS], f"tracking-links:customer:{user.user_id}",
                        settings.tracking_links_per_customer_per_hour, 3600,
                        message="too many tracking links made in the last hour; try again later")
    token, expires = issue_tracking_token(settings, str(order["_id"]))
    body = {"token": token, "url": f"{settings.public_url.rstrip('/')}/track?t={token}",
            "expires_at": jsonutil.iso(datetime.fromtimestamp(expires, UTC))}
    return json_response(body, status=201)


@routes.get("/track", summary="What a tracking link shows: status, timeline, partner's first name, venue",
            query=TrackQuery, response=TrackedOrder,
            responses={401: "the link is invalid or has expired", 404: "no such order"})
async def get_tracked_order(request: web.Request, *, query: TrackQuery) -> web.Response:
    db, settings = request.config_dict[keys.DB], request.config_dict[keys.SETTINGS]
    claims = decode_tracking_token(settings, query.t)
    order = await db.orders.find_one({"_id": claims.order_id})
    if order is None:
        raise NotFound("no such order")
    address = order.get("address") or {}
    package = order.get("package") or {}
    view: dict[str, Any] = {
        "id": str(order["_id"]), "status": order.get("status"), "version": int(order.get("version") or 0),
        "event_date": order.get("event_date"), "package": {"name": package.get("name")},
        # The venue point for the map, not the street line: the link may be forwarded.
        "address": {"city": address.get("city"), "lat": address.get("lat"), "lng": address.get("lng")},
        "history": [{"status": h.get("status"), "at": h.get("at")} for h in order.get("history") or []
                    if isinstance(h, Mapping)],
    }
    if order.get("partner_id"):
        card = await _partner_card(db, str(order["partner_id"]))
        view["partner"] = {"first_name": card.get("first_name")}
    return json_response(view, headers={"Cache-Control": "no-store"})


@routes.post("/orders/{id}/cancel", summary="Cancel an order within the cancellation policy",
             body=CancelRequest, roles=("customer", "admin"), response=OrderView,
             responses={404: "no such order", 409: "the order can no longer be cancelled"})
async def cancel_order(request: web.Request, *, body: CancelRequest, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    order = await db.orders.find_one({"_id": order_id}, {"customer_id": 1})
    if order is None or (user.role == "customer" and order.get("customer_id") != user.user_id):
        raise NotFound("no such order")
    allowed = CUSTOMER_CANCELLABLE if user.role == "customer" else ACTIVE
    flow = OrderFlow(db, request.config_dict[keys.REDIS])
    after = await flow.transition(
        order_id, "cancelled", by_role=user.role, by_id=user.user_id, reason=body.reason,
        allowed_from=allowed, set_fields={"offer_partner_ids": [], "offer_expires_ms": 0, "cancelled_at": iso(),
                                          "amount_due": 0},
        conflict_message="this order can no longer be cancelled",
    )
    if int(after.get("amount_paid") or 0) > 0 or after.get("payment_option") != "cash":
        # Refund what the policy gives back. A provider that is down does not undo the cancellation:
        # the refund stays owed and the payments sweep asks again.
        try:
            after = await flow_of(request).settle_order(order_id) or after
        except AppError as exc:
            logger.warning("refund for cancelled order %s deferred: %s", order_id, exc.code)
    return json_response(customer_view(after) if user.role == "customer" else admin_view(after))


@routes.post("/orders/{id}/review", summary="Rate a completed order (once, by its customer)",
             body=ReviewCreate, roles=("customer",), status=201, response=Review,
             responses={404: "no such order", 409: "not completed yet, or already reviewed"})
async def review_order(request: web.Request, *, body: ReviewCreate, user: Claims) -> web.Response:
    review = await reviews.add_review(request.config_dict[keys.DB], catalog_of(request),
                                      order_id=request.match_info["id"], customer_id=user.user_id,
                                      rating=body.rating, text=body.text)
    return json_response(public(review), status=201)
