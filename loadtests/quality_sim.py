"""One strategy's simulated day: partners and customers driving a running app from outside.

Partners are Socket.IO clients (loadtests.wsclient.LeanSocket) and REST callers; customers are
REST callers. Nothing here imports the product: accounts and tokens come from loadtests.fixtures,
everything else goes over HTTP and Socket.IO, as a phone or a browser would.

The accelerated clock: `Clock` maps real time to simulated time by the scenario's scale (say 75:
one real second is 75 simulated seconds). The app's timers are divided by the same scale through
its settings (Scenario.app_env), so an offer timeout of 30 simulated seconds lasts 0.4 real
seconds at a scale of 75. Two server rules are in real time and cannot be scaled from outside:

- one accepted fix a second per partner: partners ping every max(interval / scale, 1.25 s) real
  seconds, and the app's ping interval (hence staleness, 3 intervals) is set to the same figure;
- a fix may not be further from the last one than 83 m/s allows beyond the two fixes' accuracy
  radii plus 50 m (the fixes' `ts` are real milliseconds). A partner driving at 22 km/h on a
  75x clock covers 460 real metres a second, so while it travels its fixes carry an accuracy
  radius just wide enough for the jump (at most the 1,000 m the server accepts), and go back to
  10 m once it stands still. Matching never reads the accuracy, and a travelling partner is
  busy anyway, so this changes what the server believes about nobody it could match. Should a
  jump exceed even that, the reported position lags and catches up at the next fixes; a job is
  completed (the partner becomes free) only once it has, so the server never matches an idle
  partner at a place it has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from loadtests.fixtures import Area, offset
from loadtests.quality_metrics import JobRecord, PartnerRecord
from loadtests.quality_scenario import Scenario, ShiftSpec
from loadtests.wsclient import LeanSocket, Refused

logger = logging.getLogger(__name__)

# The server's plausibility rule (dispatch/ingest.py): a fix may be at most 83 m/s x the time
# since the last one beyond NOISE_M + both accuracy radii. We plan with 75 m/s for jitter.
PLAUSIBLE_MPS = 75.0
NOISE_M = 50.0
MAX_ACCURACY_M = 995.0  # the server refuses a radius above 1,000 m
FIX_ACCURACY_M = 10.0
CAUGHT_UP_M = 100.0  # the reported position counts as caught up within this of the simulated one
CATCH_UP_LIMIT_S = 120.0  # real seconds a job waits at most for the reported position
CONNECT_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 10.0
RECONNECT_PAUSE_S = 1.0
# Real seconds between the simulator's progress lines.
PROGRESS_EVERY_S = 15.0
# A phone retries a failed status update (5xx, lost connection) for this long, real seconds.
STATUS_RETRY_FOR_S = 120.0
STATUS_RETRY_PAUSE_MAX_S = 8.0


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


class Clock:
    """Simulated seconds since the day's start, from the event loop's monotonic clock."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._loop = asyncio.get_running_loop()
        self.t0 = self._loop.time()
        self.wall0 = time.time()

    def now(self) -> float:
        return (self._loop.time() - self.t0) * self.scale

    def from_wall(self, epoch_s: float) -> float:
        """A server timestamp (seconds since the epoch) in simulated seconds since the day's start."""
        return (epoch_s - self.wall0) * self.scale

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(max(0.0, sim_s / self.scale))

    async def until(self, sim_t: float) -> None:
        await self.sleep(sim_t - self.now())


@dataclass
class OfferSeen:
    """An `offer` a simulated phone received, and what became of it."""

    order_id: str
    partner_id: str
    received_sim: float
    distance_m: float
    decision: str = ""  # accept, decline, ignore
    outcome: str = ""  # assigned, declined, ignored, offer_closed, partner_busy, revoked_*, offline, busy, no_ack
    revoked: str = ""


@dataclass
class PlacedOrder:
    """A planned order (time and place, from the seed) and, once placed in a run, its id."""

    index: int
    due_sim: float
    lat: float
    lng: float
    order_id: str | None = None
    placed_sim: float | None = None
    error: str | None = None


