"""After Redis loses its data, the fleet index is rebuilt from MongoDB and dispatch carries on;
fixes refused while Redis was down are accepted when the phone retries them."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from core.contracts import FLEET_EPOCH, FLEET_GEO, FLEET_ONLINE, PARTNER_STATE
from core.jsonutil import now_ms
from dispatch.server import ENGINE
from partypilot import localservices
from tests.dispatch_helpers import CENTER, Env, ping, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]


class PrivateRedis:
    """A Redis of our own (no persistence) that the test may restart empty."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = localservices.free_port()
        self.proc: subprocess.Popen[bytes] = localservices.start_redis(root, self.port, persist=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        localservices._terminate(self.proc.pid)
        self.proc = localservices.start_redis(self.root, self.port, persist=False)

    def stop(self) -> None:
        localservices._terminate(self.proc.pid)

    def start(self) -> None:
        self.proc = localservices.start_redis(self.root, self.port, persist=False)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path)
    yield redis
    redis.stop()


async def test_the_fleet_index_is_rebuilt_after_a_redis_restart(
        start_env: StartEnv, private_redis: PrivateRedis) -> None:
    env = await start_env(redis_url=private_redis.url)
    pid, partner = await env.partner(CENTER[0] + 0.003, CENTER[1])
    async with asyncio.timeout(5):  # the batch persister writes the position within a second
        while not await env.db.partner_positions.find_one({"_id": pid, "lat": {"$exists": True}}):
            await asyncio.sleep(0.1)

    private_redis.restart()  # comes back empty

    async def rebuilt() -> bool:
        with contextlib.suppress(RedisError):  # the client reconnects on its own
            return await env.redis.geopos(FLEET_GEO, pid) != [None] and bool(
                await env.redis.sismember(FLEET_ONLINE, pid))
        return False

    async with asyncio.timeout(10):
        while not await rebuilt():
            await asyncio.sleep(0.1)
    # Rebuilt from MongoDB's copy, the partner is "unknown" (not offered, not stale) until it pings.
    assert await env.redis.hget(PARTNER_STATE.format(partner_id=pid), "unknown") == "1"
    [(_, entry)] = await env.app[ENGINE].live._map_entries([pid])
    assert entry["status"] == "unknown" and entry["last_seen"] == 0

    _, oid = await env.order(*CENTER)
    async with asyncio.timeout(10):  # the phone's next ping; a refusal while Redis reconnects is retried
        while not (await ping(partner, CENTER[0] + 0.003, CENTER[1]))["ok"]:
            await asyncio.sleep(0.2)
    offer = await partner.wait_for("offer", timeout=10)
    assert offer["order_id"] == oid


async def test_an_open_offer_can_still_be_accepted_after_redis_lost_its_leases(
        start_env: StartEnv, private_redis: PrivateRedis) -> None:
    env = await start_env(redis_url=private_redis.url)
    pid, partner = await env.partner(CENTER[0] + 0.003, CENTER[1])
    _, oid = await env.order(*CENTER)
    await partner.wait_for("offer")
    private_redis.restart()  # the lease, the holders and the timer are gone; MongoDB still says "offered"

    async with asyncio.timeout(10):
        # While the client reconnects to Redis the answer may be "unavailable, retry".
        while (ack := await partner.call("offer_reply", {"order_id": oid, "accept": True}))["ok"] is False \
                and ack["error"]["code"] == "unavailable":
            await asyncio.sleep(0.1)
    assert ack["ok"], ack
    doc = await env.db.orders.find_one({"_id": oid})
    assert doc is not None and doc["status"] == "assigned" and doc["partner_id"] == pid


async def test_a_fix_refused_while_redis_was_down_is_accepted_when_retried(
        start_env: StartEnv, private_redis: PrivateRedis) -> None:
    env = await start_env(redis_url=private_redis.url)
    _, partner = await env.partner(*CENTER, ts=now_ms() - 60_000)
    private_redis.stop()
    fix = {"lat": CENTER[0] + 0.001, "lng": CENTER[1], "ts": now_ms() - 30_000}
    ack = await partner.call("location", fix, timeout=15)
    assert ack["error"]["code"] == "unavailable"  # "keep the fix and send it again later"
    private_redis.start()
    async with asyncio.timeout(10):
        while (ack := await partner.call("location", fix, timeout=15))["ok"] is False \
                and ack["error"]["code"] == "unavailable":
            await asyncio.sleep(0.1)
    assert ack == {"ok": True, "accepted": 1, "rejected": []}


async def test_a_rebuild_never_moves_a_partner_back_to_an_older_position(start_env: StartEnv) -> None:
    env = await start_env()
    t = now_ms() - 60_000
    pid, partner = await env.partner(*CENTER, ts=t)
    async with asyncio.timeout(5):
        while not await env.db.partner_positions.find_one({"_id": pid, "lat": {"$exists": True}}):
            await asyncio.sleep(0.1)
    # A fix lands in Redis after the index lost its epoch, before MongoDB's copy caught up.
    assert (await partner.call("location", {"lat": CENTER[0] + 0.01, "lng": CENTER[1], "ts": t + 60_000}))["ok"]
    await env.db.partner_positions.update_one({"_id": pid}, {"$set": {"lat": CENTER[0], "seen": t}})
    await env.redis.delete(FLEET_EPOCH)
    await env.app[ENGINE].fleet.rebuild_if_lost()
    [(_, lat)] = await env.redis.geopos(FLEET_GEO, pid)
    assert abs(lat - (CENTER[0] + 0.01)) < 1e-5
