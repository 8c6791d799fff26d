"""Arrival by geofence on the partner's phone (headless Chromium, phone size): far from the venue the
page says how far and refuses a plain "I've arrived" but takes one with a reason; at the venue it
offers arrival as one tap."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from core.tokens import Role
from geo.distance import destination
from tests.browser_helpers import Chromium, browse, chromium
from tests.test_pages import PHONE, add_partner, new_customer, place_order, sign_in, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]  # the module-scoped browser fixture

VENUE = (12.9352, 77.6245)


async def en_route_job(site: Any, token_for: Callable[[str, Role], str], email: str) -> tuple[str, str]:
    """A partner (signed in by `email`) with an order assigned and on the way to VENUE."""
    package = await site.add_package(f"Geofence Party {uuid.uuid4().hex[:4]}")
    partner_id = await add_partner(site, "Ravi Kumar", email)
    order = await place_order(site, await new_customer(site, token_for, f"c-{email}"), package["id"], *VENUE)
    await site.call("PUT", f"/api/admin/orders/{order['id']}/assign", json={"partner_id": partner_id})
    await site.call("PUT", f"/api/partner/orders/{order['id']}/status", token=token_for(partner_id, "partner"),
                    json={"status": "en_route"})
    return partner_id, order["id"]


async def test_far_away_arrival_takes_a_reason_and_the_venue_offers_one_tap(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
        token_for: Callable[[str, Role], str], chromium: Chromium) -> None:
    # A 3 s ping interval: the phone shares a moved position within seconds.
    site = await start_site(aiohttp_server, make_settings, redis, token_for, ping_interval_s=3.0)
    _, far_order = await en_route_job(site, token_for, "far@example.com")
    far = destination(*VENUE, 0, 2_400)
    geo = {"latitude": far[0], "longitude": far[1], "accuracy": 10}
    async with browse(chromium, geolocation=geo, permissions=["geolocation"], **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        await sign_in(b, "far@example.com")
        await page.get_by_role("button", name="Go on duty").click()
        hint = page.locator("#arrival-hint")
        await hint.filter(has_text="2.4 km from the venue").wait_for()
        assert "within 150 m" in await hint.inner_text()

        # A tap from 2.4 km: refused, saying why (how far, or that the position is old by now: the
        # emulated phone shares no new fix while it stands still), with the offer to give a reason.
        await page.get_by_role("button", name="I've arrived").click()
        refusal = page.locator("#job .status[data-kind='error']")
        await refusal.wait_for()
        assert re.search(r"You are 2\.4 km from the venue|Your last shared position is", await refusal.inner_text())
        reason = page.get_by_label("Already at the venue? Say why")
        await reason.wait_for()
        assert (await site.db.orders.find_one({"_id": far_order}))["status"] == "en_route"
        await page.get_by_role("button", name="Mark arrived anyway").click()  # empty: said next to the field
        await page.get_by_text("Say in a few words why").wait_for()
        await reason.fill("The hall's gate is on the service road behind")
        await page.screenshot(path="/tmp/arrival-reason.png")
        await page.get_by_role("button", name="Mark arrived anyway").click()
        await page.get_by_role("button", name="Setup is done").wait_for()
        order = await site.db.orders.find_one({"_id": far_order})
        assert order["status"] == "arrived"
        assert order["arrival_unverified"]["reason"] == "The hall's gate is on the service road behind"
        # Chromium logs every 4xx answer; the one 409 is the refused arrival above.
        b.errors = [e for e in b.errors if not ("status of 409" in e and f"/orders/{far_order}/status" in e)]
        b.assert_no_errors()

    # Another job, driven into the fence: the page offers arrival as one tap and it is not flagged.
    _, near_order = await en_route_job(site, token_for, "near@example.com")
    # 250 m out, then 60 m: a short hop, so the server takes it as driving, not a GPS jump.
    outside = destination(*VENUE, 90, 250)
    geo = {"latitude": outside[0], "longitude": outside[1], "accuracy": 10}
    async with browse(chromium, geolocation=geo, permissions=["geolocation"], **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        await sign_in(b, "near@example.com")
        await page.get_by_role("button", name="Go on duty").click()
        hint = page.locator("#arrival-hint")
        await hint.filter(has_text="250 m from the venue").wait_for()
        await page.wait_for_timeout(3_200)  # the phone shares at most one fix per ping interval
        close = destination(*VENUE, 90, 60)
        await page.context.set_geolocation({"latitude": close[0], "longitude": close[1], "accuracy": 10})
        await hint.filter(has_text="You are at the venue: tap \"I've arrived\".").wait_for(timeout=15_000)
        await page.locator("#next-status.at-venue").wait_for()
        await page.wait_for_timeout(600)  # the page scrolls the button into view
        assert await page.locator("#next-status").is_visible()
        await page.screenshot(path="/tmp/arrival-here.png")
        await page.get_by_role("button", name="I've arrived").click()
        await page.get_by_role("button", name="Setup is done").wait_for()
        order = await site.db.orders.find_one({"_id": near_order})
        assert order["status"] == "arrived" and "arrival_unverified" not in order
        b.assert_no_errors()
