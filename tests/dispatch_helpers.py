"""Shared helpers for the dispatch tests: accounts and orders in MongoDB, recording socket clients."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import socketio
from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core import keys
from core.jsonutil import iso, now_ms
from core.orderflow import OrderFlow
from core.settings import Settings
from core.tokens import Role, issue_access_token
from dispatch.engine import Tuning
from dispatch.server import TUNING
from partypilot.app import create_app

CENTER = (12.9716, 77.5946)  # Bengaluru, the demo city
EVENTS = ("offer", "offer_revoked", "partner_location", "order_status", "fleet", "dispatch_alert")


async def make_partner(db: AsyncDatabase[dict[str, Any]], *, status: str = "approved",
                       vehicle_type: str = "bike") -> str:
    pid = uuid.uuid4().hex
    now = iso()
    await db.users.insert_one({"_id": pid, "role": "partner", "email": f"{pid}@example.test", "name": "Pat",
                               "created_at": now, "deleted": 0})
    await db.partners.insert_one({"_id": pid, "company_name": "Pat's Parties", "contact_name": "Pat Partner",
                                  "first_name": "Pat", "email": f"{pid}@example.test", "phone": "+919800000000",
                                  "vehicle_type": vehicle_type, "status": status, "created_at": now,
                                  "status_at": now})
    return pid


async def make_customer(db: AsyncDatabase[dict[str, Any]]) -> str:
    cid = uuid.uuid4().hex
    await db.users.insert_one({"_id": cid, "role": "customer", "email": f"{cid}@example.test", "name": "Cus",
                               "created_at": iso(), "deleted": 0, "addresses": []})
    return cid


async def make_order(db: AsyncDatabase[dict[str, Any]], redis: Redis, customer_id: str, lat: float, lng: float,
                     *, price: int = 1_000_000, announce: bool = True) -> str:
    """Insert a placed order the way the REST API does, and announce it."""
    oid = uuid.uuid4().hex
    now = iso()
    order = {
        "_id": oid, "customer_id": customer_id, "package_id": "pkg1",
        "package": {"name": "Birthday Bash", "price": price, "currency": "INR", "category": "Kids",
                    "duration_min": 120},
        "event_date": "2026-12-24", "address": {"line1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001",
                                                "lat": lat, "lng": lng},
        "guests": 20, "notes": "", "payment_option": "cash", "price": price, "currency": "INR",
        "status": "placed", "version": 1,
        "history": [{"status": "placed", "at": now, "by_role": "customer", "by": customer_id, "reason": None}],
        "offer_partner_ids": [], "offer_fence": 0, "offer_expires_ms": 0, "declined_partner_ids": [],
        "created_at": now, "updated_at": now, "notify_pending": 1, "notified_upto": 0, "reviewed": 0,
    }
    await db.orders.insert_one(order)
    if announce:
        await OrderFlow(db, redis).announce(order, prev_status=None, by_role="customer")
    return oid


class Sock:
    """A real socketio.AsyncClient that records every server event for the test to await."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self._cond = asyncio.Condition()
        self.refusal: Any = None
        for name in EVENTS:
            self.client.on(name, self._recorder(name))
        self.client.on("connect_error", self._refused)

    def _recorder(self, name: str) -> Any:
        async def record(data: Any) -> None:
            async with self._cond:
                self.events[name].append(data)
                self._cond.notify_all()

        return record

    async def _refused(self, data: Any) -> None:
        self.refusal = data

    async def connect(self, url: str, token: str | None, auth: dict[str, str] | None = None) -> Sock:
        if auth is None and token is not None:
            auth = {"token": token}
        await self.client.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:
        return await self.client.call(event, data, timeout=timeout)

    async def wait_for(self, name: str, predicate: Any = None, timeout: float = 15.0) -> Any:
        """The first recorded `name` event matching `predicate` (waiting for it if needed)."""
        def find() -> Any:
            for item in self.events[name]:
                if predicate is None or predicate(item):
                    return item
            return None

        async with asyncio.timeout(timeout), self._cond:
            while (found := find()) is None:
                await self._cond.wait()
            return found

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()


async def ping(sock: Sock, lat: float, lng: float, ts: int | None = None, **extra: Any) -> Any:
    return await sock.call("location", {"lat": lat, "lng": lng, "ts": ts if ts is not None else now_ms(), **extra})


