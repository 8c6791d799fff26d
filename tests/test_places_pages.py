"""Picking a venue on a phone: address suggestions, "we deliver here" or "not yet", my location,
typed coordinates, and the service areas on the customer's and the admin's maps."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from core.tokens import Role
from tests.browser_helpers import Browsing, Chromium, browse, chromium
from tests.test_pages import Site, sign_in, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]  # the module-scoped browser fixture

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                         "has_touch": True}
UB_CITY = {"latitude": 12.9716, "longitude": 77.5962}


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


async def open_order_form(site: Site, b: Browsing, who: str) -> None:
    """Sign in on the customer page, open the only package and start ordering it."""
    page = b.page
    await page.goto(site.url + "/customer")
    await page.locator("#account").get_by_role("button", name="Sign in").click()
    await sign_in(b, who)
    await page.get_by_role("button", name="Sign out").wait_for()
    await page.get_by_role("button", name=re.compile("^View: ")).first.click()
    await page.get_by_role("button", name="Order this package").click()
    await page.locator("#venue-map path.service-area").first.wait_for(state="attached")


async def pin_in_view(b: Browsing) -> bool:
    """Whether the venue pin is drawn inside the venue map's box."""
    box = await b.page.locator("#venue-map").bounding_box()
    pin = await b.page.locator("#venue-map .leaflet-marker-icon").bounding_box()
    if box is None or pin is None:
        return False
    x, y = pin["x"] + pin["width"] / 2, pin["y"] + pin["height"] / 2
    return bool(box["x"] <= x <= box["x"] + box["width"] and box["y"] <= y <= box["y"] + box["height"])


async def test_a_customer_on_a_phone_types_an_address_picks_it_and_orders_there(site: Site, chromium: Chromium) -> None:
    package = await site.add_package("Garden Wedding Deluxe", category="Weddings", price=9_900_000)
    event_day = (datetime.now(ZoneInfo("Asia/Kolkata")).date() + timedelta(days=10)).isoformat()
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await open_order_form(site, b, "kavya@example.com")
        assert await page.locator("#venue-map path.service-area").count() == 2  # where we deliver, shaded

        # Typed as on a phone, with a typo: suggestions come, the right block among them.
        await page.get_by_label("Address").press_sequentially("koramangla 5", delay=40)
        option = page.get_by_role("option", name=re.compile("Koramangala 5th Block"))
        await option.wait_for()
        assert await page.get_by_label("Address").get_attribute("aria-expanded") == "true"
        await option.click()
        # The pick fills the address, moves the pin and the map there, and says we deliver there.
        notice = page.locator("#venue-notice")
        await notice.filter(has_text="We deliver here").wait_for()
        assert "Bengaluru Central" in await notice.inner_text()
        assert await page.get_by_label("Address").input_value() == "Koramangala 5th Block"
        assert await page.get_by_label("City").input_value() == "Bengaluru"
        assert await page.get_by_label("Postal code").input_value() == "560095"
        assert await page.get_by_label("Latitude").input_value() == "12.934500"
        assert await page.locator("#place-options").is_hidden()
        assert await pin_in_view(b)
        await page.get_by_label("Address").fill("14, 3rd Cross, Koramangala 5th Block")  # the house, added

        await page.get_by_label("Event date").fill(event_day)
        await page.locator("#arrival-slot option", has_text="16:00 \u2013 19:00").wait_for(state="attached")
        await page.get_by_label("Arrival time").select_option("16:00-19:00")
        await page.get_by_label("Guests").fill("40")
        await page.get_by_label("Pay cash on the day").check()
        await page.get_by_role("button", name="Place order").click()
        await page.locator("#order-detail-title", has_text="Garden Wedding Deluxe").wait_for()
        b.assert_no_errors()

    order = await site.db.orders.find_one({"package_id": package["id"]})
    assert order is not None and order["service_area"] == "Bengaluru Central"
    assert order["address"] == {"line1": "14, 3rd Cross, Koramangala 5th Block", "city": "Bengaluru",
                                "postal_code": "560095", "lat": 12.9345, "lng": 77.619}
    assert order["arrive_after"].startswith(f"{event_day}T10:30:00")  # 16:00 in Asia/Kolkata, in UTC


