"""Locust users for a running PartyPilot: partners on sockets, customers over REST, admins and
tracking customers watching live maps.

    python -m loadtests.tokens --partners 2000 --customers 200 --admins 10 --tracked 20
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080

The tokens file (default .data/bench/tokens.json, or PP_TOKENS_FILE) holds one identity per
simulated user; see loadtests/README.md.
"""

# ruff: noqa: I001 - locust must be imported before the standard library's socket users
from __future__ import annotations

# Locust patches the standard library with gevent: it must be imported before anything that
# uses sockets or ssl (requests, socketio's clients).
import locust
from locust import HttpUser, between, constant, events, task
from locust.contrib.socketio import SocketIOUser

import itertools
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from zoneinfo import ZoneInfo
from datetime import datetime
from pathlib import Path
from typing import Any

import socketio

logger = logging.getLogger(__name__)

TOKENS_FILE = Path(os.environ.get("PP_TOKENS_FILE", ".data/bench/tokens.json"))
PING_INTERVAL_S = float(os.environ.get("PP_PING_INTERVAL_S", "1.02"))
ACCEPT_PROBABILITY = float(os.environ.get("PP_ACCEPT_PROBABILITY", "0.0"))
STEP_DEG = 0.00007  # about 8 m between fixes
# websocket-client sends an Origin header made from the URL unless told not to; the server's
# allow-list is for browsers, and a non-browser client without an Origin is what a load
# generator is (python-engineio checks the Origin only when one is sent).
SOCKET_OPTIONS: dict[str, Any] = {"reconnection": False, "websocket_extra_options": {"suppress_origin": True}}

_lock = threading.Lock()
_tokens: dict[str, Any] | None = None
_counters: dict[str, itertools.count[int]] = {}


def tokens() -> dict[str, Any]:
    """The tokens file, read once per process."""
    global _tokens
    with _lock:
        if _tokens is None:
            _tokens = json.loads(TOKENS_FILE.read_text()) if TOKENS_FILE.is_file() else {}
        return _tokens


def next_identity(kind: str) -> dict[str, Any]:
    """The next unused identity of `kind` (partners, customers, admins, tracked); wraps around."""
    pool = tokens().get(kind) or []
    if not pool:
        raise locust.exception.StopUser(f"no {kind} in {TOKENS_FILE}; run python -m loadtests.tokens first")
    with _lock:
        counter = _counters.setdefault(kind, itertools.count())
        return dict(pool[next(counter) % len(pool)])


def now_ms() -> int:
    return int(time.time() * 1000)


def fire(environment: Any, request_type: str, name: str, response_time: float, length: int = 0,
         exception: Exception | None = None) -> None:
    environment.events.request.fire(request_type=request_type, name=name, response_time=response_time,
                                    response_length=length, exception=exception, context={})


class PartnerUser(SocketIOUser):
    """A partner's phone: on duty, one fix a second (ts = now), answering offers."""

    abstract = False
    weight = 10
    wait_time = constant(PING_INTERVAL_S)
    options = SOCKET_OPTIONS

    def on_start(self) -> None:
        me = next_identity("partners")
        self.partner_id: str = me["id"]
        self.lat: float = float(me["lat"])
        self.lng: float = float(me["lng"])
        heading = random.uniform(0, 2 * math.pi)
        self.dlat, self.dlng = STEP_DEG * math.cos(heading), STEP_DEG * math.sin(heading)
        self.sio.on("offer", self.on_offer)
        client: Any = self.sio  # locust's wrapper is untyped
        client.connect(self.host, auth={"token": me["token"]}, transports=["websocket"], wait_timeout=20)
        client.call("availability", {"online": True}, timeout=20)

    def on_stop(self) -> None:
        self.sio.disconnect()

    @task
    def ping(self) -> None:
        self.lat += self.dlat
        self.lng += self.dlng
        fix = {"lat": self.lat, "lng": self.lng, "accuracy": 8.0, "speed": 8.0, "ts": now_ms()}
        started = time.perf_counter()
        try:
            # The plain client call: SocketIOUser's wrapper would count an {"ok": false} ack as a success.
            ack = socketio.Client.call(self.sio, "location", fix, timeout=10)
        except Exception as exc:
            fire(self.environment, "WSC", "location", (time.perf_counter() - started) * 1000, exception=exc)
            return
        error = None if isinstance(ack, dict) and ack.get("ok") else RuntimeError(str(ack)[:200])
        fire(self.environment, "WSC", "location", (time.perf_counter() - started) * 1000, exception=error)

    def on_offer(self, data: Any) -> None:
        order_id = data.get("order_id") if isinstance(data, dict) else None
        if not order_id:
            return
        fire(self.environment, "WSR", "offer", 0)
        accept = random.random() < ACCEPT_PROBABILITY
        self.sio.emit("offer_reply", {"order_id": order_id, "accept": accept})