async def online_partner(url: str, token: str, lat: float, lng: float) -> Sock:
    """A connected partner that is on duty at (lat, lng)."""
    sock = await Sock().connect(url, token)
    assert (await sock.call("availability", {"online": True}))["ok"]
    ack = await ping(sock, lat, lng)
    assert ack["ok"], ack
    return sock


class Env:
    """A running app on a real port, plus the sockets a test opened (closed at teardown)."""

    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url
        self.socks: list[Sock] = []

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        return self.app[keys.DB]

    @property
    def redis(self) -> Redis:
        return self.app[keys.REDIS]

    @property
    def settings(self) -> Settings:
        return self.app[keys.SETTINGS]

    def token(self, user_id: str, role: Role, *, ttl_s: int | None = None, session_id: str = "s1") -> str:
        settings = self.settings if ttl_s is None else self.settings.model_copy(update={"access_token_ttl_s": ttl_s})
        return issue_access_token(settings, user_id, role, session_id)

    async def sock(self, token: str | None, auth: dict[str, str] | None = None) -> Sock:
        sock = Sock()
        self.socks.append(sock)
        return await sock.connect(self.url, token, auth)

    async def partner(self, lat: float, lng: float, *, ts: int | None = None, **kwargs: Any) -> tuple[str, Sock]:
        """An approved partner, connected, on duty and seen at (lat, lng) with fix time `ts`."""
        pid = await make_partner(self.db, **kwargs)
        sock = await self.sock(self.token(pid, "partner"))
        assert (await sock.call("availability", {"online": True}))["ok"]
        ack = await ping(sock, lat, lng, ts)
        assert ack["ok"], ack
        return pid, sock

    async def order(self, lat: float, lng: float, **kwargs: Any) -> tuple[str, str]:
        cid = await make_customer(self.db)
        return cid, await make_order(self.db, self.redis, cid, lat, lng, **kwargs)

    async def audit(self, order_id: str) -> list[dict[str, Any]]:
        return await self.db.dispatch_audit.find({"order_id": order_id}).sort("at", 1).to_list()

    async def audited(self, order_id: str, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first audit record `event` of the order, waiting for it (audit writes follow the emit)."""
        return await wait_audit(self.db, order_id, event, timeout)


async def wait_audit(db: AsyncDatabase[dict[str, Any]], order_id: str, event: str,
                     timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (doc := await db.dispatch_audit.find_one({"order_id": order_id, "event": event})) is None:
            await asyncio.sleep(0.05)
    return doc


FAST = Tuning(sweep_s=0.3, timer_poll_s=0.05)


@pytest.fixture
async def start_env(aiohttp_server: Any, make_settings: Callable[..., Settings],
                    redis: Redis) -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    """Start the whole app on a real port with `make_settings(**overrides)`."""
    envs: list[Env] = []
    servers: list[Any] = []

    async def start(tuning: Tuning = FAST, **overrides: Any) -> Env:
        app = create_app(make_settings(**overrides))
        app[TUNING] = tuning
        server = await aiohttp_server(app)
        servers.append(server)
        env = Env(app, f"http://127.0.0.1:{server.port}")
        envs.append(env)
        return env

    yield start
    for env in envs:
        for sock in env.socks:
            await sock.close()
    for server in servers:
        # A shutdown that waits on a task which swallowed its cancellation would hang for the
        # whole test timeout; fail fast and name the tasks instead.
        closing = asyncio.ensure_future(server.close())
        done, _ = await asyncio.wait([closing], timeout=10)
        if not done:
            pending = sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())
            raise AssertionError(f"app shutdown hung; pending tasks: {pending}")


async def refusal(env: Env, token: str | None) -> dict[str, str]:
    """The `connect_error` data of a socket the server refuses (its `code` says why)."""
    sock = Sock()
    env.socks.append(sock)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sock.connect(env.url, token)
    assert isinstance(sock.refusal, dict)
    data: dict[str, str] = sock.refusal["data"]
    return data


async def disconnected(sock: Sock, timeout: float = 5.0) -> None:
    """Wait until the server has closed `sock`."""
    async with asyncio.timeout(timeout):
        while sock.client.connected:
            await asyncio.sleep(0.02)