async def test_not_yet_served_my_location_and_typed_coordinates(site: Site, chromium: Chromium) -> None:
    await site.add_package("Superhero Training Camp")
    async with browse(chromium, **PHONE, geolocation=UB_CITY, permissions=["geolocation"]) as b:
        page = b.page
        await open_order_form(site, b, "rohan@example.com")
        address = page.get_by_label("Address")
        notice = page.locator("#venue-notice")

        # A place outside every area: the list says so, and so does the page once it is picked.
        await address.press_sequentially("nandi hil", delay=30)
        option = page.get_by_role("option", name=re.compile("Nandi Hills"))
        await option.wait_for()
        assert "Not yet in our delivery area" in await option.inner_text()
        await address.press("Enter")  # the first suggestion; the order is not sent
        await notice.filter(has_text="Not yet in this area").wait_for()
        assert await page.locator("#order-status").is_hidden()

        # "Use my location": the pin goes where the phone is, the address is filled by reverse lookup.
        await page.get_by_role("button", name="Use my location").click()
        await notice.filter(has_text="We deliver here").wait_for()
        await page.wait_for_function("document.querySelector('#line1').value.startsWith('Near UB City')")
        assert await address.input_value() == "Near UB City, Ashok Nagar"
        assert await page.get_by_label("Postal code").input_value() == "560001"
        assert await page.get_by_label("Latitude").input_value() == "12.971600"
        assert "Pin placed where you are" in await page.locator("#locate-status").inner_text()

        # Typed coordinates move the pin and the map; a typed address is kept.
        await page.get_by_label("Latitude").fill("13.1007")
        await page.get_by_label("Longitude").fill("77.5963")
        await page.get_by_label("Longitude").press("Tab")
        await notice.filter(has_text="Bengaluru North").wait_for()
        assert await pin_in_view(b)
        assert await address.input_value() == "Near UB City, Ashok Nagar"
        # The one expected complaint: the browser logs the arrival slots' 422 for the venue outside.
        assert all("422" in e and "/api/orders/arrival-slots" in e and "13.370200" in e for e in b.errors), b.errors


async def test_a_refused_location_is_explained(site: Site, chromium: Chromium) -> None:
    await site.add_package("Superhero Training Camp")
    async with browse(chromium, **PHONE) as b:  # no permission granted: the browser refuses
        await open_order_form(site, b, "meena@example.com")
        await b.page.get_by_role("button", name="Use my location").click()
        status = b.page.locator("#locate-status")
        await status.filter(has_text="Location is blocked for this site").wait_for()
        assert await b.page.get_by_role("button", name="Use my location").is_enabled()
        assert await b.page.get_by_label("Latitude").input_value() == ""
        b.assert_no_errors()


async def test_the_admin_fleet_map_shades_the_service_areas(site: Site, chromium: Chromium) -> None:
    async with browse(chromium) as b:
        await b.page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        areas = b.page.locator("#fleet-map path.service-area")
        await areas.first.wait_for(state="attached")
        assert await areas.count() == 2
        b.assert_no_errors()


async def test_the_delivery_notice_goes_when_a_new_address_is_typed_over_the_picked_one(
        site: Site, chromium: Chromium) -> None:
    await site.add_package("Superhero Training Camp")
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await open_order_form(site, b, "meera@example.com")
        address, notice = page.get_by_label("Address"), page.locator("#venue-notice")
        await address.press_sequentially("koramangala 5", delay=40)
        await page.get_by_role("option", name=re.compile("Koramangala 5th Block")).click()
        await notice.filter(has_text="We deliver here").wait_for()
        # Adding the house number keeps the answer: the pin is still that place.
        await address.press("Home")
        await address.press_sequentially("14, ", delay=20)
        assert "We deliver here" in await notice.inner_text()

        # A new address typed over it: the old answer goes at once, before any pick.
        await address.fill("")
        await address.press_sequentially("indira", delay=40)
        await notice.filter(has_text="Pick the new address").wait_for()
        assert "We deliver here" not in await notice.inner_text()
        # Changing the date re-reads the slots for the old pin: still no answer about it.
        await page.get_by_label("Event date").fill((datetime.now(ZoneInfo("Asia/Kolkata")).date()
                                                    + timedelta(days=5)).isoformat())
        await page.wait_for_timeout(500)
        assert "We deliver here" not in await notice.inner_text()
        await page.screenshot(path="/tmp/venue-notice.png")
        # Back in the address, picking the new place answers for it.
        await address.press("End")
        await address.press_sequentially("nagar", delay=40)
        await page.get_by_role("option", name=re.compile("^Indiranagar")).first.click()
        await notice.filter(has_text="We deliver here").wait_for()
        b.assert_no_errors()
