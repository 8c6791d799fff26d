"""The customer's tracking map in headless Chromium at phone size: the route line, the live ETA and
the age of the last update, and markers that glide (or jump, for a viewer who asked for less motion)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from core.settings import Settings
from core.tokens import Role, issue_access_token
from geo.distance import destination
from tests.browser_helpers import Chromium, browse, chromium
from tests.test_pages import FAR_VENUE, PHONE, PINS_IN_VIEW, Site, add_partner, place_order, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]  # the module-scoped browser fixture

# The route's two parts as Leaflet draws them (SVG paths with the classes tracking.js gives them):
# how many points each has, and whether all of them lie inside the map's box.
ROUTE = """() => {
  const box = document.querySelector('#track-map').getBoundingClientRect();
  const part = (cls) => {
    const path = document.querySelector(`#track-map path.${cls}`);
    const d = path?.getAttribute('d') ?? '';  // an empty line is drawn as "M0 0"
    const points = d === 'M0 0' ? 0 : (d.match(/[ML]/g) ?? []).length;
    const r = path?.getBoundingClientRect();
    const inside = !!r && points > 0 && r.left >= box.left - 1 && r.right <= box.right + 1
      && r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
    return { points, inside, dashed: path?.getAttribute('stroke-dasharray') ?? null };
  };
  return { trail: part('route-trail'), ahead: part('route-ahead') };
}"""


async def tracking_link(site: Site, package_name: str, email: str) -> tuple[str, str, str]:
    """An order at FAR_VENUE, its customer's token and a tracking link's token."""
    package = await site.add_package(package_name)
    customer_id = uuid.uuid4().hex
    await site.db.users.insert_one({"_id": customer_id, "role": "customer", "email": email, "name": "Tara",
                                    "addresses": [], "created_at": "2026-01-01T00:00:00.000Z", "deleted": 0})
    customer = issue_access_token(site.settings, customer_id, "customer", f"s-{customer_id[:6]}")
    order = await place_order(site, customer, package["id"], *FAR_VENUE)
    link = await site.call("POST", f"/api/orders/{order['id']}/tracking-link", token=customer)
    return order["id"], customer, link["token"]


async def test_the_route_line_and_the_update_age_follow_the_partner(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
        token_for: Callable[[str, Role], str], chromium: Chromium) -> None:
    site = await start_site(aiohttp_server, make_settings, redis, token_for)
    order_id, _, token = await tracking_link(site, "Route Party", "route@example.com")
    partner_id = await add_partner(site, "Kiran Shetty", "kiran-route@example.com")
    crew = token_for(partner_id, "partner")
    t = int(time.time() * 1000) - 45_000  # fixes 15 s apart: a car's speed, not a teleport
    start = destination(*FAR_VENUE, 0, 2_000)
    await site.call("PUT", "/api/partner/location", token=crew,
                    json={"lat": start[0], "lng": start[1], "accuracy": 10, "ts": t})
    await site.call("PUT", f"/api/admin/orders/{order_id}/assign", json={"partner_id": partner_id})
    await site.call("PUT", f"/api/partner/orders/{order_id}/status", token=crew, json={"status": "en_route"})

    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/track?t=" + token)
        await page.locator("#eta", has_text="Arriving in").wait_for()
        # The last update's age ticks on its own between fixes.
        freshness = page.locator("#freshness")
        await freshness.filter(has_text="Last update").wait_for()
        before = await freshness.inner_text()
        await page.wait_for_function("(t) => document.querySelector('#freshness').textContent !== t", arg=before)
        # One fix so far: no trail yet, and a dashed straight line from the partner to the venue.
        route = await page.evaluate(ROUTE)
        assert route["ahead"]["points"] == 2 and route["ahead"]["dashed"] and route["ahead"]["inside"]

        # Two more fixes on the way (the second from the west): the trail grows and everything stays in view.
        for i, (bearing, metres) in enumerate([(0, 1_200), (330, 900)], start=1):
            at = destination(*FAR_VENUE, bearing, metres)
            await site.call("PUT", "/api/partner/location", token=crew,
                            json={"lat": at[0], "lng": at[1], "accuracy": 10, "ts": t + i * 15_000})
        await page.wait_for_function(f"({ROUTE})().trail.points === 3")
        await page.wait_for_timeout(1_300)  # the marker glides for a second
        route = await page.evaluate(ROUTE)
        assert route["trail"]["inside"] and route["ahead"]["inside"] and route["ahead"]["points"] == 2
        assert await page.evaluate(PINS_IN_VIEW) == 2
        await page.screenshot(path="/tmp/tracking-route.png")

        # At the venue: the way still to go is gone, the trail stays.
        at = destination(*FAR_VENUE, 90, 20)
        await site.call("PUT", "/api/partner/location", token=crew,
                        json={"lat": at[0], "lng": at[1], "accuracy": 10, "ts": int(time.time() * 1000)})
        await site.call("PUT", f"/api/partner/orders/{order_id}/status", token=crew, json={"status": "arrived"})
        await page.locator("#eta", has_text="Your partner is at the venue.").wait_for()
        await page.wait_for_function(f"({ROUTE})().ahead.points === 0")
        assert (await page.evaluate(ROUTE))["trail"]["points"] >= 3
        b.assert_no_errors()


async def test_an_old_position_says_so_in_the_eta_and_the_update_age(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
        token_for: Callable[[str, Role], str], chromium: Chromium) -> None:
    # A 2 s ping interval (from config.json, not a constant in the page): stale after 6 s.
    site = await start_site(aiohttp_server, make_settings, redis, token_for, ping_interval_s=2.0)
    order_id, _, token = await tracking_link(site, "Quiet Party", "quiet@example.com")
    partner_id = await add_partner(site, "Arjun Rao", "arjun-quiet@example.com")
    crew = token_for(partner_id, "partner")
    near = destination(*FAR_VENUE, 0, 3_000)
    await site.call("PUT", "/api/partner/location", token=crew,
                    json={"lat": near[0], "lng": near[1], "accuracy": 10, "ts": int(time.time() * 1000)})
    await site.call("PUT", f"/api/admin/orders/{order_id}/assign", json={"partner_id": partner_id})
    await site.call("PUT", f"/api/partner/orders/{order_id}/status", token=crew, json={"status": "en_route"})
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/track?t=" + token)
        await page.locator("#eta", has_text="Arriving in").wait_for()
        assert await page.locator("#freshness").get_attribute("data-stale") == "false"
        # Nothing new arrives: within a few seconds the page says the position is old, by itself.
        await page.locator("#freshness", has_text="may be out of date").wait_for()
        await page.locator("#eta", has_text="Last estimate").wait_for()
        assert "Waiting for a new position" in await page.locator("#eta").inner_text()
        assert await page.locator("#track-map .pin-stale").count() == 1
        b.assert_no_errors()


GLIDE = """async () => {
  const { createMap, SmoothMarker } = await import('/js/map.js');
  const box = document.createElement('div');
  box.style.height = '200px';
  document.body.append(box);
  const marker = new SmoothMarker(createMap(box), { label: 'RK' });
  const t = Date.now();
  marker.push({ lat: 12.95, lng: 77.60, ts: t });
  marker.push({ lat: 12.96, lng: 77.60, ts: t + 30000 });
  await new Promise((resolve) => setTimeout(resolve, 400));
  const early = marker.latLng().lat;
  await new Promise((resolve) => setTimeout(resolve, 900));
  return { early, late: marker.latLng().lat };
}"""


async def test_markers_glide_for_a_second_or_jump_for_reduced_motion(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
        token_for: Callable[[str, Role], str], chromium: Chromium) -> None:
    site = await start_site(aiohttp_server, make_settings, redis, token_for)
    async with browse(chromium, **PHONE) as b:
        await b.page.goto(site.url + "/customer")
        moved = await b.page.evaluate(GLIDE)
        # 30 s between the fixes, yet the glide takes about a second, not the whole interval.
        assert 12.95 < moved["early"] < 12.96 and moved["late"] == 12.96
    async with browse(chromium, reduced_motion="reduce", **PHONE) as b:
        await b.page.goto(site.url + "/customer")
        moved = await b.page.evaluate(GLIDE)
        assert moved["early"] == 12.96  # no animation at all
        b.assert_no_errors()


# A 1x1 transparent PNG: what the fake tile server answers for every tile.
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


async def test_the_map_tiles_and_their_credit_come_from_the_settings(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
        token_for: Callable[[str, Role], str], chromium: Chromium) -> None:
    asked: list[str] = []

    async def tile(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=PIXEL, content_type="image/png", headers={"Access-Control-Allow-Origin": "*"})

    tiles = web.Application()
    tiles.router.add_get("/t/{z}/{x}/{y}.png", tile)
    tile_server = await aiohttp_server(tiles, host="127.0.0.1")
    template = f"http://127.0.0.1:{tile_server.port}/t/{{z}}/{{x}}/{{y}}.png"
    credit = "Tiles © <b>Acme Maps</b>"
    site = await start_site(aiohttp_server, make_settings, redis, token_for, map_tile_url=template,
                            map_attribution=credit)
    config = await site.call("GET", "/config.json")
    assert config["map_tile_url"] == template and config["map_attribution"] == credit

    order_id, _, token = await tracking_link(site, "Tile Party", "tiles@example.com")
    partner_id = await add_partner(site, "Kiran Shetty", "kiran-tiles@example.com")
    await site.call("PUT", f"/api/admin/orders/{order_id}/assign", json={"partner_id": partner_id})
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/track?t=" + token)
        await page.locator("#tracking").wait_for(state="visible")
        # The credit is shown as the provider wrote it, as text (no markup from a setting).
        attribution = page.locator("#track-map .leaflet-control-attribution")
        await attribution.filter(has_text="Tiles © <b>Acme Maps</b>").wait_for()
        assert await attribution.locator("b").count() == 0
        await page.wait_for_function("document.querySelectorAll('#track-map img.leaflet-tile-loaded').length > 0")
        assert asked and all(p.startswith("/t/") for p in asked)
        assert not [u for u in b.blocked if "openstreetmap" in u]  # the default provider is never asked
        b.assert_no_errors()
