"""The pages, driven in headless Chromium against the real app on a real loopback port."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from api.seed import ensure_admin
from core import keys
from core.contracts import FLEET_ONLINE, PARTNER_STATE
from core.settings import Settings
from core.tokens import Role
from geo.distance import destination
from partypilot.app import create_app
from tests.browser_helpers import Browsing, Chromium, browse, chromium, free_port

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]  # the module-scoped browser fixture

T = TypeVar("T")
HTML_NAME = '<img src=x onerror="window.__xss=1">Unicorn <b>Party</b>'
VENUE = (12.9716, 77.5946)  # inside the seeded Bengaluru Central service area


@dataclass
class Site:
    url: str
    app: web.Application
    settings: Settings
    redis: Redis
    admin_token: str

    @property
    def db(self) -> Any:
        return self.app[keys.DB]

    async def call(self, method: str, path: str, token: str | None = None, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        async with aiohttp.ClientSession() as http, http.request(method, self.url + path, json=json,
                                                                 headers=headers) as res:
            body = await res.json()
            assert res.status < 300, body
            return body

    async def add_package(self, name: str, category: str = "Kids", price: int = 1_500_000, **extra: Any) -> Any:
        body = {"name": name, "category": category, "price": price, "capacity": 50, "duration_min": 180,
                "description": f"{name}: decorations, host and setup.", "tags": ["party"],
                "features": ["Balloons", "Music"], **extra}
        return await self.call("POST", "/api/admin/packages", json=body)


async def start_site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
                     token_for: Callable[[str, Role], str], **overrides: Any) -> Site:
    """The whole product in development mode (sign-in answers carry dev_code) on a known port,
    so the page's origin can be on the Socket.IO and refresh-cookie allow-lists, and the payment
    simulator's webhooks reach this app."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = make_settings(env="development", allowed_origins=(origin,), port=port, **overrides)
    app = create_app(settings)
    await aiohttp_server(app, host="127.0.0.1", port=port)
    admin_id = await ensure_admin(app[keys.DB], settings.dev_admin_email)
    return Site(origin, app, settings, redis, token_for(admin_id, "admin"))


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


async def add_partner(site: Site, name: str, email: str) -> str:
    """An approved partner, as the seed and an admin's approval leave it."""
    partner_id = uuid.uuid4().hex
    at = "2026-01-01T00:00:00.000Z"
    await site.db.users.insert_one({"_id": partner_id, "role": "partner", "email": email, "name": name,
                                    "addresses": [], "created_at": at, "deleted": 0})
    await site.db.partners.insert_one({"_id": partner_id, "company_name": f"{name.split()[-1]} Events",
                                       "contact_name": name, "first_name": name.split()[0], "email": email,
                                       "phone": "+919800000001", "vehicle_type": "car", "status": "approved",
                                       "created_at": at, "status_at": at})
    return partner_id


async def place_order(site: Site, token: str, package_id: str, lat: float = 12.94, lng: float = 77.62,
                      payment_option: str = "cash") -> Any:
    """POST /api/orders as the customer whose token this is."""
    # Today in the venue's zone: dispatched at once (a later date would wait for its arrival window).
    body = {"package_id": package_id, "event_date": datetime.now(ZoneInfo("Asia/Kolkata")).date().isoformat(),
            "guests": 20,
            "notes": "", "payment_option": payment_option,
            "address": {"line1": "5 Church St", "city": "Bengaluru", "postal_code": "560001", "lat": lat, "lng": lng}}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    async with aiohttp.ClientSession() as http, http.post(site.url + "/api/orders", json=body, headers=headers) as res:
        assert res.status == 201, await res.text()
        return await res.json()


async def eventually(probe: Callable[[], Awaitable[T]], timeout_s: float = 10.0) -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def sign_in(b: Browsing, who: str) -> None:
    """The one-time-code flow as a person does it, reading the development code off the page."""
    page = b.page
    await page.get_by_label("Email or mobile number").fill(who)
    await page.get_by_role("button", name="Send code").click()
    code = (await page.locator("#dev-code").inner_text()).strip()
    assert code.isdigit() and len(code) == 6
    await page.get_by_label("Code", exact=True).fill(code)
    await page.locator("#verify-form").get_by_role("button", name="Sign in").click()


