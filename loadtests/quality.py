"""The dispatch-quality simulator: `python -m partypilot simulate --scenario FILE` (docs/quality.md).

For each strategy in turn it starts an app process (`python -m partypilot serve`) against the run's
own Redis and nx-27017 (started here, on free ports, and stopped at the end), with the dispatch
timers divided by the scenario's time scale, creates the partners, customers and an admin in a
fresh database (loadtests.fixtures), plays the simulated day through the real HTTP and Socket.IO
API (loadtests.quality_sim), reads the dispatch decisions back through the admin API, and stops
the app. Every strategy plays the same day: shifts, start positions, order times and places all
come from the scenario's seed. The report compares them side by side (loadtests.quality_report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from pymongo import AsyncMongoClient

from loadtests import fixtures
from loadtests.harness import BENCH_SECRET, Stack
from loadtests.quality_metrics import OrderOutcome, StrategyMetrics, summarize
from loadtests.quality_report import summary_table, write_report
from loadtests.quality_scenario import DEFAULT_SCENARIO, Scenario, ScenarioError, load_scenario
from loadtests.quality_sim import Accounts, Plan, World, WorldResult, circle_geojson, make_plan, now_iso

logger = logging.getLogger(__name__)

STRATEGIES = ("sequential", "top_k", "broadcast")
DEFAULT_OUT = Path(".data/sim")
ADMIN_FETCH_CONCURRENCY = 4
AUDIT_SAMPLE = 150
# An offer sent within this many real seconds of a partner's drop may simply have crossed it.
OFFLINE_MARGIN_REAL_S = 0.5


@dataclass
class CityArea:
    area: fixtures.Area
    timezone: str
    areas_file: Path | None  # a custom area's GeoJSON for the app; None: the bundled ones


def city_area(scenario: Scenario, out: Path) -> CityArea:
    spec = scenario.area
    if spec.bundled:
        area = fixtures.load_area()
        timezone = spec.timezone
        if fixtures.AREAS_FILE.is_file():
            data = json.loads(fixtures.AREAS_FILE.read_text(encoding="utf-8"))
            props = (data.get("features") or [{}])[0].get("properties") or {}
            timezone = str(props.get("timezone") or timezone)
        return CityArea(area, timezone, None)
    assert spec.center is not None and spec.radius_m is not None  # the scenario's validator made sure
    lat, lng = spec.center
    # The app's polygon is a little larger than the circle orders are drawn from, so a point on
    # the edge never falls outside through the polygon's straight sides.
    geojson = circle_geojson(scenario.name, lat, lng, spec.radius_m * 1.05, spec.timezone)
    areas_file = out / "service_area.geojson"
    out.mkdir(parents=True, exist_ok=True)
    areas_file.write_text(json.dumps(geojson), encoding="utf-8")
    return CityArea(fixtures.Area(scenario.name, lat, lng, spec.radius_m), spec.timezone, areas_file)


async def create_accounts(mongodb_uri: str, db_name: str, scenario: Scenario, base_url: str) -> Accounts:
    """Approved partners, customers, an admin and the catalog in a fresh database; tokens for all."""
    settings = fixtures.bench_settings(BENCH_SECRET)
    ttl = int(scenario.day.real_minutes * 60 * 1.5 + scenario.day.drain_min * 60 / scenario.scale + 3600)
    tag = f"sim{uuid.uuid4().hex[:6]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    try:
        db = client[db_name]
        await fixtures.ensure_catalog(db, settings)
        partners = await fixtures.create_partners(db, scenario.partners.count, f"{tag}-partner")
        customers = await fixtures.create_users(db, "customer", scenario.orders.customers, f"{tag}-customer")
        admins = await fixtures.create_users(db, "admin", 1, f"{tag}-admin")
    finally:
        await client.close()
    return Accounts(base_url=base_url,
                    partners=[(pid, fixtures.mint(settings, pid, "partner", ttl)) for pid in partners],
                    customers=[fixtures.mint(settings, cid, "customer", ttl) for cid in customers],
                    admin_token=fixtures.mint(settings, admins[0], "admin", ttl))


async def _get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str], tries: int = 3) -> Any:
    """GET a JSON body, trying again after a timeout: right after a busy day the embedded MongoDB
    can take longer than the client's timeout to page through every order."""
    for attempt in range(1, tries + 1):
        try:
            async with http.get(url, headers=headers) as resp:
                resp.raise_for_status()
                return await resp.json()
        except TimeoutError:
            if attempt == tries:
                raise
            await asyncio.sleep(5 * attempt)
    raise AssertionError("unreachable")


