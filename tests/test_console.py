"""The operations console's API: the dispatch audit told in plain words, the ranked partners an
admin assigns from, and the needs-attention queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.contracts import (
    DISPATCH_AUDIT,
    FLEET_BUSY,
    FLEET_GEO,
    PARTNER_OFFER,
    PARTNER_SOCKETS,
    PARTNER_STATE,
    jobs_day_key,
)
from core.jsonutil import iso, now_ms
from geo.distance import destination
from tests.helpers import BENGALURU, bearer, db_of, make_order, make_partner, make_user

# 18:42:55 in Bengaluru (IST, UTC+5:30).
T0 = datetime(2026, 12, 3, 13, 12, 55, tzinfo=UTC)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def _admin(client: TestClient[Any, Any], token_for: Callable[..., str],
                 **fields: Any) -> tuple[str, dict[str, str]]:
    admin_id = await make_user(db_of(client.app), "admin", **fields)
    return admin_id, bearer(token_for(admin_id, "admin"))


async def _record(client: TestClient[Any, Any], order_id: str,
                  entries: list[tuple[float, str, dict[str, Any]]]) -> None:
    """Write audit entries as dispatch writes them (dispatch.audit.AuditTrail.record)."""
    await db_of(client.app)[DISPATCH_AUDIT].insert_many([
        {"_id": uuid.uuid4().hex, "order_id": order_id, "at": iso(T0 + timedelta(seconds=offset)), "event": event,
         "data": {**data, "node": "vm:9511"}} for offset, event, data in entries])


async def _story(client: TestClient[Any, Any], order_id: str, admin: dict[str, str]) -> dict[str, Any]:
    resp = await client.get(f"/api/admin/orders/{order_id}/audit", headers=admin)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["total"] == len(body["items"])  # the raw entries are still there
    story: dict[str, Any] = body["story"]
    return story


async def test_an_accepted_offer_reads_as_one_sentence_with_names_and_local_time(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    _, admin = await _admin(client, token_for)
    ravi = await make_partner(db, contact_name="Ravi Kumar")
    meena = await make_partner(db, contact_name="Meena Iyer")
    order_id = await make_order(db, await make_user(db), status="assigned", partner_id=ravi,
                                timezone="Asia/Kolkata")
    await _record(client, order_id, [
        (0, "candidates", {"radius_m": 5000, "found": 2, "excluded": [],
                           "skipped": {"excluded": 0, "offline": 0, "unknown": 0, "stale": 0, "busy": 1,
                                       "unreachable": 0, "offered": 2, "not_approved": 0},
                           "candidates": [
                               {"partner_id": ravi, "distance_m": 432, "eta_s": 95,
                                "idle_since": _ms(T0 - timedelta(minutes=14)), "rank": 1},
                               {"partner_id": meena, "distance_m": 2300, "eta_s": 400, "idle_since": 0, "rank": 2}]}),
        (0, "offer", {"partner_ids": [ravi], "fence": 1, "expires_ms": _ms(T0) + 30_000, "radius_m": 5000,
                      "offers": [{"partner_id": ravi, "distance_m": 432, "eta_s": 95,
                                  "idle_since": _ms(T0 - timedelta(minutes=14)), "rank": 1}]}),
        (11, "reply", {"partner_id": ravi, "accept": True, "via": "socket", "fence": 1}),
        (11.2, "assigned", {"partner_id": ravi, "fence": 1}),
    ])
    story = await _story(client, order_id, admin)
    assert story["timezone"] == "Asia/Kolkata"
    [step] = story["steps"]
    assert step["text"] == ("Searched 5 km: 5 partners; skipped 1 busy, 2 holding other offers. "
                            "Offered to Ravi Kumar (430 m, ~2 min, idle 14 min) at 18:42:55; accepted after 11 s.")
    assert step["time"] == "18:42:55"
    table = step["search"]["candidates"]
    assert [(c["rank"], c["name"], c["distance_m"], c["eta_s"], c["idle_s"], c["offered"]) for c in table] == [
        (1, "Ravi Kumar", 432, 95, 840, True), (2, "Meena Iyer", 2300, 400, None, False)]
    assert "vm:9511" not in str(story)  # the machinery stays in the raw entries


async def test_declines_timeouts_widening_alert_and_a_manual_assignment_are_told_in_order(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    admin_id, admin = await _admin(client, token_for, name="Asha Ops")
    ravi = await make_partner(db, contact_name="Ravi Kumar")
    meena = await make_partner(db, contact_name="Meena Iyer")
    # No stored time zone: the venue's service area (Bengaluru) gives it.
    order_id = await make_order(db, await make_user(db), status="assigned", partner_id=meena)
    skip = {"excluded": 0, "offline": 0, "unknown": 0, "stale": 0, "busy": 0, "unreachable": 0, "offered": 0,
            "not_approved": 0}
    await _record(client, order_id, [
        (0, "candidates", {"radius_m": 5000, "found": 1, "skipped": skip, "excluded": [],
                           "candidates": [{"partner_id": ravi, "distance_m": 1500, "eta_s": 300, "idle_since": 0,
                                           "rank": 1}]}),
        (0, "offer", {"partner_ids": [ravi], "fence": 1, "radius_m": 5000,
                      "offers": [{"partner_id": ravi, "distance_m": 1500, "eta_s": 300, "idle_since": 0, "rank": 1}]}),
        (8, "reply", {"partner_id": ravi, "accept": False, "via": "socket", "fence": 1}),
        (8, "candidates", {"radius_m": 5000, "found": 0, "skipped": {**skip, "excluded": 1, "stale": 1},
                           "excluded": [ravi], "candidates": []}),
        (8, "widen", {"from_m": 5000, "to_m": 10000}),
        (8, "candidates", {"radius_m": 10000, "found": 1, "skipped": {**skip, "excluded": 1}, "excluded": [ravi],
                           "candidates": [{"partner_id": meena, "distance_m": 8000, "eta_s": 1200, "idle_since": 0,
                                           "rank": 1}]}),
        (8, "offer", {"partner_ids": [meena], "fence": 2, "radius_m": 10000,
                      "offers": [{"partner_id": meena, "distance_m": 8000, "eta_s": 1200, "idle_since": 0,
                                  "rank": 1}]}),
        (38, "timeout", {"partner_ids": [meena], "fence": 2}),
        (38, "alert", {"reason": "no partner accepted", "radius_m": 20000, "candidates_tried": 2, "attempts": 1,
                       "retry_ms": _ms(T0 + timedelta(minutes=5))}),
        (100, "manual_assign", {"partner_id": meena, "previous_partner_id": None, "by": admin_id,
                                "reason": "called her"}),
    ])
    story = await _story(client, order_id, admin)
    assert story["timezone"] == "Asia/Kolkata"
    texts = [s["text"] for s in story["steps"]]
    assert texts == [
        "Searched 5 km: 1 partner. Offered to Ravi Kumar (1.5 km, ~5 min) at 18:42:55; declined after 8 s.",
        "Searched 5 km: 2 partners; skipped 1 already passed on it, 1 with stale GPS (Ravi Kumar declined). "
        "Nobody free.",
        "Nobody free within 5 km: widened the search to 10 km.",
        "Searched 10 km: 2 partners; skipped 1 already passed on it (Ravi Kumar declined). "
        "Offered to Meena Iyer (8.0 km, ~20 min) at 18:43:03; no answer within 30 s.",
        "Nobody took it within 20 km (2 partners passed on it). Dispatch tries again at 18:47:55. Admins alerted.",
        "Assigned by hand to Meena Iyer by Asha Ops: “called her”.",
    ]
    assert [s["kind"] for s in story["steps"]] == ["search", "search", "widen", "search", "alert", "manual"]
    assert story["steps"][1]["search"]["excluded"] == [{"partner_id": ravi, "name": "Ravi Kumar", "why": "declined"}]


async def test_an_order_with_no_audit_has_an_empty_story(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    _, admin = await _admin(client, token_for)
    order_id = await make_order(db, await make_user(db), status="cancelled")
    story = await _story(client, order_id, admin)
    assert story["steps"] == []
    resp = await client.get("/api/admin/orders/nope/audit", headers=admin)
    assert resp.status == 404 and (await resp.json())["error"]["code"]


# --- assisted assignment ---------------------------------------------------------------------------

async def _place(redis: Redis, partner_id: str, north_m: float, *, online: bool = True, idle_min: float = 1,
                 fix_age_s: float = 5, job: str | None = None, offer: str | None = None,
                 reachable: bool = True) -> None:
    """Leave a partner's live state in Redis as dispatch keeps it, `north_m` north of the venue."""
    lat, lng = destination(BENGALURU["lat"], BENGALURU["lng"], 0.0, north_m)
    now = now_ms()
    fix = now - int(fix_age_s * 1000)
    await redis.hset(PARTNER_STATE.format(partner_id=partner_id), mapping={
        "lat": lat, "lng": lng, "ts": fix, "seen": fix, "online": "1" if online else "0", "order_id": job or "",
        "idle_since": now - int(idle_min * 60_000)})
    await redis.geoadd(FLEET_GEO, (lng, lat, partner_id))
    if reachable:
        await redis.zadd(PARTNER_SOCKETS.format(partner_id=partner_id), {"node/sid": now + 60_000})
    if offer:
        await redis.set(PARTNER_OFFER.format(partner_id=partner_id), f"{offer}:1", px=60_000)


