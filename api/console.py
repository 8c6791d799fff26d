"""Read models of the operations console: the partners an admin can give an order to, ranked the way
dispatch would rank them, and the busy partners whose tracking went dark mid-job.

Live state is what dispatch keeps in Redis (core.contracts keys, read only here); standing and names
come from MongoDB. The ranking is dispatch's own (geo.ranking), with the local ETA model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from api.paging import PageQuery
from api.routing import RouteTable
from api.schemas import closed
from core import keys
from core.contracts import (
    FLEET_BUSY,
    FLEET_GEO,
    PARTNER_OFFER,
    PARTNER_POLLED,
    PARTNER_SOCKETS,
    PARTNER_STATE,
    STALE_AFTER_INTERVALS,
    jobs_day_key,
)
from core.errors import NotFound
from core.http import json_response
from core.jsonutil import iso, now_ms
from core.settings import Settings
from geo.distance import haversine_m
from geo.eta import eta_between
from geo.ranking import Candidate, rank

logger = logging.getLogger(__name__)

routes = RouteTable("admin")
ADMIN = ("admin",)

# The partners an admin picks from are the nearest ones with a known position: beyond this many,
# nobody would send them anyway (the name search reaches everyone else).
NEARBY_MAX = 200
# How far around the venue to look: well past dispatch's own maximum radius, since an admin may
# send someone from across town when nobody nearer is free.
NEARBY_RADIUS_FACTOR = 3
STATE_FIELDS = ("lat", "lng", "ts", "seen", "online", "order_id", "idle_since", "unknown")

PartnerStateName = Literal["free", "offered", "busy", "unreachable", "stale", "off_duty", "no_position"]
# The order of the list after the ranked free partners: the likeliest to take a call first.
_STATE_ORDER: dict[str, int] = {"free": 0, "unreachable": 1, "offered": 2, "busy": 3, "stale": 4, "off_duty": 5,
                                "no_position": 6}


class CandidateQuery(PageQuery):
    q: str | None = Field(None, max_length=100, description="part of the partner's name, company or phone")
    limit: int = Field(50, ge=1, description="items per page, at most 100")


class AssignCandidate(BaseModel):
    model_config = closed()
    partner_id: str
    name: str
    company_name: str | None = None
    phone: str | None = None
    vehicle_type: str | None = None
    state: PartnerStateName = Field(description=(
        "free (on duty, fresh fix, no job, no pending offer, app reachable), offered (holding an offer), busy "
        "(on a job), unreachable (on duty but the app is closed), stale (last fix too old), off_duty, "
        "no_position (never shared one)"))
    rank: int | None = Field(description="dispatch's order among the free partners (1 first); null otherwise")
    distance_m: int | None = None
    eta_s: int | None = None
    idle_s: int | None = Field(None, description="free for this long")
    jobs_today: int = Field(0, description="jobs assigned since 00:00 UTC (ranking puts fewer first among the close)")
    fix_age_s: int | None = Field(None, description="age of the last fix")
    lat: float | None = None
    lng: float | None = None
    offer_order_id: str | None = Field(None, description="the order whose offer they hold")
    job_order_id: str | None = Field(None, description="the order they are on")
    current: bool = Field(description="already this order's partner")


class CandidateList(BaseModel):
    model_config = closed({"order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "venue": {"lat": 12.97, "lng": 77.59},
                           "items": [{"partner_id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "name": "Ravi Kumar",
                                      "company_name": "Kumar Party Services", "phone": "+919845000001",
                                      "vehicle_type": "van", "state": "free", "rank": 1, "distance_m": 430,
                                      "eta_s": 95, "idle_s": 840, "jobs_today": 2, "fix_age_s": 12,
                                      "lat": 12.973, "lng": 77.592,
                                      "offer_order_id": None, "job_order_id": None, "current": False}],
                           "total": 1, "page": 1, "limit": 50})
    order_id: str
    venue: dict[str, float] | None = Field(description="the order's venue (lat, lng), when located")
    items: list[AssignCandidate] = Field(description="free partners in dispatch's order, then the rest by state "
                                                     "and distance; approved partners only")
    total: int
    page: int
    limit: int


@dataclass(frozen=True, slots=True)
class Live:
    """What Redis says about one partner right now."""

    lat: float | None
    lng: float | None
    fix_ms: int
    online: bool
    unknown: bool
    order_id: str | None
    idle_since: int
    offer: str | None  # "<order_id>:<fence>" of the offer they hold
    reachable: bool
    jobs_today: int = 0


def _num(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


async def live_states(redis: Redis, partner_ids: Sequence[str]) -> dict[str, Live]:
    """Each partner's live state in one pipelined round trip."""
    if not partner_ids:
        return {}
    now = now_ms()
    pipe = redis.pipeline(transaction=False)
    for pid in partner_ids:
        pipe.hmget(PARTNER_STATE.format(partner_id=pid), list(STATE_FIELDS))
        pipe.get(PARTNER_OFFER.format(partner_id=pid))
        pipe.zcount(PARTNER_SOCKETS.format(partner_id=pid), f"({now}", "+inf")
        pipe.exists(PARTNER_POLLED.format(partner_id=pid))
    pipe.hmget(jobs_day_key(now), list(partner_ids))
    answers = await pipe.execute()
    jobs = answers.pop()
    out: dict[str, Live] = {}
    for i, pid in enumerate(partner_ids):
        raw, offer, sockets, polled = answers[4 * i: 4 * i + 4]
        state = dict(zip(STATE_FIELDS, raw, strict=True))
        ts, seen = int(_num(state["ts"]) or 0), int(_num(state["seen"]) or 0)
        out[pid] = Live(lat=_num(state["lat"]), lng=_num(state["lng"]),
                        fix_ms=min(ts, seen) if ts > 0 and seen > 0 else 0, online=state["online"] == "1",
                        unknown=state["unknown"] == "1", order_id=state["order_id"] or None,
                        idle_since=int(_num(state["idle_since"]) or 0),
                        offer=offer if isinstance(offer, str) and offer else None,
                        reachable=bool(sockets) or bool(polled), jobs_today=int(jobs[i] or 0))
    return out


