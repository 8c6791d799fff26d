"""/api/partner: a partner's offers, jobs, status changes, REST location fallback and earnings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import earnings
from api.arrival import Fix, assess, last_fix, unverified_flag, unverified_note
from api.orders import AssignedOrder, AssignedOrderPage, OrderListQuery, OrderPackage, assigned_view, assigned_views
from api.paging import PageQuery, find_page, page_body
from api.routing import RouteTable
from api.schemas import Page, closed
from core import keys, metrics
from core.contracts import OFFER_EVENTS, PARTNER_POLLED, LocationPoint, OfferReplyEvent
from core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from core.http import json_response
from core.jsonutil import iso, now_ms
from core.orderflow import PARTNER_NEXT, OrderFlow
from core.tokens import Claims
from geo.areas import approximate
from geo.distance import haversine_m
from geo.eta import eta_seconds

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
    reason: str | None = Field(None, max_length=300, description=(
        "with `arrived` only: why the partner is marking arrival although their position is not within the "
        "arrival radius (or not fresh). The arrival is then accepted and flagged (`arrival_unverified`)"))

    @field_validator("reason")
    @classmethod
    def _words(cls, value: str | None) -> str | None:
        # Blank is no reason: a tap on "anyway" must say something an admin can act on.
        if value is None:
            return None
        value = " ".join(value.split())
        if len(value) < 3:
            raise ValueError("say in a few words why you are marking arrival here")
        return value


class ArrivalCheck(BaseModel):
    """Where the partner stands against the venue's geofence, judged from their last shared fix."""

    model_config = closed({"order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "at_venue": True, "code": None,
                           "message": "You are at the venue.", "distance_m": 40, "radius_m": 150, "accuracy_m": 12,
                           "fix_age_s": 4},
                          {"order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "at_venue": False, "code": "not_at_venue",
                           "message": "You are 2.3 km from the venue. Mark arrival when you are within 150 m of it.",
                           "distance_m": 2310, "radius_m": 150, "accuracy_m": 12, "fix_age_s": 4})
    order_id: str
    at_venue: bool = Field(description="true: offer \"I've arrived\" as one tap")
    code: Literal["not_at_venue", "position_stale", "position_unknown"] | None = Field(
        description="why not: the code a status change to `arrived` without a reason would be refused with")
    message: str = Field(description="for the partner, as it is")
    distance_m: int | None = None
    radius_m: int
    accuracy_m: int | None = None
    fix_age_s: int | None = None


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
        "offer_fence": 3, "offer_expires_ms": 1_796_198_400_000, "version": 5,
        "arrive_after": "2026-12-19T10:30:00.000Z", "arrive_before": "2026-12-19T13:30:00.000Z",
        "timezone": "Asia/Kolkata", "asap": False, "distance_m": 2300, "eta_s": 540})
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
    arrive_after: str | None = Field(None, description="the arrival slot's start (ISO-8601, UTC)")
    arrive_before: str | None = Field(None, description="the arrival slot's end (ISO-8601, UTC)")
    timezone: str | None = Field(None, description="the venue's IANA time zone, to show the slot in local time")
    asap: bool | None = Field(None, description="true: as soon as possible, by arrive_before")
    distance_m: int | None = Field(None, description=(
        "from my last shared position to the venue, straight line, rounded to 100 m (as the socket `offer`); "
        "null while I have shared none"))
    eta_s: int | None = Field(None, description="travel time for that distance by my vehicle (geo/ model)")


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


def offer_view(order: Mapping[str, Any], rate_bp: int, origin: Fix | None = None,
               vehicle_type: str | None = None) -> dict[str, Any]:
    """An order as offered: enough to decide, but no customer contact or exact address. With the
    partner's position (`origin`), the distance to the venue rounded to 100 m (so it does not pin
    the venue either) and the travel time for it."""
    address = order.get("address") or {}
    lat, lng = approximate(float(address.get("lat", 0.0)), float(address.get("lng", 0.0)))
    price = int(order.get("price", 0))
    distance_m = eta_s = None
    venue = address.get("lat"), address.get("lng")
    if origin is not None and all(isinstance(v, int | float) for v in venue):
        straight = haversine_m(origin.lat, origin.lng, float(address["lat"]), float(address["lng"]))
        distance_m = int(round(straight, -2))
        eta_s = eta_seconds(straight, vehicle_type)
    return {
        "id": str(order["_id"]), "status": order.get("status"), "package": order.get("package"),
        "event_date": order.get("event_date"), "guests": order.get("guests"),
        "area": order.get("service_area"), "city": address.get("city"),
        "approx_location": {"lat": lat, "lng": lng},
        "price": price, "currency": order.get("currency"),
        "payout": price - earnings.commission(price, rate_bp),
        "offer_fence": int(order.get("offer_fence", 0)), "offer_expires_ms": int(order.get("offer_expires_ms", 0)),
        "version": int(order.get("version", 0)),
        "arrive_after": order.get("arrive_after"), "arrive_before": order.get("arrive_before"),
        "timezone": order.get("timezone"), "asap": bool(order["asap"]) if order.get("asap") is not None else None,
        "distance_m": distance_m, "eta_s": eta_s,
    }


