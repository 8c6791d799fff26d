"""Live streams: a customer tracks only their own order and sees the partner only between
assignment and completion; admins get a fleet snapshot then batched deltas within their bbox.
Every message is checked against the models in core.contracts (the documented contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.contracts import FleetMessage, OrderStatusMessage, PartnerLocationMessage
from core.jsonutil import now_ms
from core.orderflow import OrderFlow
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, make_customer, make_order, ping, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


async def test_a_customer_cannot_track_another_customers_order(start_env: StartEnv) -> None:
    env = await start_env()
    owner, oid = await env.order(*CENTER)
    stranger = await make_customer(env.db)
    sock = await env.sock(env.token(stranger, "customer"))
    ack = await sock.call("track", {"order_id": oid})
    assert ack == {"ok": False, "error": {"code": "not_found", "message": "no such order"}}
    assert (await sock.call("track", {"order_id": "missing"}))["error"]["code"] == "not_found"
    mine = await env.sock(env.token(owner, "customer"))
    ack = await mine.call("track", {"order_id": oid})
    assert ack["ok"] and ack["status"] in ("placed", "offered")
    # The stranger's socket is in no order room: it never hears about the order.
    await env.redis.publish("pp:events:orders", "{}")  # a malformed event is ignored, not fatal
    await asyncio.sleep(0.3)
    assert not sock.events["order_status"] and not sock.events["partner_location"]


async def test_the_customer_sees_status_and_the_partner_from_assignment_until_completion(
        start_env: StartEnv) -> None:
    env = await start_env()
    lat, lng = destination(CENTER[0], CENTER[1], 45, 800)
    t = now_ms() - 60_000
    pid, partner = await env.partner(lat, lng, ts=t)
    cid = await make_customer(env.db)
    customer = await env.sock(env.token(cid, "customer"))
    oid = await make_order(env.db, env.redis, cid, *CENTER, announce=False)
    assert (await customer.call("track", {"order_id": oid}))["ok"]
    await OrderFlow(env.db, env.redis).announce((await env.db.orders.find_one({"_id": oid})) or {},
                                                prev_status=None, by_role="customer")
    offer = await partner.wait_for("offer")
    # Before assignment, pings do not reach the customer.
    assert (await ping(partner, lat, lng, ts=t + 5_000))["ok"]
    assert (await partner.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]
    status = OrderStatusMessage.model_validate(await customer.wait_for("order_status",
                                                                        lambda m: m["status"] == "assigned"))
    assert status.partner_id == pid and status.version > 1
    assert not customer.events["partner_location"]
    assert (await ping(partner, lat + 0.001, lng, ts=t + 10_000))["ok"]
    where = PartnerLocationMessage.model_validate(await customer.wait_for("partner_location"))
    assert where.order_id == oid and abs(where.lat - (lat + 0.001)) < 1e-9 and where.eta_s > 0
    assert offer["order_id"] == oid
    flow = OrderFlow(env.db, env.redis)
    for step in ("en_route", "arrived", "setup_complete", "completed"):
        await flow.transition(oid, step, by_role="partner", by_id=pid)
    await customer.wait_for("order_status", lambda m: m["status"] == "completed")
    await partner.wait_for("order_status", lambda m: m["status"] == "completed")  # its own job
    seen = len(customer.events["partner_location"])
    assert (await ping(partner, lat + 0.002, lng, ts=t + 20_000))["ok"]
    await asyncio.sleep(0.3)
    assert len(customer.events["partner_location"]) == seen
    statuses = [m["status"] for m in customer.events["order_status"]]
    assert statuses[-5:] == ["assigned", "en_route", "arrived", "setup_complete", "completed"]


async def test_admins_get_a_snapshot_then_deltas_within_their_bbox(start_env: StartEnv) -> None:
    env = await start_env(fleet_tick_s=0.2)
    inside, inside_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 500))
    outside, _ = await env.partner(*destination(CENTER[0], CENTER[1], 0, 20_000))
    admin = await env.sock(env.token("admin-1", "admin"))
    bbox = [CENTER[1] - 0.05, CENTER[0] - 0.05, CENTER[1] + 0.05, CENTER[0] + 0.05]
    ack = await admin.call("fleet_subscribe", {"bbox": bbox})
    assert ack["ok"] and ack["partners"] == 1
    snapshot = FleetMessage.model_validate(await admin.wait_for("fleet"))
    assert snapshot.type == "snapshot" and [p.id for p in snapshot.partners] == [inside]
    assert snapshot.partners[0].status == "idle"
    assert (await inside_sock.call("availability", {"online": False}))["ok"]
    delta = FleetMessage.model_validate(await admin.wait_for("fleet", lambda m: m["type"] == "delta"))
    assert delta.version == snapshot.version + 1
    assert [(p.id, p.status) for p in delta.partners] == [(inside, "offline")]
    assert outside not in {p.id for p in delta.partners}
    bad = await admin.call("fleet_subscribe", {"bbox": [1, 2, 3]})
    assert bad["error"]["code"] == "invalid_payload"
    customer = await env.sock(env.token(await make_customer(env.db), "customer"))
    assert (await customer.call("fleet_subscribe", {}))["error"]["code"] == "forbidden"


async def test_admin_traffic_does_not_grow_with_the_ping_rate(start_env: StartEnv) -> None:
    env = await start_env(fleet_tick_s=0.5)
    socks = [await env.partner(*destination(CENTER[0], CENTER[1], 30 * i, 300 * i)) for i in range(1, 6)]
    admin = await env.sock(env.token("admin-1", "admin"))
    assert (await admin.call("fleet_subscribe", {}))["ok"]
    await admin.wait_for("fleet")
    t0 = now_ms() - 30_000
    start = asyncio.get_running_loop().time()
    for k in range(1, 5):  # 5 partners x 4 pings within ~1 s
        await asyncio.gather(*(ping(sock, *destination(CENTER[0], CENTER[1], 30 * i, 300 * i + 10 * k),
                                    ts=t0 + k * 1000) for i, (_, sock) in enumerate(socks, 1)))
    await asyncio.sleep(1.1)
    elapsed = asyncio.get_running_loop().time() - start
    deltas = [m for m in admin.events["fleet"] if m["type"] == "delta"]
    assert 1 <= len(deltas) <= elapsed / 0.5 + 1
    versions = [m["version"] for m in admin.events["fleet"]]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


async def test_admins_see_a_silent_partner_turn_stale(start_env: StartEnv) -> None:
    env = await start_env(fleet_tick_s=0.2, ping_interval_s=0.3)  # stale after 0.9 s
    pid, _ = await env.partner(*CENTER)
    admin = await env.sock(env.token("admin-1", "admin"))
    assert (await admin.call("fleet_subscribe", {}))["ok"]
    snapshot = await admin.wait_for("fleet")
    assert [(p["id"], p["status"]) for p in snapshot["partners"]] == [(pid, "idle")]
    delta = await admin.wait_for("fleet", lambda m: any(p["status"] == "stale" for p in m["partners"]), timeout=4)
    assert [p["id"] for p in delta["partners"]] == [pid]


async def test_a_tracking_link_follows_its_one_order_and_nothing_else(start_env: StartEnv) -> None:
    import socketio

    from core.tokens import issue_tracking_token

    env = await start_env()
    lat, lng = destination(CENTER[0], CENTER[1], 90, 600)
    t = now_ms() - 60_000
    _, partner = await env.partner(lat, lng, ts=t)
    _, oid = await env.order(*CENTER)
    # Someone else's order, far beyond any dispatch radius: it never competes for our partner.
    _, other = await env.order(*destination(CENTER[0], CENTER[1], 0, 60_000))
    link, _ = issue_tracking_token(env.settings, oid)
    guest = await env.sock(None, auth={"tracking_token": link})

    assert (await guest.call("track", {"order_id": other}))["error"]["code"] == "not_found"
    assert (await guest.call("location", {"lat": lat, "lng": lng, "ts": now_ms()}))["error"]["code"] == "forbidden"
    assert (await guest.call("fleet_subscribe", {}))["error"]["code"] == "forbidden"
    assert (await guest.call("track", {"order_id": oid}))["ok"]

    offer = await partner.wait_for("offer", lambda m: m["order_id"] == oid)
    assert (await partner.call("offer_reply", {"order_id": offer["order_id"], "accept": True}))["ok"]
    await guest.wait_for("order_status", lambda m: m["status"] == "assigned")
    assert (await ping(partner, lat + 0.001, lng, ts=t + 5_000))["ok"]
    where = PartnerLocationMessage.model_validate(await guest.wait_for("partner_location"))
    assert where.order_id == oid

    # An access token is not a tracking link, and an expired link is refused.
    expired, _ = issue_tracking_token(env.settings, oid, now=0)
    for auth in ({"tracking_token": env.token("someone", "customer")}, {"tracking_token": expired}):
        refused = socketio.AsyncClient(reconnection=False)
        try:
            await refused.connect(env.url, auth=auth, transports=["websocket"], wait_timeout=5)
            raise AssertionError("a bad tracking link was accepted")
        except socketio.exceptions.ConnectionError:
            pass
        finally:
            await refused.disconnect()


async def test_a_tick_carries_every_change_up_to_itself_exactly_once(start_env: StartEnv) -> None:
    from dispatch.server import ENGINE

    env = await start_env(fleet_tick_s=3600)  # no ticks of its own: the test ticks by hand
    live = env.app[ENGINE].live
    pid, sock = await env.partner(*CENTER)
    admin = await env.sock(env.token("admin-1", "admin"))
    assert (await admin.call("fleet_subscribe", {}))["ok"]
    await live.tick()  # the partner's going on duty, from before the snapshot
    moved = destination(CENTER[0], CENTER[1], 90, 40)
    assert (await ping(sock, *moved, ts=now_ms() + 1_100))["ok"]  # acknowledged = written to Redis
    await asyncio.sleep(0.005)  # ticks read up to Redis's clock - 1 ms: a write this very ms is next tick's
    first = await live.tick()  # then at once: no 250 ms safety lag holds a written change back
    entries = [p for _, message in first for p in message["partners"] if p["id"] == pid]
    assert [(round(e["lat"], 6), round(e["lng"], 6)) for e in entries] == [(round(moved[0], 6), round(moved[1], 6))]
    assert await live.tick() == []  # and never twice
    assert (await sock.call("availability", {"online": False}))["ok"]
    after = await live.tick()
    assert [p["status"] for _, m in after for p in m["partners"] if p["id"] == pid] == ["offline"]
