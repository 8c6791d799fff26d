"""The installable partner app: manifest, icons, service worker, offline start and queue, the
server's ping interval and freshness on the phone, offer cards with alerts."""

from __future__ import annotations

import json
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient

from core.contracts import FLEET_ONLINE, PARTNER_STATE, STALE_AFTER_INTERVALS, OfferMessage
from core.settings import Settings
from core.tokens import Role
from partypilot.app import create_app
from tests.browser_helpers import Browsing, Chromium, browse, chromium
from tests.test_pages import PHONE, Site, add_partner, eventually, new_customer, place_order, sign_in, start_site

__all__ = ["chromium"]  # the module-scoped browser fixture

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
NGINX_CONF = Path(__file__).resolve().parent.parent / "nginx.conf"
HERE = {"latitude": 12.9352, "longitude": 77.6245, "accuracy": 10}
# Errors a page logs while the network is down on purpose: its requests fail, nothing else.
OFFLINE_NOISE = ("ERR_INTERNET_DISCONNECTED", "Failed to fetch", "ERR_NETWORK_CHANGED")


def shell_list() -> list[str]:
    """The SHELL array of the service worker, as written."""
    source = (FRONTEND / "partner-sw.js").read_text(encoding="utf-8")
    block = re.search(r"const SHELL = \[(.*?)\];", source, re.S)
    assert block, "partner-sw.js has no SHELL list"
    return re.findall(r"'([^']+)'", block.group(1))


def served_file(url_path: str) -> Path:
    """The file the app serves at `url_path` (pages and the app's own files by name)."""
    named = {"/partner": "partner.html", "/partner.webmanifest": "partner.webmanifest",
             "/partner-sw.js": "partner-sw.js"}
    return FRONTEND / (named.get(url_path) or url_path.lstrip("/"))


# Static imports (`import … from '…'`, `export … from '…'`, `import '…'`) and dynamic `import('…')`.
IMPORTS = re.compile(r"""^\s*(?:import|export)\s[^'"]*?\sfrom\s*['"]([^'"]+)['"]"""
                     r"""|^\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)""", re.M)


def what_the_page_loads() -> set[str]:
    """Every same-origin file /partner needs: the page's links and scripts, the modules they import
    (transitively), and the manifest's icons."""
    html = (FRONTEND / "partner.html").read_text(encoding="utf-8")
    wanted = {"/partner", *re.findall(r'<(?:script|link)[^>]+(?:src|href)="(/[^"]+)"', html)}
    modules = [u for u in wanted if u.endswith(".js")]
    while modules:
        module = modules.pop()
        source = served_file(module).read_text(encoding="utf-8")
        for spec in (a or b or c for a, b, c in IMPORTS.findall(source)):
            target = spec if spec.startswith("/") else str(Path(module).parent / spec)
            target = str(Path(target).resolve()) if ".." in target else target.replace("/./", "/")
            if target not in wanted:
                wanted.add(target)
                modules.append(target)
    manifest = json.loads((FRONTEND / "partner.webmanifest").read_text(encoding="utf-8"))
    wanted.update(icon["src"] for icon in manifest["icons"])
    return wanted


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def only_offline_noise(b: Browsing) -> None:
    unexpected = [e for e in b.errors if not any(n in e for n in OFFLINE_NOISE)]
    assert unexpected == [], f"the page logged errors: {unexpected}"


# ---- files and headers ----------------------------------------------------------------------------


def test_the_shell_holds_everything_the_partner_page_loads_and_nothing_missing() -> None:
    shell = shell_list()
    assert len(shell) == len(set(shell))
    missing = what_the_page_loads() - set(shell)
    assert not missing, f"the service worker would not have these offline: {sorted(missing)}"
    for path in shell:
        assert served_file(path).is_file(), f"{path} is in the shell but not in frontend/"
        # An allow-list of static files: nothing dynamic, nothing personal.
        assert not re.match(r"^/(api|socket\.io|media)(/|$)", path) and path != "/config.json"


