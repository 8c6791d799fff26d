"""The operations console driven in headless Chromium: the dispatch audit read in plain words,
assisted assignment from the ranked list, and the needs-attention queue."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from core.contracts import DISPATCH_AUDIT, FLEET_BUSY
from core.jsonutil import iso, now_ms
from core.settings import Settings
from core.tokens import Role
from tests.browser_helpers import Chromium, browse, chromium
from tests.helpers import BENGALURU
from tests.test_console import _place
from tests.test_pages import Site, add_partner, sign_in, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium"]  # the module-scoped browser fixture

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
T0 = datetime(2026, 12, 3, 13, 12, 55, tzinfo=UTC)  # 18:42:55 in Bengaluru


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


async def add_order(site: Site, status: str = "placed", lat: float = 12.9716, lng: float = 77.5946,
                    **fields: Any) -> str:
    """An order as the order API stores it (in Bengaluru), without going through dispatch."""
    order_id = uuid.uuid4().hex
    now = iso()
    customer_id = uuid.uuid4().hex
    await site.db.users.insert_one({"_id": customer_id, "role": "customer",
                                    "email": f"{customer_id[:8]}@example.com", "name": "Asha Rao",
                                    "phone": f"+9198{uuid.uuid4().int % 10**8:08d}", "addresses": [],
                                    "created_at": now, "deleted": 0})
    await site.db.orders.insert_one({
        "_id": order_id, "customer_id": customer_id, "package_id": uuid.uuid4().hex,
        "package": {"name": "Jungle Safari Party", "price": 1_500_000, "currency": "INR", "category": "Kids",
                    "duration_min": 180},
        "event_date": "2026-12-20", "timezone": "Asia/Kolkata",
        "address": {"line1": "5 Church St", "city": "Bengaluru", "postal_code": "560001", "lat": lat, "lng": lng},
        "guests": 20, "notes": "", "payment_option": "cash", "price": 1_500_000, "currency": "INR",
        "status": status, "version": 1,
        "history": [{"status": "placed", "at": now, "by_role": "customer", "by": customer_id, "reason": None}],
        "offer_partner_ids": [], "offer_fence": 0, "offer_expires_ms": 0, "declined_partner_ids": [],
        "service_area": "Bengaluru Central", "created_at": now, "updated_at": now, **fields})
    return order_id


async def test_an_orders_dispatch_audit_reads_in_plain_words(site: Site, chromium: Chromium) -> None:
    ravi = await add_partner(site, "Ravi Kumar", "ravi@example.com")
    meena = await add_partner(site, "Meena Iyer", "meena@example.com")
    order_id = await add_order(site, status="assigned", partner_id=ravi)
    idle = int((T0 - timedelta(minutes=14)).timestamp() * 1000)
    rows = [{"partner_id": ravi, "distance_m": 432, "eta_s": 95, "idle_since": idle, "rank": 1},
            {"partner_id": meena, "distance_m": 2300, "eta_s": 400, "idle_since": 0, "rank": 2}]
    entries = [
        (0, "candidates", {"radius_m": 5000, "found": 2, "excluded": [], "skipped": {"busy": 1, "offered": 2},
                           "candidates": rows}),
        (0, "offer", {"partner_ids": [ravi], "fence": 1, "radius_m": 5000, "offers": rows[:1]}),
        (11, "reply", {"partner_id": ravi, "accept": True, "via": "socket", "fence": 1}),
        (11, "assigned", {"partner_id": ravi, "fence": 1})]
    await site.db[DISPATCH_AUDIT].insert_many([
        {"_id": uuid.uuid4().hex, "order_id": order_id, "at": iso(T0 + timedelta(seconds=offset)), "event": event,
         "data": {**data, "node": "vm:9511"}} for offset, event, data in entries])
    async with browse(chromium, **DESKTOP) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        await page.locator(f"#board-list [data-id='{order_id}']").get_by_role("button", name="Open").click()
        story = page.locator("#audit-story li").first
        await story.wait_for()
        assert await story.locator(".audit-time").inner_text() == "18:42:55"
        assert await story.locator(".audit-text").inner_text() == (
            "Searched 5 km: 5 partners; skipped 1 busy, 2 holding other offers. Offered to Ravi Kumar "
            "(430 m, ~2 min, idle 14 min) at 18:42:55; accepted after 11 s.")
        table = story.locator("table tbody tr")
        assert [await r.inner_text() for r in await table.all()] == [
            "#1\tRavi Kumar\t430 m\t~2 min\t14 min\toffered", "#2\tMeena Iyer\t2.3 km\t~7 min\t—\t"]
        assert await page.get_by_text("Times in Asia/Kolkata.").is_visible()
        # Who to call: the customer and the partner, numbers as call links.
        assert (await page.locator("#panel-customer").inner_text()).startswith("Asha Rao · +9198")
        assert await page.locator("#panel-partner").get_by_role("link", name="+919800000001").get_attribute(
            "href") == "tel:+919800000001"
        # The raw entries are there, folded away: no ids or node names in plain sight.
        raw = page.locator("#audit-raw")
        assert await raw.locator("#audit").is_hidden()
        assert "vm:9511" not in await page.locator("#order-panel").inner_text()
        await raw.locator("summary").click()
        await page.locator("#audit li", has_text="vm:9511").first.wait_for()
        # The panel is scrolled into view when it opens.
        assert await page.locator("#order-panel h2").is_visible()
        box = await page.locator("#order-panel").bounding_box()
        assert box is not None and box["y"] < 800
        b.assert_no_errors()


async def waiting_order(site: Site) -> str:
    """A placed order dispatch gave up on for now (it waits for its retry, admins were alerted)."""
    far = now_ms() + 3_600_000
    return await add_order(site, lat=BENGALURU["lat"], lng=BENGALURU["lng"], dispatch_exhausted=1,
                           dispatch_retry_ms=far, dispatch_attempts=1, dispatch_radius_m=20_000,
                           dispatch_alert_ms=now_ms())


async def test_assisted_assignment_picks_the_nearest_free_partner_from_the_ranked_list(
        site: Site, chromium: Chromium) -> None:
    asha = await add_partner(site, "Asha Near", "asha@example.com")
    chitra = await add_partner(site, "Chitra Far", "chitra@example.com")
    dev = await add_partner(site, "Dev Busy", "dev@example.com")
    pending = await add_partner(site, "Pia Pending", "pia@example.com")
    await site.db.partners.update_one({"_id": pending}, {"$set": {"status": "pending"}})
    await _place(site.redis, asha, 400)
    await _place(site.redis, chitra, 8000)
    await _place(site.redis, dev, 150, job=uuid.uuid4().hex)
    await _place(site.redis, pending, 50)
    order_id = await waiting_order(site)
    async with browse(chromium, **DESKTOP) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        await page.locator(f"#board-list [data-id='{order_id}']").get_by_role("button", name="Open").click()
        table = page.locator("#candidate-table tbody tr")
        await table.first.wait_for()
        rows = [[(await r.locator("td").nth(i).inner_text()).strip() for i in (1, 3)]
                + [await r.locator("label").inner_text()] for r in await table.all()]
        assert rows == [["#1", "free", "Asha Near"], ["#2", "free", "Chitra Far"], ["", "on a job", "Dev Busy"]]
        assert "Pia Pending" not in await page.locator("#assign-list").inner_text()
        # Searching narrows the list by name.
        await page.get_by_label("Find a partner").fill("chit")
        await page.locator("#candidate-table tbody tr", has_text="Asha Near").wait_for(state="detached")
        await page.get_by_label("Find a partner").fill("")
        await page.locator("#candidate-table tr", has_text="Asha Near").click()
        await page.locator("#assign-picked", has_text="Picked Asha Near (free, 400 m away").wait_for()
        # The pick is drawn on the fleet map: a line from the partner to the venue.
        assert await page.locator("#fleet-map path.assign-route").count() == 1
        await page.get_by_label("Reason").fill("closest free")
        await page.get_by_role("button", name="Assign", exact=True).click()
        await page.locator(".toast", has_text="Order assigned to Asha Near").wait_for()
        order = await site.db.orders.find_one({"_id": order_id})
        assert order["status"] == "assigned" and order["partner_id"] == asha
        await page.locator("#audit-story li", has_text="Assigned by hand to Asha Near").wait_for()
        b.assert_no_errors()


async def test_the_needs_attention_queue_lists_an_unassigned_order_and_clears_it_on_assignment(
        site: Site, chromium: Chromium) -> None:
    asha = await add_partner(site, "Asha Near", "asha@example.com")
    dan = await add_partner(site, "Dan Dark", "dan@example.com")
    await _place(site.redis, asha, 400)
    job = await add_order(site, status="en_route", partner_id=dan)
    await _place(site.redis, dan, 2000, fix_age_s=900, job=job)
    await site.redis.sadd(FLEET_BUSY, dan)
    order_id = await waiting_order(site)
    async with browse(chromium, **DESKTOP) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        queue = page.locator("#waiting")
        await queue.get_by_role("heading", name="Needs attention").wait_for()
        item = page.locator(f"#waiting-list [data-id='{order_id}']")
        assert "No partner: Jungle Safari Party" in await item.inner_text()
        assert "nobody took it within 20 km" in await item.inner_text()
        dark = page.locator(f"#waiting-list [data-partner='{dan}']")
        assert "Tracking dark: Dan Dark" in await dark.inner_text() and "no GPS for 15 min" in await dark.inner_text()
        assert await dark.get_by_role("link", name="Call +919800000001").get_attribute("href") == "tel:+919800000001"

        await item.get_by_role("button", name="Assign").click()
        await page.locator("#candidate-table tr", has_text="Asha Near").click()
        await page.get_by_role("button", name="Assign", exact=True).click()
        # Assigned: the order leaves the queue at once; the dark partner stays.
        await item.wait_for(state="detached")
        assert await dark.is_visible()
        assert (await site.db.orders.find_one({"_id": order_id}))["partner_id"] == asha
        await dark.get_by_role("button", name="Open the job of Dan Dark").click()
        await page.locator("#order-panel h2", has_text="Jungle Safari Party").wait_for()
        b.assert_no_errors()


async def test_the_queue_shows_a_late_arrival_and_one_marked_away_from_the_venue_with_its_reason(
        site: Site, chromium: Chromium) -> None:
    lata = await add_partner(site, "Lata Late", "lata@example.com")
    farid = await add_partner(site, "Farid Far", "farid@example.com")
    closed_ms = now_ms() - 20 * 60_000
    late = await add_order(site, status="en_route", partner_id=lata, arrive_before_ms=closed_ms,
                           arrive_before=iso(datetime.fromtimestamp(closed_ms / 1000, UTC)))
    await _place(site.redis, lata, 300, job=late)
    far = await add_order(site, status="arrived", partner_id=farid, arrival_unverified={
        "code": "not_at_venue", "reason": "Gate is round the back", "distance_m": 640, "radius_m": 150,
        "fix_age_s": 3, "at": iso()})
    async with browse(chromium, **DESKTOP) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        late_item = page.locator(f"#waiting-list [data-id='{late}']")
        await late_item.wait_for()
        text = await late_item.inner_text()
        # 20 minutes past the window's end, plus the few minutes still to drive.
        assert "Late: Jungle Safari Party" in text and re.search(r"\b2\d min late", text) and "Lata Late" in text, text
        assert "window closes" in text and "ETA ~" in text
        far_item = page.locator(f"#waiting-list [data-id='{far}']")
        text = await far_item.inner_text()
        assert "Arrived away from the venue" in text and "640 m from the venue" in text, text
        assert "Gate is round the back" in text
        assert await far_item.get_by_role("link", name="Call +919800000001").get_attribute("href") == \
            "tel:+919800000001"
        assert await page.locator(f"#board-list [data-id='{far}'] .badge", has_text="arrived away").is_visible()
        await far_item.get_by_role("button", name="Open order").click()
        flag = page.locator("#panel-far")
        await flag.wait_for()
        assert "640 m from the venue" in await flag.inner_text() and "Gate is round the back" in await flag.inner_text()
        b.assert_no_errors()


async def test_archiving_asks_first_and_can_be_undone_and_suspend_is_offered_only_to_active_partners(
        site: Site, chromium: Chromium) -> None:
    package = await site.add_package("Karaoke Night", category="Casual")
    active = await add_partner(site, "Asha Active", "asha@example.com")
    pending = await add_partner(site, "Pia Pending", "pia@example.com")
    await site.db.partners.update_one({"_id": pending}, {"$set": {"status": "pending"}})
    async with browse(chromium, **DESKTOP) as b:
        page = b.page
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        await page.get_by_role("tab", name="Partners").click()
        await page.locator("#partner-status").select_option("")
        await page.locator(f"#partner-table tr[data-id='{active}']").wait_for()
        assert await page.locator(f"#partner-table tr[data-id='{active}']").get_by_role(
            "button", name="Suspend").count() == 1
        pending_row = page.locator(f"#partner-table tr[data-id='{pending}']")
        assert await pending_row.get_by_role("button", name="Suspend").count() == 0
        assert await pending_row.get_by_role("button", name="Approve").count() == 1

        await page.get_by_role("tab", name="Packages").click()
        row = page.locator(f"#package-table tr[data-id='{package['id']}']")
        await row.get_by_role("button", name="Archive Karaoke Night").click()
        await row.get_by_text("Archive Karaoke Night? Customers will no longer see it.").wait_for()
        await row.get_by_role("button", name="Keep it").click()
        assert (await site.db.packages.find_one({"_id": package["id"]}))["active"] == 1
        await row.get_by_role("button", name="Archive Karaoke Night").click()
        await row.get_by_role("button", name="Yes, archive").click()
        toast = page.locator(".toast", has_text="Karaoke Night archived")
        await toast.wait_for()
        await row.locator("td", has_text="archived").wait_for()
        assert (await site.db.packages.find_one({"_id": package["id"]}))["active"] == 0
        await toast.get_by_role("button", name="Undo").click()
        await page.locator(".toast", has_text="Karaoke Night is back in the catalog").wait_for()
        await row.locator("td", has_text="active").wait_for()
        assert (await site.db.packages.find_one({"_id": package["id"]}))["active"] == 1
        # An archived package can be restored from its row too.
        await row.get_by_role("button", name="Archive Karaoke Night").click()
        await row.get_by_role("button", name="Yes, archive").click()
        await row.get_by_role("button", name="Restore Karaoke Night").click()
        await row.get_by_role("button", name="Archive Karaoke Night").wait_for()
        # The price field names its currency.
        await page.get_by_role("button", name="New package").click()
        await page.get_by_label("Price (₹)").wait_for()
        b.assert_no_errors()