@dataclass
class Plan:
    """What the seed decides before the day starts, identical for every strategy."""

    partner_shifts: list[ShiftSpec]
    partner_homes: list[tuple[float, float]]
    partner_seeds: list[int]
    orders: list[PlacedOrder]
    order_seeds: list[int]


def make_plan(scenario: Scenario, area: Area) -> Plan:
    """Shifts (by share, largest remainder), start positions, order times and places."""
    rng = random.Random(scenario.seed)
    count = scenario.partners.count
    shifts = scenario.partners.shifts
    exact = [s.share * count for s in shifts]
    sizes = [math.floor(x) for x in exact]
    for i in sorted(range(len(shifts)), key=lambda i: exact[i] - sizes[i], reverse=True)[:count - sum(sizes)]:
        sizes[i] += 1
    partner_shifts = [s for s, n in zip(shifts, sizes, strict=True) for _ in range(n)]
    rng.shuffle(partner_shifts)
    homes = [area.random_point(rng) for _ in range(count)]
    partner_seeds = [rng.randrange(2**32) for _ in range(count)]
    weights = scenario.orders.by_hour
    times = []
    for _ in range(scenario.orders.count):
        hour = rng.choices(range(len(weights)), weights=weights)[0]
        times.append(min(scenario.day_s - 1.0, (hour + rng.random()) * 3600))
    times.sort()
    orders = [PlacedOrder(i, t, *area.random_point(rng)) for i, t in enumerate(times)]
    return Plan(partner_shifts, homes, partner_seeds, orders, [rng.randrange(2**32) for _ in orders])


@dataclass
class Accounts:
    base_url: str
    partners: list[tuple[str, str]]  # (id, token)
    customers: list[str]  # tokens
    admin_token: str


@dataclass
class ChaosRecord:
    at_sim: float
    open_order_ids: list[str]
    flushed: bool = True
    error: str = ""


@dataclass
class WorldResult:
    """Everything one strategy's day observed on the client side."""

    orders: list[PlacedOrder]
    offers: list[OfferSeen]
    jobs: list[JobRecord]
    partners: list[PartnerRecord]
    offline_spans: dict[str, list[tuple[float, float]]]  # partner id -> [(from_sim, to_sim)] without a socket
    ping_rejects: Counter[str]
    status_errors: Counter[str]
    chaos: ChaosRecord | None
    clock_wall0: float
    scale: float
    ended_sim: float