async def test_candidates_are_ranked_as_dispatch_would_with_states_for_the_rest(
        client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis) -> None:
    db = db_of(client.app)
    _, admin = await _admin(client, token_for)
    names = ["Asha Near", "Bala Idle", "Chitra Far", "Dev Busy", "Esha Offered", "Farah Stale", "Gopal Off",
             "Hari Closed", "Indu Current"]
    p = {n.split()[0].lower(): await make_partner(db, contact_name=n) for n in names}
    pending = await make_partner(db, "pending", contact_name="Pending Person")
    suspended = await make_partner(db, "suspended", contact_name="Suspended Person")
    other_order = uuid.uuid4().hex
    order_id = await make_order(db, await make_user(db), status="assigned", partner_id=p["indu"])
    await _place(redis, p["asha"], 400, idle_min=2)
    await _place(redis, p["bala"], 900, idle_min=30)       # within the fair window: longest idle goes first
    await _place(redis, p["chitra"], 15_000, idle_min=60)  # far beyond it: after both
    await _place(redis, p["dev"], 200, job=other_order)
    await _place(redis, p["esha"], 300, offer=other_order)
    await _place(redis, p["farah"], 100, fix_age_s=3600)
    await _place(redis, p["gopal"], 150, online=False)
    await _place(redis, p["hari"], 250, reachable=False)
    await _place(redis, p["indu"], 5000, job=order_id)
    for nobody in (pending, suspended):
        await _place(redis, nobody, 50)

    resp = await client.get(f"/api/admin/orders/{order_id}/candidates", headers=admin)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    rows = [(r["name"], r["state"], r["rank"]) for r in body["items"]]
    assert rows == [("Bala Idle", "free", 1), ("Asha Near", "free", 2), ("Chitra Far", "free", 3),
                    ("Hari Closed", "unreachable", None), ("Esha Offered", "offered", None),
                    ("Dev Busy", "busy", None), ("Indu Current", "busy", None), ("Farah Stale", "stale", None),
                    ("Gopal Off", "off_duty", None)]
    first = body["items"][0]
    assert 850 <= first["distance_m"] <= 950 and first["eta_s"] > 0 and 29 * 60 <= first["idle_s"] <= 31 * 60
    by_name = {r["name"]: r for r in body["items"]}
    assert by_name["Esha Offered"]["offer_order_id"] == other_order
    assert by_name["Dev Busy"]["job_order_id"] == other_order
    assert by_name["Indu Current"]["current"] is True and by_name["Asha Near"]["current"] is False
    assert body["venue"] == {"lat": BENGALURU["lat"], "lng": BENGALURU["lng"]}
    # As dispatch does: among the close, fewer jobs today goes before a longer idle.
    await redis.hset(jobs_day_key(now_ms()), mapping={p["bala"]: 3, p["asha"]: 1})
    again = await (await client.get(f"/api/admin/orders/{order_id}/candidates", headers=admin)).json()
    assert [(r["name"], r["rank"], r["jobs_today"]) for r in again["items"][:3]] == [
        ("Asha Near", 1, 1), ("Bala Idle", 2, 3), ("Chitra Far", 3, 0)]

    # Searching by name reaches approved partners only, positioned or not.
    await make_partner(db, contact_name="Meena Nowhere")
    found = await (await client.get(f"/api/admin/orders/{order_id}/candidates?q=meena", headers=admin)).json()
    assert [(r["name"], r["state"]) for r in found["items"]] == [("Meena Nowhere", "no_position")]
    assert (await (await client.get(f"/api/admin/orders/{order_id}/candidates?q=person",
                                    headers=admin)).json())["items"] == []
    missing = await client.get("/api/admin/orders/nope/candidates", headers=admin)
    assert missing.status == 404 and (await missing.json())["error"]["code"]


