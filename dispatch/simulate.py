"""Simulated partners driven through the real Socket.IO API and REST, like a fleet of phones.

Each simulated partner is a real account (created or refreshed directly in MongoDB), holds its
own socket, goes on duty, pings along street-grid routes in the demo city, answers offers with
a configurable probability and delay, and moves accepted orders through their states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio
from pymongo.asynchronous.database import AsyncDatabase

from core.jsonutil import iso, now_ms
from core.settings import Settings
from core.stores import make_mongo_client
from core.tokens import issue_access_token
from geo.simulation import DEMO_CENTER, DEMO_RADIUS_M, Mover, random_point

logger = logging.getLogger(__name__)

VEHICLES = ("bike", "bike", "car", "van", "truck")
CONNECT_RETRY_S = 1.0
# Time spent at the venue between arrival, set-up and completion (scaled-down event day).
SETUP_S = 20.0
EVENT_S = 30.0


def sim_email(n: int) -> str:
    return f"sim-partner-{n}@partypilot.local"


# Distinct names so the admin map's initials tell simulated partners apart.
FIRST_NAMES = ("Asha", "Ravi", "Meera", "Kiran", "Arjun", "Divya", "Farhan", "Lakshmi", "Nikhil", "Pooja",
               "Rahul", "Sneha", "Tara", "Vikram", "Zoya", "Imran", "Gita", "Manoj", "Nisha", "Suresh")
LAST_NAMES = ("Rao", "Iyer", "Khan", "Menon", "Shetty", "Gowda", "Nair", "Patil", "Reddy", "Das", "Bose")


def sim_name(n: int) -> tuple[str, str]:
    """(first name, full name) of simulated partner n: stable, and distinct initials for the first 20."""
    first = FIRST_NAMES[(n - 1) % len(FIRST_NAMES)]
    last = LAST_NAMES[(n - 1) % len(LAST_NAMES)]
    return first, f"{first} {last}"


async def ensure_partners(db: AsyncDatabase[dict[str, Any]], count: int) -> list[tuple[str, str]]:
    """Create or refresh `count` approved simulated partners; return (user id, vehicle type)."""
    out: list[tuple[str, str]] = []
    now = iso()
    for n in range(1, count + 1):
        email = sim_email(n)
        user = await db.users.find_one({"email": email}, {"_id": 1})
        uid = str(user["_id"]) if user else uuid.uuid4().hex
        vehicle = VEHICLES[n % len(VEHICLES)]
        first, full = sim_name(n)
        if user is None:
            await db.users.insert_one({"_id": uid, "role": "partner", "email": email, "name": full,
                                       "created_at": now, "deleted": 0, "addresses": []})
        else:
            await db.users.update_one({"_id": uid}, {"$set": {"role": "partner", "deleted": 0, "name": full}})
        await db.partners.update_one({"_id": uid}, {"$set": {
            "company_name": f"Sim Fleet {n}", "contact_name": full, "first_name": first,
            "email": email, "phone": f"+9190000{n:05d}", "vehicle_type": vehicle, "status": "approved",
            "status_at": now}, "$setOnInsert": {"created_at": now}}, upsert=True)
        out.append((uid, vehicle))
    return out


@dataclass
class SimPartner:
    """One simulated phone."""

    settings: Settings
    base_url: str
    user_id: str
    vehicle_type: str
    accept_probability: float
    reply_delay_s: float
    http: aiohttp.ClientSession
    rng: random.Random
    mover: Mover = field(init=False)
    sio: socketio.AsyncClient = field(init=False)
    token: str = field(init=False, default="")
    token_expires: float = field(init=False, default=0.0)
    job: str | None = field(init=False, default=None)
    tasks: set[asyncio.Task[Any]] = field(init=False, default_factory=set)
    at_pickup: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    on_duty: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        lat, lng = random_point(DEMO_CENTER, DEMO_RADIUS_M, self.rng)
        self.mover = Mover(lat, lng, vehicle_type=self.vehicle_type, rng=self.rng)
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=1, reconnection_delay_max=5)
        self.sio.on("offer", self.on_offer)
        self.sio.on("connect", self.on_connect)
        self._mint()

    def _mint(self) -> None:
        self.token = issue_access_token(self.settings, self.user_id, "partner", f"sim-{self.user_id}")
        self.token_expires = time.time() + self.settings.access_token_ttl_s

    async def connect(self) -> None:
        while True:
            try:
                await self.sio.connect(self.base_url, auth=lambda: {"token": self.token}, transports=["websocket"],
                                       wait_timeout=10)
                return
            except socketio.exceptions.ConnectionError:
                await asyncio.sleep(CONNECT_RETRY_S)

    async def on_connect(self) -> None:
        # A new connection (first or after a reconnect) must go on duty again; the ping loop does
        # it, since acknowledged calls cannot be made from inside the connect handler.
        self.on_duty = False

    async def run(self) -> None:
        await self.connect()
        interval = self.settings.ping_interval_s
        while True:
            if not self.on_duty:
                ack = await self._emit("availability", {"online": True})
                self.on_duty = isinstance(ack, dict) and bool(ack.get("ok"))
            if self.token_expires - time.time() < 60:
                self._mint()
                await self._emit("auth", {"token": self.token})
            if self.job is None:
                self.mover.wander()
            lat, lng = self.mover.step(interval)
            await self._emit("location", {"lat": lat, "lng": lng, "ts": now_ms(), "accuracy": 8.0,
                                          "speed": round(self.mover.speed, 1), "heading": round(self.mover.heading)})
            # Only once the server has the fix at the venue: "arrived" is refused from farther away.
            if self.job is not None and self.mover.arrived():
                self.at_pickup.set()
            await asyncio.sleep(interval * self.rng.uniform(0.9, 1.1))

    async def _emit(self, event: str, data: dict[str, Any]) -> Any:
        if not self.sio.connected:
            return None
        try:
            return await self.sio.call(event, data, timeout=10)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError,
                socketio.exceptions.ConnectionError):
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_offer(self, offer: dict[str, Any]) -> None:
        self._spawn(self._answer(offer))

    async def _answer(self, offer: dict[str, Any]) -> None:
        await asyncio.sleep(self.reply_delay_s * self.rng.uniform(0.5, 1.5))
        accept = self.job is None and self.rng.random() < self.accept_probability
        ack = await self._emit("offer_reply", {"order_id": offer["order_id"], "accept": accept})
        if accept and isinstance(ack, dict) and ack.get("ok"):
            self.job = str(offer["order_id"])
            pickup = offer.get("pickup") or {}
            self._spawn(self._do_job(self.job, float(pickup.get("lat", self.mover.lat)),
                                     float(pickup.get("lng", self.mover.lng))))

    async def _do_job(self, order_id: str, lat: float, lng: float) -> None:
        try:
            job = await self._status(order_id, "en_route")
            if job is None:
                return
            # The offer's pickup is the venue snapped to a ~1 km grid; the job carries the venue itself.
            venue = job.get("address") or {}
            if isinstance(venue.get("lat"), float | int) and isinstance(venue.get("lng"), float | int):
                lat, lng = float(venue["lat"]), float(venue["lng"])
            self.at_pickup.clear()
            self.mover.go_to(lat, lng)
            await self.at_pickup.wait()
            for step, wait in (("arrived", SETUP_S), ("setup_complete", EVENT_S), ("completed", 0.0)):
                if await self._status(order_id, step) is None:
                    return
                await asyncio.sleep(wait)
        finally:
            self.job = None

    async def _status(self, order_id: str, status: str) -> dict[str, Any] | None:
        """PUT the next status over REST: the job after it, or None when refused (which ends the job)."""
        url = f"{self.base_url}/api/partner/orders/{order_id}/status"
        try:
            async with self.http.put(url, json={"status": status},
                                     headers={"Authorization": f"Bearer {self.token}"}) as resp:
                if resp.status >= 400:
                    logger.info("simulated partner could not set %s (%s)", status, resp.status)
                    return None
                body = await resp.json()
                return body if isinstance(body, dict) else {}
        except aiohttp.ClientError as exc:
            logger.info("simulated partner could not reach the API: %s", type(exc).__name__)
            return None

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


async def run_simulation(settings: Settings, *, base_url: str, partners: int, accept_probability: float,
                         reply_delay_s: float, duration_s: float) -> int:
    """Drive `partners` simulated partners against `base_url` for `duration_s` (0: until cancelled)."""
    client = make_mongo_client(settings.mongodb_uri)
    try:
        accounts = await ensure_partners(client[settings.mongodb_db], partners)
    finally:
        await client.close()
    rng = random.Random()
    base_url = base_url.rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        fleet = [SimPartner(settings, base_url, uid, vehicle, accept_probability, reply_delay_s, http,
                            random.Random(rng.random())) for uid, vehicle in accounts]
        runs = [asyncio.create_task(p.run(), name=f"sim:{p.user_id}") for p in fleet]
        logger.info("simulating %d partners against %s", len(fleet), base_url)
        try:
            if duration_s > 0:
                await asyncio.sleep(duration_s)
            else:
                await asyncio.Event().wait()
        finally:
            for task in runs:
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            await asyncio.gather(*(p.close() for p in fleet), return_exceptions=True)
    return 0
