"""Words and formats on the customer's, partner's and public pages: dates, times and money in the
site's locale (PARTYPILOT_LOCALE through GET /config.json), no internal ids, validation next to the
field, a phone layout a thumb can use, canonical page addresses and readable map pins."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings, SettingsError
from core.tokens import Role
from tests.browser_helpers import Browsing, Chromium, browse, chromium
from tests.helpers import make_order
from tests.test_pages import Site, sign_in, start_site

__all__ = ["chromium"]  # the module-scoped browser fixture

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                         "has_touch": True, "timezone_id": "Asia/Kolkata"}
ENV = {"JWT_SECRET": "s" * 48}
# 13:51 UTC is 7:21 pm in Bengaluru: the timeline's instant, in the browser's (Indian) time zone.
PLACED_AT = "2026-03-12T13:51:00.000Z"


# ---- the setting and the addresses ----------------------------------------------------------------

async def test_config_json_hands_pages_the_sites_locale(client: TestClient[Any, Any]) -> None:
    config = await (await client.get("/config.json")).json()
    assert config["locale"] == "en-IN"


def test_the_locale_is_read_from_the_environment_and_checked() -> None:
    assert Settings.from_env({**ENV, "PARTYPILOT_LOCALE": "en-GB"}).locale == "en-GB"
    for bad in ("english", "en_IN", "<b>"):
        with pytest.raises(SettingsError, match="PARTYPILOT_LOCALE"):
            Settings.from_env({**ENV, "PARTYPILOT_LOCALE": bad})


@pytest.mark.parametrize("page", ["/customer", "/partner", "/admin", "/track"])
async def test_a_page_address_with_a_trailing_slash_redirects_to_the_page(client: TestClient[Any, Any],
                                                                          page: str) -> None:
    res = await client.get(f"{page}/?order=ab12&x=1", allow_redirects=False)
    assert res.status in (301, 308)
    assert res.headers["Location"] == f"{page}?order=ab12&x=1"  # a tracking link keeps its order
    res = await client.get(f"{page}/")
    assert res.status == 200
    assert str(res.url).endswith(page)
    assert "text/html" in res.headers["Content-Type"]


# ---- pages --------------------------------------------------------------------------------------


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


async def signed_in_customer(site: Site, b: Browsing, email: str) -> str:
    """Sign in on the customer page as a person does; the new customer's id."""
    page = b.page
    await page.goto(site.url + "/customer")
    await page.locator("#account").get_by_role("button", name="Sign in").click()
    await sign_in(b, email)
    await page.get_by_role("button", name="Sign out").wait_for()
    user = await site.db.users.find_one({"email": email})
    return str(user["_id"])


async def one_row(b: Browsing) -> bool:
    """Whether the header's brand, links and account sit side by side on one line."""
    boxes = await b.page.eval_on_selector_all(
        ".topbar > *:not([hidden])",
        "els => els.filter(e => e.getBoundingClientRect().width > 0).map(e => e.getBoundingClientRect())"
        ".map(r => [r.top, r.bottom])")
    middles = [(top + bottom) / 2 for top, bottom in boxes]
    return len(middles) >= 2 and max(middles) - min(middles) < 12