class World:
    """The shared state of one simulated day."""

    def __init__(self, scenario: Scenario, plan: Plan, accounts: Accounts, area: Area, timezone: str,
                 http: aiohttp.ClientSession, *, strategy: str) -> None:
        self.scenario = scenario
        self.plan = plan
        # This run's copy: the plan is shared by every strategy and must stay as the seed made it.
        self.orders = [dataclasses.replace(o) for o in plan.orders]
        self.accounts = accounts
        self.area = area
        self.zone = ZoneInfo(timezone)
        self.http = http
        self.strategy = strategy
        self.clock = Clock(scenario.scale)
        self.offers: list[OfferSeen] = []
        self.jobs: list[JobRecord] = []
        self.accepted: dict[str, float] = {}  # order id -> simulated time the accept was acked
        self.ping_rejects: Counter[str] = Counter()
        self.status_errors: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.packages: list[dict[str, Any]] = []
        self.chaos: ChaosRecord | None = None
        self.partners: list[SimPartner] = []
        self.in_flight = 0
        self.changed = asyncio.Event()  # an order was placed or assigned

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("simulated task failed: %r", task.exception())

    @property
    def base_url(self) -> str:
        return self.accounts.base_url

    # --- customers -------------------------------------------------------------------------------

    async def customers(self) -> None:
        """Place every planned order at its time, each in its own task (a slow answer delays nobody)."""
        async with self.http.get(self.base_url + "/api/packages?limit=100") as resp:
            self.packages = [p for p in (await resp.json())["items"] if int(p.get("capacity") or 0) > 0]
        if not self.packages:
            raise RuntimeError("the app has no packages to order")
        for order, seed in zip(self.orders, self.plan.order_seeds, strict=True):
            await self.clock.until(order.due_sim)
            self.spawn(self._place(order, random.Random(seed)))

    async def _place(self, order: PlacedOrder, rng: random.Random) -> None:
        package = rng.choice(self.packages)
        token = self.accounts.customers[order.index % len(self.accounts.customers)]
        body = {"package_id": package["id"], "event_date": datetime.now(self.zone).date().isoformat(),
                "address": {"line1": f"{order.index + 1} Simulation Road", "city": "Simulated",
                            "postal_code": "560001", "lat": order.lat, "lng": order.lng},
                "guests": max(1, min(int(package["capacity"]), rng.randint(10, 60))), "notes": "",
                "payment_option": "cash"}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"sim-{uuid.uuid4().hex}"}
        self.in_flight += 1
        try:
            for attempt in range(3):  # the same key: a retry cannot create a second order
                try:
                    async with self.http.post(self.base_url + "/api/orders", json=body, headers=headers) as resp:
                        data = await resp.json(content_type=None)
                        if resp.status in (200, 201):
                            order.order_id = str(data["id"])
                            order.placed_sim = self.clock.now()
                            return
                        code = (data or {}).get("error", {}).get("code") if isinstance(data, dict) else None
                        order.error = f"{resp.status} {code or ''}".strip()
                        if resp.status < 500:
                            return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    order.error = type(exc).__name__
                await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            self.in_flight -= 1
            self.changed.set()

    # --- chaos -----------------------------------------------------------------------------------

    async def flush_redis_at(self, sim_t: float, redis_url: str) -> None:
        """FLUSHALL the run's own Redis at `sim_t`; remember the orders that had no partner then."""
        from redis.asyncio import Redis

        await self.clock.until(sim_t)
        open_ids = [o.order_id for o in self.orders if o.order_id and o.order_id not in self.accepted]
        self.chaos = ChaosRecord(self.clock.now(), open_ids)
        client = Redis.from_url(redis_url)
        try:
            await client.flushall()
            logger.warning("%s: Redis flushed at %s with %d orders waiting for a partner", self.strategy,
                           self.scenario.clock_label(self.chaos.at_sim), len(open_ids))
        except Exception as exc:
            self.chaos.flushed = False
            self.chaos.error = f"{type(exc).__name__}: {exc}"
        finally:
            await client.aclose()

    # --- the day ---------------------------------------------------------------------------------

    def all_assigned(self) -> bool:
        placed = [o for o in self.orders if o.order_id]
        return self.in_flight == 0 and all(o.order_id in self.accepted for o in placed)

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            placed = sum(1 for o in self.orders if o.order_id)
            on_duty = sum(1 for p in self.partners if p.online)
            busy = sum(1 for p in self.partners if p.job is not None)
            logger.info("%s %s: %d placed, %d assigned, %d on duty, %d on a job, %d offers seen",
                        self.strategy, self.scenario.clock_label(self.clock.now()), placed, len(self.accepted),
                        on_duty, busy, len(self.offers))

    async def run(self, *, chaos_redis_url: str | None = None) -> WorldResult:
        """Run the day and the drain; return what was observed."""
        s = self.scenario
        day_end = s.day_s
        drain_end = day_end + s.day.drain_min * 60
        self.partners = [
            SimPartner(self, i, pid, token, self.plan.partner_shifts[i], self.plan.partner_homes[i],
                       random.Random(self.plan.partner_seeds[i]))
            for i, (pid, token) in enumerate(self.accounts.partners)]
        partner_tasks = [asyncio.create_task(p.live(day_end, drain_end), name=f"sim-partner-{p.index}")
                         for p in self.partners]
        customers = asyncio.create_task(self.customers(), name="sim-customers")
        progress = asyncio.create_task(self.progress(), name="sim-progress")
        chaos = (asyncio.create_task(self.flush_redis_at(day_end / 2, chaos_redis_url), name="sim-chaos")
                 if chaos_redis_url else None)
        try:
            await customers
            await self.clock.until(day_end)
            # The drain: no new orders; partners whose shift ends with the day stay, so orders still
            # waiting get their chance. It ends early once every placed order has a partner.
            while self.clock.now() < drain_end and not self.all_assigned():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout((drain_end - self.clock.now()) / s.scale):
                        await self.changed.wait()
        finally:
            ended = self.clock.now()
            for task in (progress, customers, *partner_tasks, *([chaos] if chaos else [])):
                task.cancel()
            await asyncio.gather(progress, customers, *partner_tasks, *([chaos] if chaos else []),
                                 return_exceptions=True)
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.gather(*(p.close() for p in self.partners), return_exceptions=True)
        return WorldResult(
            orders=self.orders, offers=self.offers, jobs=self.jobs,
            partners=[p.record(ended) for p in self.partners],
            offline_spans={p.partner_id: p.offline_spans(ended) for p in self.partners},
            ping_rejects=self.ping_rejects, status_errors=self.status_errors, chaos=self.chaos,
            clock_wall0=self.clock.wall0, scale=s.scale, ended_sim=ended)


