"""Two app processes share one fleet through Redis: an offer made by one process is accepted
through the other, a customer on process A watches a partner connected to process B, and an
offer made by a process that dies still times out and cascades on the other."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from core.jsonutil import now_ms
from core.orderflow import OrderFlow
from core.settings import Settings
from core.stores import make_mongo_client
from core.tokens import issue_access_token
from partypilot import localservices
from tests.conftest import TEST_SECRET
from tests.dispatch_helpers import CENTER, Sock, make_customer, make_order, make_partner, ping, wait_audit

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    def __init__(self, settings: Settings, log: Path, **extra_env: str) -> None:
        self.port = localservices.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MONGODB_URI": settings.mongodb_uri, "REDIS_URL": settings.redis_url,
               "PARTYPILOT_MONGODB_DB": settings.mongodb_db, "JWT_SECRET": TEST_SECRET, "PORT": str(self.port),
               "PARTYPILOT_ENV": "test", "PARTYPILOT_LOG_LEVEL": "WARNING",
               "PARTYPILOT_ALLOWED_ORIGINS": self.url, **extra_env}
        self.log = log.open("wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "partypilot", "serve"], cwd=ROOT, env=env,
                                      stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                assert self.popen.poll() is None, "the server process exited"
                try:
                    async with http.get(f"{self.url}/api/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
        self.log.close()


@pytest.fixture
def procs(settings: Settings, redis: Redis, tmp_path: Path) -> Iterator[tuple[Proc, Proc]]:
    # A short offer timeout, so the test of a dying process sees its timer fire elsewhere.
    a, b = (Proc(settings, tmp_path / f"{name}.log", PARTYPILOT_OFFER_TIMEOUT_S="4") for name in "ab")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Any]:
    client = make_mongo_client(settings.mongodb_uri)
    yield client[settings.mongodb_db]
    await client.close()


async def test_an_offer_from_one_process_is_accepted_through_the_other(
        procs: tuple[Proc, Proc], settings: Settings, redis: Redis, db: Any) -> None:
    a, b = procs
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    pid = await make_partner(db)
    cid = await make_customer(db)
    partner_token = issue_access_token(settings, pid, "partner", "p1")
    socks: list[Sock] = []
    try:
        on_a = await Sock().connect(a.url, partner_token)
        on_b = await Sock().connect(b.url, partner_token)
        customer = await Sock().connect(a.url, issue_access_token(settings, cid, "customer", "c1"))
        socks += [on_a, on_b, customer]
        assert (await on_b.call("availability", {"online": True}))["ok"]
        t0 = now_ms() - 60_000
        assert (await ping(on_b, CENTER[0] + 0.004, CENTER[1], ts=t0))["ok"]

        oid = await make_order(db, redis, cid, *CENTER, announce=False)
        assert (await customer.call("track", {"order_id": oid}))["ok"]
        await OrderFlow(db, redis).announce(await db.orders.find_one({"_id": oid}), prev_status=None,
                                            by_role="customer")

        # The offer reaches the partner's sockets on both processes, wherever it was made.
        offer = await on_a.wait_for("offer", timeout=10)
        assert (await on_b.wait_for("offer", timeout=10)) == offer
        made = await wait_audit(db, oid, "offer")
        maker = int(str(made["data"]["node"]).rsplit(":", 1)[1])
        assert maker in (a.popen.pid, b.popen.pid)
        other, through = (b, on_b) if maker == a.popen.pid else (a, on_a)

        ack = await through.call("offer_reply", {"order_id": oid, "accept": True})
        assert ack["ok"], ack
        assigned = await wait_audit(db, oid, "assigned")
        assert int(str(assigned["data"]["node"]).rsplit(":", 1)[1]) == other.popen.pid != maker
        doc = await db.orders.find_one({"_id": oid})
        assert doc["status"] == "assigned" and doc["partner_id"] == pid

        # The customer (process A) sees the status and the partner pinging through process B.
        await customer.wait_for("order_status", lambda m: m["status"] == "assigned", timeout=10)
        assert (await ping(on_b, CENTER[0] + 0.003, CENTER[1], ts=t0 + 10_000))["ok"]
        where = await customer.wait_for("partner_location", timeout=10)
        assert where["order_id"] == oid and abs(where["lat"] - (CENTER[0] + 0.003)) < 1e-9
        statuses = [m["status"] for m in customer.events["order_status"]]
        assert statuses.count("assigned") == 1  # one delivery per process-local socket, not per process
    finally:
        for sock in socks:
            await sock.close()


async def test_an_offer_made_by_a_process_that_dies_still_times_out_and_cascades(
        procs: tuple[Proc, Proc], settings: Settings, redis: Redis, db: Any) -> None:
    a, b = procs
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    cid = await make_customer(db)
    t0 = now_ms() - 60_000
    socks: list[Sock] = []
    try:
        # Each partner is connected to both processes, so whichever survives still reaches them.
        partners: list[tuple[str, Sock, Sock]] = []
        for i, lat in enumerate((CENTER[0] + 0.003, CENTER[0] + 0.009)):
            pid = await make_partner(db)
            token = issue_access_token(settings, pid, "partner", f"p{i}")
            on_a, on_b = await Sock().connect(a.url, token), await Sock().connect(b.url, token)
            socks += [on_a, on_b]
            assert (await on_a.call("availability", {"online": True}))["ok"]
            assert (await ping(on_a, lat, CENTER[1], ts=t0))["ok"]
            partners.append((pid, on_a, on_b))
        oid = await make_order(db, redis, cid, *CENTER)
        made = await wait_audit(db, oid, "offer")
        assert made["data"]["partner_ids"] == [partners[0][0]]
        maker = int(str(made["data"]["node"]).rsplit(":", 1)[1])
        dead, survivor = (a, b) if maker == a.popen.pid else (b, a)
        dead.popen.kill()  # no shutdown: whatever the process owned in memory is gone
        dead.popen.wait(timeout=5)
        second = partners[1][2] if survivor is b else partners[1][1]
        offer = await second.wait_for("offer", timeout=10)
        assert offer["order_id"] == oid
        timeout = await wait_audit(db, oid, "timeout")
        assert int(str(timeout["data"]["node"]).rsplit(":", 1)[1]) == survivor.popen.pid
    finally:
        for sock in socks:
            await sock.close()
