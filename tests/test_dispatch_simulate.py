"""The simulator drives real partner accounts through the real socket API: on duty, pinging,
accepting offers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.contracts import FLEET_ONLINE
from dispatch.simulate import run_simulation
from tests.dispatch_helpers import CENTER, Env, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


async def test_simulated_partners_go_on_duty_and_accept_offers(start_env: StartEnv) -> None:
    env = await start_env(ping_interval_s=0.3, dispatch_radius_m=20_000)
    sim = asyncio.create_task(run_simulation(env.settings, base_url=env.url, partners=3, accept_probability=1.0,
                                             reply_delay_s=0.05, duration_s=8))
    try:
        async with asyncio.timeout(8):
            while await env.redis.scard(FLEET_ONLINE) < 3:
                await asyncio.sleep(0.1)
        ids = {doc["_id"] async for doc in env.db.users.find({"email": {"$regex": "sim-partner-",
                                                                          "$options": "i"}})}
        assert len(ids) == 3
        assert await env.db.partners.count_documents({"_id": {"$in": sorted(ids)}, "status": "approved"}) == 3
        _, oid = await env.order(*CENTER)
        async with asyncio.timeout(8):
            while (doc := await env.db.orders.find_one({"_id": oid}))["status"] in ("placed", "offered"):  # type: ignore[index]
                await asyncio.sleep(0.1)
        assert doc is not None and doc["partner_id"] in ids
    finally:
        sim.cancel()
        await asyncio.gather(sim, return_exceptions=True)
