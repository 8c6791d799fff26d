"""Matching and the offer cascade: decline and timeout move on, the radius widens, admins are
alerted, stale/busy/offered partners are skipped, and racing accepts have exactly one winner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.contracts import (
    FLEET_BUSY,
    FLEET_SEARCH,
    OFFER_EVENTS,
    OfferMessage,
    OfferReplyEvent,
    OfferRevokedMessage,
    jobs_day_key,
)
from core.jsonutil import now_ms
from geo.areas import approximate
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, make_partner, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


def near(distance_m: float, bearing: float = 90.0) -> tuple[float, float]:
    return destination(CENTER[0], CENTER[1], bearing, distance_m)


async def order_doc(env: Env, oid: str) -> dict[str, object]:
    doc = await env.db.orders.find_one({"_id": oid})
    assert doc is not None
    return doc


async def test_a_decline_cascades_to_the_next_nearest_partner(start_env: StartEnv) -> None:
    env = await start_env()
    first, a = await env.partner(*near(500))
    second, b = await env.partner(*near(1500))
    _, oid = await env.order(*CENTER)

    offer = OfferMessage.model_validate(await a.wait_for("offer"))
    assert offer.order_id == oid and offer.payout == 800_000 and offer.distance_m < 600
    assert not b.events["offer"]
    assert (await a.call("offer_reply", {"order_id": oid, "accept": False}))["ok"]
    offer_b = OfferMessage.model_validate(await b.wait_for("offer"))
    assert offer_b.fence == offer.fence + 1
    ack = await b.call("offer_reply", {"order_id": oid, "accept": True})
    assert ack["ok"] and ack["status"] == "assigned"
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == second
    assert first in doc["declined_partner_ids"]  # type: ignore[operator]
    # The decliner cannot take it back.
    assert (await a.call("offer_reply", {"order_id": oid, "accept": True}))["error"]["code"] == "offer_closed"
    await env.audited(oid, "assigned")
    events = [e["event"] for e in await env.audit(oid)]
    for expected in ("candidates", "offer", "reply", "assigned"):
        assert expected in events
    candidates = await env.audited(oid, "candidates")
    assert [c["partner_id"] for c in candidates["data"]["candidates"]] == [first, second]
    assert candidates["data"]["candidates"][0]["rank"] == 1 and candidates["data"]["candidates"][0]["eta_s"] > 0


async def test_a_timeout_revokes_the_offer_and_cascades(start_env: StartEnv) -> None:
    env = await start_env(offer_timeout_s=0.5)
    _, a = await env.partner(*near(300))
    _, b = await env.partner(*near(900))
    _, oid = await env.order(*CENTER)
    await a.wait_for("offer")
    revoked = OfferRevokedMessage.model_validate(await a.wait_for("offer_revoked"))
    assert revoked.order_id == oid and revoked.reason == "expired"
    await b.wait_for("offer")
    # An expired offer cannot be accepted.
    assert (await a.call("offer_reply", {"order_id": oid, "accept": True}))["error"]["code"] == "offer_closed"
    assert (await env.audited(oid, "timeout"))["data"]["partner_ids"]


async def test_the_radius_widens_then_admins_are_alerted_and_the_order_waits(start_env: StartEnv) -> None:
    env = await start_env(dispatch_radius_m=2000, dispatch_max_radius_m=8000)
    admin = await env.sock(env.token("admin-1", "admin"))
    _, far = await env.partner(*near(3000))
    _, oid = await env.order(*CENTER)
    offer = await far.wait_for("offer")
    assert offer["distance_m"] > 2000
    assert (await far.call("offer_reply", {"order_id": oid, "accept": False}))["ok"]
    alert = await admin.wait_for("dispatch_alert")
    assert alert["order_id"] == oid and alert["radius_m"] == 8000 and alert["candidates_tried"] == 1
    doc = await order_doc(env, oid)
    assert doc["status"] == "placed" and doc["dispatch_exhausted"] == 1
    audit = await env.audit(oid)
    widen = [e["data"] for e in audit if e["event"] == "widen"]
    assert [(w["from_m"], w["to_m"]) for w in widen] == [(2000, 4000), (4000, 8000)]
    assert audit[-1]["event"] == "alert"
    # It waits for manual assignment: no offer loop, even when the sweeper runs.
    await asyncio.sleep(1.0)
    assert len(far.events["offer"]) == 1
    assert (await order_doc(env, oid))["status"] == "placed"


async def test_stale_busy_and_unapproved_partners_are_skipped(start_env: StartEnv) -> None:
    env = await start_env(ping_interval_s=0.3)  # stale after 0.9 s
    stale, stale_sock = await env.partner(*near(100))
    await asyncio.sleep(1.0)
    fresh, fresh_sock = await env.partner(*near(1200))
    _, oid = await env.order(*CENTER)
    offer = await fresh_sock.wait_for("offer")
    assert offer["order_id"] == oid
    assert not stale_sock.events["offer"]
    candidates = await env.audited(oid, "candidates")
    # Out of the search index once stale: taken out by the sweep, or by the search that met it.
    assert await env.redis.zscore(FLEET_SEARCH, stale) is None
    assert stale not in [c["partner_id"] for c in candidates["data"]["candidates"]]
    assert fresh


async def test_a_partner_holds_at_most_one_pending_offer(start_env: StartEnv) -> None:
    env = await start_env()
    _, only = await env.partner(*near(200))
    admin = await env.sock(env.token("admin-1", "admin"))
    _, first = await env.order(*CENTER)
    await only.wait_for("offer")
    _, second = await env.order(*near(100, 0))
    alert = await admin.wait_for("dispatch_alert")
    assert alert["order_id"] == second
    assert len(only.events["offer"]) == 1
    skipped = [e["data"]["skipped"] for e in await env.audit(second) if e["event"] == "candidates"]
    assert skipped[0]["offered"] == 1
    # Once busy with the first order, the partner is skipped as busy.
    assert (await only.call("offer_reply", {"order_id": first, "accept": True}))["ok"]


async def test_top_k_racing_accepts_have_exactly_one_winner(start_env: StartEnv) -> None:
    env = await start_env(dispatch_strategy="top_k", dispatch_top_k=3)
    partners = [await env.partner(*near(300 + 200 * i, 60 * i)) for i in range(3)]
    _, oid = await env.order(*CENTER)
    for _, sock in partners:
        await sock.wait_for("offer")
    acks = await asyncio.gather(*(sock.call("offer_reply", {"order_id": oid, "accept": True}) for _, sock in partners))
    winners = [pid for (pid, _), ack in zip(partners, acks, strict=True) if ack["ok"]]
    assert len(winners) == 1
    assert {ack["error"]["code"] for ack in acks if not ack["ok"]} == {"offer_closed"}
    doc = await order_doc(env, oid)
    assert doc["status"] == "assigned" and doc["partner_id"] == winners[0]
    history = [h["status"] for h in doc["history"]]  # type: ignore[attr-defined]
    assert history.count("assigned") == 1
    for pid, sock in partners:
        if pid != winners[0]:
            revoked = await sock.wait_for("offer_revoked")
            assert revoked["reason"] == "taken"


async def test_a_decline_over_rest_moves_the_cascade_on_once_however_many_processes_hear_it(
        start_env: StartEnv) -> None:
    env = await start_env()
    await start_env()  # a second process on the same Redis and MongoDB
    first, a = await env.partner(*near(300))
    _, b = await env.partner(*near(700))
    _, oid = await env.order(*CENTER)
    await a.wait_for("offer")
    await env.redis.publish(OFFER_EVENTS, OfferReplyEvent(order_id=oid, partner_id=first,
                                                          accept=False).model_dump_json())
    await b.wait_for("offer")
    assert (await env.audited(oid, "reply"))["data"]["via"] == "rest"
    await asyncio.sleep(0.5)
    assert [e["data"]["partner_id"] for e in await env.audit(oid) if e["event"] == "reply"] == [first]
    assert len(b.events["offer"]) == 1


async def test_a_lost_order_event_is_picked_up_by_the_sweeper(start_env: StartEnv) -> None:
    env = await start_env()
    _, a = await env.partner(*near(300))
    cid = await make_partner(env.db)  # any id will do as the customer here
    from tests.dispatch_helpers import make_order

    oid = await make_order(env.db, env.redis, cid, *CENTER, announce=False)
    offer = await a.wait_for("offer", timeout=5)
    assert offer["order_id"] == oid


async def test_a_busy_partner_is_skipped_and_released_even_if_the_completion_event_is_lost(
        start_env: StartEnv) -> None:
    env = await start_env()
    admin = await env.sock(env.token("admin-1", "admin"))
    pid, sock = await env.partner(*near(200))
    _, first = await env.order(*CENTER)
    await sock.wait_for("offer")
    assert (await sock.call("offer_reply", {"order_id": first, "accept": True}))["ok"]
    _, second = await env.order(*CENTER)
    await admin.wait_for("dispatch_alert", lambda m: m["order_id"] == second)
    assert (await env.audited(second, "candidates"))["data"]["skipped"]["busy"] == 1
    # The job ends but its event is lost (pub/sub is at-most-once): the sweeper notices.
    assert await env.redis.sismember(FLEET_BUSY, pid)
    await env.db.orders.update_one({"_id": first}, {"$set": {"status": "completed"}})
    async with asyncio.timeout(5):
        while await env.redis.sismember(FLEET_BUSY, pid):
            await asyncio.sleep(0.05)
    _, third = await env.order(*CENTER)
    offer = await sock.wait_for("offer", lambda m: m["order_id"] == third, timeout=5)
    assert offer["order_id"] == third


async def test_going_off_duty_while_holding_an_offer_declines_it_at_once(start_env: StartEnv) -> None:
    env = await start_env()  # the default 30 s offer timeout: only the decline can move it on in time
    first, a = await env.partner(*near(400))
    second, b = await env.partner(*near(1200))
    _, oid = await env.order(*CENTER)
    await a.wait_for("offer")

    assert (await a.call("availability", {"online": False}))["ok"]
    offer_b = OfferMessage.model_validate(await b.wait_for("offer"))
    assert offer_b.order_id == oid
    doc = await order_doc(env, oid)
    assert first in doc["declined_partner_ids"]  # type: ignore[operator]
    assert doc["offer_partner_ids"] == [second]
    reply = await env.audited(oid, "reply")
    assert reply["data"]["via"] == "off_duty" and reply["data"]["partner_id"] == first


async def test_replies_naming_no_real_order_leave_no_audit_records(start_env: StartEnv) -> None:
    env = await start_env()
    _, sock = await env.partner(*near(300))
    ack = await sock.call("offer_reply", {"order_id": "no-such-order", "accept": True})
    assert ack["error"]["code"] == "offer_closed"
    assert await env.db.dispatch_audit.count_documents({"order_id": "no-such-order"}) == 0


async def test_among_partners_about_as_close_the_one_idle_longest_is_offered_first(start_env: StartEnv) -> None:
    # Jobs spread over the partners nearby: within dispatch_fair_eta_s of the best ETA, the one
    # idle longest goes first, not whoever stands a few hundred metres closer every time.
    env = await start_env(dispatch_fair_eta_s=300)
    far_idle, f = await env.partner(*near(3000, bearing=0))   # idle longest, but ~10 min further
    waited, w = await env.partner(*near(1200, bearing=90))    # idle next longest, ~3 min further
    _, c = await env.partner(*near(300, bearing=180))          # closest, just came on duty
    _, oid = await env.order(*CENTER)

    offer = OfferMessage.model_validate(await w.wait_for("offer"))
    assert offer.order_id == oid
    assert not c.events["offer"] and not f.events["offer"]
    candidates = (await env.audited(oid, "candidates"))["data"]["candidates"]
    assert [x["partner_id"] for x in candidates][:1] == [waited]
    assert candidates[-1]["partner_id"] == far_idle  # beyond the window: ETA order again


async def test_among_partners_about_as_close_the_one_with_fewer_jobs_today_goes_first(start_env: StartEnv) -> None:
    # Idle time says who waited, not how many jobs each got: a partner who already did three
    # today waits behind one who did one, however long each has been idle since.
    env = await start_env(dispatch_fair_eta_s=300)
    busy_day, b = await env.partner(*near(300, bearing=0))    # idle longest and closest, 3 jobs today
    quiet_day, q = await env.partner(*near(900, bearing=90))  # 1 job today
    await env.redis.hset(jobs_day_key(now_ms()), mapping={busy_day: 3, quiet_day: 1})
    _, oid = await env.order(*CENTER)

    assert (await q.wait_for("offer"))["order_id"] == oid
    assert not b.events["offer"]
    candidates = (await env.audited(oid, "candidates"))["data"]["candidates"]
    assert [(x["partner_id"], x["jobs_today"]) for x in candidates] == [(quiet_day, 1), (busy_day, 3)]
    # The accepted job counts once, whoever accepts it.
    assert (await q.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]
    for _ in range(50):
        if await env.redis.hget(jobs_day_key(now_ms()), quiet_day) == "2":
            break
        await asyncio.sleep(0.1)
    assert await env.redis.hmget(jobs_day_key(now_ms()), [quiet_day, busy_day]) == ["2", "3"]


async def test_with_no_fair_window_the_nearest_partner_is_offered_first(start_env: StartEnv) -> None:
    env = await start_env(dispatch_fair_eta_s=0)
    _, w = await env.partner(*near(1200, bearing=90))
    _, c = await env.partner(*near(300, bearing=180))
    _, oid = await env.order(*CENTER)
    assert (await c.wait_for("offer"))["order_id"] == oid
    assert not w.events["offer"]


async def test_the_socket_offer_shows_the_venue_only_approximately_until_accepted(start_env: StartEnv) -> None:
    env = await start_env()
    _, a = await env.partner(*near(400))
    venue = near(1234, bearing=33)
    _, oid = await env.order(*venue)
    offer = OfferMessage.model_validate(await a.wait_for("offer"))
    assert offer.order_id == oid
    assert (offer.pickup.lat, offer.pickup.lng) == approximate(*venue) != (round(venue[0], 6), round(venue[1], 6))
    assert abs(offer.pickup.lat - venue[0]) > 1e-4 or abs(offer.pickup.lng - venue[1]) > 1e-4
    assert offer.distance_m % 100 == 0