def state_of(live: Live | None, now: int, stale_ms: int) -> PartnerStateName:
    """The partner's state as dispatch's candidate filter sees it (dispatch.fleet), in its order."""
    if live is None or live.lat is None or live.lng is None:
        return "no_position"
    if not live.online:
        return "off_duty"
    if live.unknown or live.fix_ms <= 0 or now - live.fix_ms > stale_ms:
        return "stale"
    if live.order_id:
        return "busy"
    if not live.reachable:
        return "unreachable"
    return "offered" if live.offer else "free"


def _name(doc: Mapping[str, Any]) -> str:
    return str(doc.get("contact_name") or doc.get("company_name") or f"partner {str(doc['_id'])[:6]}")


def _contains(text: str) -> dict[str, str]:
    # User text is matched literally, never as a pattern.
    return {"$regex": re.escape(text), "$options": "i"}


def rank_candidates(partners: Sequence[Mapping[str, Any]], states: Mapping[str, Live],
                    venue: tuple[float, float] | None, *, current: str | None, now: int,
                    settings: Settings) -> list[dict[str, Any]]:
    """The list an admin assigns from: the free partners in dispatch's order (geo.ranking.rank, ETA by
    the local speed model), then the others by state and distance."""
    stale_ms = int(settings.ping_interval_s * STALE_AFTER_INTERVALS * 1000)
    rows: list[dict[str, Any]] = []
    free: list[Candidate] = []
    for doc in partners:
        pid = str(doc["_id"])
        live = states.get(pid)
        state = state_of(live, now, stale_ms)
        distance = eta = None
        if live is not None and live.lat is not None and live.lng is not None and venue is not None:
            distance = round(haversine_m(live.lat, live.lng, venue[0], venue[1]))
            eta = eta_between(live.lat, live.lng, venue[0], venue[1], doc.get("vehicle_type"))
        idle = live.idle_since if live is not None and live.idle_since > 0 and state in ("free", "offered",
                                                                                            "unreachable") else 0
        if state == "free" and distance is not None and eta is not None:
            free.append(Candidate(pid, distance, eta, idle, live.jobs_today if live is not None else 0))
        offer_order = live.offer.rsplit(":", 1)[0] if live is not None and live.offer else None
        rows.append({
            "partner_id": pid, "name": _name(doc), "company_name": doc.get("company_name"), "phone": doc.get("phone"),
            "vehicle_type": doc.get("vehicle_type"), "state": state, "rank": None, "distance_m": distance,
            "eta_s": eta, "idle_s": max(0, (now - idle) // 1000) if idle else None,
            "jobs_today": live.jobs_today if live is not None else 0,
            "fix_age_s": max(0, (now - live.fix_ms) // 1000) if live is not None and live.fix_ms > 0 else None,
            "lat": live.lat if live is not None else None, "lng": live.lng if live is not None else None,
            "offer_order_id": offer_order, "job_order_id": live.order_id if live is not None else None,
            "current": pid == current})
    ranks = {c.partner_id: c.rank for c in rank(free, settings.dispatch_fair_eta_s)}
    for row in rows:
        row["rank"] = ranks.get(row["partner_id"])
    far = float("inf")
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, _STATE_ORDER[r["state"]],
                             far if r["distance_m"] is None else r["distance_m"], r["name"]))
    return rows


