"""Offers and live streams when something else happens at the same time: a cancel or a manual
assignment during an offer round, a lost event, a reassignment, a fleet change landing just
after a tick; and an admin map zoomed out far."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.contracts import OFFER_HOLDERS, LocationPoint
from core.jsonutil import iso, now_ms
from core.orderflow import OrderFlow
from dispatch.fleet import offer_key
from dispatch.server import ENGINE
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, make_customer, make_order, ping, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


def near(distance_m: float, bearing: float = 90.0) -> tuple[float, float]:
    return destination(CENTER[0], CENTER[1], bearing, distance_m)


async def test_a_cancel_during_an_offer_round_revokes_the_offer(start_env: StartEnv) -> None:
    env = await start_env()
    pid, sock = await env.partner(*near(300))
    cid, oid = await env.order(*CENTER)
    await sock.wait_for("offer")
    await OrderFlow(env.db, env.redis).transition(oid, "cancelled", by_role="customer", by_id=cid,
                                                  set_fields={"offer_partner_ids": [], "offer_expires_ms": 0})
    revoked = await sock.wait_for("offer_revoked")
    assert revoked == {"order_id": oid, "reason": "cancelled", "version": revoked["version"]}
    assert (await sock.call("offer_reply", {"order_id": oid, "accept": True}))["error"]["code"] == "offer_closed"
    assert await env.redis.get(offer_key(pid)) is None


async def test_a_manual_assignment_during_an_offer_round_revokes_the_offer_and_frees_the_holder(
        start_env: StartEnv) -> None:
    env = await start_env()
    holder, holder_sock = await env.partner(*near(300))
    chosen, _ = await env.partner(*near(5000, 180), ts=now_ms() - 5_000)
    _, oid = await env.order(*CENTER)
    assert (await holder_sock.wait_for("offer"))["order_id"] == oid
    # What PUT /api/admin/orders/{id}/assign does.
    await OrderFlow(env.db, env.redis).transition(
        oid, "assigned", by_role="admin", by_id="admin-1", reason="manual assignment",
        allowed_from=frozenset({"placed", "offered", "assigned"}),
        set_fields={"partner_id": chosen, "assigned_at": iso(), "offer_partner_ids": [], "offer_expires_ms": 0})
    assert (await holder_sock.wait_for("offer_revoked"))["reason"] == "taken"
    assert await env.redis.get(offer_key(holder)) is None
    assert (await holder_sock.call("offer_reply", {"order_id": oid, "accept": True}))["error"]["code"] == \
        "offer_closed"
    # The holder is free for the next order at once.
    _, second = await env.order(*CENTER)
    assert (await holder_sock.wait_for("offer", lambda m: m["order_id"] == second))["order_id"] == second


async def test_an_offer_on_an_order_cancelled_without_an_event_is_revoked_when_it_expires(
        start_env: StartEnv) -> None:
    env = await start_env(offer_timeout_s=0.5)
    pid, sock = await env.partner(*near(300))
    _, oid = await env.order(*CENTER)
    await sock.wait_for("offer")
    # The cancel commits but its event is lost (pub/sub is at-most-once).
    await env.db.orders.update_one({"_id": oid}, {"$set": {"status": "cancelled", "offer_partner_ids": [],
                                                           "offer_expires_ms": 0}})
    revoked = await sock.wait_for("offer_revoked", timeout=3)
    assert revoked["order_id"] == oid and revoked["reason"] == "cancelled"
    assert await env.redis.get(offer_key(pid)) is None
    assert not await env.redis.exists(OFFER_HOLDERS.format(order_id=oid))


async def test_after_a_reassignment_the_customer_sees_only_the_new_partner(start_env: StartEnv) -> None:
    env = await start_env()
    # Fixes dated in the past so the later pings (t + 10 s) are not from the future, yet young
    # enough that a slow, loaded run never sees the partners go stale (90 s) midway.
    t = now_ms() - 15_000
    first, first_sock = await env.partner(*near(300), ts=t)
    second, second_sock = await env.partner(*near(600, 0), ts=t)
    cid = await make_customer(env.db)
    customer = await env.sock(env.token(cid, "customer"))
    oid = await make_order(env.db, env.redis, cid, *CENTER)
    await first_sock.wait_for("offer")
    accepted = await first_sock.call("offer_reply", {"order_id": oid, "accept": True})
    assert accepted["ok"], accepted
    assert (await customer.call("track", {"order_id": oid}))["ok"]
    await OrderFlow(env.db, env.redis).transition(
        oid, "assigned", by_role="admin", by_id="admin-1", reason="reassigned",
        set_fields={"partner_id": second, "assigned_at": iso()})
    await customer.wait_for("order_status", lambda m: m["partner_id"] == second)
    # The previous partner is told its job changed, without learning who took it.
    told = await first_sock.wait_for("order_status", lambda m: m["version"] > accepted["version"])
    assert told["order_id"] == oid and told["partner_id"] is None
    customer.events["partner_location"].clear()
    assert (await ping(first_sock, *near(350), ts=t + 10_000))["ok"]
    assert (await ping(second_sock, *near(550, 0), ts=t + 10_000))["ok"]
    where = await customer.wait_for("partner_location")
    await asyncio.sleep(0.2)
    assert [m["lat"] for m in customer.events["partner_location"]] == [where["lat"]]
    assert abs(where["lat"] - near(550, 0)[0]) < 1e-9
    assert first != second


async def test_admins_see_a_partner_become_offered_without_a_new_ping(start_env: StartEnv) -> None:
    env = await start_env(fleet_tick_s=0.2)
    pid, sock = await env.partner(*near(300))
    admin = await env.sock(env.token("admin-1", "admin"))
    assert (await admin.call("fleet_subscribe", {}))["ok"]
    snapshot = await admin.wait_for("fleet")
    assert [(p["id"], p["status"]) for p in snapshot["partners"]] == [(pid, "idle")]
    await asyncio.sleep(0.6)  # a few ticks: the partner's ping is old news
    admin.events["fleet"].clear()
    _, oid = await env.order(*CENTER)
    await sock.wait_for("offer")
    delta = await admin.wait_for("fleet", timeout=3)
    assert [(p["id"], p["status"]) for p in delta["partners"]] == [(pid, "offered")]
    assert (await sock.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]
    busy = await admin.wait_for("fleet", lambda m: any(p["status"] == "busy" for p in m["partners"]), timeout=3)
    assert busy["version"] > delta["version"]


async def test_a_fleet_change_stored_just_after_a_tick_still_reaches_admins(start_env: StartEnv) -> None:
    env = await start_env(fleet_tick_s=3600)  # the test drives the ticks itself
    pid, _ = await env.partner(*CENTER)
    live = env.app[ENGINE].live
    await live.subscribe("admin-sid", None)
    await asyncio.sleep(0.3)
    await live.tick()
    # A ping is stamped when it is accepted and lands in Redis with the next micro-batch, so a
    # tick can run in between.
    seen = now_ms() - 50
    await env.app[ENGINE].fleet.write_positions({pid: (LocationPoint(lat=CENTER[0] + 0.001, lng=CENTER[1],
                                                                     ts=now_ms()), seen)})
    await asyncio.sleep(0.3)
    deltas = await live.tick()
    assert [(sid, [p["id"] for p in m["partners"]]) for sid, m in deltas] == [("admin-sid", [pid])]
    live.unsubscribe("admin-sid")


async def test_a_zoomed_out_admin_map_gets_every_partner_inside_its_box(start_env: StartEnv) -> None:
    env = await start_env()
    pid, _ = await env.partner(*CENTER)
    admin = await env.sock(env.token("admin-1", "admin"))
    # The whole world, as a zoomed-out map clamps it; and a tall box whose east edge passes close
    # to the partner far south of the box's middle latitude.
    for bbox in ([-180, -85, 180, 85], [77.0, 12.0, 77.6, 70.0]):
        admin.events["fleet"].clear()
        ack = await admin.call("fleet_subscribe", {"bbox": bbox})
        assert ack["ok"] and ack["partners"] == 1, (bbox, ack)
        assert [p["id"] for p in (await admin.wait_for("fleet"))["partners"]] == [pid]
    ack = await admin.call("fleet_subscribe", {"bbox": [77.6, 12.0, 78.0, 70.0]})
    assert ack["ok"] and ack["partners"] == 0