async def test_landing_lists_packages_from_the_api_and_shows_html_as_text(site: Site, chromium: Chromium) -> None:
    await site.add_package("Superhero Training Camp")
    await site.add_package(HTML_NAME, category="Themed")
    async with browse(chromium) as b:
        await b.page.goto(site.url + "/")
        names = b.page.locator("#featured-list .package-name")
        await names.first.wait_for()
        texts = await names.all_inner_texts()
        assert "Superhero Training Camp" in texts
        assert HTML_NAME in texts  # the markup is shown literally...
        assert await b.page.locator("#featured img[src='x']").count() == 0  # ...and never parsed
        assert await b.page.evaluate("window.__xss") is None
        b.assert_no_errors()


async def test_customer_signs_in_searches_and_places_an_order(site: Site, chromium: Chromium) -> None:
    garden = await site.add_package("Garden Wedding Deluxe", category="Weddings", price=9_900_000)
    await site.add_package("Superhero Training Camp")
    event_day = (date.today() + timedelta(days=14)).isoformat()
    async with browse(chromium) as b:
        page = b.page
        await page.goto(site.url + "/customer")
        await page.locator("#account").get_by_role("button", name="Sign in").click()
        await sign_in(b, "asha@example.com")
        await page.get_by_role("button", name="Sign out").wait_for()
        assert await page.locator("#signin-area").is_hidden()

        await page.locator("#package-list .package-name", has_text="Superhero").wait_for()
        await page.get_by_label("Search").fill("garden")
        await page.get_by_role("button", name="Search", exact=True).click()
        await page.locator("#result-count", has_text="1 package found").wait_for()
        assert await page.locator("#package-list .package-name").all_inner_texts() == ["Garden Wedding Deluxe"]

        await page.get_by_role("button", name="View: Garden Wedding Deluxe").click()
        await page.get_by_role("button", name="Order this package").click()
        await page.get_by_label("Event date").fill(event_day)
        # Slots in the venue's local time (the demo city's), the default one chosen; pick the evening.
        slot = page.get_by_label("Arrival time")
        await page.locator("#arrival-slot option", has_text="16:00 \u2013 19:00").wait_for(state="attached")
        assert await slot.input_value() == "10:00-13:00"
        await slot.select_option("16:00-19:00")
        await page.get_by_label("Guests").fill("40")
        await page.get_by_label("Address").fill("12 MG Road")
        await page.get_by_label("City").fill("Bengaluru")
        await page.get_by_label("Postal code").fill("560001")
        await page.locator("#venue-map").click()  # the map opens on the demo city: its centre is in the area
        assert await page.get_by_label("Latitude").input_value() != ""
        await page.get_by_label("Notes for the partner").fill("<script>window.__xss=1</script>Gate 3")
        await page.get_by_label("Pay in full now").check()
        await page.get_by_role("button", name="Place order").click()

        # The order waits for its money: the checkout comes first, with the simulator's test form.
        await page.get_by_text("Test checkout — no real money").wait_for()
        assert await page.locator("#pay-amount").inner_text() == "₹99,000.00"
        pending = await site.db.orders.find_one({})
        assert pending["status"] == "pending_payment" and pending["payment_status"] == "unpaid"
        await page.get_by_role("button", name="Pay ₹99,000.00").click()

        await page.locator("#order-detail-title", has_text="Garden Wedding Deluxe").wait_for()
        assert await page.locator("#money-words").inner_text() == "Paid in full: ₹99,000.00"
        paid = await site.db.orders.find_one({})
        assert paid["status"] == "placed" and paid["payment_status"] == "paid"
        assert paid["amount_paid"] == 9_900_000 and paid["amount_due"] == 0
        assert await page.locator(".order-notes").inner_text() == "<script>window.__xss=1</script>Gate 3"
        assert await page.evaluate("window.__xss") is None

        # A reload keeps the session: the refresh cookie (with the CSRF header) brings a new token.
        await page.reload()
        await page.get_by_role("button", name="Sign out").wait_for()
        await page.get_by_role("tab", name="My orders").click()
        await page.locator("#orders li", has_text="Garden Wedding Deluxe").wait_for()
        await page.get_by_role("button", name="Details of Garden Wedding Deluxe").click()
        await page.get_by_role("button", name="Cancel order").click()
        await page.get_by_label("Reason").fill("date moved")
        await page.get_by_text("Everything you paid (₹99,000.00) comes back to you.").wait_for()
        await page.get_by_role("button", name="Yes, cancel the order").click()
        # Cancelled before a partner was assigned: all of it goes back, and the order ends refunded.
        await page.locator("#order-detail-status", has_text="Refunded").wait_for()
        await page.locator(".timeline li", has_text="date moved").wait_for()
        assert await page.locator("#money-words").inner_text() == "₹99,000.00 refunded in full"
        b.assert_no_errors()

    orders = await site.db.orders.find({}).to_list(None)
    assert len(orders) == 1
    order = orders[0]
    assert order["package_id"] == garden["id"]
    assert order["price"] == 9_900_000  # the server's price, not anything the page sent
    assert order["payment_option"] == "full"
    assert order["status"] == "refunded" and order["payment_status"] == "refunded"
    assert order["amount_refunded"] == order["price"] == order["amount_paid"]
    assert [h["status"] for h in order["history"]][-2:] == ["cancelled", "refunded"]
    assert order["event_date"] == event_day
    assert order["arrive_after"].startswith(f"{event_day}T10:30:00")  # 16:00 in Asia/Kolkata, stored in UTC
    assert order["timezone"] == "Asia/Kolkata" and order["asap"] == 0
    assert abs(order["address"]["lat"] - VENUE[0]) < 0.05 and abs(order["address"]["lng"] - VENUE[1]) < 0.05


