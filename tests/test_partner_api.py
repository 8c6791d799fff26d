"""Partner API: offers without private details, one winner among racing accepts, declines,
the job's state path, the REST location fallback and earnings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core import keys
from core.contracts import (
    FLEET_SEEN,
    OFFER_EVENTS,
    PARTNER_POSITIONS,
    PARTNER_STATE,
    STALE_AFTER_INTERVALS,
    OfferReplyEvent,
)
from core.jsonutil import now_ms
from geo.distance import destination
from tests.helpers import (
    BENGALURU,
    bearer,
    db_of,
    make_order,
    make_partner,
    make_user,
    offer_to,
)


async def test_new_orders_show_only_my_offers_without_private_details(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me, other = await make_partner(db), await make_partner(db)
    customer = await make_user(db, phone="+919800012345")
    mine = await make_order(db, customer, notes="Flat 4B", price=2_000_000)
    theirs = await make_order(db, customer)
    expired = await make_order(db, customer)
    await offer_to(db, mine, [me])
    await offer_to(db, theirs, [other])
    await offer_to(db, expired, [me], ttl_ms=-1000)

    resp = await client.get("/api/partner/orders/new", headers=bearer(token_for(me, "partner")))
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert [o["id"] for o in items] == [mine]
    offer = items[0]
    assert offer["city"] == "Bengaluru" and offer["area"] == "Bengaluru Central"
    approx = offer["approx_location"]
    # Snapped to a 0.01 degree (~1 km) grid: close to the venue, but not the venue.
    assert approx["lat"] == 12.98 and round(approx["lng"], 2) == approx["lng"]
    assert abs(approx["lng"] - 77.6050) <= 0.0051
    assert offer["payout"] == 2_000_000 - 400_000
    text = str(offer)
    for secret in ("+919800012345", "MG Road", "560001", "Flat 4B", customer):
        assert secret not in text


async def test_a_rest_offer_carries_the_slot_and_my_distance_like_the_socket_offer(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me = await make_partner(db)
    auth = bearer(token_for(me, "partner"))
    order_id = await make_order(db, await make_user(db), arrive_after="2026-12-19T10:30:00.000Z",
                                arrive_before="2026-12-19T13:30:00.000Z", timezone="Asia/Kolkata", asap=0)
    await offer_to(db, order_id, [me])

    # No position shared yet: the slot, but no distance to show.
    offer = (await (await client.get("/api/partner/orders/new", headers=auth)).json())["items"][0]
    assert offer["arrive_after"] == "2026-12-19T10:30:00.000Z" and offer["arrive_before"] == "2026-12-19T13:30:00.000Z"
    assert offer["timezone"] == "Asia/Kolkata" and offer["asap"] is False
    assert offer["distance_m"] is None and offer["eta_s"] is None

    # 2,340 m from the venue: shown rounded to 100 m, as the socket's offer does, with a travel time.
    lat, lng = destination(BENGALURU["lat"], BENGALURU["lng"], 200, 2_340)
    resp = await client.put("/api/partner/location", json={"lat": lat, "lng": lng, "accuracy": 10, "ts": now_ms()},
                            headers=auth)
    assert (await resp.json())["accepted"] == 1
    offer = (await (await client.get("/api/partner/orders/new", headers=auth)).json())["items"][0]
    assert offer["distance_m"] == 2_300 and 0 < offer["eta_s"] < 3_600


async def test_fifty_concurrent_accepts_have_exactly_one_winner(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    partners = [await make_partner(db) for _ in range(50)]
    order_id = await make_order(db, await make_user(db))
    await offer_to(db, order_id, partners)

    responses = await asyncio.gather(*(
        client.put(f"/api/partner/orders/{order_id}/accept", headers=bearer(token_for(p, "partner")))
        for p in partners))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [409] * 49
    winner = partners[[r.status for r in responses].index(200)]
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None
    assert order["status"] == "assigned" and order["partner_id"] == winner
    assert order["offer_partner_ids"] == [] and order["offer_expires_ms"] == 0
    assert [h["status"] for h in order["history"]] == ["placed", "assigned"]


async def test_accept_refusals(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    offered, outsider = await make_partner(db), await make_partner(db)
    order_id = await make_order(db, await make_user(db, phone="+919800054321"))
    await offer_to(db, order_id, [offered])
    resp = await client.put(f"/api/partner/orders/{order_id}/accept", headers=bearer(token_for(outsider, "partner")))
    assert resp.status == 409
    stale = await client.put(f"/api/partner/orders/{order_id}/accept?fence=99",
                             headers=bearer(token_for(offered, "partner")))
    assert stale.status == 409
    huge = await client.put(f"/api/partner/orders/{order_id}/accept?fence={2**64}",
                            headers=bearer(token_for(offered, "partner")))
    assert huge.status == 422 and (await huge.json())["error"]["details"][0]["field"] == "fence"
    unknown = await client.put("/api/partner/orders/nope/accept", headers=bearer(token_for(offered, "partner")))
    assert unknown.status == 404
    assert (await client.put(f"/api/partner/orders/{order_id}/accept")).status == 401
    customer = bearer(token_for(await make_user(db), "customer"))
    assert (await client.put(f"/api/partner/orders/{order_id}/accept", headers=customer)).status == 403
    pending = await make_partner(db, status="pending")
    resp = await client.put(f"/api/partner/orders/{order_id}/accept", headers=bearer(token_for(pending, "partner")))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "partner_not_approved"
    ok = await client.put(f"/api/partner/orders/{order_id}/accept?fence=1",
                          headers=bearer(token_for(offered, "partner")))
    assert ok.status == 200
    # Once accepted, the partner may call the customer.
    assert (await ok.json())["customer"]["phone"] == "+919800054321"


async def test_decline_is_recorded_and_announced_to_dispatch(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    db = db_of(client.app)
    me, other = await make_partner(db), await make_partner(db)
    order_id = await make_order(db, await make_user(db))
    await offer_to(db, order_id, [me])
    pubsub = redis.pubsub()
    await pubsub.subscribe(OFFER_EVENTS)
    await pubsub.get_message(timeout=1)

    assert (await client.put(f"/api/partner/orders/{order_id}/decline",
                             headers=bearer(token_for(other, "partner")))).status == 409
    resp = await client.put(f"/api/partner/orders/{order_id}/decline", headers=bearer(token_for(me, "partner")))
    assert resp.status == 200
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["declined_partner_ids"] == [me]
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    assert OfferReplyEvent.model_validate_json(message["data"]) == OfferReplyEvent(
        order_id=order_id, partner_id=me, accept=False)
    unknown = await client.put("/api/partner/orders/nope/decline", headers=bearer(token_for(me, "partner")))
    assert unknown.status == 404
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_partner_walks_the_job_one_legal_step_at_a_time(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me, other = await make_partner(db), await make_partner(db)
    auth = bearer(token_for(me, "partner"))
    order_id = await make_order(db, await make_user(db), status="assigned", partner_id=me)
    url = f"/api/partner/orders/{order_id}/status"

    jump = await client.put(url, json={"status": "arrived"}, headers=auth)
    assert jump.status == 409
    assert (await jump.json())["error"]["details"]["next"] == "en_route"
    not_mine = await client.put(url, json={"status": "en_route"}, headers=bearer(token_for(other, "partner")))
    assert not_mine.status == 404
    assert (await client.put(url, json={"status": "cancelled"}, headers=auth)).status == 422
    at_venue = {**BENGALURU, "accuracy": 10, "ts": now_ms()}
    assert (await client.put("/api/partner/location", json=at_venue, headers=auth)).status == 200
    for status in ("en_route", "arrived", "setup_complete", "completed"):
        resp = await client.put(url, json={"status": status}, headers=auth)
        assert resp.status == 200, status
        assert (await resp.json())["status"] == status
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["completed_at"]
    assert [h["status"] for h in order["history"]][-4:] == ["en_route", "arrived", "setup_complete", "completed"]
    assert (await client.put(url, json={"status": "completed"}, headers=auth)).status == 409

    mine = await (await client.get("/api/partner/orders/my?status=completed", headers=auth)).json()
    assert [o["id"] for o in mine["items"]] == [order_id] and mine["total"] == 1


async def test_location_is_validated_and_handed_to_ingest(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    # The dispatch engine installs the real ingest at start-up; its own tests cover validation
    # in depth. Here: the REST edge refuses bad input and hands good fixes over.
    me = await make_partner(db_of(client.app))
    auth = bearer(token_for(me, "partner"))
    bad = await client.put("/api/partner/location", json={"lat": 91, "lng": 77.59}, headers=auth)
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "lat"
    extra = await client.put("/api/partner/location", json={"lat": 12.9, "lng": 77.5, "$set": 1}, headers=auth)
    assert extra.status == 422
    assert await redis.zscore(FLEET_SEEN, me) is None

    ts = now_ms()
    resp = await client.put("/api/partner/location", json={"lat": 12.97, "lng": 77.59, "accuracy": 12.5, "ts": ts},
                            headers=auth)
    assert resp.status == 200
    assert (await resp.json()) == {"accepted": 1, "rejected": []}
    seen = await redis.zscore(FLEET_SEEN, me)
    assert seen is not None and seen >= ts

    stale = await client.put("/api/partner/location", json={"lat": 12.97, "lng": 77.59, "ts": 1_000}, headers=auth)
    assert stale.status == 200
    assert (await stale.json())["accepted"] == 0
    assert (await client.put("/api/partner/location", json={"lat": 1, "lng": 1})).status == 401
    customer = bearer(token_for(await make_user(db_of(client.app)), "customer"))
    assert (await client.put("/api/partner/location", json={"lat": 1, "lng": 1}, headers=customer)).status == 403


async def test_earnings_per_order_and_period_after_commission(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me = await make_partner(db)
    customer = await make_user(db)
    await make_order(db, customer, status="completed", partner_id=me, price=1_000_000,
                     completed_at="2026-11-02T10:00:00.000Z")
    await make_order(db, customer, status="completed", partner_id=me, price=2_500_050,
                     completed_at="2026-11-20T10:00:00.000Z")
    await make_order(db, customer, status="completed", partner_id=me, price=3_000_000,
                     completed_at="2026-10-05T10:00:00.000Z")
    await make_order(db, customer, status="en_route", partner_id=me, price=9_999_900)
    await make_order(db, customer, status="completed", partner_id=await make_partner(db), price=7_000_000)

    resp = await client.get("/api/partner/earnings?period=month", headers=bearer(token_for(me, "partner")))
    assert resp.status == 200
    body = await resp.json()
    assert body["commission_rate_bp"] == 2000 and body["currency"] == "INR"
    # 20 % of 2,500,050 is 500,010 exactly; payout is the rest, in integer paise.
    assert body["totals"] == {"orders": 3, "gross": 6_500_050, "commission": 1_300_010, "payout": 5_200_040}
    assert [(p["period"], p["orders"], p["payout"]) for p in body["periods"]] == [
        ("2026-11", 2, 800_000 + 2_000_040), ("2026-10", 1, 2_400_000)]
    assert [line["price"] for line in body["items"]] == [2_500_050, 1_000_000, 3_000_000]
    weekly = await (await client.get("/api/partner/earnings?period=week",
                                     headers=bearer(token_for(me, "partner")))).json()
    assert [p["period"] for p in weekly["periods"]] == ["2026-W47", "2026-W45", "2026-W41"]
    bad = await client.get("/api/partner/earnings?period=decade", headers=bearer(token_for(me, "partner")))
    assert bad.status == 422


async def test_arrival_needs_a_fresh_position_near_the_venue(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    db = db_of(client.app)
    me = await make_partner(db)
    auth = bearer(token_for(me, "partner"))
    order_id = await make_order(db, await make_user(db), status="en_route", partner_id=me)
    url = f"/api/partner/orders/{order_id}/status"
    venue = (BENGALURU["lat"], BENGALURU["lng"])
    radius = client.app[keys.SETTINGS].arrival_radius_m
    assert radius == 150  # PARTYPILOT_ARRIVAL_RADIUS_M

    async def arrive() -> tuple[int, dict[str, Any]]:
        resp = await client.put(url, json={"status": "arrived"}, headers=auth)
        return resp.status, await resp.json()

    async def fix(lat: float, lng: float, ts: int, accuracy: float = 10) -> None:
        resp = await client.put("/api/partner/location", json={"lat": lat, "lng": lng, "accuracy": accuracy,
                                                               "ts": ts}, headers=auth)
        body = await resp.json()
        assert body["accepted"] == 1, body

    status, body = await arrive()  # never shared a position
    assert status == 409 and body["error"]["code"] == "position_unknown"

    t = now_ms() - 80_000
    await fix(*destination(*venue, 90, 3_100), ts=t)  # 3.1 km east
    status, body = await arrive()
    assert status == 409 and body["error"]["code"] == "not_at_venue"
    assert body["error"]["details"]["radius_m"] == 150 and 3_050 < body["error"]["details"]["distance_m"] < 3_150
    assert body["error"]["message"].startswith("You are 3.1 km from the venue")

    # A fix is judged by its own time: one taken two minutes ago is stale, whenever it arrived.
    await redis.hset(PARTNER_STATE.format(partner_id=me), "ts", str(now_ms() - 120_000))
    status, body = await arrive()
    assert status == 409 and body["error"]["code"] == "position_stale"
    assert body["error"]["details"]["stale_after_s"] == 90

    # 230 m away with a ±100 m fix: within the radius once the fix's own uncertainty is allowed for.
    await fix(*destination(*venue, 90, 230), ts=now_ms(), accuracy=100)
    status, body = await arrive()
    assert status == 200 and body["status"] == "arrived"
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["status"] == "arrived"


async def test_arrival_reads_mongodbs_copy_of_the_position_when_redis_lost_it(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    db = db_of(client.app)
    me = await make_partner(db)
    order_id = await make_order(db, await make_user(db), status="en_route", partner_id=me)
    far = destination(BENGALURU["lat"], BENGALURU["lng"], 0, 2_000)
    await db[PARTNER_POSITIONS].insert_one({"_id": me, "lat": far[0], "lng": far[1], "ts": now_ms(),
                                            "seen": now_ms(), "online": 1})
    assert not await redis.exists(PARTNER_STATE.format(partner_id=me))
    resp = await client.put(f"/api/partner/orders/{order_id}/status", json={"status": "arrived"},
                            headers=bearer(token_for(me, "partner")))
    assert resp.status == 409 and (await resp.json())["error"]["details"]["distance_m"] == 2_000


def test_the_api_the_engine_and_the_pages_agree_on_when_a_partner_is_stale() -> None:
    from dispatch.engine import STALE_INTERVALS

    config = (Path(__file__).resolve().parent.parent / "frontend" / "js" / "config.js").read_text()
    assert STALE_INTERVALS == STALE_AFTER_INTERVALS
    assert f"export const STALE_AFTER_INTERVALS = {STALE_AFTER_INTERVALS};" in config
