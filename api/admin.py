"""/api/admin: packages, partner standing, the order board (with CSV export), manual assignment,
dispatch audit, statistics and customers."""

from __future__ import annotations

import csv
import io
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from api.auditstory import AuditStory, partner_ids_in, tell
from api.catalog import PackagePage, PackageView, catalog_of, package_view
from api.orders import OrderRecord, OrderRecordPage, OrderStatus, admin_view, service_areas
from api.packages import Category
from api.paging import PageQuery, page_body, public
from api.routing import RouteTable
from api.schemas import Page, closed, open_ended
from core import keys
from core.contracts import DISPATCH_AUDIT, FLEET_ONLINE, PARTNER_EVENTS, PartnerEvent
from core.errors import Conflict, NotFound, ValidationFailed
from core.http import json_response
from core.jsonutil import iso, now_ms, parse_iso
from core.orderflow import ASSIGNABLE, OrderFlow
from core.settings import Settings
from core.tokens import Claims

logger = logging.getLogger(__name__)

routes = RouteTable("admin")
ADMIN = ("admin",)

CSV_MAX_ROWS = 10_000
# Average time to assign is taken over the most recent assignments: current, and bounded work.
STATS_ASSIGN_SAMPLE = 5_000
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
Feature = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ImageUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=80)]


def _calendar_day(value: Any) -> Any:
    # pydantic reads a number as a Unix time (`?to=0` would mean 1970-01-01): a day filter takes
    # only the YYYY-MM-DD the document promises.
    if not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) and not isinstance(value, date):
        raise ValueError("a date as YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_calendar_day)]


def _check_images(images: list[str] | None) -> list[str] | None:
    # Site paths or http(s) URLs only: a javascript: or data: URL in an <img> is a trap.
    for url in images or []:
        if not (url.startswith("/") and not url.startswith("//")) and not re.match(r"^https?://[^\s]+$", url):
            raise ValueError("images must be site paths (/img/...) or http(s) URLs")
    return images


class PackageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=2, max_length=120)
    slug: Slug | None = None
    description: str = Field("", max_length=4000)
    category: Category
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    price: int = Field(ge=1, le=1_000_000_000, description="minor units (paise)")
    capacity: int = Field(ge=1, le=100_000)
    duration_min: int = Field(ge=15, le=10_080)
    features: list[Feature] = Field(default_factory=list, max_length=30)
    images: list[ImageUrl] = Field(default_factory=list, max_length=10)
    active: bool = True

    _images = field_validator("images")(_check_images)