async def fetch_admin(http: aiohttp.ClientSession, base_url: str, token: str,
                      order_ids: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every order (the admin board) and each placed order's dispatch audit trail."""
    headers = {"Authorization": f"Bearer {token}"}
    orders: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        body = await _get_json(http, f"{base_url}/api/admin/orders?limit=100&page={page}", headers)
        for item in body["items"]:
            orders[str(item["id"])] = item
        if not body["items"] or len(orders) >= int(body["total"]):
            break
        page += 1
    audits: dict[str, list[dict[str, Any]]] = {}
    gate = asyncio.Semaphore(ADMIN_FETCH_CONCURRENCY)

    async def audit(order_id: str) -> None:
        async with gate, http.get(f"{base_url}/api/admin/orders/{order_id}/audit", headers=headers) as resp:
            if resp.status == 200:
                audits[order_id] = (await resp.json())["items"]

    await asyncio.gather(*(audit(oid) for oid in order_ids))
    return orders, audits


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _to_sim(result: WorldResult, iso_text: str) -> float:
    return (_epoch(iso_text) - result.clock_wall0) * result.scale


def outcomes(result: WorldResult, orders: dict[str, dict[str, Any]]) -> list[OrderOutcome]:
    """One OrderOutcome per order placed, timed by the server's own history (same clock for both
    ends); offers counted as the phones received them."""
    travel = {j.order_id: j.travel_sim_s for j in result.jobs}
    seen: Counter[str] = Counter(o.order_id for o in result.offers)
    first_seen: dict[str, float] = {}
    for offer in result.offers:
        first_seen[offer.order_id] = min(first_seen.get(offer.order_id, offer.received_sim), offer.received_sim)
    out: list[OrderOutcome] = []
    for placed in result.orders:
        if placed.order_id is None:
            continue
        doc = orders.get(placed.order_id, {})
        history = [h for h in doc.get("history") or [] if isinstance(h, dict)]
        placed_at = next((h for h in history if h.get("status") == "placed"), None)
        assigned = next((h for h in history if h.get("status") == "assigned"), None)
        outcome = OrderOutcome(
            order_id=placed.order_id,
            placed_sim=_to_sim(result, str(placed_at["at"])) if placed_at else float(placed.placed_sim or 0.0),
            assigned_sim=_to_sim(result, str(assigned["at"])) if assigned else None,
            assigned_by=str(assigned.get("by_role")) if assigned else None,
            partner_id=doc.get("partner_id"),
            offers_sent=seen[placed.order_id],
            travel_sim_s=travel.get(placed.order_id),
            first_offer_sim=first_seen.get(placed.order_id),
            alerted=int(doc.get("dispatch_alert_ms") or 0) > 0 or int(doc.get("dispatch_attempts") or 0) > 0,
        )
        out.append(outcome)
    return out


def audit_offers(audits: dict[str, list[dict[str, Any]]]) -> int:
    """Partner-offers in the audit trails (a top-k round to 3 partners counts 3)."""
    return sum(len((a.get("data") or {}).get("partner_ids") or []) for trail in audits.values() for a in trail
               if a.get("event") == "offer")


def offers_to_offline(result: WorldResult, audits: dict[str, list[dict[str, Any]]]) -> int:
    """Partner-offers the server sent while that partner's socket was closed (beyond a small margin)."""
    margin = OFFLINE_MARGIN_REAL_S * result.scale
    count = 0
    for trail in audits.values():
        for entry in trail:
            if entry.get("event") != "offer":
                continue
            at = _to_sim(result, str(entry["at"]))
            for pid in (entry.get("data") or {}).get("partner_ids") or []:
                spans = result.offline_spans.get(str(pid), [])
                if any(start + margin <= at <= end for start, end in spans):
                    count += 1
    return count


async def run_strategy(stack: Stack, scenario: Scenario, strategy: str, plan: Plan, city: CityArea,
                       *, chaos: bool, audit_sample: int) -> StrategyMetrics:
    """One strategy's day against its own app process and database."""
    from redis.asyncio import Redis

    began = time.monotonic()
    db_name = f"sim_{strategy}_{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(stack.redis_url)
    try:
        await redis.flushall()  # nothing of the previous strategy's fleet or offers may leak in
    finally:
        await redis.aclose()
    env = {**scenario.app_env(strategy), "PARTYPILOT_MONGODB_DB": db_name}
    if city.areas_file is not None:
        env["PARTYPILOT_SERVICE_AREAS_FILE"] = str(city.areas_file.resolve())
    accounts = await create_accounts(stack.mongodb_uri, db_name, scenario, "")
    try:
        server = await asyncio.to_thread(stack.start_app, f"app-{strategy}", **env)
    except RuntimeError as exc:
        text = str(exc)
        refused = "DISPATCH_STRATEGY" in text
        note = (f"strategy not available (the app refused PARTYPILOT_DISPATCH_STRATEGY={strategy})" if refused
                else f"the app did not start: {text.splitlines()[0][:200]}")
        logger.error("%s: %s", strategy, note)
        return StrategyMetrics(strategy=strategy, available=False, note=note)
    accounts.base_url = server.url
    logger.info("%s: app on %s (pid %d), %d partners, %d orders to place over %.1f real minutes", strategy,
                server.url, server.pid, scenario.partners.count, scenario.orders.count, scenario.day.real_minutes)
    try:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
            world = World(scenario, plan, accounts, city.area, city.timezone, http, strategy=strategy)
            result = await world.run(chaos_redis_url=stack.redis_url if chaos else None)
            placed_ids = [o.order_id for o in result.orders if o.order_id]
            # The embedded MongoDB server reads an order's audit trail in a scan of the whole
            # collection (seconds per order after a busy day): a seeded sample checks the phones'
            # counts against the server's, and finds offers sent to partners without a socket.
            sample = placed_ids if audit_sample <= 0 or audit_sample >= len(placed_ids) else \
                random.Random(scenario.seed).sample(placed_ids, audit_sample)
            orders, audits = await fetch_admin(http, server.url, accounts.admin_token, sample)
    finally:
        await asyncio.to_thread(stack.stop_server, server)
    order_outcomes = outcomes(result, orders)
    replies = Counter(o.outcome or "pending" for o in result.offers)
    metrics = summarize(strategy, order_outcomes, result.jobs, result.partners,
                        window_s=scenario.orders.window_min * 60, offer_timeout_s=scenario.dispatch.offer_timeout_s,
                        replies=replies,
                        place_failures=sum(1 for o in result.orders if o.order_id is None),
                        real_seconds=time.monotonic() - began)
    metrics.scale = scenario.scale
    by_order = Counter(o.order_id for o in result.offers)
    metrics.audit_sample = len(audits)
    metrics.audit_offers_sent = audit_offers(audits)
    metrics.audit_offers_seen = sum(by_order[oid] for oid in audits)
    metrics.offers_to_offline = offers_to_offline(result, audits)
    metrics.refused_accepts = dict(Counter(str((a.get("data") or {}).get("code")) for trail in audits.values()
                                           for a in trail if a.get("event") == "reply_refused"))
    metrics.ping_rejects = dict(result.ping_rejects)
    if result.chaos is not None:
        by_id = {o.order_id: o for o in order_outcomes}
        still = [by_id[i] for i in result.chaos.open_order_ids if i in by_id]
        metrics.chaos_at = scenario.clock_label(result.chaos.at_sim)
        metrics.chaos_open = len(still)
        metrics.chaos_reassigned = sum(1 for o in still if o.assigned_sim is not None and not o.by_admin)
        if not result.chaos.flushed:
            metrics.note = f"FLUSHALL failed: {result.chaos.error}"
    if result.status_errors:
        logger.warning("%s: order status changes refused: %s", strategy, dict(result.status_errors))
    place_errors = Counter(o.error for o in result.orders if o.order_id is None)
    if place_errors:
        logger.warning("%s: orders the API refused: %s", strategy, dict(place_errors))
    return metrics


async def run_all(scenario: Scenario, source: str, strategies: Sequence[str], out: Path,
                  *, chaos: bool, audit_sample: int = 150) -> list[StrategyMetrics]:
    started = now_iso()
    city = city_area(scenario, out)
    plan = make_plan(scenario, city.area)
    results: list[StrategyMetrics] = []
    notes = [
        "Times are simulated seconds; the app's timers were divided by the time scale, so an "
        "offer timeout is the same share of a simulated day as in production.",
        "Assignment times come from each order's server-side history (placed → assigned); offers, "
        "replies, distances and travel from the simulated phones; the audit trail of a seeded sample of "
        "orders checks the phones' offer counts against the server's.",
        f"Partners ping every {scenario.ping_real_s:.2f} real s (the server accepts one fix a second), "
        f"i.e. every {scenario.ping_real_s * scenario.scale:.0f} simulated s.",
    ]
    stack = await asyncio.to_thread(Stack.create, out / "logs")
    try:
        for strategy in strategies:
            results.append(await run_strategy(stack, scenario, strategy, plan, city, chaos=chaos,
                                              audit_sample=audit_sample))
            # Written after each strategy too: a later one failing keeps the earlier figures.
            write_report(out, scenario, source, city.area.name, results, notes, started)
    finally:
        await asyncio.to_thread(stack.close)
    report = write_report(out, scenario, source, city.area.name, results, notes, started)
    sys.stdout.write(summary_table(results))
    sys.stdout.write(f"report: {report}\n")
    return results


def parse_strategies(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STRATEGIES]
    if unknown or not chosen:
        raise ScenarioError(f"--strategies takes a comma-separated list of {', '.join(STRATEGIES)}; "
                            f"not {', '.join(unknown) or 'nothing'}")
    return chosen


def run(scenario_path: Path, strategies: str = ",".join(STRATEGIES), out: Path = DEFAULT_OUT,
        chaos_redis_flush: bool = False, audit_sample: int = AUDIT_SAMPLE) -> int:
    """The command: 0 when every strategy ran (goals missed or not), 2 for an unusable scenario."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("aiohttp.access", "engineio.client", "socketio.client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        scenario = load_scenario(scenario_path)
        chosen = parse_strategies(strategies)
    except ScenarioError as exc:
        sys.stderr.write(f"simulate: {exc}\n")
        return 2
    import uvloop

    try:
        results = uvloop.run(run_all(scenario, str(scenario_path), chosen, out, chaos=chaos_redis_flush,
                                     audit_sample=audit_sample))
    except KeyboardInterrupt:
        return 130
    return 0 if all(m.available for m in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, scenario_default=DEFAULT_SCENARIO)
    return parser


def add_arguments(parser: argparse.ArgumentParser, scenario_default: Path | None = None) -> None:
    """The simulator's options (shared with `python -m partypilot simulate`)."""
    parser.add_argument("--scenario", type=Path, default=scenario_default,
                        help="a YAML or JSON scenario (docs/quality.md); e.g. loadtests/data/city_day.yaml")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated dispatch strategies to compare (default: all three)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where REPORT.md, plots and logs go")
    parser.add_argument("--chaos-redis-flush", action="store_true",
                        help="FLUSHALL the run's own Redis halfway through the day")
    parser.add_argument("--audit-sample", type=int, default=AUDIT_SAMPLE,
                        help="orders whose audit trail is read back (0: all; slow on the embedded MongoDB)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.scenario, args.strategies, args.out, args.chaos_redis_flush, args.audit_sample)


if __name__ == "__main__":
    raise SystemExit(main())