async def test_manifest_icons_worker_and_config_are_served_with_their_types(
        aiohttp_client: Any, make_settings: Callable[..., Settings]) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(ping_interval_s=12)))

    res = await client.get("/partner.webmanifest")
    assert res.status == 200 and res.content_type == "application/manifest+json"
    assert res.headers["Cache-Control"] == "no-cache"
    manifest = json.loads(await res.read())
    assert manifest["start_url"] == manifest["scope"] == "/partner"
    assert manifest["display"] == "standalone" and manifest["name"] and manifest["short_name"]
    sizes: dict[str, set[str]] = {}
    for icon in manifest["icons"]:
        img = await client.get(icon["src"])
        assert img.status == 200 and img.content_type == "image/png"
        width, height = png_size(await img.read())
        assert icon["sizes"] == f"{width}x{height}" and width == height
        sizes.setdefault(icon["purpose"], set()).add(icon["sizes"])
    assert sizes == {"any": {"192x192", "512x512"}, "maskable": {"192x192", "512x512"}}

    res = await client.get("/partner-sw.js")
    assert res.status == 200 and res.content_type == "text/javascript"
    # Revalidated on every visit: a deploy reaches installed phones at once.
    assert res.headers["Cache-Control"] == "no-cache"

    before = int(time.time() * 1000)
    res = await client.get("/config.json")
    assert res.status == 200 and res.content_type == "application/json"
    assert res.headers["Cache-Control"] == "no-store"
    config = await res.json()
    assert config["ping_interval_s"] == 12 and config["stale_after_intervals"] == STALE_AFTER_INTERVALS
    assert before - 1000 <= config["server_time_ms"] <= int(time.time() * 1000) + 1000


def test_the_proxys_content_policy_lets_the_worker_and_manifest_load() -> None:
    conf = NGINX_CONF.read_text(encoding="utf-8")
    policy = re.search(r'default\s+"(default-src[^"]+)"', conf)
    assert policy, "nginx.conf has no default Content-Security-Policy"
    directives = {d.split()[0]: d.split()[1:] for d in policy.group(1).split(";") if d.strip()}
    # The worker (worker-src) and the manifest (manifest-src, else default-src) are same-origin.
    assert "'self'" in directives.get("worker-src", directives["default-src"])
    assert "'self'" in directives.get("manifest-src", directives["default-src"])
    # The proxy gives the worker script and the manifest no cache lifetime of its own, so the
    # app's no-cache stands.
    block = re.search(r"map \$uri \$pp_asset_cache \{(.*?)\}", conf, re.S)
    assert block, "nginx.conf has no asset cache map"
    patterns = re.findall(r'"~([^"]+)"', block.group(1))
    assert patterns
    for path in ("/partner-sw.js", "/partner.webmanifest", "/config.json"):
        assert not any(re.search(pattern, path) for pattern in patterns), path


# ---- in the browser, at phone size --------------------------------------------------------------

SW_READY = """async () => {
  const reg = await navigator.serviceWorker.ready;
  return { scope: reg.scope, script: reg.active && reg.active.scriptURL };
}"""
QUEUED = """() => new Promise((resolve, reject) => {
  const req = indexedDB.open('partypilot');
  req.onsuccess = () => {
    const get = req.result.transaction('pings').objectStore('pings').getAll();
    get.onsuccess = () => resolve(get.result);
    get.onerror = () => reject(get.error);
  };
  req.onerror = () => reject(req.error);
})"""
CACHED_URLS = """async () => {
  const urls = [];
  for (const name of await caches.keys()) {
    for (const request of await (await caches.open(name)).keys()) urls.push(new URL(request.url).pathname);
  }
  return urls;
}"""


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Any,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


@pytest.fixture
async def quick_site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Any,
                     token_for: Callable[[str, Role], str]) -> Site:
    """The whole product with a 2 s ping interval, so a phone queues several fixes in seconds."""
    return await start_site(aiohttp_server, make_settings, redis, token_for, ping_interval_s=2)