class PackageUpdate(BaseModel):
    """Any subset of the package's fields."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str | None = Field(None, min_length=2, max_length=120)
    slug: Slug | None = None
    description: str | None = Field(None, max_length=4000)
    category: Category | None = None
    tags: list[Tag] | None = Field(None, max_length=20)
    price: int | None = Field(None, ge=1, le=1_000_000_000)
    capacity: int | None = Field(None, ge=1, le=100_000)
    duration_min: int | None = Field(None, ge=15, le=10_080)
    features: list[Feature] | None = Field(None, max_length=30)
    images: list[ImageUrl] | None = Field(None, max_length=10)
    active: bool | None = None

    _images = field_validator("images")(_check_images)


class AdminPackageQuery(PageQuery):
    q: str | None = Field(None, max_length=100)
    category: Category | None = None
    active: bool | None = None


class PartnerQuery(PageQuery):
    status: Literal["pending", "approved", "rejected", "suspended"] | None = None
    q: str | None = Field(None, max_length=100)


class AdminOrderQuery(PageQuery):
    status: OrderStatus | None = None
    partner_id: str | None = Field(None, max_length=64)
    customer_id: str | None = Field(None, max_length=64)
    date_from: Day | None = Field(None, alias="from", description="created on or after (YYYY-MM-DD, UTC)")
    date_to: Day | None = Field(None, alias="to", description="created on or before (YYYY-MM-DD, UTC)")
    format: Literal["json", "csv"] = "json"


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    partner_id: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=300)


class CustomerQuery(PageQuery):
    q: str | None = Field(None, max_length=100)


# --- what the admin routes answer ---------------------------------------------------------------

_PARTNER_EXAMPLE: dict[str, Any] = {
    "id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "company_name": "Kumar Party Services", "contact_name": "Ravi Kumar",
    "first_name": "Ravi", "email": "ravi@kumarparty.example", "phone": "+919845000001", "vehicle_type": "van",
    "service_area": "Bengaluru Central", "status": "approved", "created_at": "2026-10-01T08:00:00.000Z",
    "status_at": "2026-10-02T09:15:00.000Z", "status_by": "a1b2c3d4e5f60718293a4b5c6d7e8f90"}


class PartnerRecord(BaseModel):
    """A partner as admins see it: the stored application and standing (and the job it holds, if any)."""

    model_config = open_ended(_PARTNER_EXAMPLE)
    id: str = Field(description="the partner's user id")
    company_name: str | None = None
    contact_name: str | None = None
    first_name: str | None = None
    email: str | None = None
    phone: str | None = None
    vehicle_type: str | None = Field(None, description="bike, car, van or truck")
    service_area: str | None = None
    status: Literal["pending", "approved", "rejected", "suspended"]
    created_at: str | None = None
    status_at: str | None = Field(None, description="when the standing last changed")
    status_by: str | None = Field(None, description="the admin who changed it")
    current_order_id: str | None = Field(None, description="the job it holds; empty when free")


class PartnerRow(PartnerRecord):
    model_config = open_ended({**_PARTNER_EXAMPLE, "online": True})
    online: bool = Field(description="on duty with a live connection now")


class PartnerPage(Page[PartnerRow]):
    pass


class AuditEntry(BaseModel):
    """One dispatch decision: who was considered, offered, chosen or skipped, and why."""

    model_config = open_ended()
    id: str
    order_id: str
    at: str
    event: str = Field(description="e.g. offered, declined, expired, accepted, manual_assign")
    data: dict[str, Any] = Field(description="depends on the event")


class AuditTrail(BaseModel):
    model_config = closed({"items": [
        {"id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d",
         "at": "2026-12-03T10:01:12.000Z", "event": "offer",
         "data": {"partner_ids": ["5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"], "radius_m": 5000, "node": "app-1:4242"}}],
        "total": 1, "story": {"timezone": "Asia/Kolkata", "steps": [
            {"at": "2026-12-03T10:01:12.000Z", "time": "15:31:12", "kind": "search",
             "text": "Offered to Ravi Kumar at 15:31:12; accepted after 11 s.", "search": None}]}})
    items: list[AuditEntry] = Field(description="oldest first, at most 1000")
    total: int
    story: AuditStory = Field(description="the same entries told in plain words (docs/console.md)")


class AdminStats(BaseModel):
    model_config = closed({"orders_by_status": {"placed": 3, "assigned": 2, "completed": 41, "cancelled": 4},
                           "orders_total": 50, "revenue": 61_500_000, "currency": "INR", "avg_time_to_assign_s": 74.2,
                           "partners_by_status": {"approved": 12, "pending": 2}, "partners_online": 7,
                           "customers": 230})
    orders_by_status: dict[str, int]
    orders_total: int
    revenue: int = Field(description="the price of completed orders, minor units")
    currency: str
    avg_time_to_assign_s: float | None = Field(description="over the latest assignments; null before the first")
    partners_by_status: dict[str, int]
    partners_online: int
    customers: int


class CustomerRow(BaseModel):
    model_config = closed({"id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "name": "Asha Rao", "email": "asha@example.com",
                           "phone": "+919845012345", "created_at": "2026-09-14T12:00:00.000Z", "deleted": False,
                           "orders": 3})
    id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    created_at: str | None = None
    deleted: bool = Field(description="the account was deleted: its personal data is gone")
    orders: int = Field(description="orders placed, whatever their state")


class CustomerPage(Page[CustomerRow]):
    pass


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.partners.create_index([("status", 1), ("created_at", -1)])
    await db.users.create_index([("role", 1), ("created_at", -1)])
    await db[DISPATCH_AUDIT].create_index([("order_id", 1), ("at", 1)])


def _contains(text: str) -> dict[str, str]:
    # User text is escaped: it is matched literally, never as a pattern.
    return {"$regex": re.escape(text), "$options": "i"}


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:70] or "package"


# --- packages -------------------------------------------------------------------------------------


@routes.get("/admin/packages", summary="All packages, archived ones included", query=AdminPackageQuery,
            roles=ADMIN, response=PackagePage)
async def admin_list_packages(request: web.Request, *, query: AdminPackageQuery) -> web.Response:
    db = request.config_dict[keys.DB]
    where: dict[str, Any] = {}
    if query.q:
        where["$or"] = [{"name": _contains(query.q)}, {"description": _contains(query.q)}]
    if query.category is not None:
        where["category"] = query.category
    if query.active is not None:
        where["active"] = 1 if query.active else 0
    total = await db.packages.count_documents(where)
    docs = await db.packages.find(where).sort("name", 1).skip(query.skip).limit(query.limit).to_list(None)
    return json_response(page_body([package_view(d) for d in docs], total, query))


@routes.post("/admin/packages", summary="Create a package", body=PackageCreate, roles=ADMIN, status=201,
             response=PackageView, responses={409: "the slug is taken"})
async def create_package(request: web.Request, *, body: PackageCreate) -> web.Response:
    db = request.config_dict[keys.DB]
    now = iso()
    doc: dict[str, Any] = {"_id": uuid.uuid4().hex, **body.model_dump(), "active": 1 if body.active else 0,
                           "currency": request.config_dict[keys.SETTINGS].currency, "rating_count": 0,
                           "created_at": now, "updated_at": now}
    if body.slug is None:
        doc["slug"] = slugify(body.name)
        if await db.packages.count_documents({"slug": doc["slug"]}, limit=1):
            doc["slug"] = f"{doc['slug']}-{doc['_id'][:6]}"
    try:
        await db.packages.insert_one(doc)
    except DuplicateKeyError:
        raise Conflict("another package uses this slug", code="slug_taken") from None
    await catalog_of(request).changed()
    return json_response(package_view(doc), status=201)


@routes.put("/admin/packages/{id}", summary="Change any of a package's fields", body=PackageUpdate,
            roles=ADMIN, response=PackageView, responses={404: "no such package", 409: "the slug is taken"})
async def update_package(request: web.Request, *, body: PackageUpdate) -> web.Response:
    db = request.config_dict[keys.DB]
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for field, value in list(changes.items()):
        if value is None:
            raise ValidationFailed("the request is invalid", details=[
                {"field": field, "message": "may not be null", "type": "null"}])
    if "active" in changes:
        changes["active"] = 1 if changes["active"] else 0
    changes["updated_at"] = iso()
    try:
        result = await db.packages.update_one({"_id": request.match_info["id"]}, {"$set": changes})
    except DuplicateKeyError:
        raise Conflict("another package uses this slug", code="slug_taken") from None
    if result.matched_count == 0:
        raise NotFound("no such package", code="package_not_found")
    await catalog_of(request).changed()
    doc = await db.packages.find_one({"_id": request.match_info["id"]})
    if doc is None:
        raise NotFound("no such package", code="package_not_found")
    return json_response(package_view(doc))


@routes.delete("/admin/packages/{id}", summary="Archive a package (orders keep their snapshot)", roles=ADMIN,
               response=PackageView, responses={404: "no such package"})
async def archive_package(request: web.Request) -> web.Response:
    db = request.config_dict[keys.DB]
    result = await db.packages.update_one({"_id": request.match_info["id"]},
                                          {"$set": {"active": 0, "updated_at": iso()}})
    if result.matched_count == 0:
        raise NotFound("no such package", code="package_not_found")
    await catalog_of(request).changed()
    doc = await db.packages.find_one({"_id": request.match_info["id"]})
    return json_response(package_view(doc or {"_id": request.match_info["id"]}))


# --- partners -------------------------------------------------------------------------------------


@routes.get("/admin/partners", summary="Partners, optionally by status", query=PartnerQuery, roles=ADMIN,
            response=PartnerPage)
async def list_partners(request: web.Request, *, query: PartnerQuery) -> web.Response:
    db = request.config_dict[keys.DB]
    where: dict[str, Any] = {}
    if query.status is not None:
        where["status"] = query.status
    if query.q:
        where["$or"] = [{field: _contains(query.q)} for field in ("company_name", "contact_name", "email", "phone")]
    total = await db.partners.count_documents(where)
    docs = await db.partners.find(where).sort("created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    ids = [str(d["_id"]) for d in docs]
    online = await request.config_dict[keys.REDIS].smismember(FLEET_ONLINE, ids) if ids else []
    items = [{**public(d), "online": bool(flag)} for d, flag in zip(docs, online, strict=True)]
    return json_response(page_body(items, total, query))


# to -> the standings it may be reached from; the same standing again is a no-op.
_PARTNER_MOVES: dict[str, frozenset[str]] = {
    "approved": frozenset({"pending", "rejected", "suspended"}),
    "rejected": frozenset({"pending"}),
    "suspended": frozenset({"approved", "pending"}),
}


async def _set_partner_status(request: web.Request, to: Literal["approved", "rejected", "suspended"],
                              admin: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    partner_id = request.match_info["id"]
    partner = await db.partners.find_one({"_id": partner_id})
    if partner is None:
        raise NotFound("no such partner", code="partner_not_found")
    current = partner.get("status")
    if current == to:
        return json_response(public(partner))
    if current not in _PARTNER_MOVES[to]:
        raise Conflict(f"a {current} partner cannot become {to}", code="illegal_transition",
                       details={"status": current, "requested": to})
    # A deleted account is left suspended and anonymised: approving it would let admins assign
    # orders to nobody.
    if to == "approved" and await db.users.count_documents({"_id": partner_id, "deleted": 1}, limit=1):
        raise Conflict("this partner deleted their account", code="account_deleted")
    at = iso()
    after = await db.partners.find_one_and_update(
        {"_id": partner_id, "status": current}, {"$set": {"status": to, "status_at": at, "status_by": admin.user_id}},
        return_document=ReturnDocument.AFTER)
    if after is None:
        raise Conflict("the partner changed meanwhile; reload and try again", code="precondition_failed")
    event = PartnerEvent(partner_id=partner_id, status=to, at=at)
    await request.config_dict[keys.REDIS].publish(PARTNER_EVENTS, event.model_dump_json())
    logger.info("partner %s is now %s", partner_id, to)
    return json_response(public(after))


@routes.put("/admin/partners/{id}/approve", summary="Approve a partner", roles=ADMIN, response=PartnerRecord,
            responses={404: "no such partner", 409: "not from this standing"})
async def approve_partner(request: web.Request, *, user: Claims) -> web.Response:
    return await _set_partner_status(request, "approved", user)


@routes.put("/admin/partners/{id}/reject", summary="Reject a pending partner", roles=ADMIN, response=PartnerRecord,
            responses={404: "no such partner", 409: "not from this standing"})
async def reject_partner(request: web.Request, *, user: Claims) -> web.Response:
    return await _set_partner_status(request, "rejected", user)


@routes.put("/admin/partners/{id}/suspend", summary="Suspend a partner (effective on their next request)",
            roles=ADMIN, response=PartnerRecord, responses={404: "no such partner", 409: "not from this standing"})
async def suspend_partner(request: web.Request, *, user: Claims) -> web.Response:
    return await _set_partner_status(request, "suspended", user)


# --- orders ---------------------------------------------------------------------------------------


def _order_filter(query: AdminOrderQuery) -> dict[str, Any]:
    where: dict[str, Any] = {}
    if query.status is not None:
        where["status"] = query.status
    if query.partner_id:
        where["partner_id"] = query.partner_id
    if query.customer_id:
        where["customer_id"] = query.customer_id
    where.update(created_between(query.date_from, query.date_to))
    return where


def created_between(date_from: date | None, date_to: date | None) -> dict[str, Any]:
    """A `created_at` filter for whole days, inclusive (empty when neither end is given)."""
    created: dict[str, str] = {}
    if date_from is not None:
        created["$gte"] = date_from.isoformat()
    if date_to is not None:
        # Stored timestamps are fixed-width ISO strings (core.jsonutil.iso), so the day's last
        # millisecond bounds it; `date_to + 1 day` would overflow on 9999-12-31.
        created["$lte"] = f"{date_to.isoformat()}T23:59:59.999Z"
    return {"created_at": created} if created else {}


# Status times are the first history entry of each status, in UTC (ISO-8601) like created_at.
CSV_STATUS_TIMES = ("placed", "assigned", "en_route", "arrived", "setup_complete", "completed", "cancelled",
                    "refunded")
CSV_COLUMNS = ("id", "created_at", "status", "customer_name", "customer_phone", "partner_name", "partner_phone",
               "package", "category", "event_date", "address", "city", "postal_code", "guests", "payment_option",
               "price", "currency", "payment_status", "amount_paid", "amount_refunded", "amount_due",
               *(f"{s}_at" for s in CSV_STATUS_TIMES), "cancel_reason", "notes", "customer_id", "partner_id")
# ISO 4217 currencies without minor units; the rest the product sells in have two.
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX"})


def major_units(amount: Any, currency: str | None) -> str | None:
    """`1500005` INR -> `15000.05`: exact (integer arithmetic), a number a spreadsheet sums."""
    if amount is None or isinstance(amount, bool) or not isinstance(amount, int):
        return None
    if (currency or "").upper() in _ZERO_DECIMAL:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole}.{cents:02d}"


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will show as text, never run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _status_times(order: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """The first time of each status in the history, and why the order was cancelled (if it was)."""
    times: dict[str, str] = {}
    reason = None
    for entry in order.get("history") or []:
        if not isinstance(entry, Mapping) or not entry.get("status"):
            continue
        status = str(entry["status"])
        times.setdefault(status, str(entry.get("at") or ""))
        if status == "cancelled" and reason is None and entry.get("reason"):
            reason = str(entry["reason"])
    return times, reason


def orders_csv(orders: Iterable[Mapping[str, Any]], customers: Mapping[str, Mapping[str, Any]],
               partners: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per order with the people's names and phones (deleted accounts blank), money in major
    units beside its currency, the venue's address, when it reached each status and why it was cancelled."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for order in orders:
        package = order.get("package") or {}
        address = order.get("address") or {}
        customer = customers.get(str(order.get("customer_id")), {})
        if customer.get("deleted"):
            customer = {}
        partner = partners.get(str(order.get("partner_id")), {}) if order.get("partner_id") else {}
        currency = order.get("currency")
        times, cancel_reason = _status_times(order)
        row = (order["_id"], order.get("created_at"), order.get("status"), customer.get("name"), customer.get("phone"),
               partner.get("contact_name") or partner.get("company_name"), partner.get("phone"),
               package.get("name"), package.get("category"), order.get("event_date"), address.get("line1"),
               address.get("city"), address.get("postal_code"), order.get("guests"), order.get("payment_option"),
               major_units(order.get("price"), currency), currency, order.get("payment_status"),
               major_units(order.get("amount_paid"), currency), major_units(order.get("amount_refunded"), currency),
               major_units(order.get("amount_due"), currency), *(times.get(s) for s in CSV_STATUS_TIMES),
               cancel_reason, order.get("notes"), order.get("customer_id"), order.get("partner_id"))
        writer.writerow([csv_cell(v) for v in row])
    return out.getvalue()


async def csv_people(db: AsyncDatabase[dict[str, Any]], orders: Iterable[Mapping[str, Any]]
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The customers and partners the rows name, in two reads."""
    orders = list(orders)
    customer_ids = sorted({str(o["customer_id"]) for o in orders if o.get("customer_id")})
    partner_ids = sorted({str(o["partner_id"]) for o in orders if o.get("partner_id")})
    customers = {str(d["_id"]): d for d in await db.users.find(
        {"_id": {"$in": customer_ids}}, {"name": 1, "phone": 1, "deleted": 1}).to_list(None)} if customer_ids else {}
    partners = {str(d["_id"]): d for d in await db.partners.find(
        {"_id": {"$in": partner_ids}}, {"contact_name": 1, "company_name": 1, "phone": 1}).to_list(None)
    } if partner_ids else {}
    return customers, partners


