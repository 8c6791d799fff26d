"""A partner whose standing changes while on duty stops receiving offers at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.contracts import FLEET_ONLINE, FLEET_SEARCH, PARTNER_EVENTS, PartnerEvent
from core.jsonutil import iso
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, Sock, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


async def test_a_partner_suspended_while_on_duty_gets_no_more_offers(start_env: StartEnv) -> None:
    env = await start_env()
    near_id, near_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 200))
    _, far_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 900))
    _, first = await env.order(*CENTER)
    await near_sock.wait_for("offer")  # near is approved and cached as such
    assert (await near_sock.call("offer_reply", {"order_id": first, "accept": False}))["ok"]
    await far_sock.wait_for("offer")

    await env.db.partners.update_one({"_id": near_id}, {"$set": {"status": "suspended"}})
    await env.redis.publish(PARTNER_EVENTS, PartnerEvent(partner_id=near_id, status="suspended",
                                                         at=iso()).model_dump_json())
    async with asyncio.timeout(5):
        while near_sock.client.connected:
            await asyncio.sleep(0.05)
    _, second = await env.order(*CENTER)
    candidates = await env.audited(second, "candidates")
    assert near_id not in [c["partner_id"] for c in candidates["data"]["candidates"]]
    # Suspension takes the partner off duty and out of the search index.
    async with asyncio.timeout(5):
        while await env.redis.zscore(FLEET_SEARCH, near_id) is not None or await env.redis.sismember(
                FLEET_ONLINE, near_id):
            await asyncio.sleep(0.05)


def watch_endings(sock: Sock) -> None:
    sock.client.on("session_ended", sock._recorder("session_ended"))


async def test_a_suspension_whose_event_was_lost_ends_the_socket_and_releases_the_offer_at_once(
        start_env: StartEnv) -> None:
    # A long offer timeout: the far partner's offer can only come from the release, not the timer.
    env = await start_env(offer_timeout_s=120.0)
    near_id, near_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 200))
    _, far_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 900))
    watch_endings(near_sock)
    _, order_id = await env.order(*CENTER)
    await near_sock.wait_for("offer")  # near is approved and cached as such

    # The admin's write lands in MongoDB, but the PARTNER_EVENTS message never arrives.
    await env.db.partners.update_one({"_id": near_id}, {"$set": {"status": "suspended", "status_at": iso()}})
    assert (await near_sock.wait_for("session_ended", timeout=10))["code"] == "partner_suspended"
    offer = await far_sock.wait_for("offer", lambda o: o["order_id"] == order_id, timeout=10)
    assert offer["order_id"] == order_id
    reply = await env.audited(order_id, "reply")
    assert reply["data"]["partner_id"] == near_id and reply["data"]["via"] == "suspended"


async def test_accepting_an_offer_rereads_the_partners_standing_from_mongodb(start_env: StartEnv) -> None:
    env = await start_env(offer_timeout_s=120.0)
    near_id, near_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 200))
    _, far_sock = await env.partner(*destination(CENTER[0], CENTER[1], 0, 900))
    watch_endings(near_sock)
    _, order_id = await env.order(*CENTER)
    await near_sock.wait_for("offer")
    # Suspended in MongoDB, unnoticed so far: no event, no fresh stamp for the watch to find.
    await env.db.partners.update_one({"_id": near_id}, {"$set": {"status": "suspended"}})
    ack = await near_sock.call("offer_reply", {"order_id": order_id, "accept": True})
    assert ack["error"]["code"] == "partner_suspended"
    order = await env.db.orders.find_one({"_id": order_id})
    assert order is not None and order["status"] != "assigned" and not order.get("partner_id")
    # Then it is handled as a suspension: the socket ends and the offer moves on at once.
    assert (await near_sock.wait_for("session_ended"))["code"] == "partner_suspended"
    await far_sock.wait_for("offer", lambda o: o["order_id"] == order_id, timeout=10)