class CustomerUser(HttpUser):
    """A customer browsing the catalog and, now and then, placing an order."""

    weight = 3
    wait_time = between(1, 4)

    def on_start(self) -> None:
        me = next_identity("customers")
        self.auth = {"Authorization": f"Bearer {me['token']}"}
        self.points: list[list[float]] = tokens().get("points") or [[12.9716, 77.5946]]
        self.packages: list[dict[str, Any]] = []

    @task(6)
    def browse(self) -> None:
        with self.client.get("/api/packages?limit=100", name="/api/packages", catch_response=True) as resp:
            if resp.status_code == 200:
                self.packages = resp.json().get("items", [])

    @task(3)
    def filter_and_open(self) -> None:
        category = random.choice(["Kids", "Weddings", "Corporate", "Casual", "Festival", "Themed"])
        self.client.get(f"/api/packages?category={category}&sort=price_asc", name="/api/packages?category")
        if self.packages:
            package = random.choice(self.packages)
            self.client.get(f"/api/packages/{package['id']}", name="/api/packages/{id}")

    @task(1)
    def order(self) -> None:
        if not self.packages:
            self.browse()
            if not self.packages:
                return
        package = random.choice(self.packages)
        lat, lng = random.choice(self.points)
        body = {"package_id": package["id"],
                # Today in the area's zone: dispatched at once (a later date waits for its window).
                "event_date": datetime.now(ZoneInfo("Asia/Kolkata")).date().isoformat(),
                "address": {"line1": "1 Locust Lane", "city": "Bengaluru", "postal_code": "560001",
                            "lat": lat, "lng": lng},
                "guests": max(1, min(int(package.get("capacity") or 1), 20)), "notes": "locust",
                "payment_option": random.choice(["cash", "deposit", "full"])}
        headers = {**self.auth, "Idempotency-Key": f"locust-{uuid.uuid4().hex}"}
        with self.client.post("/api/orders", json=body, headers=headers, name="/api/orders",
                              catch_response=True) as resp:
            order = resp.json() if resp.status_code in (200, 201) else None
        if order and order.get("status") == "pending_payment":
            # The offline simulator's checkout (a deployment with real keys takes cash orders only here).
            self.client.post("/api/payments/simulated/checkout", json={"order_id": order["id"],
                             "outcome": "succeeded"}, headers=self.auth, name="/api/payments/simulated/checkout")


class AdminUser(SocketIOUser):
    """An admin watching the whole fleet map.

    `fleet` deltas carry each partner's `last_seen`: the server's receipt time of its last fix.
    "fleet ping->map" is the age of a sample of those fixes when the delta arrives (the phone's
    own ts is in `partner_location`, measured by TrackingCustomerUser).
    """

    weight = 1
    wait_time = constant(5)
    options = SOCKET_OPTIONS

    def on_start(self) -> None:
        me = next_identity("admins")
        self.sio.on("fleet", self.on_fleet)
        client: Any = self.sio  # locust's wrapper is untyped
        client.connect(self.host, auth={"token": me["token"]}, transports=["websocket"], wait_timeout=20)
        client.call("fleet_subscribe", {}, timeout=30)

    def on_stop(self) -> None:
        self.sio.disconnect()

    @task
    def watch(self) -> None:
        """Nothing to send: the map streams in; the task only keeps the user alive."""

    def on_fleet(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        partners = [p for p in data.get("partners") or [] if isinstance(p, dict)]
        received = now_ms()
        fire(self.environment, "WSR", f"fleet {data.get('type')}", 0, length=len(partners))
        if data.get("type") != "delta":
            return
        for entry in random.sample(partners, min(20, len(partners))):
            seen = entry.get("last_seen")
            if isinstance(seen, int | float) and seen > 0:
                fire(self.environment, "WSR", "fleet ping->map", max(0, received - seen))


class TrackingCustomerUser(SocketIOUser):
    """A customer watching their assigned order's partner move (needs `tracked` in the tokens file)."""

    weight = 1
    wait_time = constant(5)
    options = SOCKET_OPTIONS

    def on_start(self) -> None:
        me = next_identity("tracked")
        self.sio.on("partner_location", self.on_location)
        client: Any = self.sio  # locust's wrapper is untyped
        client.connect(self.host, auth={"token": me["token"]}, transports=["websocket"], wait_timeout=20)
        client.call("track", {"order_id": me["order_id"]}, timeout=20)

    def on_stop(self) -> None:
        self.sio.disconnect()

    @task
    def watch(self) -> None:
        """The partner's position streams in."""

    def on_location(self, data: Any) -> None:
        ts = data.get("ts") if isinstance(data, dict) else None
        if isinstance(ts, int | float):
            fire(self.environment, "WSR", "partner_location ping->customer", max(0, now_ms() - ts))


def _check_tokens(environment: Any, **_: Any) -> None:
    if not TOKENS_FILE.is_file():
        logger.warning("%s is missing: run `python -m loadtests.tokens` against the system first", TOKENS_FILE)


_init_hook: Any = events.init
_init_hook.add_listener(_check_tokens)


USER_CLASSES = (PartnerUser, CustomerUser, AdminUser, TrackingCustomerUser)
