"""/api/partner: a partner's offers, jobs, status changes, REST location fallback and earnings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api import earnings
from api.arrival import check_arrival, last_fix
from api.orders import AssignedOrder, AssignedOrderPage, OrderListQuery, OrderPackage, assigned_view, assigned_views
from api.paging import PageQuery, page_body
from api.routing import RouteTable
from api.schemas import Page, closed
from core import keys, metrics
from core.contracts import OFFER_EVENTS, PARTNER_POLLED, LocationPoint, OfferReplyEvent
from core.errors import Conflict, NotFound, ServiceUnavailable
from core.http import json_response
from core.jsonutil import iso, now_ms
from core.orderflow import PARTNER_NEXT, OrderFlow
from core.tokens import Claims
from geo.areas import approximate

logger = logging.getLogger(__name__)

routes = RouteTable("partner")

# Integers from clients stay within what JavaScript and BSON's int64 both hold exactly.
MAX_SAFE_INT = 2 ** 53 - 1


class AcceptQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    fence: int | None = Field(None, ge=0, le=MAX_SAFE_INT,
                              description="the offer_fence shown with the offer; a stale one loses")


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["en_route", "arrived", "setup_complete", "completed"]
    note: str | None = Field(None, max_length=300)


class LocationFix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    accuracy: float | None = Field(None, ge=0, le=100_000, description="95% radius, metres")
    speed: float | None = Field(None, ge=0, le=100, description="m/s")
    heading: float | None = Field(None, ge=0, lt=360)
    ts: int | None = Field(None, ge=0, le=MAX_SAFE_INT,
                           description="ms since epoch on the phone's clock; now when absent")


class EarningsQuery(PageQuery):
    period: earnings.Period = Field("day", description="day, week or month")


class LatLng(BaseModel):
    model_config = closed()
    lat: float
    lng: float


class Offer(BaseModel):
    """An order as offered (`offer_view`): enough to decide, but no customer contact or exact address."""

    model_config = closed({
        "id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "status": "offered",
        "package": {"name": "Superhero Birthday Bash", "price": 1_500_000, "currency": "INR", "category": "Kids",
                    "duration_min": 180},
        "event_date": "2026-12-19", "guests": 25, "area": "Bengaluru Central", "city": "Bengaluru",
        "approx_location": {"lat": 12.98, "lng": 77.6}, "price": 1_500_000, "currency": "INR", "payout": 1_275_000,
        "offer_fence": 3, "offer_expires_ms": 1_796_198_400_000, "version": 5})
    id: str
    status: str | None
    package: OrderPackage | None
    event_date: str | None
    guests: int | None
    area: str | None = Field(description="the service area")
    city: str | None
    approx_location: LatLng = Field(description="the venue rounded to about a kilometre")
    price: int
    currency: str | None
    payout: int = Field(description="what the partner earns: the price less the platform's commission")
    offer_fence: int = Field(description="send it back as ?fence= when accepting")
    offer_expires_ms: int = Field(description="when the offer lapses, ms since the epoch")
    version: int


class OfferPage(Page[Offer]):
    """The open offers, soonest to lapse first (at most 50, on one page)."""


class Declined(BaseModel):
    model_config = closed({"order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "declined": True})
    order_id: str
    declined: bool


class RejectedFix(BaseModel):
    model_config = closed()
    ts: int
    code: str = Field(description="why: stale_ts, future_ts, too_frequent, impossible_speed, inaccurate, ...")
    message: str


class FixVerdict(BaseModel):
    """The ingest's verdict on the reported position."""

    model_config = closed({"accepted": 1, "rejected": []},
                          {"accepted": 0, "rejected": [{"ts": 1_796_198_400_000, "code": "stale_ts",
                                                        "message": "ts is not newer than the last accepted fix"}]})
    accepted: int
    rejected: list[RejectedFix]


class EarningsLine(BaseModel):
    model_config = closed()
    order_id: str
    package_name: str | None
    event_date: str | None
    completed_at: str
    price: int
    commission: int
    payout: int
    currency: str | None


class EarningsTotals(BaseModel):
    model_config = closed()
    orders: int
    gross: int
    commission: int
    payout: int


class PeriodTotals(EarningsTotals):
    period: str = Field(description="2026-11-25, 2026-W48 or 2026-11 (unknown without a completion time)")


