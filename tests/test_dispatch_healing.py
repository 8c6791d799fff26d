"""Self-healing dispatch: no order without a partner is final. A round that died between reserving
leases and committing leaves nothing behind, a Redis flush mid-offer is recovered without an
admin, waiting orders are retried on a backoff and when a partner comes on duty nearby, admins
are alerted once and see the waiting orders as a queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from core.contracts import FLEET_EPOCH, OFFER_HOLDERS, OFFER_TIMERS, PARTNER_JOB_FIELD, LocationPoint
from core.jsonutil import now_ms
from core.orderflow import OrderFlow
from dispatch.engine import Tuning
from dispatch.fleet import offer_key
from dispatch.offers import LEASE_GRACE_MS, LEASE_IN_FLIGHT_MS
from dispatch.server import ENGINE
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, make_customer, make_order, make_partner, ping, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


def near(distance_m: float, bearing: float = 90.0) -> tuple[float, float]:
    return destination(CENTER[0], CENTER[1], bearing, distance_m)


def lease_ms(env: Env) -> int:
    return int(env.settings.offer_timeout_s * 1000) + LEASE_GRACE_MS


async def order_doc(env: Env, oid: str) -> dict[str, Any]:
    doc = await env.db.orders.find_one({"_id": oid})
    assert doc is not None
    return doc


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("registered", [False, True], ids=["lease-only", "with-holders-and-timer"])
async def test_a_round_that_died_between_reserve_and_commit_leaves_no_lease_behind(
        start_env: StartEnv, registered: bool) -> None:
    env = await start_env()
    pid, sock = await env.partner(*near(300))
    cid = await make_customer(env.db)
    oid = await make_order(env.db, env.redis, cid, *CENTER, announce=False)
    # What a process that died after reserving the partner, before committing the round, leaves:
    # a lease naming fence 1 (and, if it got that far, the holder and a timer). MongoDB still says
    # "placed", fence 0.
    pipe = env.redis.pipeline(transaction=False)
    pipe.set(offer_key(pid), f"{oid}:1", px=lease_ms(env))
    if registered:
        pipe.sadd(OFFER_HOLDERS.format(order_id=oid), pid)
        pipe.zadd(OFFER_TIMERS, {oid: now_ms() + 30_000})
    await pipe.execute()

    # The sweep re-dispatches the order; its round finds the lease and releases it.
    offer = await sock.wait_for("offer", timeout=5)
    assert offer["order_id"] == oid and offer["fence"] == 1
    doc = await order_doc(env, oid)
    assert doc["status"] == "offered" and doc["offer_partner_ids"] == [pid]
    assert await env.redis.get(offer_key(pid)) == f"{oid}:1"  # the new round's own lease
    assert not sock.events["offer_revoked"]  # the dead round never offered anything
    assert (await sock.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]


async def test_an_old_lease_of_another_orders_dead_round_is_released_when_the_partner_is_needed(
        start_env: StartEnv) -> None:
    env = await start_env()
    pid, sock = await env.partner(*near(300))
    cid = await make_customer(env.db)
    # The dead round's order waits far away (its next retry is far off), so only the new order needs
    # the partner. Its lease was taken LEASE_IN_FLIGHT_MS + 1 s ago: no round takes that long.
    dead = await make_order(env.db, env.redis, cid, *near(60_000, 0), announce=False)
    await env.db.orders.update_one({"_id": dead}, {"$set": {"dispatch_exhausted": 1,
                                                            "dispatch_retry_ms": now_ms() + 3_600_000}})
    await env.redis.set(offer_key(pid), f"{dead}:1", px=lease_ms(env) - LEASE_IN_FLIGHT_MS - 1_000)

    _, oid = await env.order(*CENTER)
    offer = await sock.wait_for("offer", timeout=5)
    assert offer["order_id"] == oid
    released = await env.audited(dead, "lease_released")
    assert released["data"]["partner_id"] == pid and released["data"]["found_by"] == oid


async def test_a_young_lease_of_another_order_is_left_alone(start_env: StartEnv) -> None:
    env = await start_env()
    admin = await env.sock(env.token("admin-1", "admin"))
    pid, sock = await env.partner(*near(300))
    cid = await make_customer(env.db)
    other = await make_order(env.db, env.redis, cid, *near(60_000, 0), announce=False)
    await env.db.orders.update_one({"_id": other}, {"$set": {"dispatch_exhausted": 1,
                                                             "dispatch_retry_ms": now_ms() + 3_600_000}})
    # Just taken: that round may be committing right now, so it is not judged.
    await env.redis.set(offer_key(pid), f"{other}:1", px=lease_ms(env))
    _, oid = await env.order(*CENTER)
    await admin.wait_for("dispatch_alert", lambda m: m["order_id"] == oid)
    assert await env.redis.get(offer_key(pid)) == f"{other}:1"
    assert not sock.events["offer"]


async def test_holders_of_a_round_that_never_committed_are_told_nothing(start_env: StartEnv) -> None:
    env = await start_env()
    pid, sock = await env.partner(*near(300))
    cid = await make_customer(env.db)
    waiting = await make_order(env.db, env.redis, cid, *near(60_000, 0), announce=False)
    taken = await make_order(env.db, env.redis, cid, *near(60_000, 180), announce=False)
    for oid in (waiting, taken):
        await env.db.orders.update_one({"_id": oid}, {"$set": {"dispatch_exhausted": 1,
                                                               "dispatch_retry_ms": now_ms() + 3_600_000}})
    # A dead round's state on an order still waiting, whose timer is due: the timer cleans up.
    pipe = env.redis.pipeline(transaction=False)
    pipe.set(offer_key(pid), f"{waiting}:1", px=lease_ms(env))
    pipe.sadd(OFFER_HOLDERS.format(order_id=waiting), pid)
    pipe.zadd(OFFER_TIMERS, {waiting: now_ms()})
    await pipe.execute()
    await until(lambda: _gone(env, pid, waiting))
    # A dead round's state on an order an admin then assigns to someone else: its holders never
    # saw an offer, so they are not told it was "taken".
    other = await make_partner(env.db)
    await env.redis.set(offer_key(pid), f"{taken}:1", px=lease_ms(env))
    await env.redis.sadd(OFFER_HOLDERS.format(order_id=taken), pid)
    await OrderFlow(env.db, env.redis).assign(taken, other, by_role="admin", by_id="admin-1",
                                              allowed_from=frozenset({"placed"}))
    await until(lambda: _gone(env, pid, taken))
    await asyncio.sleep(0.3)
    assert not sock.events["offer_revoked"]


async def _gone(env: Env, pid: str, oid: str) -> bool:
    return await env.redis.get(offer_key(pid)) is None and not await env.redis.exists(
        OFFER_HOLDERS.format(order_id=oid))


async def test_a_redis_flush_mid_offer_gets_the_order_assigned_again_without_an_admin(start_env: StartEnv) -> None:
    # No sweep: the loss must be noticed by the next ping, not by a periodic rebuild.
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=1.5)
    admin = await env.sock(env.token("admin-1", "admin"))
    first, a = await env.partner(*near(300))
    second, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    assert (await a.wait_for("offer"))["order_id"] == oid
    await until(lambda: _persisted(env, [first, second]))
    await asyncio.sleep(1.1)  # the next fix must be a second newer than the last

    await env.redis.flushdb()  # leases, holders, timers, the fleet index and presence: all gone
    assert (await ping(b, *near(880)))["ok"]  # the second partner's regular ping
    await until(lambda: env.redis.exists(FLEET_EPOCH))
    # The first partner never answers; its offer still times out, and the second one gets it.
    offer = await b.wait_for("offer", lambda m: m["order_id"] == oid, timeout=10)
    ack = await b.call("offer_reply", {"order_id": oid, "accept": True})
    assert ack["ok"], ack
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == second and offer["fence"] == 2
    assert first in doc.get("missed_partner_ids", []) or first in [
        p for e in await env.audit(oid) if e["event"] == "timeout" for p in e["data"]["partner_ids"]]
    assert not admin.events["dispatch_alert"]


async def _persisted(env: Env, pids: list[str]) -> bool:
    return await env.db.partner_positions.count_documents({"_id": {"$in": pids}, "lat": {"$exists": True}}) == len(pids)


async def test_an_exhausted_order_is_retried_when_a_partner_comes_on_duty_nearby(start_env: StartEnv) -> None:
    env = await start_env()
    admin = await env.sock(env.token("admin-1", "admin"))
    _, oid = await env.order(*CENTER)
    alert = await admin.wait_for("dispatch_alert")
    assert alert["order_id"] == oid
    doc = await order_doc(env, oid)
    assert doc["status"] == "placed" and doc["dispatch_exhausted"] == 1 and doc["dispatch_attempts"] == 1
    assert doc["dispatch_retry_ms"] > now_ms() + 20_000  # the backoff alone would wait 30 s
    assert doc["dispatch_alert_ms"] > 0

    pid, sock = await env.partner(*near(2_000))  # on duty, then its first fix
    offer = await sock.wait_for("offer", timeout=3)
    assert offer["order_id"] == oid
    assert (await sock.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == pid
    # Assignment clears the wait and the alert.
    assert doc["dispatch_exhausted"] == 0 and doc["dispatch_alert_ms"] == 0 and doc["dispatch_retry_ms"] == 0
    assert len(admin.events["dispatch_alert"]) == 1


async def test_an_exhausted_order_is_retried_when_a_partner_finishes_a_job_nearby(start_env: StartEnv) -> None:
    env = await start_env()
    admin = await env.sock(env.token("admin-1", "admin"))
    pid, sock = await env.partner(*near(500))
    cid, first = await env.order(*CENTER)
    await sock.wait_for("offer", lambda m: m["order_id"] == first)
    assert (await sock.call("offer_reply", {"order_id": first, "accept": True}))["ok"]
    _, second = await env.order(*near(1_000, 0))
    await admin.wait_for("dispatch_alert", lambda m: m["order_id"] == second)

    # The first job ends (the customer cancels it): the partner is free and nearby.
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{env.url}/api/orders/{first}/cancel", json={},
                               headers={"Authorization": f"Bearer {env.token(cid, 'customer')}"})
        assert resp.status == 200, await resp.text()
    offer = await sock.wait_for("offer", lambda m: m["order_id"] == second, timeout=3)
    assert offer["order_id"] == second
    partner = await env.db.partners.find_one({"_id": pid})
    assert partner is not None and partner[PARTNER_JOB_FIELD] == ""  # the cancelled job freed the claim
    assert (await sock.call("offer_reply", {"order_id": second, "accept": True}))["ok"]


async def test_an_exhausted_order_is_retried_on_a_backoff_and_admins_are_alerted_once(start_env: StartEnv) -> None:
    env = await start_env(dispatch_retry_s=0.3, dispatch_retry_max_s=0.6)
    admin = await env.sock(env.token("admin-1", "admin"))
    _, oid = await env.order(*CENTER)
    await admin.wait_for("dispatch_alert")
    await until(lambda: _attempts_at_least(env, oid, 3))
    waiting = [e["data"] for e in await env.audit(oid) if e["event"] == "waiting"]
    assert waiting and all(w["attempts"] >= 2 for w in waiting)

    # A partner appears without anything that would wake the order (written straight into the
    # index, as another process's ingest would): only the backoff finds it.
    pid = await make_partner(env.db)
    fleet = env.app[ENGINE].fleet
    await env.redis.hset(f"pp:partner:{pid}", mapping={"online": 1})
    lat, lng = near(700)
    await fleet.write_positions({pid: (LocationPoint(lat=lat, lng=lng, ts=now_ms()), now_ms())})
    await fleet.mark_connected(pid, "elsewhere/sid")
    made = await env.audited(oid, "offer", timeout=5)
    assert made["data"]["partner_ids"] == [pid]
    assert len(admin.events["dispatch_alert"]) == 1


async def _attempts_at_least(env: Env, oid: str, n: int) -> bool:
    return int((await order_doc(env, oid)).get("dispatch_attempts") or 0) >= n


async def test_admins_see_waiting_orders_as_a_queue(start_env: StartEnv) -> None:
    env = await start_env(dispatch_radius_m=2_000, dispatch_max_radius_m=8_000)
    admin_sock = await env.sock(env.token("admin-1", "admin"))
    cid, oid = await env.order(*CENTER)
    await admin_sock.wait_for("dispatch_alert")
    url = f"{env.url}/api/admin/orders/unassigned"
    async with aiohttp.ClientSession() as http:
        async def get(token: str | None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(url, headers=headers) as resp:
                return resp.status, await resp.json()

        pid = await make_partner(env.db)
        assert (await get(None))[0] == 401
        assert (await get(env.token(pid, "partner")))[0] == 403
        assert (await get(env.token(cid, "customer")))[0] == 403
        status, body = await get(env.token("admin-1", "admin"))
        assert status == 200 and body["total"] == 1
        [item] = body["items"]
        assert item["id"] == oid and item["radius_m"] == 8_000 and item["attempts"] == 1
        assert item["alert_at"] and item["next_retry_at"] and item["waiting_s"] >= 0 and item["offered"] is False
        assert item["package"] == "Birthday Bash" and item["city"] == "Bengaluru"

        # An admin assigns it: it leaves the queue and its alert is cleared.
        async with http.put(f"{env.url}/api/admin/orders/{oid}/assign", json={"partner_id": pid},
                            headers={"Authorization": f"Bearer {env.token('admin-1', 'admin')}"}) as resp:
            assert resp.status == 200, await resp.text()
        status, body = await get(env.token("admin-1", "admin"))
        assert status == 200 and body["items"] == [] and body["total"] == 0
    doc = await order_doc(env, oid)
    assert doc["dispatch_alert_ms"] == 0 and doc["dispatch_exhausted"] == 0


async def test_a_scheduled_order_waits_for_its_dispatch_time_then_is_offered(start_env: StartEnv) -> None:
    """An order whose arrival window is later is not offered early; once `dispatch_at_ms` passes,
    the sweep starts it with no event at all."""
    env = await start_env()
    pid, _ = await env.partner(*near(300))
    cid = await make_customer(env.db)
    oid = await make_order(env.db, env.redis, cid, *CENTER, announce=False)
    due = now_ms() + 1500
    await env.db.orders.update_one({"_id": oid}, {"$set": {"dispatch_at_ms": due}})
    await OrderFlow(env.db, env.redis).announce(await order_doc(env, oid), prev_status=None, by_role="customer")
    await asyncio.sleep(0.8)  # events and two sweeps have passed
    assert (await order_doc(env, oid))["status"] == "placed"

    async def offered() -> bool:
        return (await order_doc(env, oid))["status"] == "offered"

    await until(offered, timeout=5.0)
    assert now_ms() >= due
    assert (await order_doc(env, oid))["offer_partner_ids"] == [pid]


async def test_an_order_whose_window_is_closing_without_a_partner_alerts_the_admins_once(
        start_env: StartEnv) -> None:
    env = await start_env()
    admin = await env.sock(env.token("admin-1", "admin"))
    cid = await make_customer(env.db)
    oid = await make_order(env.db, env.redis, cid, *CENTER, announce=False)
    # Nobody nearby will take it, and its window closes in 20 minutes.
    await env.db.orders.update_one({"_id": oid}, {"$set": {"dispatch_exhausted": 1, "dispatch_retry_ms":
                                                           now_ms() + 3_600_000, "arrive_before_ms":
                                                           now_ms() + 20 * 60_000}})
    alert = await admin.wait_for("dispatch_alert", lambda m: m["order_id"] == oid and m["reason"] == "window_at_risk")
    assert alert["at"]
    await asyncio.sleep(1.0)  # several more sweeps
    risky = [m for m in admin.events["dispatch_alert"] if m["order_id"] == oid and m["reason"] == "window_at_risk"]
    assert len(risky) == 1
    assert int((await order_doc(env, oid))["window_alert_ms"]) > 0

    later = await make_order(env.db, env.redis, cid, *CENTER, announce=False)
    await env.db.orders.update_one({"_id": later}, {"$set": {"dispatch_exhausted": 1, "dispatch_retry_ms":
                                                             now_ms() + 3_600_000, "arrive_before_ms":
                                                             now_ms() + 3 * 3_600_000}})
    await asyncio.sleep(1.0)
    assert not [m for m in admin.events["dispatch_alert"] if m["order_id"] == later]


async def test_an_accept_that_arrives_after_expiry_wins_while_the_round_is_still_open(start_env: StartEnv) -> None:
    """Found by the simulator: once offers reached phones later than their timeout (a busy server),
    every accept was refused on the clock and timers fired late, so no order was assigned again.
    The round's timer closes it: until it has moved on, nobody else has the offer, so the holder's
    late accept takes the order."""
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=1.0)
    first, a = await env.partner(*near(300))
    _, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    assert (await a.wait_for("offer"))["order_id"] == oid
    await env.redis.zrem(OFFER_TIMERS, oid)  # the timer is late (stuck behind other work, or lost)
    await asyncio.sleep(1.2)

    late = await a.call("offer_reply", {"order_id": oid, "accept": True})
    assert late["ok"], late
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == first
    assert not [m for m in b.events["offer"] if m["order_id"] == oid]


async def test_an_accept_after_the_timer_moved_the_round_on_is_refused(start_env: StartEnv) -> None:
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=0.5)
    _, a = await env.partner(*near(300))
    second, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    assert (await a.wait_for("offer"))["order_id"] == oid
    assert (await b.wait_for("offer", lambda m: m["order_id"] == oid, timeout=5))["fence"] == 2
    late = await a.call("offer_reply", {"order_id": oid, "accept": True})
    assert not late["ok"] and late["error"]["code"] == "offer_closed"
    assert (await b.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == second


async def test_one_failing_offer_timeout_does_not_hold_back_the_others(start_env: StartEnv,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=1.0)
    offers = env.app[ENGINE].offers
    failed: list[str] = []
    real = offers.on_timeout

    async def flaky(order_id: str) -> None:
        # Failure injection: the first order's first timeout hits an error (a MongoDB write
        # timing out, say); before, the rest of the claimed batch was dropped with it.
        if order_id == oids[0] and not failed:
            failed.append(order_id)
            raise ConnectionError("injected")
        await real(order_id)

    monkeypatch.setattr(offers, "on_timeout", flaky)
    partners = [await env.partner(*near(200 + 50 * i, bearing=40 * i)) for i in range(4)]
    oids = [(await env.order(*near(100, bearing=180)))[1], (await env.order(*near(150, bearing=200)))[1]]
    first_holders: dict[str, str] = {}
    for oid in oids:
        await until(lambda oid=oid: _offered(env, oid))
        first_holders[oid] = (await order_doc(env, oid))["offer_partner_ids"][0]
    assert {p for p, _ in partners} >= set(first_holders.values())

    # Nobody answers: both timers fall due in one poll; both orders move to a second partner,
    # the failed one half a second later.
    for oid in oids:
        await until(lambda oid=oid: _round_at_least(env, oid, 2), timeout=5)
    assert failed == [oids[0]]
    for oid in oids:
        doc = await order_doc(env, oid)
        assert doc["status"] == "offered" and doc["offer_partner_ids"][0] != first_holders[oid]


async def _offered(env: Env, oid: str) -> bool:
    doc = await env.db.orders.find_one({"_id": oid}, {"status": 1})
    return bool(doc) and doc["status"] == "offered"


async def _round_at_least(env: Env, oid: str, fence: int) -> bool:
    doc = await env.db.orders.find_one({"_id": oid}, {"offer_fence": 1})
    return int((doc or {}).get("offer_fence") or 0) >= fence


async def test_an_accept_received_in_time_wins_even_when_its_write_lands_after_expiry(
        start_env: StartEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under load a MongoDB write can take longer than what is left of the offer. Before, the accept
    # was judged at write time and refused (precondition_failed) although the partner was in time,
    # and the timer opened the next round underneath it.
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=0.6)
    flow = env.app[ENGINE].offers.flow
    real = flow.accept_offer

    async def slow(*args: Any, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(1.0)  # failure injection: a write queued behind others
        return await real(*args, **kwargs)

    monkeypatch.setattr(flow, "accept_offer", slow)
    first, a = await env.partner(*near(300))
    _, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    assert (await a.wait_for("offer"))["order_id"] == oid
    ack = await a.call("offer_reply", {"order_id": oid, "accept": True})
    assert ack["ok"] and ack["status"] == "assigned", ack
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == first and doc["offer_fence"] == 1
    assert not b.events["offer"]
    assert "timeout" not in [e["event"] for e in await env.audit(oid)]


async def test_an_offer_committed_slowly_still_gives_the_partner_the_whole_timeout(
        start_env: StartEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, the offer's clock started when the round began: a commit slower than the timeout (a
    # busy MongoDB) sent offers that had already expired, and every accept was refused.
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=0.6)
    flow = env.app[ENGINE].offers.flow
    real = flow.transition

    async def slow(order_id: str, status: str, **kwargs: Any) -> dict[str, Any]:
        if status == "offered":
            await asyncio.sleep(0.8)  # failure injection: the round's write queued behind others
        return await real(order_id, status, **kwargs)

    monkeypatch.setattr(flow, "transition", slow)
    first, a = await env.partner(*near(300))
    _, oid = await env.order(*CENTER)
    offer = await a.wait_for("offer", timeout=5)
    assert offer["expires_at"] - now_ms() > 400  # most of the 0.6 s is still ahead
    ack = await a.call("offer_reply", {"order_id": oid, "accept": True})
    assert ack["ok"], ack
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == first
    assert (await env.audited(oid, "candidates"))["data"]["late_commit_ms"] >= 800


async def test_after_a_redis_flush_every_open_order_is_assigned_again_without_an_admin(start_env: StartEnv) -> None:
    # Four orders mid-offer (one partner each) and one waiting for a partner when Redis loses
    # everything; the partners keep pinging, a fifth comes on duty, and everyone accepts what they
    # are offered from then on. No sweep and no admin: the fleet index is rebuilt on the first
    # ping that finds it gone, open offers are judged by MongoDB, and the waiting order is woken
    # by the new partner.
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=1.5)
    partners = [await env.partner(*near(300 + 400 * i, bearing=72 * i)) for i in range(4)]
    oids = [(await env.order(*near(200, bearing=90 * i)))[1] for i in range(5)]

    async def offered_or_waiting() -> bool:
        docs = await env.db.orders.find({"_id": {"$in": oids}}, {"status": 1, "dispatch_exhausted": 1}).to_list(None)
        return sorted(d["status"] for d in docs) == ["offered"] * 4 + ["placed"] and any(
            d.get("dispatch_exhausted") for d in docs)

    await until(offered_or_waiting, timeout=10)
    await until(lambda: _persisted(env, [p for p, _ in partners]))
    await asyncio.sleep(1.1)  # the next fix must be a second newer than the last
    await env.redis.flushall()

    fifth = await env.partner(*near(600, bearing=200))
    everyone = [*partners, fifth]

    async def take_offers(sock: Any) -> None:
        answered: set[tuple[str, int]] = set()
        while True:
            for offer in list(sock.events["offer"]):
                key = (offer["order_id"], offer["fence"])
                if key not in answered:
                    answered.add(key)
                    ack = await sock.call("offer_reply", {"order_id": offer["order_id"], "accept": True})
                    if ack.get("ok"):
                        return
            await asyncio.sleep(0.05)

    async def keep_pinging(sock: Any, i: int) -> None:
        while True:
            await ping(sock, *near(300 + 400 * i + 1, bearing=72 * i))
            await asyncio.sleep(1.05)

    pingers = [asyncio.create_task(keep_pinging(s, i)) for i, (_, s) in enumerate(partners)]
    try:
        async with asyncio.timeout(25):
            await asyncio.gather(*(take_offers(s) for _, s in everyone))
    finally:
        for task in pingers:
            task.cancel()
    docs = await env.db.orders.find({"_id": {"$in": oids}}).to_list(None)
    assert all(d["status"] == "assigned" for d in docs), [(d["_id"], d["status"]) for d in docs]
    assert sorted(d["partner_id"] for d in docs) == sorted(p for p, _ in everyone)
    assert all(not any(h.get("by_role") == "admin" for h in d["history"]) for d in docs)


async def test_an_accept_counts_from_its_arrival_even_when_the_standing_check_is_slow(
        start_env: StartEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # The socket handler re-reads the partner's standing from MongoDB before the accept; before,
    # the accept's time was taken after that read, so a slow read alone turned it into a refusal.
    env = await start_env(tuning=Tuning(sweep_s=3600, timer_poll_s=0.05), offer_timeout_s=0.6)
    partners = env.app[ENGINE].partners
    real = partners.fresh_standing

    async def slow(partner_id: str) -> Any:
        await asyncio.sleep(1.0)  # failure injection: a MongoDB read queued behind others
        return await real(partner_id)

    monkeypatch.setattr(partners, "fresh_standing", slow)
    first, a = await env.partner(*near(300))
    _, oid = await env.order(*CENTER)
    assert (await a.wait_for("offer"))["order_id"] == oid
    ack = await a.call("offer_reply", {"order_id": oid, "accept": True})
    assert ack["ok"], ack
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == first
