"""A partner whose standing changes while on duty stops receiving offers at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.contracts import FLEET_ONLINE, FLEET_SEARCH, PARTNER_EVENTS, PartnerEvent
from core.jsonutil import iso
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, start_env

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