def _venue(order: Mapping[str, Any]) -> tuple[float, float] | None:
    address = order.get("address") or {}
    try:
        return float(address["lat"]), float(address["lng"])
    except (KeyError, TypeError, ValueError):
        return None


async def _approved(db: AsyncDatabase[dict[str, Any]], where: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    projection = {"contact_name": 1, "company_name": 1, "phone": 1, "vehicle_type": 1}
    found: list[dict[str, Any]] = await db.partners.find({**where, "status": "approved"}, projection).limit(
        limit).to_list(None)
    return found


@routes.get("/admin/orders/{id}/candidates", summary="Partners to assign an order to, ranked as dispatch would",
            query=CandidateQuery, roles=ADMIN, response=CandidateList, responses={404: "no such order"})
async def order_candidates(request: web.Request, *, query: CandidateQuery) -> web.Response:
    """Approved partners only (pending, rejected and suspended ones cannot take orders): the nearest
    with a known position, or with `q`, those whose name, company or phone matches."""
    db = request.config_dict[keys.DB]
    redis: Redis = request.config_dict[keys.REDIS]
    settings: Settings = request.config_dict[keys.SETTINGS]
    order_id = request.match_info["id"]
    order = await db.orders.find_one({"_id": order_id}, {"address": 1, "partner_id": 1})
    if order is None:
        raise NotFound("no such order")
    venue = _venue(order)
    if query.q:
        text = query.q.strip()
        partners = await _approved(db, {"$or": [{f: _contains(text)} for f in ("contact_name", "company_name",
                                                                                  "phone")]}, NEARBY_MAX)
    else:
        ids: list[str] = []
        if venue is not None:
            radius = settings.dispatch_max_radius_m * NEARBY_RADIUS_FACTOR
            near = await redis.geosearch(FLEET_GEO, longitude=venue[1], latitude=venue[0], radius=radius, unit="m",
                                         sort="ASC", count=NEARBY_MAX)
            ids = [str(m) for m in near]
        if order.get("partner_id") and order["partner_id"] not in ids:
            ids.append(str(order["partner_id"]))
        partners = await _approved(db, {"_id": {"$in": ids}}, NEARBY_MAX) if ids else []
    states = await live_states(redis, [str(p["_id"]) for p in partners])
    rows = rank_candidates(partners, states, venue, current=order.get("partner_id"), now=now_ms(), settings=settings)
    return json_response({"order_id": order_id, "venue": {"lat": venue[0], "lng": venue[1]} if venue else None,
                          "items": rows[query.skip: query.skip + query.limit], "total": len(rows),
                          "page": query.page, "limit": query.limit})


# --- tracking gone dark ---------------------------------------------------------------------------


_DARK_EXAMPLE: dict[str, Any] = {
    "partner_id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "name": "Ravi Kumar", "phone": "+919845000001",
    "order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "package": "Jungle Safari Party", "order_status": "en_route",
    "online": True, "last_fix_at": "2026-12-03T10:01:12.000Z", "dark_s": 720}


class DarkPartner(BaseModel):
    model_config = closed(_DARK_EXAMPLE)
    partner_id: str
    name: str
    phone: str | None = None
    order_id: str
    package: str | None = Field(None, description="the job's package name")
    order_status: str | None = None
    online: bool = Field(description="still on duty (false: went off duty mid-job)")
    last_fix_at: str | None = Field(None, description="when the last fix was taken (ISO-8601); null: never")
    dark_s: int | None = Field(None, description="seconds since then")


class DarkList(BaseModel):
    model_config = closed({"items": [_DARK_EXAMPLE], "total": 1})
    items: list[DarkPartner] = Field(description="longest dark first")
    total: int


# A job in these states has a partner who should be sharing positions.
_TRACKED = ("assigned", "en_route", "arrived", "setup_complete")


@routes.get("/admin/partners/dark", summary="Partners on a job whose tracking went dark (their last fix is stale)",
            roles=ADMIN, response=DarkList)
async def dark_partners(request: web.Request) -> web.Response:
    """Busy partners (dispatch's FLEET_BUSY set) whose last fix is older than the staleness limit (on
    duty or not: `online` says which), with the job they hold; only jobs still in progress count."""
    db = request.config_dict[keys.DB]
    redis: Redis = request.config_dict[keys.REDIS]
    settings: Settings = request.config_dict[keys.SETTINGS]
    stale_ms = int(settings.ping_interval_s * STALE_AFTER_INTERVALS * 1000)
    busy = sorted(str(p) for p in await redis.smembers(FLEET_BUSY))
    states = await live_states(redis, busy)
    now = now_ms()
    dark = {pid: live for pid, live in states.items()
            if live.order_id and (live.fix_ms <= 0 or now - live.fix_ms > stale_ms)}
    if not dark:
        return json_response({"items": [], "total": 0})
    partners = {str(d["_id"]): d for d in await db.partners.find(
        {"_id": {"$in": sorted(dark)}}, {"contact_name": 1, "company_name": 1, "phone": 1}).to_list(None)}
    orders = {str(d["_id"]): d for d in await db.orders.find(
        {"_id": {"$in": sorted({str(live.order_id) for live in dark.values()})}},
        {"status": 1, "package": 1, "partner_id": 1}).to_list(None)}
    items: list[dict[str, Any]] = []
    for pid, live in dark.items():
        order = orders.get(str(live.order_id))
        if order is None or order.get("status") not in _TRACKED or order.get("partner_id") != pid:
            continue  # the job ended or moved on; Redis catches up on its own
        doc = partners.get(pid, {"_id": pid})
        items.append({"partner_id": pid, "name": _name(doc), "phone": doc.get("phone"), "order_id": str(order["_id"]),
                      "package": (order.get("package") or {}).get("name"), "order_status": order.get("status"),
                      "online": live.online,
                      "last_fix_at": iso(datetime.fromtimestamp(live.fix_ms / 1000, UTC)) if live.fix_ms > 0 else None,
                      "dark_s": max(0, (now - live.fix_ms) // 1000) if live.fix_ms > 0 else None})
    # Never heard from first, then the longest dark.
    items.sort(key=lambda i: float("-inf") if i["dark_s"] is None else -int(i["dark_s"]))
    return json_response({"items": items, "total": len(items)})


# --- who to call about an order --------------------------------------------------------------------


class Contact(BaseModel):
    model_config = closed()
    id: str
    name: str | None = None
    phone: str | None = None
    email: str | None = None


class OrderContacts(BaseModel):
    model_config = closed({"order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d",
                           "customer": {"id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "name": "Asha Rao",
                                        "phone": "+919845012345", "email": "asha@example.com"},
                           "partner": {"id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "name": "Ravi Kumar",
                                       "phone": "+919845000001", "email": "ravi@kumarparty.example"}})
    order_id: str
    customer: Contact | None = Field(description="null when the account was deleted")
    partner: Contact | None = Field(description="the assigned partner; null when none")


@routes.get("/admin/orders/{id}/contacts", summary="The customer and the partner of an order, to call them",
            roles=ADMIN, response=OrderContacts, responses={404: "no such order"})
async def order_contacts(request: web.Request) -> web.Response:
    db = request.config_dict[keys.DB]
    order_id = request.match_info["id"]
    order = await db.orders.find_one({"_id": order_id}, {"customer_id": 1, "partner_id": 1})
    if order is None:
        raise NotFound("no such order")
    customer = await db.users.find_one({"_id": str(order.get("customer_id") or "")},
                                       {"name": 1, "phone": 1, "email": 1, "deleted": 1})
    partner = await db.partners.find_one({"_id": str(order["partner_id"])},
                                         {"contact_name": 1, "company_name": 1, "phone": 1, "email": 1}
                                         ) if order.get("partner_id") else None
    return json_response({
        "order_id": order_id,
        "customer": None if customer is None or customer.get("deleted") else {
            "id": str(customer["_id"]), "name": customer.get("name"), "phone": customer.get("phone"),
            "email": customer.get("email")},
        "partner": None if partner is None else {
            "id": str(partner["_id"]), "name": _name(partner), "phone": partner.get("phone"),
            "email": partner.get("email")}})


# --- late and far-away arrivals -------------------------------------------------------------------


# How far ahead a window's end is looked at for a projected late arrival: no city trip takes longer,
# and it bounds the read to orders due soon.
LATE_LOOKAHEAD_MS = 3 * 3600 * 1000
# A job whose partner marked arrival away from the venue stays listed while it is in progress.
_ON_SITE = ("arrived", "setup_complete")
_ON_THE_WAY = ("assigned", "en_route")

_ATTENTION_EXAMPLE: dict[str, Any] = {
    "order_id": "9b2f4c1d8e7a4f0b9c3d2e1f0a9b8c7d", "kind": "far_arrival", "package": "Jungle Safari Party",
    "order_status": "arrived", "partner_id": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "partner_name": "Ravi Kumar",
    "partner_phone": "+919845000001", "timezone": "Asia/Kolkata", "arrive_before": "2026-12-03T13:00:00.000Z",
    "late_s": None, "eta_s": None, "code": "not_at_venue", "reason": "Gate is round the back",
    "distance_m": 640, "radius_m": 150, "at": "2026-12-03T12:41:07.000Z"}


class AttentionOrder(BaseModel):
    model_config = closed(_ATTENTION_EXAMPLE)
    order_id: str
    kind: Literal["far_arrival", "late"] = Field(description=(
        "far_arrival: the partner marked arrival away from the venue, with a reason; late: assigned or on the "
        "way, and the arrival window has closed or will before the partner's ETA"))
    package: str | None = None
    order_status: str
    partner_id: str | None = None
    partner_name: str | None = None
    partner_phone: str | None = None
    timezone: str | None = Field(None, description="the service area's IANA zone, to show the times in")
    arrive_before: str | None = Field(None, description="when the arrival window closes (ISO-8601)")
    late_s: int | None = Field(None, description="late: seconds past the window's end the partner will arrive "
                                                  "(now + ETA)")
    eta_s: int | None = Field(None, description="late: the partner's travel time from the last fix (null: unknown)")
    code: str | None = Field(None, description="far_arrival: not_at_venue, position_stale or position_unknown")
    reason: str | None = Field(None, description="far_arrival: the partner's words")
    distance_m: int | None = Field(None, description="far_arrival: from the venue when marked arrived")
    radius_m: int | None = Field(None, description="far_arrival: the arrival radius then")
    at: str | None = Field(None, description="far_arrival: when it was marked arrived (ISO-8601)")


class AttentionList(BaseModel):
    model_config = closed({"items": [_ATTENTION_EXAMPLE], "total": 1})
    items: list[AttentionOrder] = Field(description="late ones first (the latest first), then far-away arrivals "
                                                    "(newest first)")
    total: int


def _int_or_none(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else round(number)


def late_by(arrive_before_ms: int, now: int, eta_s: int | None) -> int | None:
    """Seconds the partner will be past the window's end: already late counts from now; on the way,
    from the ETA (unknown ETA: only an end already passed counts). None when on time."""
    expected = now + (eta_s or 0) * 1000
    return (expected - arrive_before_ms) // 1000 if expected > arrive_before_ms else None


@routes.get("/admin/orders/attention", summary="Orders arriving late against their window, and arrivals marked "
            "away from the venue", roles=ADMIN, response=AttentionList)
async def attention_orders(request: web.Request) -> web.Response:
    """Late: assigned or on the way, with the window's end already passed, or passing before the ETA
    from the partner's last fix (local speed model). Far away: arrived or set up with the
    `arrival_unverified` flag the partner's reason left."""
    db = request.config_dict[keys.DB]
    redis: Redis = request.config_dict[keys.REDIS]
    now = now_ms()
    projection = {"status": 1, "package": 1, "partner_id": 1, "timezone": 1, "arrive_before": 1,
                  "arrive_before_ms": 1, "address": 1, "arrival_unverified": 1}
    due = await db.orders.find({"status": {"$in": list(_ON_THE_WAY)},
                                "arrive_before_ms": {"$lte": now + LATE_LOOKAHEAD_MS}}, projection).to_list(500)
    far = await db.orders.find({"status": {"$in": list(_ON_SITE)}, "arrival_unverified": {"$exists": True}},
                               projection).to_list(500)
    pids = sorted({str(o["partner_id"]) for o in [*due, *far] if o.get("partner_id")})
    states = await live_states(redis, [p for p in pids if any(o.get("partner_id") == p for o in due)])
    partners = {str(d["_id"]): d for d in await db.partners.find(
        {"_id": {"$in": pids}}, {"contact_name": 1, "company_name": 1, "phone": 1, "vehicle_type": 1}
    ).to_list(None)} if pids else {}

    def base(order: Mapping[str, Any], kind: str) -> dict[str, Any]:
        pid = order.get("partner_id")
        doc = partners.get(str(pid)) if pid else None
        return {"order_id": str(order["_id"]), "kind": kind, "package": (order.get("package") or {}).get("name"),
                "order_status": str(order.get("status")), "partner_id": pid,
                "partner_name": _name(doc) if doc else None, "partner_phone": doc.get("phone") if doc else None,
                "timezone": order.get("timezone"), "arrive_before": order.get("arrive_before"), "late_s": None,
                "eta_s": None, "code": None, "reason": None, "distance_m": None, "radius_m": None, "at": None}

    late: list[dict[str, Any]] = []
    for order in due:
        live = states.get(str(order.get("partner_id")))
        venue = _venue(order)
        eta = None
        if live is not None and live.lat is not None and live.lng is not None and venue is not None:
            eta = eta_between(live.lat, live.lng, venue[0], venue[1],
                              partners.get(str(order.get("partner_id")), {}).get("vehicle_type"))
        behind = late_by(int(order.get("arrive_before_ms") or 0), now, eta)
        if behind is not None:
            late.append({**base(order, "late"), "late_s": behind, "eta_s": eta})
    late.sort(key=lambda i: -int(i["late_s"]))
    flagged: list[dict[str, Any]] = []
    for order in far:
        flag = order.get("arrival_unverified")
        if not isinstance(flag, Mapping):
            continue
        flagged.append({**base(order, "far_arrival"), "code": flag.get("code"), "reason": flag.get("reason"),
                        "distance_m": _int_or_none(flag.get("distance_m")),
                        "radius_m": _int_or_none(flag.get("radius_m")), "at": flag.get("at")})
    flagged.sort(key=lambda i: str(i["at"] or ""), reverse=True)
    items = [*late, *flagged]
    return json_response({"items": items, "total": len(items)})