@pytest.mark.browser
async def test_a_customer_on_a_phone_reads_dates_times_and_money_the_indian_way(site: Site,
                                                                               chromium: Chromium) -> None:
    package = await site.add_package("Superhero Bash", price=12_345_600)
    async with browse(chromium, **PHONE) as b:
        page = b.page
        customer_id = await signed_in_customer(site, b, "meera@example.com")
        order_id = await make_order(site.db, customer_id, package["id"], status="completed",
                                    event_date="2026-12-12", price=12_345_600,
                                    package={"name": "Superhero Bash", "price": 12_345_600, "currency": "INR"},
                                    history=[{"status": "placed", "at": PLACED_AT, "by_role": "customer",
                                              "by": customer_id, "reason": None}])
        assert await one_row(b)
        # The catalogue: lakh grouping, and the filters folded away until asked for.
        card = page.locator("#package-results li.package").filter(has_text="Superhero Bash")
        await card.wait_for()
        assert "₹1,23,456.00" in await card.inner_text()
        assert await page.get_by_label("Category").is_hidden()
        await page.get_by_text("Filters and sort").click()
        assert await page.get_by_label("Category").is_visible()

        await page.get_by_role("tab", name="My orders").click()
        listed = page.locator("#orders li").first
        await listed.wait_for()
        text = await listed.inner_text()
        assert re.search(r"Sat, 12 Dec,? 2026", text) and "2026-12-12" not in text
        assert f"Order {order_id[-6:].upper()}" in text
        await listed.get_by_role("button", name=re.compile("^Details")).click()
        timeline = page.get_by_role("list", name="Status history")
        await timeline.wait_for()
        assert re.search(r"12 Mar 2026, 7:21\s?pm", await timeline.inner_text(), re.IGNORECASE)
        assert "3/12/2026" not in await timeline.inner_text()
        body = await page.locator("#order-body").inner_text()
        assert order_id not in body  # the reference, never the id
        assert order_id[-6:].upper() in body

        # The review stars are thumb-sized.
        stars = page.locator("#review-form .stars label")
        assert await stars.count() == 5
        tops = set()
        for i in range(5):
            box = await stars.nth(i).bounding_box()
            assert box is not None and box["width"] >= 44 and box["height"] >= 44
            tops.add(round(box["y"]))
        assert len(tops) == 1  # one row of five, not four and a straggler
        await stars.nth(3).click()
        assert await page.locator("#review-form input[value='4']").is_checked()
        b.assert_no_errors()


# Visible controls under 44 px, except a radio or checkbox inside a label (the label is the target),
# the skip link (off screen until focused) and the map's attribution (text, not a control).
SMALL_TARGETS = """() => [...document.querySelectorAll('a, button, input, select, textarea, summary, [role=tab]')]
  .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })
  .filter((e) => !(e.matches('input[type=radio], input[type=checkbox]') && e.closest('label')))
  .filter((e) => !e.matches('.skip, .leaflet-control-attribution a'))
  .filter((e) => { const r = e.getBoundingClientRect(); return r.height < 44 || r.width < 40; })
  .map((e) => `${e.tagName} ${e.id || e.className} ${(e.textContent || '').trim().slice(0, 30)}`)"""


@pytest.mark.browser
async def test_the_order_form_says_what_is_wrong_next_to_the_field(site: Site, chromium: Chromium) -> None:
    await site.add_package("Garden Party")
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await signed_in_customer(site, b, "ira@example.com")
        await page.get_by_role("button", name=re.compile("^View: ")).first.click()
        await page.get_by_role("button", name="Order this package").click()
        # Every control on the form is a thumb-sized target (a radio's target is its whole label row).
        await page.locator("#venue-map .leaflet-control-zoom-in").wait_for()
        small = await page.evaluate(SMALL_TARGETS)
        assert small == [], small
        await page.get_by_role("button", name=re.compile("Place order")).click()
        date = page.locator("#event-date")
        note = page.locator("#event-date-error")
        await note.wait_for()
        assert await note.inner_text() == "Choose the event date."
        assert await date.get_attribute("aria-invalid") == "true"
        assert "event-date-error" in (await date.get_attribute("aria-describedby") or "")
        # The words sit right under the date field, not at the bottom of the form.
        field_box = await date.bounding_box()
        note_box = await note.bounding_box()
        assert field_box and note_box and 0 <= note_box["y"] - (field_box["y"] + field_box["height"]) < 40
        assert await page.evaluate("document.activeElement.id") == "event-date"
        await date.fill("2030-01-01")
        assert await note.count() == 0
        assert await date.get_attribute("aria-invalid") is None


@pytest.mark.browser
async def test_partner_registration_says_what_is_missing_beside_the_field(site: Site, chromium: Chromium) -> None:
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/partner")
        await sign_in(b, "new-crew@example.com")
        await page.get_by_label("Company name").fill("Confetti Crew")
        await page.get_by_role("button", name="Register").click()
        note = page.locator("#contact-name-error")
        await note.wait_for()
        assert await note.inner_text() == "Enter your name."
        assert await page.get_by_label("Your name").get_attribute("aria-invalid") == "true"
        assert await page.evaluate("document.activeElement.id") == "contact-name"
        assert await page.locator("#company-name-error").count() == 0
        await page.get_by_label("Mobile number (optional)").fill("12345")
        await page.get_by_role("button", name="Send codes").click()
        assert "country code" in await page.locator("#extra-address-error").inner_text()
        await page.get_by_label("Your name").fill("Ravi Kumar")
        assert await note.count() == 0


