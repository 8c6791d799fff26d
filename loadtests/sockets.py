"""Simulated Socket.IO users for the bench, many per generator process.

Partners sending pings (`ping_worker`) use `loadtests.wsclient.LeanSocket`: they are the bulk of
the load, and the generators share the machine's cores with the server, so each ping must cost
the generator as little CPU as possible. The few or idle users (watchers, offer listeners, held
sockets) use `socketio.AsyncClient`. Every client uses the websocket transport; the AsyncClients
share one aiohttp session per process (a session per client would cost more memory than the
client itself), LeanSockets need none. The functions named `*_worker` run in generator processes
started by `harness.WorkerPool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
import orjson
import socketio

from loadtests.harness import WorkerControl
from loadtests.wsclient import CONNECT_CONCURRENCY, LeanSocket, LeanSockets

ClientT = TypeVar("ClientT")
# A moving partner: about 8 m between consecutive fixes (walking-to-cycling pace at 1 fix/s).
STEP_DEG = 0.00007
LIVE_INTERVAL_S = 1.02


def now_ms() -> int:
    return int(time.time() * 1000)


class OrjsonCodec:
    """orjson for python-socketio: the same codec as the app's, for clients and baselines."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


Setup = Callable[[socketio.AsyncClient, int], None]


class Clients:
    """A batch of connected clients sharing one HTTP session; `close()` disconnects them all."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.clients: list[socketio.AsyncClient | None] = []
        self.failures: Counter[str] = Counter()

    async def connect(self, url: str, tokens: list[str], setup: Setup | None = None,
                      concurrency: int = CONNECT_CONCURRENCY, connect_timeout: float = 20.0) -> None:
        """Connect one client per token (None in `clients` where the connection failed)."""
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        gate = asyncio.Semaphore(concurrency)
        self.clients = [None] * len(tokens)

        async def one(index: int, token: str) -> None:
            client = socketio.AsyncClient(reconnection=False, handle_sigint=False, json=OrjsonCodec,
                                          http_session=self.session, request_timeout=connect_timeout)
            if setup is not None:
                setup(client, index)
            async with gate:
                try:
                    await client.connect(url, auth={"token": token}, transports=["websocket"],
                                         wait_timeout=connect_timeout)
                except Exception as exc:
                    self.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    return
            self.clients[index] = client

        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))

    @property
    def connected(self) -> int:
        return sum(1 for c in self.clients if c is not None and c.connected)

    async def close(self) -> None:
        gate = asyncio.Semaphore(256)

        async def one(client: socketio.AsyncClient) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 5)

        await asyncio.gather(*(one(c) for c in self.clients if c is not None))
        if self.session is not None:
            await self.session.close()


def _summary_ms(values: list[float]) -> list[float]:
    """Latencies are returned whole (the bench merges workers before taking percentiles)."""
    return [round(v, 2) for v in values]


# --- partners sending locations ------------------------------------------------------------------

class Pacer:
    """The partners' pauses between fixes, ended on a shared 10 ms tick, and the bench's release signal.

    The generators share the machine's cores with the server, and in this VM a process that sleeps
    and wakes up pays 50 µs of CPU or more per wake-up (measured: 50 µs at a thousand wake-ups a
    second, more when they are rarer), several times what sending a fix costs. With one timer per
    pause, a thousand partners spread over a second wake their process about a thousand times a
    second, once per fix. Here a pause
    ends on the first tick at or after its deadline, and all the pauses ending on one tick share
    one timer, so the process wakes at most once per tick however many partners it drives. Fixes
    leave in small bursts, one per tick, instead of evenly spread: at the bench's rates that is a
    handful of fixes every 10 ms, each at most a tick late. `set()` ends every pause at once
    (and later ones return at once), without a task per pause.
    """

    TICK_S = 0.01

    def __init__(self) -> None:
        self.is_set = False
        self._ticks: dict[int, tuple[asyncio.TimerHandle, list[asyncio.Future[None]]]] = {}

    def set(self) -> None:
        self.is_set = True
        for timer, paused in self._ticks.values():
            timer.cancel()
            _wake(paused)
        self._ticks.clear()

    async def pause_until(self, deadline: float) -> None:
        """Sleep until the first tick at or after `deadline` (a `time.monotonic()` time, to the loop's
        millisecond timer resolution), or until `set()`."""
        if self.is_set:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        tick = math.ceil(deadline / self.TICK_S)
        if tick in self._ticks:
            self._ticks[tick][1].append(future)
        else:
            timer = loop.call_later(tick * self.TICK_S - time.monotonic(), self._end_tick, tick)
            self._ticks[tick] = (timer, [future])
        await future

    def _end_tick(self, tick: int) -> None:
        _wake(self._ticks.pop(tick)[1])


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a partner cancelled in its pause
            future.set_result(None)


async def ping_worker(params: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    """Partners sending `location` fixes, in one of two modes.

    live:   every partner sends one fix a second carrying `ts` = now: the product's real load,
            where the offered rate is the number of partners.
    paced:  every partner sends `rate` fixes a second (below the server's per-socket event limit),
            replaying a buffered track whose fixes are 1 s apart in `ts` starting an hour ago, so
            each one passes the one-fix-per-second rule. With enough partners this offers more
            than the server can take, which measures its capacity (app and baseline alike).
    A partner waits for each acknowledgement before its next fix and never bursts to catch up;
    its pauses end on the `Pacer`'s 10 ms ticks, so the process wakes once per tick, not per fix.
    The partners are LeanSockets (see loadtests.wsclient): the generator shares the cores with the
    server, and the same client drives the app and the baseline, so their ratio stays fair.
    """
    url: str = params["url"]
    partners: list[list[Any]] = params["partners"]  # [partner_id, token, lat, lng]
    mode: str = params["mode"]
    duration: float = params["duration"]
    # Live partners leave 1.02 s between fixes: a phone's timer jitter below 1 s would otherwise
    # trip the server's one-fix-per-second rule, which is not what this measures.
    interval = LIVE_INTERVAL_S if mode == "live" else 1.0 / float(params.get("rate", 8.0))
    event = "location"
    sockets = LeanSockets()
    await sockets.connect(url, [p[1] for p in partners])
    if params.get("online"):
        await _all(sockets.sockets, lambda s, i: s.call("availability", {"online": True}, timeout=5))
    ctl.ready(connected=sockets.connected, failures=dict(sockets.failures))
    await ctl.wait_go()

    ok = 0
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    ok_times: list[float] = []
    last_ts: dict[str, int] = {}
    sent_log: list[tuple[str, int, float, float]] = []
    keep_log = bool(params.get("log_sent"))
    log_ids = set(params.get("log_ids") or ())
    rng = random.Random(ctl.index)
    started = time.monotonic()
    started_wall = time.time()
    stop_at = started + duration
    pacer = Pacer()
    release_task = None
    if params.get("until_released"):
        async def wait_release() -> None:
            await ctl.wait_go()
            pacer.set()

        release_task = asyncio.create_task(wait_release())
    history_start = now_ms() - 3600_000

    async def run(index: int, sock: LeanSocket) -> None:
        nonlocal ok
        pid, _, lat, lng = partners[index]
        heading = rng.uniform(0, 6.283)
        dlat, dlng = STEP_DEG * math.cos(heading), STEP_DEG * math.sin(heading)
        n = 0
        next_at = time.monotonic() + rng.random() * interval  # spread partners over the interval
        await pacer.pause_until(next_at)
        while time.monotonic() < stop_at and sock.connected and not pacer.is_set:
            n += 1
            ts = now_ms() if mode == "live" else history_start + n * 1000
            fix = {"lat": lat + n * dlat, "lng": lng + n * dlng, "accuracy": 8.0, "speed": 8.0, "ts": ts}
            sent = time.perf_counter()
            sent_mono = time.monotonic()
            sent_wall = time.time()
            try:
                ack = await sock.call(event, fix, timeout=15)
            except Exception as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - sent) * 1000)
            if isinstance(ack, dict) and ack.get("ok"):
                ok += 1
                ok_times.append(sent_wall)  # by send time: ack delays cannot pile into the window
                last_ts[pid] = ts
                if keep_log and (not log_ids or pid in log_ids):
                    sent_log.append((pid, ts, fix["lat"], fix["lng"]))
            else:
                code = (ack or {}).get("error", {}).get("code", "bad_ack") if isinstance(ack, dict) else "bad_ack"
                errors[str(code)] += 1
            # Never closer than one interval less a tick to the previous fix, even after a late send
            # (1.01 s live: clear of the server's one-fix-per-second rule). A fix sent on its tick
            # keeps the schedule, so a partner still sends one fix per interval.
            next_at = max(next_at + interval, sent_mono + interval - Pacer.TICK_S, time.monotonic())
            await pacer.pause_until(next_at)

    await asyncio.gather(*(run(i, s) for i, s in enumerate(sockets.sockets) if s is not None))
    elapsed = time.monotonic() - started
    if release_task is not None:
        await release_task
    await sockets.close()
    return {"ok": ok, "errors": dict(errors), "seconds": elapsed, "latencies_ms": _summary_ms(latencies),
            "ok_times": ok_times, "started_at": started_wall, "interval": interval,
            "until": started_wall + min(duration, elapsed),
            "last_ts": last_ts, "sent_log": sent_log}


async def _all(clients: Sequence[ClientT | None], call: Callable[[ClientT, int], Awaitable[Any]]) -> list[Any]:
    """`call(client, index)` for every connected client, 128 at a time; exceptions are returned."""
    gate = asyncio.Semaphore(128)

    async def one(i: int, c: ClientT) -> Any:
        async with gate:
            try:
                return await call(c, i)
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(i, c) for i, c in enumerate(clients) if c is not None))


# --- sockets that only stay connected ------------------------------------------------------------

async def hold_worker(params: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    """Connect the given tokens and hold them idle until released (memory per connection)."""
    clients = Clients()
    started = time.monotonic()
    await clients.connect(params["url"], params["tokens"], concurrency=params.get("concurrency", CONNECT_CONCURRENCY))
    ctl.ready(connected=clients.connected, failures=dict(clients.failures), seconds=time.monotonic() - started)
    await ctl.wait_go()
    still = clients.connected
    await clients.close()
    return {"still_connected": still}


# --- partners waiting for offers -----------------------------------------------------------------

async def offer_listener_worker(params: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    """Partners on duty that record when each `offer` reaches them, and never answer it."""
    offers: list[dict[str, Any]] = []

    def setup(client: socketio.AsyncClient, index: int) -> None:
        pid = params["partners"][index][0]

        async def on_offer(data: Any) -> None:
            offers.append({"partner_id": pid, "order_id": (data or {}).get("order_id"), "recv_ms": time.time() * 1000})

        client.on("offer", on_offer)

    clients = Clients()
    await clients.connect(params["url"], [p[1] for p in params["partners"]], setup=setup)
    acks = await _all(clients.clients, lambda c, i: c.call("availability", {"online": True}, timeout=5))
    ok = sum(1 for a in acks if isinstance(a, dict) and a.get("ok"))
    ctl.ready(connected=clients.connected, online_ok=ok, failures=dict(clients.failures))
    await ctl.wait_go()  # the bench creates its orders here
    await ctl.wait_go()  # ... and releases us once they are done
    await clients.close()
    return {"offers": offers}


# --- admins watching the fleet and customers tracking an order -----------------------------------

async def watcher_worker(params: dict[str, Any], ctl: WorkerControl) -> dict[str, Any]:
    """Admins (`fleet_subscribe`) and customers (`track`) recording what they receive and when."""
    role: str = params["role"]
    sample = set(params.get("sample_ids") or ())
    received: list[list[Any]] = [[] for _ in params["tokens"]]

    def setup(client: socketio.AsyncClient, index: int) -> None:
        if role == "admin":
            async def on_fleet(data: Any) -> None:
                received[index].append(_fleet_record(data, sample))

            client.on("fleet", on_fleet)
        else:
            async def on_location(data: Any) -> None:
                if isinstance(data, dict) and isinstance(data.get("ts"), int | float):
                    received[index].append((now_ms(), int(data["ts"]), data.get("order_id")))

            client.on("partner_location", on_location)

    clients = Clients()
    await clients.connect(params["url"], params["tokens"], setup=setup)
    if role == "admin":
        acks = await _all(clients.clients, lambda c, i: c.call("fleet_subscribe", {}, timeout=20))
    else:
        acks = await _all(clients.clients, lambda c, i: c.call("track", {"order_id": params["orders"][i]}, timeout=20))
    ok = sum(1 for a in acks if isinstance(a, dict) and a.get("ok"))
    errors = Counter(str(a.get("error", {}).get("code") if isinstance(a, dict) else type(a).__name__)
                     for a in acks if not (isinstance(a, dict) and a.get("ok")))
    ctl.ready(connected=clients.connected, subscribed=ok, errors=dict(errors), failures=dict(clients.failures))
    await ctl.wait_go()
    for lst in received:
        lst.clear()  # count only what arrives during the measured window
    window_start = now_ms()
    await ctl.wait_go()
    window_end = now_ms()
    await clients.close()
    return {"received": received, "window_ms": [window_start, window_end]}


def _fleet_record(data: Any, sample: set[str]) -> tuple[int, str, list[tuple[str, float, float, int]]]:
    """(received ms, snapshot|delta, [(partner id, lat, lng, last_seen)] for the sampled partners)."""
    recv = now_ms()
    if not isinstance(data, dict):
        return (recv, "?", [])
    rows = [(str(p.get("id")), float(p.get("lat") or 0), float(p.get("lng") or 0), int(p.get("last_seen") or 0))
            for p in data.get("partners") or [] if isinstance(p, dict) and (not sample or p.get("id") in sample)]
    return (recv, str(data.get("type")), rows)
