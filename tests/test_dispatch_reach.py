"""Who can be offered a job: only partners that exist in a crowded area's search, that are
reachable (a live socket or a recent REST poll), whose last fix is really recent, and who have
no other job; and replies that are never lost. Plus the `broadcast` strategy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from core.contracts import (
    FLEET_ONLINE,
    PARTNER_EVENTS,
    PARTNER_JOB_FIELD,
    PARTNER_STATE,
    LocationPoint,
    OfferMessage,
    PartnerEvent,
)
from core.errors import Conflict
from core.jsonutil import iso, now_ms
from core.orderflow import OrderFlow
from dispatch.fleet import offer_key
from dispatch.offers import REPLY_CLAIM_KEY
from dispatch.server import ENGINE
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, make_customer, make_order, make_partner, ping, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


def near(distance_m: float, bearing: float = 90.0) -> tuple[float, float]:
    return destination(CENTER[0], CENTER[1], bearing, distance_m)


async def order_doc(env: Env, oid: str) -> dict[str, Any]:
    doc = await env.db.orders.find_one({"_id": oid})
    assert doc is not None
    return doc


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_500_partners_within_1_km_with_the_nearest_300_busy_still_yield_candidates(
        start_env: StartEnv) -> None:
    env = await start_env()
    fleet = env.app[ENGINE].fleet
    now = iso()
    pids = [uuid.uuid4().hex for _ in range(500)]
    await env.db.partners.insert_many([{"_id": pid, "status": "approved", "vehicle_type": "bike", "first_name": "P",
                                        "created_at": now} for pid in pids])
    # On duty, reachable and fresh, spread from 10 m to ~960 m, nearest first; the nearest 300 busy.
    pipe = env.redis.pipeline(transaction=False)
    for pid in pids:
        pipe.hset(PARTNER_STATE.format(partner_id=pid), mapping={"online": 1})
        pipe.sadd(FLEET_ONLINE, pid)
    await pipe.execute()
    positions = {}
    for i, pid in enumerate(pids):
        lat, lng = near(10 + i * 1.9, bearing=(i * 37) % 360)
        positions[pid] = (LocationPoint(lat=lat, lng=lng, ts=now_ms()), now_ms())
    await fleet.write_positions(positions)
    await fleet.refresh_presence([(pid, "elsewhere/sid") for pid in pids])
    # Busy for real: an assigned order each in MongoDB, which the sweep reconciles Redis with.
    await env.db.orders.insert_many([{"_id": f"job-{pid}", "status": "assigned", "partner_id": pid,
                                      "customer_id": "c", "version": 2, "created_at": now} for pid in pids[:300]])
    await fleet.sync_jobs()

    _, oid = await env.order(*CENTER)
    made = await env.audited(oid, "offer")
    [chosen] = made["data"]["partner_ids"]
    assert chosen in pids[300:]
    candidates = await env.audited(oid, "candidates")
    assert candidates["data"]["radius_m"] == env.settings.dispatch_radius_m  # found without widening
    assert candidates["data"]["skipped"]["busy"] == 300 and candidates["data"]["found"] == 200


async def test_a_partner_who_disconnects_holding_an_offer_loses_it_after_the_grace_period(
        start_env: StartEnv) -> None:
    env = await start_env(offer_disconnect_grace_s=0.5)  # the 30 s offer timeout cannot move it on in time
    first, a = await env.partner(*near(300))
    second, b = await env.partner(*near(1_200))
    _, oid = await env.order(*CENTER)
    await a.wait_for("offer")
    await a.close()  # the phone lost its connection
    offer = OfferMessage.model_validate(await b.wait_for("offer", timeout=4))
    assert offer.order_id == oid
    doc = await order_doc(env, oid)
    assert doc["offer_partner_ids"] == [second] and first in doc["missed_partner_ids"]
    assert first not in doc["declined_partner_ids"]  # not a "no": a later pass may ask again
    assert await env.redis.get(offer_key(first)) is None
    replies = [e["data"] for e in await env.audit(oid) if e["event"] == "reply"]
    assert [(r["partner_id"], r["via"]) for r in replies] == [(first, "disconnect")]


async def test_a_partner_who_reconnects_within_the_grace_period_keeps_the_offer(start_env: StartEnv) -> None:
    env = await start_env(offer_disconnect_grace_s=1.0)
    first, a = await env.partner(*near(300))
    _, b = await env.partner(*near(1_200))
    _, oid = await env.order(*CENTER)
    offer = await a.wait_for("offer")
    await a.close()
    again = await env.sock(env.token(first, "partner"))  # back within the grace period
    await asyncio.sleep(1.5)
    assert not b.events["offer"]
    assert (await order_doc(env, oid))["offer_partner_ids"] == [first]
    ack = await again.call("offer_reply", {"order_id": oid, "accept": True})
    assert ack["ok"] and offer["order_id"] == oid


async def test_only_reachable_partners_are_offered_a_job(start_env: StartEnv) -> None:
    env = await start_env(offer_disconnect_grace_s=0.1)
    gone, gone_sock = await env.partner(*near(200))
    polling, polling_sock = await env.partner(*near(400))
    await gone_sock.close()
    await polling_sock.close()
    # One of them keeps polling over REST: reachable without a socket.
    async with aiohttp.ClientSession() as http, http.get(f"{env.url}/api/partner/orders/new",
                                                        headers=auth(env.token(polling, "partner"))) as r:
        assert r.status == 200
    _, oid = await env.order(*CENTER)
    made = await env.audited(oid, "offer")
    assert made["data"]["partner_ids"] == [polling]
    candidates = await env.audited(oid, "candidates")
    assert candidates["data"]["skipped"]["unreachable"] == 1 and gone not in str(candidates["data"]["candidates"])


async def test_an_old_buffered_fix_does_not_make_a_partner_fresh(start_env: StartEnv) -> None:
    env = await start_env()
    hours_ago = now_ms() - 2 * 3600 * 1000  # buffered on the phone, flushed on reconnect just now
    old, old_sock = await env.partner(*near(200), ts=hours_ago)
    fresh, fresh_sock = await env.partner(*near(1_500))
    _, oid = await env.order(*CENTER)
    assert (await fresh_sock.wait_for("offer"))["order_id"] == oid
    assert not old_sock.events["offer"]
    [(_, entry)] = await env.app[ENGINE].live._map_entries([old])
    assert entry["status"] == "stale" and entry["last_seen"] == hours_ago
    assert fresh


async def test_two_orders_racing_for_one_partner_assign_exactly_one(start_env: StartEnv) -> None:
    env = await start_env()
    flow = OrderFlow(env.db, env.redis)
    cid = await make_customer(env.db)

    async def offered_to(pid: str) -> str:
        oid = await make_order(env.db, env.redis, cid, *near(60_000, 0), announce=False)
        await env.db.orders.update_one({"_id": oid}, {"$set": {
            "status": "offered", "offer_partner_ids": [pid], "offer_fence": 1, "offer_expires_ms": now_ms() + 60_000,
            "version": 2}})
        return oid

    for _ in range(5):
        pid = await make_partner(env.db)
        x, y = await offered_to(pid), await offered_to(pid)
        results = await asyncio.gather(flow.accept_offer(x, pid, fence=1), flow.accept_offer(y, pid, fence=1),
                                       return_exceptions=True)
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].code == "partner_busy"
        assigned = await env.db.orders.count_documents({"_id": {"$in": [x, y]}, "status": "assigned"})
        assert assigned == 1
        partner = await env.db.partners.find_one({"_id": pid})
        assert partner is not None and partner[PARTNER_JOB_FIELD] == won[0]["_id"]

    # Through the sockets too (two phones of one partner answer at once).
    pid = await make_partner(env.db)
    x, y = await offered_to(pid), await offered_to(pid)
    one, two = await env.sock(env.token(pid, "partner")), await env.sock(env.token(pid, "partner"))
    acks = await asyncio.gather(one.call("offer_reply", {"order_id": x, "accept": True}),
                                two.call("offer_reply", {"order_id": y, "accept": True}))
    assert sorted(bool(a["ok"]) for a in acks) == [False, True]
    assert [a["error"]["code"] for a in acks if not a["ok"]] == ["partner_busy"]


async def test_a_rest_decline_whose_handling_was_lost_still_moves_the_cascade_on(start_env: StartEnv) -> None:
    env = await start_env()  # the 30 s offer timeout: only the recorded decline can move it on in time
    first, a = await env.partner(*near(300))
    second, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    await a.wait_for("offer")
    # Another process claimed this reply and died before handling it.
    await env.redis.set(REPLY_CLAIM_KEY.format(order_id=oid, partner_id=first), "1", px=600_000)
    async with aiohttp.ClientSession() as http, http.put(f"{env.url}/api/partner/orders/{oid}/decline",
                                                        headers=auth(env.token(first, "partner"))) as resp:
        assert resp.status == 200
    offer = await b.wait_for("offer", timeout=4)
    assert offer["order_id"] == oid
    doc = await order_doc(env, oid)
    assert doc["offer_partner_ids"] == [second] and doc["declined_partner_ids"] == [first]


async def test_suspending_a_partner_releases_the_offer_it_holds(start_env: StartEnv) -> None:
    env = await start_env()
    first, a = await env.partner(*near(300))
    _, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    await a.wait_for("offer")
    await env.db.partners.update_one({"_id": first}, {"$set": {"status": "suspended"}})
    await env.redis.publish(PARTNER_EVENTS, PartnerEvent(partner_id=first, status="suspended",
                                                         at=iso()).model_dump_json())
    assert (await b.wait_for("offer", timeout=4))["order_id"] == oid
    assert await env.redis.get(offer_key(first)) is None
    assert first in (await order_doc(env, oid))["declined_partner_ids"]


async def test_broadcast_offers_every_candidate_at_once_and_the_first_accept_wins(start_env: StartEnv) -> None:
    env = await start_env(dispatch_strategy="broadcast")
    partners = [await env.partner(*near(300 + 400 * i, 70 * i)) for i in range(4)]
    _, oid = await env.order(*CENTER)
    offers = [await sock.wait_for("offer") for _, sock in partners]
    assert {o["order_id"] for o in offers} == {oid} and len({o["fence"] for o in offers}) == 1
    # A decline leaves the offer with the others.
    (decliner, d_sock), *rest = partners
    assert (await d_sock.call("offer_reply", {"order_id": oid, "accept": False}))["ok"]
    assert sorted((await order_doc(env, oid))["offer_partner_ids"]) == sorted(pid for pid, _ in rest)
    acks = await asyncio.gather(*(sock.call("offer_reply", {"order_id": oid, "accept": True}) for _, sock in rest))
    winners = [pid for (pid, _), ack in zip(rest, acks, strict=True) if ack["ok"]]
    assert len(winners) == 1
    for pid, sock in rest:
        if pid != winners[0]:
            assert (await sock.wait_for("offer_revoked"))["reason"] == "taken"
    assert not d_sock.events["offer_revoked"] and decliner
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == winners[0]


async def test_going_on_duty_again_after_a_stale_spell_is_noticed_by_the_next_ping(start_env: StartEnv) -> None:
    env = await start_env(ping_interval_s=0.3)  # stale after 0.9 s
    admin = await env.sock(env.token("admin-1", "admin"))
    _, sock = await env.partner(*near(300))
    await asyncio.sleep(1.2)
    _, oid = await env.order(*CENTER)
    await admin.wait_for("dispatch_alert", lambda m: m["order_id"] == oid)
    assert (await ping(sock, *near(320)))["ok"]  # back: the waiting order is retried at once
    assert (await sock.wait_for("offer", timeout=3))["order_id"] == oid
