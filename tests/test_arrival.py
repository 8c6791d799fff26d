"""Arrival by geofence: the partner asks where they stand (one-tap arrival inside the radius), and a
manual arrival from farther away is refused without a reason and accepted, flagged for admins, with one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from core.jsonutil import now_ms
from geo.distance import destination
from tests.helpers import BENGALURU, bearer, db_of, make_order, make_partner, make_user

VENUE = (BENGALURU["lat"], BENGALURU["lng"])  # make_order's venue


async def share(client: TestClient[Any, Any], auth: dict[str, str], bearing: float, metres: float,
                ago_ms: int = 0) -> None:
    lat, lng = destination(*VENUE, bearing, metres)
    resp = await client.put("/api/partner/location", json={"lat": lat, "lng": lng, "accuracy": 10,
                                                           "ts": now_ms() - ago_ms}, headers=auth)
    assert (await resp.json())["accepted"] == 1


async def test_the_geofence_answer_offers_arrival_only_inside_the_radius(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    me, other = await make_partner(db), await make_partner(db)
    auth = bearer(token_for(me, "partner"))
    order_id = await make_order(db, await make_user(db), status="en_route", partner_id=me)
    url = f"/api/partner/orders/{order_id}/arrival"

    body = await (await client.get(url, headers=auth)).json()
    assert body["at_venue"] is False and body["code"] == "position_unknown" and body["radius_m"] == 150

    await share(client, auth, 90, 2_300, ago_ms=60_000)  # a minute ago: still fresh
    body = await (await client.get(url, headers=auth)).json()
    assert body["at_venue"] is False and body["code"] == "not_at_venue"
    assert 2_250 < body["distance_m"] < 2_350 and body["message"].startswith("You are 2.3 km from the venue")

    # Now 120 m from the venue: inside the default 150 m fence.
    await share(client, auth, 90, 120)
    body = await (await client.get(url, headers=auth)).json()
    assert body == {"order_id": order_id, "at_venue": True, "code": None, "message": "You are at the venue.",
                    "distance_m": body["distance_m"], "radius_m": 150, "accuracy_m": 10, "fix_age_s": 0}
    assert 110 < body["distance_m"] < 130

    # Somebody else's job: not theirs to ask about.
    resp = await client.get(url, headers=bearer(token_for(other, "partner")))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_a_far_away_arrival_needs_a_reason_and_is_flagged_for_admins(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    me = await make_partner(db)
    auth = bearer(token_for(me, "partner"))
    order_id = await make_order(db, await make_user(db), status="en_route", partner_id=me)
    url = f"/api/partner/orders/{order_id}/status"
    await share(client, auth, 0, 3_100)

    # Without a reason: refused as before, saying how far, and that a reason would be accepted.
    resp = await client.put(url, json={"status": "arrived"}, headers=auth)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "not_at_venue" and error["details"]["reason_accepted"] is True
    # A blank or one-letter reason is no reason; a reason goes with an arrival only.
    for reason in ("   ", "x"):
        resp = await client.put(url, json={"status": "arrived", "reason": reason}, headers=auth)
        assert resp.status == 422 and (await resp.json())["error"]["code"] == "validation_error"
    before = await db.orders.find_one({"_id": order_id})
    assert before is not None and before["status"] == "en_route"

    # With a reason: accepted, and the order carries the flag and says why in its history.
    resp = await client.put(url, json={"status": "arrived", "reason": "Venue gate is  on the service road"},
                            headers=auth)
    assert resp.status == 200 and (await resp.json())["status"] == "arrived"
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None
    flag = order["arrival_unverified"]
    assert flag["code"] == "not_at_venue" and flag["reason"] == "Venue gate is on the service road"
    assert 3_050 < flag["distance_m"] < 3_150 and flag["radius_m"] == 150 and flag["at"] == order["arrived_at"]
    last = order["history"][-1]
    assert last["status"] == "arrived" and last["by_role"] == "partner"
    assert last["reason"] == "Marked arrived 3.1 km from the venue: Venue gate is on the service road"

    # Admins see it in the order list and on the order.
    admin = await make_user(db, role="admin")
    listing = await (await client.get("/api/admin/orders", headers=bearer(token_for(admin, "admin")))).json()
    mine = next(o for o in listing["items"] if o["id"] == order_id)
    assert mine["arrival_unverified"]["reason"] == "Venue gate is on the service road"


async def test_an_arrival_inside_the_fence_is_not_flagged_and_a_reason_elsewhere_is_refused(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    me = await make_partner(db)
    auth = bearer(token_for(me, "partner"))
    order_id = await make_order(db, await make_user(db), status="assigned", partner_id=me)
    url = f"/api/partner/orders/{order_id}/status"
    resp = await client.put(url, json={"status": "en_route", "reason": "traffic"}, headers=auth)
    assert resp.status == 422
    resp = await client.put(url, json={"status": "en_route"}, headers=auth)
    assert resp.status == 200
    await share(client, auth, 180, 60)
    resp = await client.put(url, json={"status": "arrived"}, headers=auth)
    assert resp.status == 200
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["status"] == "arrived" and "arrival_unverified" not in order