@pytest.mark.browser
async def test_partner_app_installs_opens_offline_and_flushes_its_queue_on_reconnect(
        quick_site: Site, chromium: Chromium) -> None:
    site = quick_site
    partner_id = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    async with browse(chromium, geolocation=HERE, permissions=["geolocation"], **PHONE) as b:
        page, context = b.page, b.page.context
        await page.goto(site.url + "/partner")
        await sign_in(b, "ravi@example.com")
        await page.locator("#conn-chip", has_text="Connected").wait_for()

        # Installable: the manifest is linked, and the worker runs for /partner and controls the page.
        href = await page.locator("link[rel=manifest]").get_attribute("href")
        assert href == "/partner.webmanifest"
        worker = await page.evaluate(SW_READY)
        assert worker == {"scope": f"{site.url}/partner", "script": f"{site.url}/partner-sw.js"}
        await page.wait_for_function("navigator.serviceWorker.controller !== null")

        # Offline, a reload still opens the app (from the worker's copy), for the partner who was
        # signed in, and going on duty queues the phone's fixes.
        await context.set_offline(True)
        response = await page.reload()
        assert response is not None and response.ok and response.from_service_worker
        await page.locator("#banners", has_text="No connection").wait_for()
        await page.locator("#conn-chip", has_text="Offline").wait_for()
        await page.get_by_role("button", name="Go on duty").click()
        await page.locator("#queue-chip", has_text="1 position waiting to send").wait_for()
        # The phone moves after one (server's) ping interval, 2 s: a second fix is queued.
        await page.wait_for_timeout(2_100)
        await context.set_geolocation({"latitude": HERE["latitude"] + 0.002, "longitude": HERE["longitude"],
                                       "accuracy": HERE["accuracy"]})
        await page.locator("#queue-chip", has_text=re.compile(r"[2-9] positions waiting to send")).wait_for()

        # The queue is on the phone, not in the page: it survives another reload (which ends duty).
        response = await page.reload()
        assert response is not None and response.from_service_worker
        queued = await page.evaluate(QUEUED)
        assert len(queued) >= 2 and {p["owner"] for p in queued} == {partner_id}
        await page.locator("#queue-chip", has_text=f"{len(queued)} positions waiting to send").wait_for()
        await page.locator("#banners", has_text="You were on duty before this page reloaded").wait_for()
        state_key = PARTNER_STATE.format(partner_id=partner_id)
        assert await site.redis.hget(state_key, "lat") is None

        # Back online: the session is picked up and the queue goes to the server, oldest first.
        await context.set_offline(False)
        await page.locator("#conn-chip", has_text="Connected").wait_for(timeout=20_000)
        last = max(queued, key=lambda p: p["ts"])

        async def stored() -> dict[Any, Any]:
            fields: dict[Any, Any] = await site.redis.hgetall(state_key)
            return fields if "ts" in fields and int(float(fields["ts"])) == last["ts"] else {}

        fields = await eventually(stored, timeout_s=20)
        assert abs(float(fields["lat"]) - last["lat"]) < 1e-6
        await page.locator("#queue-chip").wait_for(state="hidden")
        assert await page.evaluate(QUEUED) == []
        assert await page.locator("#banners", has_text="No connection").count() == 0
        only_offline_noise(b)