async def test_partner_registers_goes_on_duty_and_the_server_gets_its_position(
        site: Site, chromium: Chromium) -> None:
    email = f"crew-{uuid.uuid4().hex[:6]}@example.com"
    position = {"latitude": 12.9352, "longitude": 77.6245, "accuracy": 12}
    async with browse(chromium, geolocation=position, permissions=["geolocation"]) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        # A new partner signs in with a code first, then registers the business on that account,
        # adding a mobile number with its own code and a code sent to the email.
        await sign_in(b, email)
        await page.get_by_label("Company name").fill("Confetti Crew")
        await page.get_by_label("Your name").fill("Ravi Kumar")
        await page.get_by_label("Vehicle").select_option("van")
        await page.get_by_label("Mobile number (optional)").fill("+919812345678")
        await page.get_by_role("button", name="Send codes").click()
        new_code = (await page.locator("#extra-dev-code").inner_text()).strip()
        verify_code = (await page.locator("#verify-dev-code").inner_text()).strip()
        await page.get_by_label("Code sent to the new mobile number").fill(new_code)
        await page.get_by_label(f"Code sent to {email}").fill(verify_code)
        await page.get_by_role("button", name="Register").click()
        await page.locator("#pending", has_text="Waiting for approval").wait_for()

        partner = await site.db.partners.find_one({"email": email})
        assert partner is not None and partner["status"] == "pending" and partner["phone"] == "+919812345678"
        await site.call("PUT", f"/api/admin/partners/{partner['_id']}/approve")

        await page.get_by_role("button", name="Check again").click()
        await page.get_by_role("button", name="Go on duty").click()
        await page.locator("#duty-state", has_text="On duty").wait_for()

        state_key = PARTNER_STATE.format(partner_id=partner["_id"])

        async def position_stored() -> dict[Any, Any]:
            fields: dict[Any, Any] = await site.redis.hgetall(state_key)
            return fields if "lat" in fields else {}

        stored = await eventually(position_stored)
        assert abs(float(stored["lat"]) - position["latitude"]) < 1e-6
        assert abs(float(stored["lng"]) - position["longitude"]) < 1e-6
        assert await eventually(lambda: site.redis.sismember(FLEET_ONLINE, partner["_id"]))
        await page.locator("#gps-chip", has_text="GPS ±12 m").wait_for()
        b.assert_no_errors()


async def test_partner_positions_taken_offline_are_sent_on_reconnect(site: Site, chromium: Chromium) -> None:
    partner_id = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    here = {"latitude": 12.95, "longitude": 77.60, "accuracy": 20}
    async with browse(chromium, geolocation=here, permissions=["geolocation"]) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        await sign_in(b, "ravi@example.com")
        await page.locator("#conn-chip", has_text="Connected").wait_for()
        await page.context.set_offline(True)
        await page.locator("#conn-chip", has_text="Offline").wait_for()
        await page.get_by_role("button", name="Go on duty").click()
        await page.locator("#queue-chip", has_text="1 position waiting to send").wait_for()
        assert await site.redis.hget(PARTNER_STATE.format(partner_id=partner_id), "lat") is None

        await page.context.set_offline(False)
        # The queued fix goes out as a location_batch once the socket is back.
        stored = await eventually(lambda: site.redis.hget(PARTNER_STATE.format(partner_id=partner_id), "lat"),
                                  timeout_s=20)
        assert abs(float(stored) - here["latitude"]) < 1e-6
        await page.locator("#queue-chip").wait_for(state="hidden")
        b.assert_no_errors()