class SimPartner:
    """One simulated phone: a shift on duty, pings, offers answered, jobs driven over REST."""

    def __init__(self, world: World, index: int, partner_id: str, token: str, shift: ShiftSpec,
                 home: tuple[float, float], rng: random.Random) -> None:
        self.world = world
        self.index = index
        self.partner_id = partner_id
        self.token = token
        self.shift = shift
        self.rng = rng
        self.lat, self.lng = home
        self.leg: tuple[float, float, float, float, float, float] | None = None  # from, to, depart, arrive
        self.rep_lat, self.rep_lng = home
        self.rep_acc = FIX_ACCURACY_M
        self.rep_real = 0.0
        self.last_ts = 0
        self.sock: LeanSocket | None = None
        self.online = False  # wants to be on duty (between going online and a drop or the shift's end)
        self.shift_over = False
        self.job: str | None = None
        self.job_done = asyncio.Event()
        self.job_done.set()
        self.offers: dict[str, OfferSeen] = {}
        self.jobs = 0
        self.disconnects = 0
        self._duty_from: float | None = None
        self.on_duty_s = 0.0
        self._spans: list[tuple[float, float]] = []
        self._offline_from: float | None = 0.0
        self._lock = asyncio.Lock()  # one socket transition (connect / drop) at a time

    # --- position --------------------------------------------------------------------------------

    def position(self) -> tuple[float, float]:
        """The simulated position now (moving along the current leg, if any)."""
        if self.leg is not None:
            lat0, lng0, lat1, lng1, depart, arrive = self.leg
            now = self.world.clock.now()
            if now >= arrive:
                self.lat, self.lng, self.leg = lat1, lng1, None
            else:
                f = max(0.0, (now - depart) / (arrive - depart))
                return lat0 + (lat1 - lat0) * f, lng0 + (lng1 - lng0) * f
        return self.lat, self.lng

    def _next_fix(self, now_real: float) -> tuple[float, float, float]:
        """The next fix (lat, lng, accuracy): the simulated position, with an accuracy radius wide
        enough for the server to accept the jump; beyond the widest radius, as far as it allows."""
        lat, lng = self.position()
        if not self.rep_real:
            return lat, lng, FIX_ACCURACY_M
        gap = haversine_m(self.rep_lat, self.rep_lng, lat, lng)
        base = NOISE_M + self.rep_acc + PLAUSIBLE_MPS * max(0.0, now_real - self.rep_real)
        if gap <= base + FIX_ACCURACY_M:
            return lat, lng, FIX_ACCURACY_M
        if gap <= base + MAX_ACCURACY_M:
            return lat, lng, gap - base
        f = (base + MAX_ACCURACY_M) / gap
        return self.rep_lat + (lat - self.rep_lat) * f, self.rep_lng + (lng - self.rep_lng) * f, MAX_ACCURACY_M

    # --- the socket ------------------------------------------------------------------------------

    async def call(self, event: str, data: Any) -> dict[str, Any] | None:
        sock = self.sock
        if sock is None or not sock.connected:
            return None
        try:
            ack = await sock.call(event, data, timeout=CALL_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            return None
        return ack if isinstance(ack, dict) else None

    async def ping(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        ts = int(time.time() * 1000)
        if ts - self.last_ts < 1050:  # the server accepts one fix a second
            return
        lat, lng, accuracy = self._next_fix(loop_now)
        ack = await self.call("location", {"lat": lat, "lng": lng, "accuracy": round(accuracy, 1), "ts": ts})
        if ack is None:
            return
        if ack.get("ok") and ack.get("accepted"):
            self.rep_lat, self.rep_lng, self.rep_acc = lat, lng, round(accuracy, 1)
            self.rep_real, self.last_ts = loop_now, ts
        else:
            codes = [r.get("code") for r in ack.get("rejected") or []] or [(ack.get("error") or {}).get("code")]
            self.world.ping_rejects.update(str(c) for c in codes)

    async def ping_loop(self) -> None:
        interval = self.world.scenario.ping_real_s
        while True:
            await asyncio.sleep(interval * self.rng.uniform(0.95, 1.1))
            if self.online and (self.sock is None or not self.sock.connected) and not self._lock.locked():
                # The server closed the socket (not one of our drops): come back like a phone would.
                self.world.spawn(self.connect())
                continue
            await self.ping()

    async def connect(self) -> None:
        """Connect, go on duty, and send a fix at once; retries until connected or cancelled."""
        async with self._lock:
            if self.shift_over or (self.sock is not None and self.sock.connected):
                return  # a reconnect asked for twice, or after the shift
            while True:
                if self.sock is not None:
                    with contextlib.suppress(Exception):
                        await self.sock.close()
                sock = LeanSocket()
                sock.on("offer", self._on_offer)
                sock.on("offer_revoked", self._on_revoked)
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        await sock.connect(self.world.base_url, {"token": self.token})
                except (Refused, ConnectionError, OSError, TimeoutError) as exc:
                    logger.debug("partner %d could not connect: %s", self.index, exc)
                    await asyncio.sleep(RECONNECT_PAUSE_S)
                    continue
                self.sock = sock
                self.online = True
                self._mark_online()
                await self.call("availability", {"online": True})
                await self.ping()
                return

    async def drop(self) -> None:
        """Lose the connection (the socket closes; the server learns at once)."""
        async with self._lock:
            self.online = False
            self.disconnects += 1
            self._mark_offline()
            if self.sock is not None:
                with contextlib.suppress(Exception):
                    await self.sock.close()

    async def off_duty(self) -> None:
        async with self._lock:
            self.shift_over = True
            await self.call("availability", {"online": False})
            self.online = False
            self._mark_offline()
            if self.sock is not None:
                with contextlib.suppress(Exception):
                    await self.sock.close()

    def _mark_online(self) -> None:
        now = self.world.clock.now()
        if self._offline_from is not None:
            self._spans.append((self._offline_from, now))
            self._offline_from = None
        self._duty_from = now

    def _mark_offline(self) -> None:
        now = self.world.clock.now()
        if self._duty_from is not None:
            self.on_duty_s += now - self._duty_from
            self._duty_from = None
        if self._offline_from is None:
            self._offline_from = now

    def offline_spans(self, end: float) -> list[tuple[float, float]]:
        spans = list(self._spans)
        if self._offline_from is not None:
            spans.append((self._offline_from, end))
        return spans

    def record(self, end: float) -> PartnerRecord:
        on_duty = self.on_duty_s + (end - self._duty_from if self._duty_from is not None else 0.0)
        return PartnerRecord(self.partner_id, self.shift.label, jobs=self.jobs, disconnects=self.disconnects,
                             on_duty_sim_s=on_duty)

    async def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(Exception):
                await self.sock.close()

    # --- the shift -------------------------------------------------------------------------------

    def _drop_times(self, start: float, end: float) -> list[float]:
        rate = self.world.scenario.behaviour.disconnects.per_partner_hour / 3600
        out: list[float] = []
        t = start
        while rate > 0:
            t += self.rng.expovariate(rate)
            if t >= end:
                break
            out.append(t)
        return out

    async def live(self, day_end: float, drain_end: float) -> None:
        """The partner's day: come on duty at the shift's start, drop now and then, leave at its end."""
        s, clock = self.world.scenario, self.world.clock
        jitter = s.partners.shift_jitter_min * 60
        start = s.at(self.shift.start) + self.rng.uniform(0, jitter)
        end = s.at(self.shift.end)
        # The last shift of the day stays through the drain; others leave within the jitter of their end.
        end = drain_end if end >= day_end else end - self.rng.uniform(0, jitter)
        offline = s.behaviour.disconnects.offline_min
        drops = self._drop_times(start, end)
        await clock.until(start)
        await self.connect()
        pinger = asyncio.create_task(self.ping_loop(), name=f"sim-ping-{self.index}")
        try:
            for at in drops:
                await clock.until(at)
                await self.drop()
                await clock.sleep(self.rng.uniform(*offline) * 60)
                if clock.now() >= end:
                    break
                await self.connect()
            await clock.until(end)
            await self.job_done.wait()  # a partner finishes the job in hand before going home
            await self.off_duty()
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    # --- offers and jobs -------------------------------------------------------------------------

    def _on_offer(self, data: Any) -> None:
        if not isinstance(data, dict) or "order_id" not in data:
            return
        seen = OfferSeen(str(data["order_id"]), self.partner_id, self.world.clock.now(),
                         float(data.get("distance_m") or 0.0))
        self.world.offers.append(seen)
        self.offers[seen.order_id] = seen
        self.world.spawn(self._answer(seen, data))

    def _on_revoked(self, data: Any) -> None:
        if isinstance(data, dict):
            seen = self.offers.get(str(data.get("order_id")))
            if seen is not None and not seen.revoked:
                seen.revoked = str(data.get("reason") or "revoked")

    def _reply_delay_s(self) -> float:
        d = self.world.scenario.behaviour.reply_delay
        drawn = d.median_s * math.exp(self.rng.gauss(0.0, d.sigma)) if d.sigma > 0 else d.median_s
        return min(d.max_s, max(d.min_s, drawn))

    async def _answer(self, seen: OfferSeen, offer: dict[str, Any]) -> None:
        b = self.world.scenario.behaviour
        if self.job is not None:
            seen.outcome = "busy"
            return
        if self.rng.random() < b.accept_probability:
            seen.decision = "accept"
        elif self.rng.random() < b.ignore_share:
            seen.decision = seen.outcome = "ignore"
            return
        else:
            seen.decision = "decline"
        await self.world.clock.sleep(self._reply_delay_s())
        if seen.revoked:
            # The phone's countdown ran out, or someone else took it: nothing to answer.
            seen.outcome = f"revoked_{seen.revoked}"
            return
        if self.sock is None or not self.sock.connected:
            seen.outcome = "offline"
            return
        accept = seen.decision == "accept"
        if accept and self.job is not None:
            seen.outcome = "busy"
            return
        if accept:
            self.job = seen.order_id  # reserved while the reply is on its way
            self.job_done.clear()
        ack = await self.call("offer_reply", {"order_id": seen.order_id, "accept": accept})
        if ack is None and accept and await self._job_is_mine(seen.order_id):
            # The ack was lost (a push is a hint, not a record): like the phone app, re-read the truth.
            seen.outcome = "assigned"
        elif ack is None:
            seen.outcome = "no_ack"
        elif ack.get("ok"):
            seen.outcome = "assigned" if accept else "declined"
        else:
            seen.outcome = str((ack.get("error") or {}).get("code") or "refused")
        if not accept:
            return
        if seen.outcome != "assigned":
            self._free()
            return
        self.world.accepted[seen.order_id] = self.world.clock.now()
        self.world.changed.set()
        # The offer's pickup is the venue snapped to a ~1 km grid: drive to the venue itself, which the
        # job carries once it is ours ("arrived" is refused farther than a few hundred metres away).
        pickup = await self._venue(seen.order_id) or offer.get("pickup") or {}
        self.world.spawn(self._do_job(seen.order_id, float(pickup["lat"]), float(pickup["lng"])))

    async def _venue(self, order_id: str) -> dict[str, float] | None:
        """The exact venue of an order assigned to this partner."""
        for item in await self._my_jobs():
            address = item.get("address") or {}
            if str(item.get("id")) == order_id and "lat" in address and "lng" in address:
                return {"lat": float(address["lat"]), "lng": float(address["lng"])}
        return None

    async def _job_is_mine(self, order_id: str) -> bool:
        """Whether the server has the order assigned to this partner."""
        return any(str(item.get("id")) == order_id for item in await self._my_jobs())

    async def _my_jobs(self) -> list[dict[str, Any]]:
        """`GET /api/partner/orders/my?status=assigned`; empty when it never answers."""
        code, body = await self._api("GET", "/api/partner/orders/my?status=assigned&limit=100", "my jobs")
        return list(body.get("items") or []) if code == 200 else []

    async def _api(self, method: str, path: str, label: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """One REST call as the partner app makes it: a 5xx or a lost connection says nothing about
        the job, so it is retried with a growing pause for STATUS_RETRY_FOR_S real seconds. Returns
        the first answer below 500 (status, JSON body), or (0, {}) when none came."""
        deadline = asyncio.get_running_loop().time() + STATUS_RETRY_FOR_S
        pause = 0.25
        while True:
            try:
                async with self.world.http.request(method, f"{self.world.base_url}{path}", json=body,
                                                   headers={"Authorization": f"Bearer {self.token}"}) as resp:
                    if resp.status < 500:
                        answer = await resp.json(content_type=None)
                        return resp.status, answer if isinstance(answer, dict) else {}
                    self.world.status_errors[f"{label}: {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.world.status_errors[f"{label}: {type(exc).__name__}"] += 1
            if asyncio.get_running_loop().time() + pause > deadline:
                self.world.status_errors[f"{label}: gave up"] += 1
                return 0, {}
            await asyncio.sleep(pause)
            pause = min(pause * 2, STATUS_RETRY_PAUSE_MAX_S)

    def _free(self) -> None:
        self.job = None
        self.job_done.set()

    async def _do_job(self, order_id: str, lat: float, lng: float) -> None:
        """Drive to the pickup, set up, and complete, moving the order through its states over REST."""
        s, clock = self.world.scenario, self.world.clock
        try:
            here = self.position()
            distance = haversine_m(here[0], here[1], lat, lng)
            travel_s = distance * s.partners.road_factor / (s.partners.speed_kmh / 3.6)
            now = clock.now()
            self.jobs += 1  # fairness counts jobs given (a job still running at the end counts too)
            self.world.jobs.append(JobRecord(order_id, self.partner_id, now, distance, travel_s))
            if not await self._status(order_id, "en_route"):
                return
            self.leg = (here[0], here[1], lat, lng, now, now + travel_s)
            await clock.sleep(travel_s)
            await self._caught_up()  # "arrived" is refused until the server has them at the venue
            if not await self._status(order_id, "arrived"):
                return
            await clock.sleep(s.orders.setup_min * 60)
            if not await self._status(order_id, "setup_complete"):
                return
            await self._caught_up()
            await self._status(order_id, "completed")
        finally:
            self._free()

    async def _caught_up(self) -> None:
        """Wait (bounded) until the server has the partner where the simulation has it."""
        deadline = asyncio.get_running_loop().time() + CATCH_UP_LIMIT_S
        while asyncio.get_running_loop().time() < deadline:
            lat, lng = self.position()
            if haversine_m(self.rep_lat, self.rep_lng, lat, lng) <= CAUGHT_UP_M:
                return
            await asyncio.sleep(0.2)

    async def _status(self, order_id: str, status: str) -> bool:
        """Move the job on, as the partner app does (retried, see `_api`). A 409 saying the order is
        already there is an earlier try that committed before its answer was lost; any other 4xx
        is final."""
        code, answer = await self._api("PUT", f"/api/partner/orders/{order_id}/status", status, {"status": status})
        if 0 < code < 400:
            return True
        if code == 409 and ((answer.get("error") or {}).get("details") or {}).get("status") == status:
            return True
        if code:
            self.world.status_errors[f"{status}: {code}"] += 1
        return False


def circle_geojson(name: str, lat: float, lng: float, radius_m: float, timezone: str,
                   vertices: int = 64) -> dict[str, Any]:
    """A service area for a custom circular city (the app reads it via PARTYPILOT_SERVICE_AREAS_FILE)."""
    ring = [offset(lat, lng, radius_m, 2 * math.pi * k / vertices)[::-1] for k in range(vertices)]
    ring.append(ring[0])
    return {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        "properties": {"name": name, "city": name, "country": "XX", "currency": "INR", "timezone": timezone}}]}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