class Earnings(Page[EarningsLine]):
    """Per-order lines (a page of them, newest first), per-period totals and grand totals, in minor units."""

    model_config = closed({
        "currency": "INR", "commission_rate_bp": 1500, "period": "week",
        "totals": {"orders": 2, "gross": 3_000_000, "commission": 450_000, "payout": 2_550_000},
        "periods": [{"period": "2026-W48", "orders": 2, "gross": 3_000_000, "commission": 450_000,
                     "payout": 2_550_000}],
        "items": [{"order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "package_name": "Superhero Birthday Bash",
                   "event_date": "2026-11-28", "completed_at": "2026-11-28T13:40:00.000Z", "price": 1_500_000,
                   "commission": 225_000, "payout": 1_275_000, "currency": "INR"}],
        "total": 2, "page": 1, "limit": 1})
    currency: str
    commission_rate_bp: int = Field(description="the platform's share, in basis points")
    period: earnings.Period
    totals: EarningsTotals = Field(description="over every completed order")
    periods: list[PeriodTotals] = Field(description="newest first")


def offer_view(order: Mapping[str, Any], rate_bp: int) -> dict[str, Any]:
    """An order as offered: enough to decide, but no customer contact or exact address."""
    address = order.get("address") or {}
    lat, lng = approximate(float(address.get("lat", 0.0)), float(address.get("lng", 0.0)))
    price = int(order.get("price", 0))
    return {
        "id": str(order["_id"]), "status": order.get("status"), "package": order.get("package"),
        "event_date": order.get("event_date"), "guests": order.get("guests"),
        "area": order.get("service_area"), "city": address.get("city"),
        "approx_location": {"lat": lat, "lng": lng},
        "price": price, "currency": order.get("currency"),
        "payout": price - earnings.commission(price, rate_bp),
        "offer_fence": int(order.get("offer_fence", 0)), "offer_expires_ms": int(order.get("offer_expires_ms", 0)),
        "version": int(order.get("version", 0)),
    }


@routes.get("/partner/orders/my", summary="Orders assigned to me, newest first", query=OrderListQuery,
            roles=("partner",), response=AssignedOrderPage)