@routes.get("/admin/orders", summary="The order board; ?format=csv exports every matching order",
            query=AdminOrderQuery, roles=ADMIN, response=OrderRecordPage)
async def admin_list_orders(request: web.Request, *, query: AdminOrderQuery) -> web.Response:
    db = request.config_dict[keys.DB]
    where = _order_filter(query)
    if query.format == "csv":
        docs = await db.orders.find(where).sort("created_at", -1).limit(CSV_MAX_ROWS).to_list(None)
        customers, partners = await csv_people(db, docs)
        return web.Response(text=orders_csv(docs, customers, partners), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition":
                                     f'attachment; filename="orders-{date.today().isoformat()}.csv"',
                                     "Cache-Control": "no-store"})
    total = await db.orders.count_documents(where)
    docs = await db.orders.find(where).sort("created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    return json_response(page_body([admin_view(d) for d in docs], total, query))


class UnassignedOrder(BaseModel):
    model_config = closed({"id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "package": "Superhero Birthday Bash",
                           "city": "Bengaluru", "placed_at": "2026-12-03T10:01:10.000Z", "waiting_s": 640,
                           "offered": False, "attempts": 3, "radius_m": 15000,
                           "next_retry_at": "2026-12-03T10:13:00.000Z", "alert_at": "2026-12-03T10:06:00.000Z",
                           "arrive_before": "2026-12-03T13:00:00.000Z", "timezone": "Asia/Kolkata"})
    id: str
    package: str | None = Field(None, description="the package's name")
    city: str | None = None
    placed_at: str | None = Field(None, description="when the order first became placed (ISO-8601)")
    waiting_s: int = Field(description="seconds since then")
    offered: bool = Field(description="an offer is out right now (the order is between passes otherwise)")
    attempts: int = Field(description="dispatch passes that ended with nobody taking it")
    radius_m: int | None = Field(None, description="the last search radius tried")
    next_retry_at: str | None = Field(None, description="when dispatch tries again on its own (ISO-8601)")
    alert_at: str | None = Field(None, description="when admins were alerted about it (ISO-8601)")
    arrive_before: str | None = Field(None, description="when its arrival window closes (ISO-8601)")
    timezone: str | None = Field(None, description="the service area's IANA zone, to show these times in")


class UnassignedPage(Page[UnassignedOrder]):
    pass


def _iso_ms(ms: Any) -> str | None:
    value = int(ms or 0)
    return iso(datetime.fromtimestamp(value / 1000, UTC)) if value > 0 else None


def unassigned_view(order: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    history = [h for h in order.get("history") or [] if isinstance(h, Mapping)]
    placed_at = next((str(h.get("at")) for h in history if h.get("status") == "placed"), None) or \
        order.get("created_at")
    waited = (now - parse_iso(str(placed_at))).total_seconds() if placed_at else 0.0
    return {"id": str(order["_id"]), "package": (order.get("package") or {}).get("name"),
            "city": (order.get("address") or {}).get("city"), "placed_at": placed_at,
            "waiting_s": max(0, int(waited)), "offered": order.get("status") == "offered",
            "attempts": int(order.get("dispatch_attempts") or 0),
            "radius_m": int(order["dispatch_radius_m"]) if order.get("dispatch_radius_m") else None,
            "next_retry_at": _iso_ms(order.get("dispatch_retry_ms")) if order.get("dispatch_exhausted") else None,
            "alert_at": _iso_ms(order.get("dispatch_alert_ms")), "arrive_before": order.get("arrive_before"),
            "timezone": order.get("timezone")}


@routes.get("/admin/orders/unassigned", summary="Orders still waiting for a partner, longest waiting first",
            query=PageQuery, response=UnassignedPage, roles=ADMIN)
async def unassigned_orders(request: web.Request, *, query: PageQuery) -> web.Response:
    """The persistent queue behind `dispatch_alert`: every `placed` order (no partner yet) whose
    dispatch time has come, and alerted ones while a retry's offer is out, so an order stays listed
    until someone has it."""
    db = request.config_dict[keys.DB]
    # Orders scheduled for later (arrival windows: dispatch starts at `dispatch_at_ms`) are not waiting yet.
    due = now_ms()
    where = {"$or": [{"status": "placed", "dispatch_at_ms": {"$lte": due}},
                     {"status": "placed", "dispatch_at_ms": {"$exists": False}},
                     {"status": "offered", "dispatch_alert_ms": {"$gt": 0}}]}
    total = await db.orders.count_documents(where)
    docs = await db.orders.find(where, {"history": 1, "created_at": 1, "package": 1, "address": 1, "status": 1,
                                        "dispatch_attempts": 1, "dispatch_radius_m": 1, "dispatch_exhausted": 1,
                                        "dispatch_retry_ms": 1, "dispatch_alert_ms": 1, "arrive_before": 1,
                                        "timezone": 1}
                               ).sort("created_at", 1).skip(query.skip).limit(query.limit).to_list(None)
    now = datetime.now(UTC)
    return json_response(page_body([unassigned_view(d, now) for d in docs], total, query))


async def partner_names(db: AsyncDatabase[dict[str, Any]], ids: Iterable[str]) -> dict[str, str]:
    """Display names of partners, from the partners collection (contact, else company)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    docs = await db.partners.find({"_id": {"$in": wanted}}, {"contact_name": 1, "company_name": 1}).to_list(None)
    return {str(d["_id"]): str(d.get("contact_name") or d.get("company_name") or "") for d in docs
            if d.get("contact_name") or d.get("company_name")}


def order_timezone(order: Mapping[str, Any], settings: Settings) -> str | None:
    """The time zone an order's times are told in: its own (orders with arrival windows store it),
    else the service area its venue lies in."""
    if order.get("timezone"):
        return str(order["timezone"])
    address = order.get("address") or {}
    try:
        area = service_areas(settings.service_areas_file).locate(float(address["lat"]), float(address["lng"]))
    except (KeyError, TypeError, ValueError):
        return None
    return area.timezone if area is not None else None


@routes.get("/admin/orders/{id}/audit", summary="The dispatch audit trail of one order, oldest first",
            roles=ADMIN, response=AuditTrail, responses={404: "no such order"})
async def order_audit(request: web.Request) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    order = await db.orders.find_one({"_id": order_id}, {"timezone": 1, "address": 1})
    if order is None:
        raise NotFound("no such order")
    docs = await db[DISPATCH_AUDIT].find({"order_id": order_id}).sort("at", 1).limit(1000).to_list(None)
    names = await partner_names(db, partner_ids_in(docs))
    admin_ids = sorted({str(d["data"]["by"]) for d in docs if d.get("event") == "manual_assign"
                        and isinstance(d.get("data"), dict) and d["data"].get("by")})
    admins = {str(u["_id"]): str(u.get("name") or u.get("email") or "an admin")
              for u in await db.users.find({"_id": {"$in": admin_ids}}, {"name": 1, "email": 1}).to_list(None)
              } if admin_ids else {}
    story = tell(docs, names, admins, order_timezone(order, request.config_dict[keys.SETTINGS]))
    return json_response({"items": [public(d) for d in docs], "total": len(docs), "story": story})


@routes.put("/admin/orders/{id}/assign", summary="Assign (or reassign) an order to an approved partner",
            body=AssignRequest, roles=ADMIN, response=OrderRecord,
            responses={404: "no such order",
                       409: "the order is not assignable, or the partner not approved or on another job"})
async def assign_order(request: web.Request, *, body: AssignRequest, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    partner = await db.partners.find_one({"_id": body.partner_id}, {"status": 1})
    if partner is None:
        raise ValidationFailed("the request is invalid", details=[
            {"field": "partner_id", "message": "no such partner", "type": "partner_not_found"}])
    if partner.get("status") != "approved":
        raise Conflict("only an approved partner can take orders", code="partner_not_approved",
                       details={"status": partner.get("status")})
    before = await db.orders.find_one({"_id": order_id}, {"partner_id": 1})
    if before is None:
        raise NotFound("no such order")
    # One job at a time holds here too: the partner is claimed before the order changes, so a
    # partner on another active job is refused (409 partner_busy) rather than double-booked.
    after = await OrderFlow(db, request.config_dict[keys.REDIS]).assign(
        order_id, body.partner_id, by_role="admin", by_id=user.user_id, reason=body.reason or "manual assignment",
        allowed_from=ASSIGNABLE, conflict_message="this order cannot be assigned now",
        # A new partner on an assigned order is a change the customer hears about.
        record_same=before.get("partner_id") != body.partner_id,
    )
    await db[DISPATCH_AUDIT].insert_one({
        "_id": uuid.uuid4().hex, "order_id": order_id, "at": iso(), "event": "manual_assign",
        "data": {"partner_id": body.partner_id, "previous_partner_id": before.get("partner_id"),
                 "by": user.user_id, "reason": body.reason},
    })
    return json_response(admin_view(after))


# --- statistics and customers ---------------------------------------------------------------------


@routes.get("/admin/stats", summary="Orders by status, revenue, time to assign, partners online", roles=ADMIN,
            response=AdminStats)
async def admin_stats(request: web.Request) -> web.Response:
    db = request.config_dict[keys.DB]
    cursor = await db.orders.aggregate([{"$group": {"_id": "$status", "count": {"$sum": 1},
                                                    "amount": {"$sum": "$price"}}}])
    rows = await cursor.to_list()
    by_status = {str(r["_id"]): int(r["count"]) for r in rows}
    revenue = sum(int(r["amount"]) for r in rows if r["_id"] == "completed")
    assigned = await db.orders.find({"assigned_at": {"$exists": True}}, {"created_at": 1, "assigned_at": 1}).sort(
        "created_at", -1).limit(STATS_ASSIGN_SAMPLE).to_list(None)
    waits = [(parse_iso(str(o["assigned_at"])) - parse_iso(str(o["created_at"]))).total_seconds()
             for o in assigned if o.get("assigned_at") and o.get("created_at")]
    partners_cursor = await db.partners.aggregate([{"$group": {"_id": "$status", "count": {"$sum": 1}}}])
    partners = {str(r["_id"]): int(r["count"]) for r in await partners_cursor.to_list()}
    return json_response({
        "orders_by_status": by_status, "orders_total": sum(by_status.values()),
        "revenue": revenue, "currency": request.config_dict[keys.SETTINGS].currency,
        "avg_time_to_assign_s": round(sum(waits) / len(waits), 1) if waits else None,
        "partners_by_status": partners,
        "partners_online": int(await request.config_dict[keys.REDIS].scard(FLEET_ONLINE)),
        "customers": await db.users.count_documents({"role": "customer"}),
    })


@routes.get("/admin/customers", summary="Customers, searchable by name, email or phone", query=CustomerQuery,
            roles=ADMIN, response=CustomerPage)
async def list_customers(request: web.Request, *, query: CustomerQuery) -> web.Response:
    db = request.config_dict[keys.DB]
    where: dict[str, Any] = {"role": "customer"}
    if query.q:
        where["$or"] = [{field: _contains(query.q)} for field in ("name", "email", "phone")]
    total = await db.users.count_documents(where)
    docs = await db.users.find(where, {"name": 1, "email": 1, "phone": 1, "created_at": 1, "deleted": 1}).sort(
        "created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    ids = [str(d["_id"]) for d in docs]
    counts_cursor = await db.orders.aggregate([{"$match": {"customer_id": {"$in": ids}}},
                                               {"$group": {"_id": "$customer_id", "count": {"$sum": 1}}}])
    counts = {str(r["_id"]): int(r["count"]) for r in await counts_cursor.to_list()}
    items = [{**public(d), "deleted": bool(d.get("deleted", 0)), "orders": counts.get(str(d["_id"]), 0)}
             for d in docs]
    return json_response(page_body(items, total, query))