@routes.get("/partner/orders/my", summary="Orders assigned to me, newest first", query=OrderListQuery,
            roles=("partner",), response=AssignedOrderPage)
async def my_jobs(request: web.Request, *, query: OrderListQuery, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    where: dict[str, Any] = {"partner_id": user.user_id}
    if query.status is not None:
        where["status"] = query.status
    docs, total = await find_page(db.orders, where, query, [("created_at", -1)])
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
    origin = vehicle = None
    if docs:  # the distance is from where the partner last was, as dispatch measured it
        origin = await last_fix(request.config_dict[keys.REDIS], db, user.user_id)
        partner = await db.partners.find_one({"_id": user.user_id}, {"vehicle_type": 1})
        vehicle = str(partner["vehicle_type"]) if partner and partner.get("vehicle_type") else None
    items = [offer_view(doc, rate_bp, origin, vehicle) for doc in docs]
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
                       409: "not the next legal state (illegal_transition); for `arrived` without a `reason`, no "
                            "fresh position within the arrival radius of the venue (not_at_venue, position_stale, "
                            "position_unknown; details say how far)",
                       422: "a `reason` of fewer than 3 characters, or with a status other than `arrived`"})
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
    if body.reason is not None and body.status != "arrived":
        raise ValidationFailed("a reason goes with arrived only",
                            details=[{"field": "reason", "message": "only an arrival takes a reason"}])
    at = iso()
    fields: dict[str, Any] = {f"{body.status}_at": at}
    note = body.note
    if body.status == "arrived":
        # The customer is told "your partner is at the venue": a fresh fix near it says so; the
        # partner's word with a reason is accepted too, but flagged for admins.
        fix = await last_fix(request.config_dict[keys.REDIS], db, user.user_id)
        found = assess(fix, order.get("address") or {}, request.config_dict[keys.SETTINGS])
        if found.code is not None and body.reason is None:
            raise Conflict(found.message, code=found.code, details={**found.details, "reason_accepted": True})
        if found.code is not None and body.reason is not None:
            fields["arrival_unverified"] = unverified_flag(found, body.reason, at)
            note = unverified_note(found, body.reason)
            logger.info("order %s marked arrived away from the venue (%s)", order_id, found.code)
    after = await OrderFlow(db, request.config_dict[keys.REDIS]).transition(
        order_id, body.status, by_role="partner", by_id=user.user_id, reason=note,
        allowed_from=frozenset({current}), expect={"partner_id": user.user_id},
        set_fields=fields,
    )
    return json_response(await assigned_view(db, after))


@routes.get("/partner/orders/{id}/arrival", summary="Am I at the venue? (the geofence behind one-tap arrival)",
            roles=("partner",), response=ArrivalCheck, responses={404: "no such order assigned to you"})
async def arrival_check(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    order = await db.orders.find_one({"_id": order_id}, {"partner_id": 1, "address": 1})
    if order is None or order.get("partner_id") != user.user_id:
        raise NotFound("no such order assigned to you")
    fix = await last_fix(request.config_dict[keys.REDIS], db, user.user_id)
    found = assess(fix, order.get("address") or {}, request.config_dict[keys.SETTINGS])
    d = found.details
    return json_response({"order_id": order_id, "at_venue": found.at_venue, "code": found.code,
                          "message": found.message, "distance_m": d.get("distance_m"), "radius_m": d["radius_m"],
                          "accuracy_m": d.get("accuracy_m"), "fix_age_s": d.get("fix_age_s")})


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