async def test_a_suspended_partner_is_told_at_once(site: Site, chromium: Chromium) -> None:
    partner_id = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    async with browse(chromium) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        await sign_in(b, "ravi@example.com")
        await page.locator("#conn-chip", has_text="Connected").wait_for()
        await site.call("PUT", f"/api/admin/partners/{partner_id}/suspend")
        # The server hangs up; the page tries once more and learns why it is refused.
        await page.locator("#pending", has_text="Account suspended").wait_for()
        assert await page.locator("#app").is_hidden()
        b.assert_no_errors()


async def test_admin_sees_a_partner_pin_from_the_fleet_stream(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    partner_id = await add_partner(site, "Meera Shah", "meera@example.com")
    await site.call("PUT", "/api/partner/location", token=token_for(partner_id, "partner"),
                    json={"lat": VENUE[0], "lng": VENUE[1], "accuracy": 8})
    async with browse(chromium) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        pin = page.locator(f"[data-partner-id='{partner_id}']")
        await pin.wait_for()
        assert await pin.inner_text() == "MS"
        await pin.hover()
        card = page.locator(".hover-card")
        await card.wait_for()
        assert "Meera Shah" in await card.inner_text()
        assert "Last seen" in await card.inner_text()
        assert any("tile.openstreetmap.org" in url for url in b.blocked)  # no tiles: markers still drawn

        # Meera is not on duty, so dispatch finds nobody, alerts the admin, who assigns by hand.
        package = await site.add_package("Retirement Dinner", category="Corporate")
        customer_id = uuid.uuid4().hex
        await site.db.users.insert_one({"_id": customer_id, "role": "customer", "email": "dev@example.com",
                                        "name": "Dev", "addresses": [], "created_at": "2026-01-01T00:00:00.000Z",
                                        "deleted": 0})
        order = await place_order(site, token_for(customer_id, "customer"), package["id"])
        alert = page.locator(".toast", has_text="assign it manually")
        await alert.wait_for(timeout=15_000)
        # The order also stays in the waiting queue (a toast can be missed), until someone has it.
        waiting = page.locator(f"#waiting-list [data-id='{order['id']}']")
        await waiting.wait_for()
        assert "Retirement Dinner" in await waiting.inner_text() and "nobody took it" in await waiting.inner_text()
        await alert.get_by_role("button", name="Open").click()
        await page.locator(f"#candidate-table tr[data-id='{partner_id}']").click()
        await page.get_by_label("Reason").fill("regular for this venue")
        await page.get_by_role("button", name="Assign", exact=True).click()
        await page.locator(f"#board-list [data-id='{order['id']}']", has_text="Partner assigned").wait_for()
        await page.locator("#waiting").wait_for(state="hidden")
        assigned = await site.db.orders.find_one({"_id": order["id"]})
        assert assigned["status"] == "assigned" and assigned["partner_id"] == partner_id
        await page.locator("#audit-story li", has_text="Assigned by hand to Meera Shah").wait_for()
        b.assert_no_errors()


async def test_partner_accepts_an_offer_and_the_customer_watches_it_live(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Superhero Training Camp")
    partner_id = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    here = {"latitude": 12.9352, "longitude": 77.6245, "accuracy": 10}
    async with browse(chromium, geolocation=here, permissions=["geolocation"]) as crew, browse(chromium) as buyer:
        await crew.page.goto(site.url + "/partner")
        await sign_in(crew, "ravi@example.com")
        await crew.page.get_by_role("button", name="Go on duty").click()

        async def ready_for_offers() -> bool:
            fields = await site.redis.hgetall(PARTNER_STATE.format(partner_id=partner_id))
            return "lat" in fields and bool(await site.redis.sismember(FLEET_ONLINE, partner_id))

        await eventually(ready_for_offers)

        await buyer.page.goto(site.url + "/customer")
        await buyer.page.locator("#account").get_by_role("button", name="Sign in").click()
        await sign_in(buyer, "priya@example.com")
        await buyer.page.get_by_role("button", name="Sign out").wait_for()
        customer = await site.db.users.find_one({"email": "priya@example.com"})
        order_id = (await place_order(site, token_for(customer["_id"], "customer"), package["id"]))["id"]
        await buyer.page.get_by_role("tab", name="My orders").click()
        await buyer.page.get_by_role("button", name="Details of Superhero Training Camp").click()
        await buyer.page.locator("#order-detail-title").wait_for()

        offer = crew.page.locator(f"article.offer[data-id='{order_id}']")
        await offer.wait_for(timeout=15_000)
        assert (await offer.locator(".countdown").inner_text()).endswith(" s")
        await offer.get_by_role("button", name="Accept").click()
        await crew.page.get_by_role("button", name="Start driving").wait_for()
        # The partner goes to the venue: there is no pickup to head to.
        await crew.page.get_by_text("Tap \"Start driving\" when you set off for the venue").wait_for()
        assert await crew.page.get_by_text("pickup").count() == 0

        # The customer's page learns of the assignment and starts tracking the partner live.
        await buyer.page.locator("#order-detail-status", has_text="Partner assigned").wait_for()
        await buyer.page.locator("#freshness", has_text="Last update").wait_for()
        await buyer.page.locator("#eta", has_text="away and will set off soon").wait_for()
        assert await buyer.page.locator("#track-map .pin").count() == 2  # the partner and the venue

        await crew.page.get_by_role("button", name="Start driving").click()
        await crew.page.get_by_role("button", name="I've arrived").wait_for()
        await buyer.page.locator("#order-detail-status", has_text="On the way").wait_for()
        await buyer.page.locator("#eta", has_text="Arriving in").wait_for()
        order = await site.db.orders.find_one({"_id": order_id})
        assert order["status"] == "en_route" and order["partner_id"] == partner_id

        # About 730 m from the venue: "I've arrived" is refused, saying how far, and the customer
        # is not told the partner is there.
        await crew.page.get_by_role("button", name="I've arrived").click()
        refusal = crew.page.locator("#job .status", has_text="from the venue")
        await refusal.wait_for()
        assert (await refusal.inner_text()).startswith("You are 7")
        assert "within 150 m" in await refusal.inner_text()
        assert (await site.db.orders.find_one({"_id": order_id}))["status"] == "en_route"
        assert "at the venue" not in await buyer.page.locator("#eta").inner_text()
        # At the venue (a rough fix: the phone's accuracy is allowed for), the same tap works.
        await crew.page.context.set_geolocation({"latitude": 12.94, "longitude": 77.62, "accuracy": 700})
        for step, after in [("I've arrived", "Setup is done"), ("Setup is done", "Complete the job")]:
            await crew.page.get_by_role("button", name=step).click()
            await crew.page.get_by_role("button", name=after).wait_for()
        await buyer.page.locator("#eta", has_text="Your partner is at the venue.").wait_for()
        # Chromium logs every 4xx answer; the one 409 is the refused arrival above.
        crew.errors = [e for e in crew.errors if not ("status of 409" in e and f"/orders/{order_id}/status" in e)]
        await crew.page.get_by_role("button", name="Complete the job").click()
        await crew.page.locator("#job .empty").wait_for()

        # Completed: the map goes away and the customer may rate the party, once.
        await buyer.page.locator("#order-detail-status", has_text="Completed").wait_for()
        assert await buyer.page.locator("#tracking").is_hidden()
        await buyer.page.get_by_label("5★").check()
        await buyer.page.get_by_label("Comments").fill("Kids loved it")
        await buyer.page.get_by_role("button", name="Send review").click()
        await buyer.page.get_by_text("Thank you for your review.").wait_for()
        rated = await site.db.packages.find_one({"_id": package["id"]})
        assert rated["rating_count"] == 1
        crew.assert_no_errors()
        buyer.assert_no_errors()


async def test_customer_map_freezes_and_says_so_when_the_partner_goes_quiet(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Pool Party")
    partner_id = await add_partner(site, "Arjun Rao", "arjun@example.com")
    two_minutes_ago = int(time.time() * 1000) - 120_000
    await site.call("PUT", "/api/partner/location", token=token_for(partner_id, "partner"),
                    json={"lat": 12.95, "lng": 77.61, "accuracy": 10, "ts": two_minutes_ago})
    async with browse(chromium) as b:
        page = b.page
        await page.goto(site.url + "/customer")
        await page.locator("#account").get_by_role("button", name="Sign in").click()
        await sign_in(b, "neha@example.com")
        await page.get_by_role("button", name="Sign out").wait_for()
        customer = await site.db.users.find_one({"email": "neha@example.com"})
        order = await place_order(site, token_for(customer["_id"], "customer"), package["id"])
        await site.call("PUT", f"/api/admin/orders/{order['id']}/assign", json={"partner_id": partner_id})
        await page.get_by_role("tab", name="My orders").click()
        await page.get_by_role("button", name="Details of Pool Party").click()
        freshness = page.locator("#freshness")
        await freshness.filter(has_text="may be out of date").wait_for()
        assert "2 min ago" in await freshness.inner_text()
        assert await page.locator("#track-map .pin-stale").count() == 1  # frozen and greyed, not animated
        b.assert_no_errors()


MARKER_SCRIPT = """async () => {
  const { createMap, SmoothMarker } = await import('/js/map.js');
  const box = document.createElement('div');
  box.style.height = '200px';
  document.body.append(box);
  const marker = new SmoothMarker(createMap(box), { label: 'RK' });
  const t = Date.now();
  const accepted = [
    marker.push({ lat: 12.95, lng: 77.60, ts: t }),
    marker.push({ lat: 12.96, lng: 77.60, ts: t - 1000 }),                  // older than the last fix
    marker.push({ lat: 12.96, lng: 77.60, ts: t + 1000, accuracy: 500 }),   // a 500 m guess
  ];
  marker.push({ lat: 12.95005, lng: 77.60, ts: t + 2000 });                 // 5 m of jitter
  const still = marker.latLng().lat;
  marker.push({ lat: 12.96, lng: 77.60, ts: t + 3000 });                    // a real move, over 1 s
  await new Promise((resolve) => setTimeout(resolve, 300));
  const moving = marker.latLng().lat;
  marker.freeze();
  return { accepted, still, moving, frozen: marker.latLng().lat, grey: !!box.querySelector('.pin-stale') };
}"""


async def test_partner_marker_drops_bad_fixes_and_glides_between_good_ones(site: Site, chromium: Chromium) -> None:
    async with browse(chromium) as b:
        await b.page.goto(site.url + "/customer")
        result = await b.page.evaluate(MARKER_SCRIPT)
        assert result["accepted"] == [True, False, False]
        assert result["still"] == 12.95  # jitter does not move the marker
        assert 12.95 < result["moving"] < 12.96  # on its way, not teleported
        assert result["frozen"] == 12.96 and result["grey"]  # frozen at the last accepted fix, greyed
        b.assert_no_errors()


async def test_admin_approves_a_partner_and_creates_a_package(site: Site, chromium: Chromium) -> None:
    async with aiohttp.ClientSession() as http:
        # Sign in with a code (development answers carry it), then register on that account.
        async with http.post(site.url + "/api/auth/send-otp", json={"email": "kiran@example.com"}) as res:
            code = (await res.json())["dev_code"]
        async with http.post(site.url + "/api/auth/verify-otp", json={"email": "kiran@example.com",
                                                                      "code": code}) as res:
            token = (await res.json())["access_token"]
        async with http.post(site.url + "/api/auth/partner/register", headers={"Authorization": f"Bearer {token}"},
                             json={"company_name": "Balloon Bros", "contact_name": "Kiran Das",
                                   "vehicle_type": "bike"}) as res:
            assert res.status == 201, await res.text()
    async with browse(chromium) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        await page.get_by_role("tab", name="Partners").click()
        row = page.locator("#partner-table tr", has_text="Balloon Bros")
        await row.get_by_role("button", name="Approve").click()
        await page.locator(".toast", has_text="Balloon Bros: approved").wait_for()
        partner = await site.db.partners.find_one({"email": "kiran@example.com"})
        assert partner["status"] == "approved"

        await page.get_by_role("tab", name="Packages").click()
        await page.get_by_role("button", name="New package").click()
        await page.get_by_label("Name").fill("Karaoke <Night>")
        await page.get_by_label("Category").select_option("Casual")
        await page.get_by_label("Price (₹)").fill("12000")
        await page.get_by_label("Guests (max)").fill("30")
        await page.get_by_label("Features").fill("Two microphones\nDisco lights")
        await page.get_by_role("button", name="Create package").click()
        await page.locator("#package-table td", has_text="Karaoke <Night>").wait_for()
        created = await site.db.packages.find_one({"name": "Karaoke <Night>"})
        assert created["price"] == 1_200_000 and created["features"] == ["Two microphones", "Disco lights"]

        await page.get_by_role("tab", name="Stats").click()
        await page.locator("#kpis").wait_for()
        b.assert_no_errors()


async def test_every_page_loads_without_console_errors(site: Site, chromium: Chromium) -> None:
    async with browse(chromium) as b:
        pages = [("/", "#featured .empty"), ("/customer", "#package-results .empty"), ("/partner", "#signin-form"),
                 ("/admin", "#signin-form"), ("/track?order=abc", "#signin-form"),
                 ("/api/docs", "#swagger-ui .opblock")]
        for path, ready in pages:
            await b.page.goto(site.url + path)
            # Swagger UI renders the whole document (70-odd operations) before the first one shows:
            # seconds on a loaded two-core box, so its wait is longer than the default.
            await b.page.locator(ready).first.wait_for(timeout=45_000 if path == "/api/docs" else None)
        assert await b.page.locator("#swagger-ui .opblock").count() > 10
        b.assert_no_errors()


async def test_a_shared_tracking_link_follows_the_order_without_signing_in(site: Site, chromium: Chromium) -> None:
    from core.tokens import issue_access_token

    package = await site.add_package("Lantern Garden Party", category="Festival")
    customer_id = uuid.uuid4().hex
    await site.db.users.insert_one({"_id": customer_id, "role": "customer", "email": "guest-host@example.com",
                                    "name": "Nila Host", "addresses": [], "created_at": "2026-01-01T00:00:00.000Z",
                                    "deleted": 0})
    customer = issue_access_token(site.settings, customer_id, "customer", "s-track")
    order = await place_order(site, customer, package["id"])
    link = await site.call("POST", f"/api/orders/{order['id']}/tracking-link", token=customer)
    partner_id = await add_partner(site, "Kavya Menon", "kavya@example.com")

    async with browse(chromium) as b:  # a fresh browser: nobody is signed in
        await b.page.goto(site.url + "/track?t=" + link["token"])
        await b.page.get_by_role("heading", name="Lantern Garden Party").wait_for()
        assert await b.page.locator("#tracking").is_hidden()  # nothing to show before assignment
        await site.call("PUT", f"/api/admin/orders/{order['id']}/assign",
                        json={"partner_id": partner_id, "reason": "test"})
        # The status push arrives over the guest socket and the page re-reads the order.
        await b.page.get_by_text("with Kavya").wait_for()
        await b.page.locator("#tracking").wait_for(state="visible")
        assert "Sign in" not in await b.page.locator("#main").inner_text()
        b.assert_no_errors()


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# Far from where maps open (central Bengaluru): a map that does not follow the order misses both pins.
FAR_VENUE = (12.86, 77.75)
# How many of the tracking map's pins (partner and venue) are drawn inside the map's box.
PINS_IN_VIEW = """() => {
  const box = document.querySelector('#track-map').getBoundingClientRect();
  return [...document.querySelectorAll('#track-map .leaflet-marker-icon')].filter((pin) => {
    const r = pin.getBoundingClientRect();
    const x = r.left + r.width / 2; const y = r.top + r.height / 2;
    return x >= box.left && x <= box.right && y >= box.top && y <= box.bottom;
  }).length;
}"""


async def new_customer(site: Site, token_for: Callable[[str, Role], str], email: str) -> str:
    """A customer account and its access token (for orders placed over the API)."""
    user_id = uuid.uuid4().hex
    await site.db.users.insert_one({"_id": user_id, "role": "customer", "email": email, "name": "Tara",
                                    "addresses": [], "created_at": "2026-01-01T00:00:00.000Z", "deleted": 0})
    return token_for(user_id, "customer")


async def test_tracking_map_keeps_partner_and_venue_in_view_through_assignment_and_movement(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Boho Picnic")
    partner_id = await add_partner(site, "Kiran Shetty", "kiran@example.com")
    crew = token_for(partner_id, "partner")
    t = int(time.time() * 1000) - 10_000
    north = destination(*FAR_VENUE, 0, 400)
    await site.call("PUT", "/api/partner/location", token=crew,
                    json={"lat": north[0], "lng": north[1], "accuracy": 10, "ts": t})
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/customer")
        await page.locator("#account").get_by_role("button", name="Sign in").click()
        await sign_in(b, "tara@example.com")
        await page.get_by_role("button", name="Sign out").wait_for()
        customer = await site.db.users.find_one({"email": "tara@example.com"})
        order = await place_order(site, token_for(customer["_id"], "customer"), package["id"], *FAR_VENUE)
        await page.get_by_role("tab", name="My orders").click()
        await page.get_by_role("button", name="Details of Boho Picnic").click()
        await page.locator("#order-detail-title").wait_for()
        assert await page.locator("#tracking").is_hidden()

        # Assigned while the page is open (the page had seen this order before): both pins in view.
        await site.call("PUT", f"/api/admin/orders/{order['id']}/assign", json={"partner_id": partner_id})
        await page.locator("#order-detail-status", has_text="Partner assigned").wait_for()
        await page.locator("#freshness", has_text="Last update").wait_for()
        await page.wait_for_function(f"({PINS_IN_VIEW})() === 2")

        # The partner drives 300 m farther north, past the top of the view: the map follows.
        farther = destination(*FAR_VENUE, 0, 700)
        await site.call("PUT", "/api/partner/location", token=crew,
                        json={"lat": farther[0], "lng": farther[1], "accuracy": 10, "ts": t + 4_000})
        await asyncio.sleep(4.5)  # the marker glides over the 4 s between the two fixes
        assert await page.evaluate(PINS_IN_VIEW) == 2

        # The viewer zooms in themselves: the map stops following and offers to come back.
        await page.locator("#track-map").get_by_role("button", name="Zoom in").click()
        recentre = page.get_by_role("button", name="Show partner and venue")
        await recentre.wait_for()
        await recentre.click()
        await page.wait_for_function(f"({PINS_IN_VIEW})() === 2")
        assert await recentre.is_hidden()
        b.assert_no_errors()


async def test_a_manual_assignment_reaches_the_partners_phone_at_once(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Magic Show Extravaganza")
    ravi = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    meena = await add_partner(site, "Meena Iyer", "meena@example.com")
    here = {"latitude": 12.9352, "longitude": 77.6245, "accuracy": 10}
    async with browse(chromium, geolocation=here, permissions=["geolocation"], **PHONE) as crew, \
            browse(chromium, **PHONE) as other:
        await crew.page.goto(site.url + "/partner")
        await sign_in(crew, "ravi@example.com")
        await crew.page.get_by_role("button", name="Go on duty").click()

        async def ready_for_offers() -> bool:
            fields = await site.redis.hgetall(PARTNER_STATE.format(partner_id=ravi))
            return "lat" in fields and bool(await site.redis.sismember(FLEET_ONLINE, ravi))

        await eventually(ready_for_offers)
        await other.page.goto(site.url + "/partner")
        await sign_in(other, "meena@example.com")
        await other.page.locator("#job .empty").wait_for()

        order = await place_order(site, await new_customer(site, token_for, "tara@example.com"), package["id"],
                                  lat=12.9352, lng=77.6245)
        offer = crew.page.locator(f"article.offer[data-id='{order['id']}']")
        await offer.wait_for(timeout=15_000)

        # The admin gives the order to Ravi: the countdown stops and the job shows, well before the
        # page's 60 s poll.
        await site.call("PUT", f"/api/admin/orders/{order['id']}/assign", json={"partner_id": ravi})
        await crew.page.get_by_role("button", name="Start driving").wait_for(timeout=5_000)
        await offer.wait_for(state="detached", timeout=5_000)
        await crew.page.get_by_text("A new job was assigned to you").wait_for()

        # Reassigned to Meena: Ravi is told he need not go, Meena's phone shows the job.
        await site.call("PUT", f"/api/admin/orders/{order['id']}/assign", json={"partner_id": meena})
        await crew.page.get_by_text("reassigned to another partner").wait_for(timeout=5_000)
        await crew.page.locator("#job .empty").wait_for(timeout=5_000)
        await other.page.get_by_role("button", name="Start driving").wait_for(timeout=5_000)
        crew.assert_no_errors()
        other.assert_no_errors()


async def test_partner_sees_its_position_age_and_when_the_server_will_call_it_stale(
        site: Site, chromium: Chromium) -> None:
    await add_partner(site, "Ravi Kumar", "ravi@example.com")
    here = {"latitude": 12.95, "longitude": 77.60, "accuracy": 10}
    async with browse(chromium, geolocation=here, permissions=["geolocation"], **PHONE) as b:
        page = b.page
        await page.clock.install()
        await page.goto(site.url + "/partner")
        await sign_in(b, "ravi@example.com")
        job, line = page.locator("#job"), page.locator("#last-fix")
        await job.get_by_text("Go on duty to receive offers.").wait_for()
        await page.get_by_role("button", name="Go on duty").click()
        # On duty: the empty job card no longer tells them to go on duty.
        await job.get_by_text("You are on duty").wait_for()
        assert await job.get_by_text("Go on duty").count() == 0
        await line.filter(has_text="Last position shared").wait_for()
        # The page's clock runs 50 s ahead of the phone's fixes: their age must grow by itself.
        await page.clock.fast_forward(50_000)
        await line.filter(has_text="stop getting offers").wait_for()
        assert await line.get_attribute("data-state") == "late"
        assert re.search(r"shared [45]\d s ago", await line.inner_text())
        await page.clock.fast_forward(45_000)
        await line.filter(has_text="sends you no offers").wait_for()
        assert await line.get_attribute("data-state") == "stale"

        await page.get_by_role("button", name="Go off duty").click()
        await job.get_by_text("Go on duty to receive offers.").wait_for()
        await line.filter(has_text="Off duty").wait_for()
        assert await job.get_by_text("new offers appear").count() == 0