# --- needs attention ---------------------------------------------------------------------------------

async def test_partners_whose_tracking_went_dark_mid_job_are_listed_with_their_job(
        client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis) -> None:
    db = db_of(client.app)
    _, admin = await _admin(client, token_for)
    customer = await make_user(db)
    partners = {n: await make_partner(db, contact_name=n) for n in ("Dark Dan", "Fresh Fay", "Off Otto", "Done Dora")}
    jobs = {n: await make_order(db, customer, status=st, partner_id=partners[n])
            for n, st in (("Dark Dan", "en_route"), ("Fresh Fay", "en_route"), ("Off Otto", "assigned"),
                          ("Done Dora", "completed"))}
    await _place(redis, partners["Dark Dan"], 300, fix_age_s=600, job=jobs["Dark Dan"])
    await _place(redis, partners["Fresh Fay"], 300, fix_age_s=5, job=jobs["Fresh Fay"])
    await _place(redis, partners["Off Otto"], 300, fix_age_s=300, online=False, job=jobs["Off Otto"])
    await _place(redis, partners["Done Dora"], 300, fix_age_s=900, job=jobs["Done Dora"])
    await redis.sadd(FLEET_BUSY, *partners.values())

    resp = await client.get("/api/admin/partners/dark", headers=admin)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [(i["name"], i["order_id"], i["online"]) for i in body["items"]] == [
        ("Dark Dan", jobs["Dark Dan"], True), ("Off Otto", jobs["Off Otto"], False)]
    # Going off duty alone is not dark yet: the last fix is still fresh.
    await _place(redis, partners["Off Otto"], 300, fix_age_s=5, online=False, job=jobs["Off Otto"])
    body = await (await client.get("/api/admin/partners/dark", headers=admin)).json()
    assert [i["name"] for i in body["items"]] == ["Dark Dan"]
    dan = body["items"][0]
    assert 590 <= dan["dark_s"] <= 620 and dan["order_status"] == "en_route" and dan["package"] == "Test Package"