@pytest.mark.browser
async def test_phone_headers_are_one_row_and_their_links_are_thumb_sized(site: Site, chromium: Chromium) -> None:
    async with browse(chromium, **PHONE) as b:
        for path in ("/", "/customer", "/partner", "/track?order=abc"):
            await b.page.goto(site.url + path)
            await b.page.locator(".topbar nav a").first.wait_for()
            assert await one_row(b), path
            for link in await b.page.locator(".topbar nav a").all():
                box = await link.bounding_box()
                assert box is not None and box["height"] >= 44, path
            overflow = await b.page.evaluate("document.documentElement.scrollWidth > innerWidth")
            assert not overflow, path


def contrast(fg: tuple[float, ...], bg: tuple[float, ...]) -> float:
    def lum(rgb: tuple[float, ...]) -> float:
        c = [v / 255 for v in rgb[:3]]
        c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.browser
async def test_every_map_pins_label_reads_at_4_5_to_1(site: Site, chromium: Chromium) -> None:
    kinds = ["idle", "online", "offered", "assigned", "en_route", "busy", "arrived", "setup_complete", "on_site",
             "offline", "venue", "stale"]
    async with browse(chromium) as b:
        await b.page.goto(site.url + "/customer")
        colours = await b.page.evaluate("""kinds => kinds.map(k => {
            const pin = document.createElement('div');
            pin.className = k === 'stale' ? 'pin pin-idle pin-stale' : `pin pin-${k}`;
            pin.textContent = 'AB';
            document.body.append(pin);
            const s = getComputedStyle(pin);
            const out = [k, s.color, s.backgroundColor, s.opacity];
            pin.remove();
            return out;
        })""", kinds)
    for kind, fg, bg, opacity in colours:
        rgb = [tuple(float(x) for x in re.findall(r"[\d.]+", c)[:3]) for c in (fg, bg)]
        assert float(opacity) == 1, kind  # a faded pin fades its label too
        assert contrast(rgb[0], rgb[1]) >= 4.5, (kind, fg, bg)


@pytest.mark.browser
async def test_another_locale_setting_changes_how_pages_write_money(aiohttp_server: Any,
                                                                   make_settings: Callable[..., Settings],
                                                                   redis: Redis, chromium: Chromium,
                                                                   token_for: Callable[[str, Role], str]) -> None:
    site = await start_site(aiohttp_server, make_settings, redis, token_for, locale="en-US")
    await site.add_package("Corporate Mixer", price=12_345_600)
    async with browse(chromium, **PHONE) as b:
        await b.page.goto(site.url + "/")
        card = b.page.locator("#featured-list li").filter(has_text="Corporate Mixer")
        await card.wait_for()
        assert "₹123,456.00" in await card.inner_text()  # US grouping, not lakhs


@pytest.mark.browser
async def test_the_shared_formatters_write_the_sites_locale(site: Site, chromium: Chromium) -> None:
    """ui.js's formatters, as every customer, partner and public page calls them (en-IN here)."""
    async with browse(chromium, timezone_id="Asia/Kolkata") as b:
        await b.page.goto(site.url + "/")
        said = await b.page.evaluate("""async () => {
            const ui = await import('/js/ui.js');
            await (await import('/js/settings.js')).serverSettings();
            return [ui.money(12345600, 'INR'), ui.dateTime('2026-03-12T13:51:00.000Z'), ui.dateOnly('2026-11-25'),
                    ui.timeOnly('2026-03-12T13:51:00.000Z', 'Asia/Kolkata'), ui.periodLabel('2026-W48'),
                    ui.periodLabel('2026-11'), ui.periodLabel('2026-11-25'), ui.orderRef('65f0c2a9e1b44d7a9f3c21ab')];
        }""")
    money, stamp, day, time, week, month, day_period, ref = said
    assert money == "₹1,23,456.00"
    assert re.fullmatch(r"12 Mar 2026, 7:21\s?pm", stamp, re.IGNORECASE)
    assert re.fullmatch(r"Wed, 25 Nov,? 2026", day) and day_period == day
    assert re.fullmatch(r"7:21\s?pm", time, re.IGNORECASE)
    assert (week, month, ref) == ("Week 48, 2026", "November 2026", "3C21AB")