@pytest.mark.browser
async def test_the_service_worker_never_caches_api_answers(site: Site, chromium: Chromium) -> None:
    await add_partner(site, "Meera Shah", "meera@example.com")
    async with browse(chromium, geolocation=HERE, permissions=["geolocation"], **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        await page.wait_for_function("navigator.serviceWorker.controller !== null")
        await sign_in(b, "meera@example.com")
        await page.locator("#conn-chip", has_text="Connected").wait_for()
        await page.locator("#earned-total").wait_for()  # the partner's API reads went through the worker
        statuses = await page.evaluate("""async () => Promise.all(
          ['/api/health', '/api/packages', '/api/packages/categories', '/config.json']
            .map(async (u) => (await fetch(u)).status))""")
        assert statuses == [200, 200, 200, 200]

        cached = await page.evaluate(CACHED_URLS)
        assert "/partner" in cached and "/js/partner.js" in cached  # it does keep the shell
        leaked = [u for u in cached if re.match(r"^/(api|socket\.io|media)(/|$)", u) or u == "/config.json"]
        assert leaked == []

        # Offline, an API read fails as it would without a worker: nothing is answered from storage.
        await page.context.set_offline(True)
        failed = await page.evaluate("""async () => {
          try { await fetch('/api/health'); return false; } catch { return true; } }""")
        assert failed
        await page.context.set_offline(False)
        only_offline_noise(b)


@pytest.mark.browser
async def test_the_phone_uses_the_servers_ping_interval_for_its_freshness(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Any, chromium: Chromium,
        token_for: Callable[[str, Role], str]) -> None:
    # A 10 s interval (not the 30 s default the page ships with): late after 15 s, stale after 30 s.
    site = await start_site(aiohttp_server, make_settings, redis, token_for, ping_interval_s=10)
    await add_partner(site, "Ravi Kumar", "ravi@example.com")
    async with browse(chromium, geolocation=HERE, permissions=["geolocation"], **PHONE) as b:
        page = b.page
        await page.clock.install()
        await page.goto(site.url + "/partner")
        await sign_in(b, "ravi@example.com")
        await page.locator("#conn-chip", has_text="Connected").wait_for()
        line, chip = page.locator("#last-fix"), page.locator("#fresh-chip")
        await page.get_by_role("button", name="Go on duty").click()
        await chip.filter(has_text="Fresh").wait_for()
        assert "Last position shared" in await line.inner_text()
        # The page's clock runs ahead of the phone's fixes: their age grows as the server counts it.
        await page.clock.fast_forward(17_000)
        await chip.filter(has_text="Late").wait_for()
        assert await line.get_attribute("data-state") == "late"
        assert "stop getting offers" in await line.inner_text()
        await page.clock.fast_forward(15_000)
        await chip.filter(has_text="Stale").wait_for()
        assert "sends you no offers" in await line.inner_text()
        b.assert_no_errors()


@pytest.mark.browser
async def test_offer_cards_show_what_the_partner_decides_on_and_alerts_respect_mute(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Lantern Garden Party")
    partner_id = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    customer = await new_customer(site, token_for, "tara@example.com")
    async with browse(chromium, geolocation=HERE, permissions=["geolocation"], **PHONE) as b:
        page = b.page
        # Record buzzes instead of making them.
        await page.add_init_script("""Object.defineProperty(Navigator.prototype, 'vibrate', {
          configurable: true, writable: true,
          value: (pattern) => { (window.__buzzes ||= []).push(pattern); return true; } });""")
        await page.goto(site.url + "/partner")
        await sign_in(b, "ravi@example.com")
        await page.get_by_role("button", name="Go on duty").click()

        async def ready() -> bool:
            fields = await site.redis.hgetall(PARTNER_STATE.format(partner_id=partner_id))
            return "lat" in fields and bool(await site.redis.sismember(FLEET_ONLINE, partner_id))

        await eventually(ready)
        order = await place_order(site, customer, package["id"])
        card = page.locator(f"article.offer[data-id='{order['id']}']")
        await card.wait_for(timeout=15_000)
        text = await card.inner_text()
        for expected in ("Lantern Garden Party", "Today", "as soon as possible", "Bengaluru", "Guests", "20",
                         "for you"):
            assert expected in text, f"{expected!r} missing from the offer card: {text}"
        assert re.search(r"₹\s?[\d,]+", text)  # the payout
        assert re.search(r"\d+(\.\d)? k?m away", text)  # the distance
        assert await page.evaluate("window.__buzzes") == [[200, 100, 200]]
        await card.get_by_role("button", name="Decline").click()
        await card.wait_for(state="detached")

        # Muted: the next offer shows, silently.
        await page.get_by_label("Beep and vibrate for new offers").uncheck()
        second = await place_order(site, customer, package["id"])
        await page.locator(f"article.offer[data-id='{second['id']}']").wait_for(timeout=15_000)
        assert await page.evaluate("window.__buzzes") == [[200, 100, 200]]
        # The choice outlives a reload.
        await page.reload()
        assert not await page.get_by_label("Beep and vibrate for new offers").is_checked()
        b.assert_no_errors()


async def test_the_offer_push_names_package_slot_area_and_guests_but_not_the_venue(
        site: Site, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Boho Picnic")
    partner_id = await add_partner(site, "Kiran Shetty", "kiran@example.com")
    crew = token_for(partner_id, "partner")
    sio = socketio.AsyncClient(reconnection=False)
    offers: list[dict[str, Any]] = []
    sio.on("offer", offers.append)
    try:
        await sio.connect(site.url, transports=["websocket"], auth={"token": crew}, wait_timeout=10)
        assert (await sio.call("availability", {"online": True}, timeout=5))["ok"]
        await site.call("PUT", "/api/partner/location", token=crew,
                        json={"lat": HERE["latitude"], "lng": HERE["longitude"], "ts": int(time.time() * 1000)})
        order = await place_order(site, await new_customer(site, token_for, "asha@example.com"), package["id"])

        async def offered() -> bool:
            return bool(offers)

        await eventually(offered, timeout_s=15)
    finally:
        await sio.disconnect()
    offer = OfferMessage.model_validate(offers[0])
    assert offer.order_id == order["id"] and offer.package is not None and offer.package.name == "Boho Picnic"
    assert offer.event_date == order["event_date"] and offer.guests == 20
    assert offer.area and offer.city == "Bengaluru" and offer.timezone == "Asia/Kolkata" and offer.asap is True
    assert offer.arrive_after and offer.arrive_before and offer.arrive_after < offer.arrive_before
    # As approximate as before: no address, and no more exact a point than the snapped one.
    assert "line1" not in json.dumps(offers[0]) and "postal_code" not in json.dumps(offers[0])
