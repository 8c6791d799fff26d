"""The bench scenarios. Each starts the app processes it needs on a fresh database, drives them
from generator processes, and fills a ScenarioResult with figures and honest notes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson

from core.contracts import FLEET_GEO, FLEET_ONLINE, FLEET_SEARCH, FLEET_SEEN, PARTNER_STATE
from core.jsonutil import parse_iso
from core.settings import Settings
from core.stores import make_mongo_client, make_redis
from loadtests import fixtures
from loadtests.harness import BENCH_DB, BENCH_SECRET, Server, Stack, WorkerPool, cpu_seconds, rss_kib, split
from loadtests.report import Figure, ScenarioResult, percentile
from loadtests.sockets import LIVE_INTERVAL_S

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Context:
    """What every scenario shares: the stack, the run's size and what to clean up afterwards."""

    stack: Stack
    quick: bool = False
    generators: int = 0
    # App processes for the scenarios that show the deployment shape (ingest's second figure,
    # fan-out): one per core by default, like the compose file's replicas.
    processes: int = 2
    servers: list[Server] = field(default_factory=list)
    settings: Settings = field(default_factory=lambda: fixtures.bench_settings(BENCH_SECRET))
    area: fixtures.Area = field(default_factory=fixtures.load_area)
    _db_seq: int = 0

    def size(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    def gens(self, default: int) -> int:
        return self.generators or default

    def new_db(self, name: str) -> str:
        """A fresh database per scenario, so one scenario's partners never match in another."""
        self._db_seq += 1
        return f"{BENCH_DB}_{self._db_seq}_{name}"

    def start_app(self, db_name: str, **env: str) -> Server:
        server = self.stack.start_app(PARTYPILOT_MONGODB_DB=db_name, **env)
        self.servers.append(server)
        return server

    def start_baseline(self, name: str, kind: str, *args: str) -> Server:
        server = self.stack.start_baseline(name, kind, *args)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
        self.stack.stop_server(server)

    def cleanup(self) -> None:
        for server in list(self.servers):
            self.stop(server)
        run(flush_redis(self.stack.redis_url))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def flush_redis(url: str) -> None:
    redis = make_redis(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def with_db(uri: str, db_name: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    client = make_mongo_client(uri)
    try:
        return await fn(client[db_name])
    finally:
        await client.close()


def get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - our own loopback server
        return orjson.loads(resp.read())


def has_route(server: Server, method: str, path: str) -> bool:
    """Whether the app's OpenAPI document declares `method path` (routes land while we build)."""
    spec = get_json(server.url + "/api/openapi.json")
    paths = spec.get("paths", {})
    for candidate in (path, "/api" + path, path.removeprefix("/api")):
        if method.lower() in paths.get(candidate, {}):
            return True
    return False


def pool(fn: str, params: list[dict[str, Any]], phases: int = 1) -> WorkerPool:
    return WorkerPool(f"loadtests.{fn}", params, phases=phases)


def _ms(values: list[float], pct: float) -> float | None:
    return percentile(values, pct)


def _progress(text: str) -> None:
    import sys

    sys.stderr.write(f"   {text}\n")
    sys.stderr.flush()


# --- 1. catalog ---------------------------------------------------------------------------------

def catalog(ctx: Context, result: ScenarioResult) -> None:
    db = ctx.new_db("catalog")
    count = run(with_db(ctx.stack.mongodb_uri, db, lambda d: fixtures.ensure_catalog(d, ctx.settings)))
    app = ctx.start_app(db)
    path = "/api/packages?limit=100"
    body = urllib.request.urlopen(app.url + path, timeout=10).read()  # noqa: S310
    items = len(orjson.loads(body).get("items", []))
    body_file = ctx.stack.root / "catalog.json"
    body_file.write_bytes(body)
    baseline = ctx.start_baseline("catalog-baseline", "catalog", "--body-file", str(body_file))
    duration = ctx.size(8.0, 3.0)
    generators, connections = ctx.gens(2), 16

    def measure(server: Server) -> tuple[float, dict[str, Any]]:
        params = [{"url": server.url + path, "connections": connections, "duration": duration}] * generators
        with pool("httpload:closed_loop_worker", params) as workers:
            workers.wait_ready()
            workers.next_phase()
            out = workers.collect(timeout=duration + 60)
        ok = sum(o["ok"] for o in out)
        seconds = max(o["seconds"] for o in out)
        statuses: dict[str, int] = {}
        for o in out:
            for k, v in o["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        return ok / seconds, {"ok": ok, "errors": sum(o["errors"] for o in out), "seconds": round(seconds, 2),
                              "statuses": statuses}

    _progress("catalog: app")
    app_rate, app_info = measure(app)
    _progress("catalog: baseline")
    base_rate, base_info = measure(baseline)
    result.add(Figure("GET /api/packages", app_rate, "req/s", ">=", 1500, baseline=base_rate,
                      note=f"{items} of {count} packages per response ({len(body):,} bytes); baseline: aiohttp "
                           "returning the same bytes from memory"))
    result.details = {"app": app_info, "baseline": base_info, "body_bytes": len(body), "generators": generators,
                      "connections_per_generator": connections}
    if app_info["errors"]:
        result.notes.append(f"app answered {app_info['errors']} requests with an error: {app_info['statuses']}")


# --- 2. orders ----------------------------------------------------------------------------------

def orders(ctx: Context, result: ScenarioResult) -> None:
    db = ctx.new_db("orders")
    customers = run(_seed_orders_db(ctx, db, customers=50))
    app = ctx.start_app(db)
    if not has_route(app, "POST", "/orders"):
        result.skipped = "POST /api/orders is not in /api/openapi.json yet"
        return
    packages = get_json(app.url + "/api/packages?limit=100")["items"]
    if not packages:
        result.skipped = "the catalog is empty"
        return
    rate, duration = 50.0, ctx.size(10.0, 4.0)
    rng = random.Random(2)
    points = [list(ctx.area.random_point(rng)) for _ in range(200)]
    params = {"url": app.url, "tokens": [fixtures.mint(ctx.settings, c, "customer") for c in customers],
              "packages": [{"id": p["id"], "capacity": p.get("capacity")} for p in packages], "points": points,
              "rate": rate, "duration": duration, "event_date": _future_date()}
    with pool("httpload:orders_worker", [params]) as workers:
        workers.wait_ready()
        workers.next_phase()
        out = workers.collect(timeout=duration + 60)[0]
    latencies = out["latencies_ms"]
    created = out["statuses"].get("201", 0)
    result.add(Figure("p50 latency", _ms(latencies, 50), "ms"))
    result.add(Figure("p95 latency", _ms(latencies, 95), "ms"))
    result.add(Figure("p99 latency", _ms(latencies, 99), "ms", "<=", 100))
    result.add(Figure("orders created (201)", created, "orders", ">=", len(latencies),
                      note=f"{len(latencies)} requests at {rate:.0f}/s for {duration:.0f} s, each with a new "
                           "Idempotency-Key, a customer token, a catalog package and an address inside the service "
                           "area; latency from each request's scheduled start"))
    result.details = {"statuses": out["statuses"], "error_sample": out["error_sample"], "requests": len(latencies)}
    if out["error_sample"]:
        result.notes.append("first refusal: " + out["error_sample"][0][:200])


async def _seed_orders_db(ctx: Context, db_name: str, customers: int) -> list[str]:
    async def seed(db: Any) -> list[str]:
        await fixtures.ensure_catalog(db, ctx.settings)
        return await fixtures.create_users(db, "customer", customers, "customer")

    return await with_db(ctx.stack.mongodb_uri, db_name, seed)


def _future_date() -> str:
    """Today in the demo area's time zone: an order for today is dispatched at once ("as soon as
    possible"); a later date would wait for its arrival window (api/windows.py)."""
    return datetime.now(ZoneInfo("Asia/Kolkata")).date().isoformat()


# --- 3. ingest ----------------------------------------------------------------------------------

def _partner_rows(ctx: Context, ids: list[str], seed: int, within_m: float | None = None) -> list[list[Any]]:
    rng = random.Random(seed)
    rows = []
    for pid in ids:
        lat, lng = ctx.area.random_point(rng, within_m)
        rows.append([pid, fixtures.mint(ctx.settings, pid, "partner"), lat, lng])
    return rows


@dataclass
class PingRun:
    """What the generators reported, and the CPU the servers used while they pinged."""

    out: list[dict[str, Any]]
    server_cpu_s: float


def _ping_pool(servers: list[Server], rows: list[list[Any]], generators: int, mode: str, duration: float,
               **extra: Any) -> PingRun:
    """Ping from `generators` processes; generator i talks to servers[i % len(servers)]."""
    generators = max(generators, len(servers))
    chunks = split(len(rows), generators)
    params, start = [], 0
    for i, n in enumerate(chunks):
        params.append({"url": servers[i % len(servers)].url, "partners": rows[start:start + n], "mode": mode,
                       "duration": duration, **extra})
        start += n
    pids = [s.pid for s in servers]
    with pool("sockets:ping_worker", params) as workers:
        ready = workers.wait_ready(timeout=180)
        connected = sum(r["connected"] for r in ready)
        if connected < len(rows):
            failures = [r["failures"] for r in ready if r["failures"]]
            raise RuntimeError(f"only {connected} of {len(rows)} partner sockets connected: {failures[:1]}")
        cpu_before = cpu_seconds(pids)
        workers.next_phase()
        out = workers.collect(timeout=duration + 120)
        return PingRun(out, cpu_seconds(pids) - cpu_before)


def _merge_pings(out: list[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for o in out:
        for k, v in o["errors"].items():
            errors[k] = errors.get(k, 0) + v
    latencies = [v for o in out for v in o["latencies_ms"]]
    last_ts: dict[str, int] = {}
    for o in out:
        last_ts.update(o["last_ts"])
    ok = sum(o["ok"] for o in out)
    seconds = max(o["seconds"] for o in out)
    return {"ok": ok, "rate": steady_rate(out), "seconds": seconds, "errors": errors, "latencies": latencies,
            "last_ts": last_ts}


def steady_rate(out: list[dict[str, Any]]) -> float:
    """Accepted fixes per second, counted by send time, once every partner is sending (after one
    interval of ramp-up) and until the first generator stopped."""
    begin = float(max(o["started_at"] for o in out) + max(o["interval"] for o in out) + 0.5)
    end = float(min(o["until"] for o in out))
    if end - begin < 1.0:  # too short for a window: fall back to the whole run
        return float(sum(o["ok"] for o in out)) / float(max(o["seconds"] for o in out))
    count = sum(1 for o in out for t in o["ok_times"] if begin <= t < end)
    return count / (end - begin)


async def _confirm_in_redis(url: str, last_ts: dict[str, int], since_ms: int) -> dict[str, int]:
    """How many partners' last acknowledged fix is the one Redis holds (state hash ts + indexes)."""
    redis = make_redis(url)
    try:
        ids = list(last_ts)
        matched = 0
        for start in range(0, len(ids), 2000):
            chunk = ids[start:start + 2000]
            pipe = redis.pipeline(transaction=False)
            for pid in chunk:
                pipe.hget(PARTNER_STATE.format(partner_id=pid), "ts")
            for pid, stored in zip(chunk, await pipe.execute(), strict=True):
                if stored is not None and int(float(stored)) == last_ts[pid]:
                    matched += 1
        seen = int(await redis.zcount(FLEET_SEEN, since_ms, "+inf"))
        geo = int(await redis.zcard(FLEET_GEO))
        return {"partners": len(ids), "state_ts_matches": matched, "seen_since_start": seen, "geo_members": geo}
    finally:
        await redis.aclose()


def ingest(ctx: Context, result: ScenarioResult) -> None:
    db = ctx.new_db("ingest")
    paced = ctx.size(2000, 1200)
    per_client = 8.0
    live = ctx.size(6000, 1500)
    processes = ctx.processes
    ids = run(with_db(ctx.stack.mongodb_uri, db, lambda d: fixtures.create_partners(d, max(live, paced), "ingest")))
    rows = _partner_rows(ctx, ids, seed=3)
    apps = [ctx.start_app(db) for _ in range(processes)]
    baselines = [ctx.start_baseline("sio-baseline", "sio") for _ in range(processes)]
    generators = ctx.gens(3)
    duration = ctx.size(10.0, 4.0)
    offered = paced * per_client
    load = (f"{paced} partner sockets in {generators} generator processes offering {offered:,.0f} `location` "
            f"events/s ({per_client:.0f}/s each, under the 10/s per-socket limit; fixes 1 s apart in ts, replayed "
            "from an hour ago so each passes the one-per-second rule); counted: ok acks, which the app sends after "
            "the pipelined Redis write; the generators share the 2 cores with the server")

    _progress(f"ingest: app (one process), {paced} partners offering {per_client:.0f} fixes/s each ({offered:,.0f}/s)")
    since = int(time.time() * 1000)
    app_run = _ping_pool(apps[:1], rows[:paced], generators, "paced", duration, rate=per_client)
    app_sat = _merge_pings(app_run.out)
    app_check = run(_confirm_in_redis(ctx.stack.redis_url, app_sat["last_ts"], since))
    _progress("ingest: baseline (one process), the same clients against a python-socketio server that only acks")
    base_run = _ping_pool(baselines[:1], rows[:paced], generators, "paced", duration, rate=per_client)
    base_sat = _merge_pings(base_run.out)
    result.add(Figure("accepted pings/s (capacity, one process)", app_sat["rate"], "pings/s", ">=", 5000,
                      baseline=base_sat["rate"], ratio_target=0.5, note=load))
    result.add(Figure("ack p99 (capacity run)", _ms(app_sat["latencies"], 99), "ms",
                      baseline=_ms(base_sat["latencies"], 99)))
    result.add(Figure("server CPU per accepted ping", _cpu_per_ping_us(app_run, app_sat), "us",
                      baseline=_cpu_per_ping_us(base_run, base_sat),
                      note="user+system CPU of the server process (/proc/PID/stat) while the generators pinged, "
                           "divided by the pings it acknowledged ok"))
    result.add(Figure("partners whose last ack'd fix is in Redis", app_check["state_ts_matches"], "partners", ">=",
                      len(app_sat["last_ts"]),
                      note=f"state hash ts equals the last acknowledged ts; {app_check['seen_since_start']} "
                           f"partners in FLEET_SEEN since the run began, {app_check['geo_members']} in FLEET_GEO"))
    multi: dict[str, Any] = {}
    if processes > 1:
        _progress(f"ingest: app ({processes} processes sharing Redis), the same load spread over them")
        even = -(-generators // processes) * processes  # the same number of generators per process
        multi_app = _merge_pings(_ping_pool(apps, rows[:paced], even, "paced", duration, rate=per_client).out)
        _progress(f"ingest: baseline ({processes} processes)")
        multi_base = _merge_pings(_ping_pool(baselines, rows[:paced], even, "paced", duration, rate=per_client).out)
        result.add(Figure(f"accepted pings/s (capacity, {processes} processes)", multi_app["rate"], "pings/s",
                          baseline=multi_base["rate"],
                          note=f"as above with {even} generators, generator i connected to process i mod "
                               f"{processes}: the deployment shape (N processes sharing one Redis), minus the proxy"))
        multi = {"app": _public(multi_app), "baseline": _public(multi_base)}

    _progress(f"ingest: app (one process), {live} partners each sending one live fix a second")
    since = int(time.time() * 1000)
    app_live = _merge_pings(_ping_pool(apps[:1], rows[:live], max(generators, 4), "live", duration).out)
    live_check = run(_confirm_in_redis(ctx.stack.redis_url, app_live["last_ts"], since))
    _progress(f"ingest: baseline (one process), {live} partners each sending one fix a second")
    base_live = _merge_pings(_ping_pool(baselines[:1], rows[:live], max(generators, 4), "live", duration).out)
    offered_live = live / LIVE_INTERVAL_S
    result.add(Figure(f"accepted pings/s ({live} partners at 1/s)", app_live["rate"], "pings/s",
                      baseline=base_live["rate"],
                      note=f"offered {offered_live:,.0f}/s (one fix every {LIVE_INTERVAL_S} s, ts = now); refused: "
                           f"{app_live['errors'] or 'none'}; {live_check['state_ts_matches']} of "
                           f"{live_check['partners']} partners' last fix confirmed in Redis; baseline: the same "
                           "sockets and load on the ack-only server"))
    result.add(Figure(f"ack p99 ({live} partners at 1/s)", _ms(app_live["latencies"], 99), "ms",
                      baseline=_ms(base_live["latencies"], 99)))
    result.details = {
        "capacity": {"app": _public(app_sat), "baseline": _public(base_sat), "redis": app_check,
                     "offered_per_s": offered, "server_cpu_s": {"app": round(app_run.server_cpu_s, 2),
                                                                "baseline": round(base_run.server_cpu_s, 2)}},
        "capacity_multi_process": multi,
        "live": {"app": _public(app_live), "baseline": _public(base_live), "redis": live_check,
                 "offered_per_s": offered_live},
    }
    if app_sat["errors"]:
        result.notes.append(f"capacity run, refused or failed pings: {app_sat['errors']}")


def _cpu_per_ping_us(ping_run: PingRun, merged: dict[str, Any]) -> float | None:
    return ping_run.server_cpu_s / merged["ok"] * 1e6 if merged["ok"] else None


def _public(merged: dict[str, Any]) -> dict[str, Any]:
    return {"ok": merged["ok"], "rate": round(merged["rate"], 1), "seconds": round(merged["seconds"], 2),
            "errors": merged["errors"], "ack_p50_ms": _ms(merged["latencies"], 50),
            "ack_p99_ms": _ms(merged["latencies"], 99)}


# --- 4. connections -----------------------------------------------------------------------------

def connections(ctx: Context, result: ScenarioResult) -> None:
    db = ctx.new_db("conn")
    total = ctx.size(10_000, 1_500)
    ids = run(with_db(ctx.stack.mongodb_uri, db, lambda d: fixtures.create_partners(d, total, "conn")))
    tokens = [fixtures.mint(ctx.settings, pid, "partner") for pid in ids]
    generators = ctx.gens(4)

    def measure(server: Server) -> dict[str, Any]:
        # Warm the server first (imports, first socket, allocator pools), then take the baseline RSS.
        _hold(server, tokens[:50], 1)
        time.sleep(1.0)
        before = rss_kib(server.pid)
        chunks = split(total, generators)
        params, start = [], 0
        for n in chunks:
            params.append({"url": server.url, "tokens": tokens[start:start + n]})
            start += n
        with pool("sockets:hold_worker", params) as workers:
            t0 = time.monotonic()
            ready = workers.wait_ready(timeout=300)
            connect_s = time.monotonic() - t0
            connected = sum(r["connected"] for r in ready)
            time.sleep(3.0)  # let buffers settle
            after = rss_kib(server.pid)
            workers.next_phase()
            workers.collect(timeout=120)
        failures = [r["failures"] for r in ready if r["failures"]]
        return {"connected": connected, "rss_before_kib": before, "rss_after_kib": after,
                "per_conn_kib": (after - before) / connected if connected else None,
                "connect_seconds": round(connect_s, 1), "failures": failures[:2]}

    app = ctx.start_app(db)
    _progress(f"connections: {total} partner sockets on the app")
    app_m = measure(app)
    ctx.stop(app)
    baseline = ctx.start_baseline("sio-baseline", "sio")
    _progress(f"connections: {total} sockets on the trivial python-socketio server")
    base_m = measure(baseline)
    result.add(Figure("sockets held by one process", app_m["connected"], "sockets", ">=", total))
    result.add(Figure("memory per connection", app_m["per_conn_kib"], "KiB", "<=", 48,
                      baseline=base_m["per_conn_kib"],
                      note="server VmRSS after all sockets connected minus VmRSS before, divided by the number of "
                           "sockets; baseline: python-socketio + aiohttp + uvloop with no product code"))
    result.add(Figure("connect rate", app_m["connected"] / max(app_m["connect_seconds"], 0.001), "sockets/s",
                      note="authenticated websocket connects, 64 in flight per generator"))
    result.details = {"app": app_m, "baseline": base_m, "generators": generators}


def _hold(server: Server, tokens: list[str], generators: int) -> None:
    with pool("sockets:hold_worker", [{"url": server.url, "tokens": tokens}] * generators) as workers:
        workers.wait_ready(timeout=60)
        workers.next_phase()
        workers.collect(timeout=60)


# --- 5. matching --------------------------------------------------------------------------------

def matching(ctx: Context, result: ScenarioResult) -> None:
    db = ctx.new_db("matching")
    index_size = ctx.size(100_000, 20_000)
    near = 1000
    n_orders = ctx.size(150, 40)
    rate = 10.0
    customers = run(_seed_orders_db(ctx, db, customers=20))
    near_ids = run(with_db(ctx.stack.mongodb_uri, db, lambda d: fixtures.create_partners(d, near, "match")))
    app = ctx.start_app(db)
    if not has_route(app, "POST", "/orders"):
        result.skipped = "POST /api/orders is not in /api/openapi.json yet"
        return
    radius = float(ctx.settings.dispatch_radius_m)
    pickup = (ctx.area.center_lat, ctx.area.center_lng)
    _progress(f"matching: {index_size:,} partners in the fleet index, {near} within {radius / 1000:.0f} km")
    rows = _partner_rows(ctx, near_ids, seed=5)
    rng = random.Random(5)
    for row in rows:  # the near ones: spread inside the radius (keeping 10 % margin)
        row[2], row[3] = fixtures.offset(pickup[0], pickup[1], radius * 0.9 * (rng.random() ** 0.5),
                                         rng.uniform(0, 6.2832))
    fill = run(_fill_fleet(ctx.stack.redis_url, rows, index_size - near, pickup, radius))
    packages = get_json(app.url + "/api/packages?limit=100")["items"]

    listeners = [{"url": app.url, "partners": chunk} for chunk in _chunks(rows, ctx.gens(2))]
    with pool("sockets:offer_listener_worker", listeners, phases=2) as partners:
        ready = partners.wait_ready(timeout=180)
        online = sum(r["online_ok"] for r in ready)
        run(_refresh_seen(ctx.stack.redis_url, rows))
        order_params: dict[str, Any] = {
            "url": app.url, "tokens": [fixtures.mint(ctx.settings, c, "customer") for c in customers],
            "packages": [{"id": p["id"], "capacity": p.get("capacity")} for p in packages],
            "points": [list(fixtures.offset(pickup[0], pickup[1], rng.uniform(0, 300), rng.uniform(0, 6.2832)))
                       for _ in range(n_orders)],
            "rate": rate, "duration": n_orders / rate, "event_date": _future_date()}
        # One warm-up order first (excluded): it fills the engine's partner cache from MongoDB.
        warmup_params = {**order_params, "points": order_params["points"][:1], "rate": 1.0, "duration": 1.0}
        with pool("httpload:orders_worker", [warmup_params]) as warmup_pool:
            warmup_pool.wait_ready()
            warmup_pool.next_phase()
            warm = warmup_pool.collect(timeout=60)[0]
        time.sleep(1.0)
        with pool("httpload:orders_worker", [order_params]) as customers_pool:
            customers_pool.wait_ready()
            customers_pool.next_phase()
            placed = customers_pool.collect(timeout=n_orders / rate + 60)[0]
        partners.next_phase()
        time.sleep(1.0)  # late offers still count (they would show as a long tail)
        partners.next_phase()
        offers = [o for out in partners.collect(timeout=60) for o in out["offers"]]

    created = {o["id"]: _iso_ms(o["created_at"]) for o in placed["created"] if o.get("id") and o.get("created_at")}
    first_offer: dict[str, float] = {}
    for offer in offers:
        oid = offer["order_id"]
        if oid in created:
            first_offer[oid] = min(first_offer.get(oid, float("inf")), offer["recv_ms"])
    socket_lat = [first_offer[oid] - created[oid] for oid in first_offer]
    audit = run(with_db(ctx.stack.mongodb_uri, db, lambda d: _audit_offers(d, list(created))))
    engine_lat = [audit[oid] - created[oid] for oid in audit if oid in created]
    result.add(Figure("order created -> offer on partner socket p50", _ms(socket_lat, 50), "ms"))
    result.add(Figure("order created -> offer on partner socket p99", _ms(socket_lat, 99), "ms", "<=", 50,
                      note=f"{len(socket_lat)} of {len(created)} orders reached a partner socket; from the order's "
                           "created_at (server clock) to the offer event arriving at the listening partner "
                           "(same machine, same clock); orders placed over REST at "
                           f"{rate:.0f}/s within 300 m of one pickup"))
    result.add(Figure("order created -> audit 'offer' p99 (engine side)", _ms(engine_lat, 99), "ms",
                      note="the dispatch_audit offer record's `at`, a cross-check without the socket hop"))
    warm_created = {o["id"]: _iso_ms(o["created_at"]) for o in warm["created"] if o.get("id")}
    warm_lat = [min(o["recv_ms"] for o in offers if o["order_id"] == oid) - t
                for oid, t in warm_created.items() if any(o["order_id"] == oid for o in offers)]
    result.add(Figure("warm-up order (cold caches, excluded above)", warm_lat[0] if warm_lat else None, "ms"))
    result.add(Figure("partners in the fleet index", fill["geo_members"], "partners", ">=", index_size,
                      note=f"{near} within the {radius / 1000:.0f} km radius (approved, on duty via socket "
                           f"availability: {online} ok), the rest 6-60 km away"))
    result.details = {"orders": len(created), "offers_received": len(offers), "fill": fill,
                      "order_statuses": placed["statuses"], "offers_from_audit": len(audit)}


def _chunks(rows: list[T], parts: int) -> list[list[T]]:
    out, start = [], 0
    for n in split(len(rows), parts):
        out.append(rows[start:start + n])
        start += n
    return out


def _iso_ms(text: str) -> float:
    return parse_iso(text).timestamp() * 1000


async def _audit_offers(db: Any, order_ids: list[str]) -> dict[str, float]:
    first: dict[str, float] = {}
    async for doc in db.dispatch_audit.find({"order_id": {"$in": order_ids}, "event": "offer"}):
        at = doc.get("at")
        if isinstance(at, str):
            ms = _iso_ms(at)
            oid = doc["order_id"]
            first[oid] = min(first.get(oid, ms), ms)
    return first


async def _fill_fleet(url: str, near: list[list[Any]], others: int, center: tuple[float, float],
                      radius: float) -> dict[str, Any]:
    """The fleet index as the engine keeps it: GEO, last seen, on duty and a state hash per partner."""
    import uuid

    redis = make_redis(url)
    rng = random.Random(7)
    now = int(time.time() * 1000)
    t0 = time.monotonic()
    try:
        rows: list[tuple[str, float, float]] = [(r[0], r[2], r[3]) for r in near]
        for _ in range(others):
            lat, lng = fixtures.offset(center[0], center[1], rng.uniform(radius * 1.2, 60_000), rng.uniform(0, 6.2832))
            rows.append((uuid.uuid4().hex, lat, lng))
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            pipe = redis.pipeline(transaction=False)
            geo: list[Any] = []
            for pid, lat, lng in chunk:
                geo.extend((lng, lat, pid))
                pipe.hset(PARTNER_STATE.format(partner_id=pid),
                          mapping={"lat": lat, "lng": lng, "ts": now, "seen": now, "online": 1,
                                   "idle_since": now - rng.randrange(0, 3_600_000)})
            pipe.geoadd(FLEET_GEO, geo)
            pipe.geoadd(FLEET_SEARCH, geo)  # on duty with a fresh fix: in the index matching searches
            pipe.zadd(FLEET_SEEN, {pid: now for pid, _, _ in chunk})
            pipe.sadd(FLEET_ONLINE, *[pid for pid, _, _ in chunk])
            await pipe.execute()
        return {"geo_members": int(await redis.zcard(FLEET_GEO)), "seconds": round(time.monotonic() - t0, 1)}
    finally:
        await redis.aclose()


async def _refresh_seen(url: str, rows: list[list[Any]]) -> None:
    """Mark the near partners as heard from just now (as their pings would), so none is stale
    (freshness is the fix's own `ts`, capped by `seen`: both move) and all are in the search index."""
    redis = make_redis(url)
    now = int(time.time() * 1000)
    try:
        pipe = redis.pipeline(transaction=False)
        for row in rows:
            pipe.hset(PARTNER_STATE.format(partner_id=row[0]), mapping={"ts": now, "seen": now})
        pipe.geoadd(FLEET_SEARCH, [v for row in rows for v in (row[3], row[2], row[0])])
        pipe.zadd(FLEET_SEEN, {row[0]: now for row in rows})
        await pipe.execute()
    finally:
        await redis.aclose()


# --- 6. fan-out ---------------------------------------------------------------------------------

def fanout(ctx: Context, result: ScenarioResult) -> None:
    db = ctx.new_db("fanout")
    n_partners = ctx.size(5000, 1000)
    n_admins = 10
    n_tracked = ctx.size(50, 10)
    window = ctx.size(30.0, 5.0)  # ~1,500 customer deliveries: the p99 rests on ~15 of them, not 6

    async def seed(d: Any) -> tuple[list[str], list[str], list[str]]:
        await fixtures.ensure_catalog(d, ctx.settings)
        partners = await fixtures.create_partners(d, n_partners, "fan")
        admins = await fixtures.create_users(d, "admin", n_admins, "fan-admin")
        customers = await fixtures.create_users(d, "customer", n_tracked, "fan-customer")
        return partners, admins, customers

    partner_ids, admin_ids, customer_ids = run(with_db(ctx.stack.mongodb_uri, db, seed))
    processes = ctx.processes
    apps = [ctx.start_app(db) for _ in range(processes)]
    app = apps[0]
    if not has_route(app, "PUT", "/admin/orders/{id}/assign"):
        result.skipped = "PUT /api/admin/orders/{id}/assign is not in /api/openapi.json yet"
        return
    rows = _partner_rows(ctx, partner_ids, seed=11)
    tracked = rows[:n_tracked]
    sample = {r[0] for r in rows[::max(1, n_partners // 300)]}
    generators = -(-ctx.gens(4) // processes) * processes  # the same number of generators per process
    # Generator i talks to process i mod N. The tracked partners are the first rows, so all of
    # them ping process 0, while the customers and admins are spread over every process: customers
    # on other processes get their partner's position through Redis, as in production.
    ping_params = [{"url": apps[i % processes].url, "partners": chunk, "mode": "live", "duration": 3600.0,
                    "online": True, "until_released": True, "log_sent": True,
                    "log_ids": sorted(sample | {r[0] for r in tracked})}
                   for i, chunk in enumerate(_chunks(rows, generators))]
    _progress(f"fanout: {n_partners} partners pinging once a second on {processes} app process(es), {n_admins} "
              f"admins, {n_tracked} tracked orders")
    with pool("sockets:ping_worker", ping_params, phases=2) as pingers:
        t0 = time.monotonic()
        pingers.wait_ready(timeout=240)
        _progress(f"fanout: partners connected and on duty in {time.monotonic() - t0:.0f} s; assigning orders")
        # Orders are placed and assigned before the pings start, so setup does not compete with them.
        order_ids = run(fixtures.place_and_assign(app.url, ctx.settings, ctx.area, customer_ids, admin_ids[0],
                                                  [(r[0], r[2], r[3]) for r in tracked]))
        watchers: list[dict[str, Any]] = []
        for j, server in enumerate(apps):
            admins = admin_ids[j::processes]
            customers = list(range(n_tracked))[j::processes]
            if admins:
                watchers.append({"url": server.url, "role": "admin", "sample_ids": sorted(sample),
                                 "tokens": [fixtures.mint(ctx.settings, a, "admin") for a in admins]})
            if customers:
                watchers.append({"url": server.url, "role": "customer", "orders": [order_ids[c] for c in customers],
                                 "tokens": [fixtures.mint(ctx.settings, customer_ids[c], "customer")
                                            for c in customers]})
        with pool("sockets:watcher_worker", watchers, phases=2) as watching:
            ready = watching.wait_ready(timeout=120)
            pingers.next_phase()
            _progress(f"fanout: pinging; measuring for {window:.0f} s")
            time.sleep(3.0)  # every partner has pinged once and the map backlog has drained
            watching.next_phase()
            time.sleep(window)
            watching.next_phase()
            seen = watching.collect(timeout=60)
        pingers.next_phase()
        pinged = pingers.collect(timeout=60)

    sent: dict[tuple[str, float, float], int] = {}
    for out in pinged:
        for pid, ts, lat, lng in out["sent_log"]:
            sent[(pid, lat, lng)] = ts
    admin_received = [msgs for w, out in zip(watchers, seen, strict=True) if w["role"] == "admin"
                      for msgs in out["received"]]
    customer_received = [msgs for w, out in zip(watchers, seen, strict=True) if w["role"] == "customer"
                         for msgs in out["received"]]
    start_ms, end_ms = seen[0]["window_ms"]
    seconds = (end_ms - start_ms) / 1000
    per_admin = [len([m for m in msgs if m[1] != "snapshot"]) / seconds for msgs in admin_received]
    admin_lat = [recv - sent[(pid, lat, lng)] for msgs in admin_received for recv, _, partners in msgs
                 for pid, lat, lng, _ in partners if (pid, lat, lng) in sent]
    customer_lat = [recv - ts for msgs in customer_received for recv, ts, _ in msgs]
    ping_rate = steady_rate(pinged)
    result.add(Figure("fleet messages per admin per second (max)", max(per_admin, default=None), "msg/s", "<=", 2,
                      note=f"{n_admins} admins with fleet_subscribe (whole fleet) spread over {processes} app "
                           f"process(es) sharing one Redis, counted over {seconds:.0f} s"))
    result.add(Figure("ping -> admin map p99", _ms(admin_lat, 99), "ms", "<=", 1500,
                      note=f"{len(admin_lat)} deliveries matched to the exact fix sent (partner, lat, lng -> its ts)"))
    result.add(Figure("ping -> admin map p50", _ms(admin_lat, 50), "ms"))
    result.add(Figure("ping -> tracking customer p99", _ms(customer_lat, 99), "ms", "<=", 250,
                      note=f"{len(customer_lat)} partner_location messages to {n_tracked} customers (their "
                           f"partners all on process 0, the customers spread over {processes}), latency = receipt "
                           "time - the fix's ts"))
    result.add(Figure("ping -> tracking customer p50", _ms(customer_lat, 50), "ms"))
    result.add(Figure("accepted pings/s during the run", ping_rate, "pings/s",
                      note=f"{n_partners} partners at one fix every {LIVE_INTERVAL_S} s "
                           f"({n_partners / LIVE_INTERVAL_S:,.0f}/s offered)"))
    result.details = {"watchers_ready": ready, "per_admin_msgs_per_s": [round(v, 2) for v in per_admin]}


__all__ = ["Context", "catalog", "connections", "fanout", "ingest", "matching", "orders"]