async def test_an_orders_contacts_name_the_customer_and_the_partner_to_call(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    _, admin = await _admin(client, token_for)
    customer = await make_user(db, name="Asha Rao", phone="+919845012345")
    ravi = await make_partner(db, contact_name="Ravi Kumar", phone="+919845000001")
    order_id = await make_order(db, customer, status="assigned", partner_id=ravi)
    body = await (await client.get(f"/api/admin/orders/{order_id}/contacts", headers=admin)).json()
    assert body["customer"] == {"id": customer, "name": "Asha Rao", "phone": "+919845012345",
                                "email": f"{customer[:10]}@example.test"}
    assert body["partner"]["name"] == "Ravi Kumar" and body["partner"]["phone"] == "+919845000001"
    waiting = await make_order(db, await make_user(db, deleted=1), status="placed")
    body = await (await client.get(f"/api/admin/orders/{waiting}/contacts", headers=admin)).json()
    assert body["customer"] is None and body["partner"] is None
    assert (await client.get("/api/admin/orders/nope/contacts", headers=admin)).status == 404


async def test_late_and_far_away_arrivals_are_listed_with_how_late_and_the_partners_reason(
        client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis) -> None:
    db = db_of(client.app)
    _, admin = await _admin(client, token_for)
    customer = await make_user(db)
    p = {n: await make_partner(db, contact_name=n, phone=f"+9198450000{i:02d}")
         for i, n in enumerate(("Late Lata", "Slow Sam", "Early Eli", "Far Farid", "Done Dinesh"))}
    now = now_ms()

    def window(minutes: float) -> dict[str, Any]:
        end = now + int(minutes * 60_000)
        return {"arrive_before_ms": end, "arrive_before": iso(datetime.fromtimestamp(end / 1000, UTC)),
                "timezone": "Asia/Kolkata"}

    late = await make_order(db, customer, status="en_route", partner_id=p["Late Lata"], **window(-10))
    # 20 km away with 5 minutes left: the ETA says late before the window closes.
    slow = await make_order(db, customer, status="assigned", partner_id=p["Slow Sam"], **window(5))
    early = await make_order(db, customer, status="en_route", partner_id=p["Early Eli"], **window(60))
    await _place(redis, p["Late Lata"], 300, job=late)
    await _place(redis, p["Slow Sam"], 20_000, job=slow)
    await _place(redis, p["Early Eli"], 500, job=early)
    flag = {"code": "not_at_venue", "reason": "Gate is round the back", "distance_m": 640.4, "radius_m": 150,
            "fix_age_s": 4, "at": iso()}
    far = await make_order(db, customer, status="arrived", partner_id=p["Far Farid"], arrival_unverified=flag)
    await make_order(db, customer, status="completed", partner_id=p["Done Dinesh"], arrival_unverified=flag)

    resp = await client.get("/api/admin/orders/attention", headers=admin)
    assert resp.status == 200, await resp.text()
    items = (await resp.json())["items"]
    assert [(i["kind"], i["order_id"], i["partner_name"]) for i in items] == [
        ("late", slow, "Slow Sam"), ("late", late, "Late Lata"), ("far_arrival", far, "Far Farid")]
    sam, lata, farid = items
    # Already 10 minutes past the window, and still 300 m to go.
    assert abs(lata["late_s"] - (600 + lata["eta_s"])) <= 2 and lata["partner_phone"] == "+919845000000"
    # Projected: the ETA from 20 km out, less the 5 minutes left (the latest first).
    assert sam["eta_s"] > 900 and abs(sam["late_s"] - (sam["eta_s"] - 300)) <= 2
    assert (farid["reason"], farid["distance_m"], farid["radius_m"], farid["code"]) == (
        "Gate is round the back", 640, 150, "not_at_venue")
    # Arriving clears a late order; completing clears a far-away arrival.
    await db.orders.update_one({"_id": late}, {"$set": {"status": "arrived"}})
    await db.orders.update_one({"_id": far}, {"$set": {"status": "completed"}})
    body = await (await client.get("/api/admin/orders/attention", headers=admin)).json()
    assert [i["order_id"] for i in body["items"]] == [slow] and body["total"] == 1