async def my_jobs(request: web.Request, *, query: OrderListQuery, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    where: dict[str, Any] = {"partner_id": user.user_id}
    if query.status is not None:
        where["status"] = query.status
    total = await db.orders.count_documents(where)
    docs = await db.orders.find(where).sort("created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    return json_response(page_body(await assigned_views(db, docs), total, query))


async def mark_polled(request: web.Request, partner_id: str) -> None:
    """A partner polling over REST is reachable for offers for the window (PARTNER_POLLED)."""
    window_ms = int(request.config_dict[keys.SETTINGS].partner_poll_window_s * 1000)
    try:
        await request.config_dict[keys.REDIS].set(PARTNER_POLLED.format(partner_id=partner_id), now_ms(),
                                                  px=window_ms)
    except Exception as exc:  # presence is a hint for dispatch; the poll itself still answers
        logger.warning("could not record a REST poll: %s", type(exc).__name__)


@routes.get("/partner/orders/new", summary="Offers open to me right now", roles=("partner",), response=OfferPage)
async def open_offers(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    await mark_polled(request, user.user_id)
    rate_bp = request.config_dict[keys.SETTINGS].commission_rate_bp
    where = {"status": "offered", "offer_partner_ids": {"$in": [user.user_id]}, "offer_expires_ms": {"$gt": now_ms()}}
    docs = await db.orders.find(where).sort("offer_expires_ms", 1).limit(50).to_list(None)
    items = [offer_view(doc, rate_bp) for doc in docs]
    return json_response({"items": items, "total": len(items), "page": 1, "limit": 50})


@routes.put("/partner/orders/{id}/accept", summary="Accept an offer: exactly one partner wins",
            query=AcceptQuery, roles=("partner",), response=AssignedOrder,
            responses={404: "no such order",
                       409: "the offer is no longer open to you, or you are on another job (partner_busy)"})
async def accept_offer(request: web.Request, *, query: AcceptQuery, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    flow = OrderFlow(db, request.config_dict[keys.REDIS])
    # The guarantee is the conditional updates inside accept_offer (the partner's claim, then the
    # order's transition); nothing here needs a lock.
    try:
        after = await flow.accept_offer(request.match_info["id"], user.user_id, fence=query.fence)
    except Conflict:
        metrics.OFFERS.labels("refused").inc()  # as dispatch.offers counts a refused socket accept
        raise
    metrics.OFFERS.labels("accepted").inc()
    logger.info("order %s accepted by partner %s", after["_id"], user.user_id)
    return json_response(await assigned_view(db, after))


@routes.put("/partner/orders/{id}/decline", summary="Decline an offer so dispatch moves on",
            roles=("partner",), response=Declined,
            responses={404: "no such order", 409: "the offer is not yours to decline"})
async def decline_offer(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    # Orders are created with declined_partner_ids = [] (the embedded server's $addToSet needs
    # an existing array). The precondition makes a decline of someone else's offer a no-op.
    # This write is the durable record of the decline: should the event below be lost (or its
    # handling fail), the dispatch sweep finds the holder in declined_partner_ids and moves on.
    after = await db.orders.find_one_and_update(
        {"_id": order_id, "status": "offered", "offer_partner_ids": {"$in": [user.user_id]}},
        {"$addToSet": {"declined_partner_ids": user.user_id}, "$set": {"updated_at": iso()}},
    )
    if after is None:
        if await db.orders.count_documents({"_id": order_id}, limit=1) == 0:
            raise NotFound("no such order")
        raise Conflict("this offer is not open to you", code="offer_not_open")
    event = OfferReplyEvent(order_id=order_id, partner_id=user.user_id, accept=False)
    await request.config_dict[keys.REDIS].publish(OFFER_EVENTS, event.model_dump_json())
    return json_response({"order_id": order_id, "declined": True})


@routes.put("/partner/orders/{id}/status", summary="Move my order to its next state",
            body=StatusChange, roles=("partner",), response=AssignedOrder,
            responses={404: "no such order assigned to you",
                       409: "not the next legal state (illegal_transition); for `arrived`, no fresh position "
                            "within the arrival radius of the venue (not_at_venue, position_stale, "
                            "position_unknown; details say how far)"})
async def change_status(request: web.Request, *, body: StatusChange, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    order = await db.orders.find_one({"_id": order_id}, {"partner_id": 1, "status": 1, "address": 1})
    if order is None or order.get("partner_id") != user.user_id:
        raise NotFound("no such order assigned to you")
    current = str(order.get("status"))
    if PARTNER_NEXT.get(current) != body.status:
        raise Conflict(f"an order that is {current} cannot become {body.status}", code="illegal_transition",
                       details={"status": current, "requested": body.status, "next": PARTNER_NEXT.get(current)})
    if body.status == "arrived":
        # The customer is told "your partner is at the venue": only a fresh fix near it says so.
        fix = await last_fix(request.config_dict[keys.REDIS], db, user.user_id)
        check_arrival(fix, order.get("address") or {}, request.config_dict[keys.SETTINGS])
    after = await OrderFlow(db, request.config_dict[keys.REDIS]).transition(
        order_id, body.status, by_role="partner", by_id=user.user_id, reason=body.note,
        allowed_from=frozenset({current}), expect={"partner_id": user.user_id},
        set_fields={f"{body.status}_at": iso()},
    )
    return json_response(await assigned_view(db, after))


@routes.put("/partner/location", summary="Report my position (REST fallback for the socket)",
            body=LocationFix, roles=("partner",), response=FixVerdict,
            responses={503: "location ingest is not running"})
async def report_location(request: web.Request, *, body: LocationFix, user: Claims) -> web.Response:
    sink = request.config_dict.get(keys.LOCATION_SINK)
    if sink is None:
        raise ServiceUnavailable("location tracking is not available right now", code="ingest_unavailable")
    # Clock skew, ordering and plausibility are judged by the ingest, against the partner's
    # previous fix; its verdict per point is the answer.
    await mark_polled(request, user.user_id)
    ts = body.ts if body.ts is not None else now_ms()
    point = LocationPoint(lat=body.lat, lng=body.lng, accuracy=body.accuracy, speed=body.speed,
                          heading=body.heading, ts=ts)
    result = await sink.ingest(user.user_id, [point])
    return json_response(result.model_dump())


@routes.get("/partner/earnings", summary="My earnings per order and per period, after commission",
            query=EarningsQuery, roles=("partner",), response=Earnings)
async def partner_earnings(request: web.Request, *, query: EarningsQuery, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    rate_bp = request.config_dict[keys.SETTINGS].commission_rate_bp
    docs = await db.orders.find(
        {"partner_id": user.user_id, "status": "completed"},
        {"price": 1, "currency": 1, "package": 1, "event_date": 1, "completed_at": 1, "history": 1,
         "updated_at": 1, "created_at": 1},
    ).to_list(None)
    summary = earnings.summarize(docs, rate_bp, query.period)
    lines = summary["lines"]
    return json_response({
        "currency": request.config_dict[keys.SETTINGS].currency, "commission_rate_bp": rate_bp,
        "period": query.period, "totals": summary["totals"], "periods": summary["periods"],
        **page_body(lines[query.skip:query.skip + query.limit], len(lines), query),
    })

