"""Paying and refunding through the pages: the customer's checkout on a phone with the offline
payment simulator, and the admin's payments tab with its refund dialog, in headless Chromium."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, Request, Route
from redis.asyncio import Redis

from core.settings import Settings
from core.tokens import Role
from tests.browser_helpers import Chromium, browse, chromium
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.test_pages import Site, eventually, place_order, sign_in, site, start_site

pytestmark = [pytest.mark.browser]
__all__ = ["chromium", "site"]  # the fixtures this module borrows

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
STRIPE_JS = "https://js.stripe.com/v3"
RAZORPAY_JS = "https://checkout.razorpay.com/v1/checkout.js"

# Stand-ins for Stripe.js and Razorpay Checkout, served in place of the real scripts: just the calls
# the checkout makes. The test decides what the "card" does through the fakes of the two APIs.
FAKE_STRIPE_JS = """
window.Stripe = (key) => {
  const seen = window.__stripe = { key, mounted: null, clientSecret: null, decline: false };
  return {
    elements: ({ clientSecret }) => {
      seen.clientSecret = clientSecret;
      return { create: (type) => ({ mount: (node) => {
        const input = document.createElement('input');
        input.setAttribute('aria-label', 'Card details (Stripe)');
        node.append(input);
        seen.mounted = type;
      } }) };
    },
    confirmPayment: async ({ redirect }) => {
      seen.redirect = redirect;
      if (seen.decline) return { error: { type: 'card_error', message: 'Your card was declined.' } };
      return { paymentIntent: { id: seen.clientSecret.split('_secret_')[0], status: 'succeeded' } };
    },
  };
};
"""
FAKE_RAZORPAY_JS = """
window.Razorpay = function Razorpay(options) {
  window.__rzp = { options };
  this.on = () => {};
  this.open = () => options.handler(window.__rzpAnswer);
};
"""


async def fits_the_screen(page: Any) -> bool:
    """No sideways scrolling: nothing is wider than the viewport."""
    return bool(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


async def test_customer_pays_a_deposit_after_a_declined_card_then_the_balance_on_a_phone(
        site: Site, chromium: Chromium) -> None:
    await site.add_package("Jungle Safari Party", price=2_000_000)  # deposit 30 %: ₹6,000 now, ₹14,000 later
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + "/customer")
        await page.locator("#account").get_by_role("button", name="Sign in").click()
        await sign_in(b, "meena@example.com")
        await page.get_by_role("button", name="Sign out").wait_for()

        await page.get_by_role("button", name="View: Jungle Safari Party").click()
        await page.get_by_role("button", name="Order this package").click()
        await page.get_by_label("Event date").fill((date.today() + timedelta(days=10)).isoformat())
        await page.get_by_label("Guests").fill("25")
        await page.get_by_label("Address").fill("7 Lavelle Road")
        await page.get_by_label("City").fill("Bengaluru")
        await page.get_by_label("Postal code").fill("560001")
        await page.locator("#venue-map").click()
        await page.locator("#pay-note", has_text="deposit of ₹6,000.00").wait_for()  # the default option
        await page.get_by_role("button", name="Place order").click()

        # The checkout says what is paid now, and that this is a test with no real money.
        await page.get_by_text("Test checkout — no real money").wait_for()
        assert await page.locator("#pay-amount").inner_text() == "₹6,000.00"
        assert "The rest, ₹14,000.00, is due on the day." in await page.locator("#pay-now").inner_text()
        assert await page.get_by_role("button", name="Pay ₹6,000.00").is_visible()
        assert await fits_the_screen(page)

        await page.get_by_role("button", name="Simulate a declined card").click()
        declined = page.locator("#checkout-status[data-kind='error']")
        await declined.wait_for()
        assert "declined" in await declined.inner_text() and "No money was taken" in await declined.inner_text()
        order = await site.db.orders.find_one({})
        assert order["status"] == "pending_payment" and order["payment_status"] == "unpaid"
        assert (await site.db.payments.find_one({"order_id": order["_id"]}))["status"] == "failed"

        # Leaving without paying: the order is held, and says so in the list and on its page.
        await page.get_by_role("button", name="Pay later").click()
        await page.locator("#orders li", has_text="Jungle Safari Party").locator(".pay-needed",
                                                                                has_text="Payment needed").wait_for()
        await page.locator("#pay-block", has_text="cancelled 30 minutes after").wait_for()
        assert await page.locator("#money-words").inner_text() == "Nothing paid yet · deposit ₹6,000.00 due now"
        await page.get_by_role("button", name="Complete payment").click()

        await page.get_by_role("button", name="Pay ₹6,000.00").click()
        await page.locator("#order-detail-title", has_text="Jungle Safari Party").wait_for()
        assert await page.locator("#money-words").inner_text() == "Deposit ₹6,000.00 paid · ₹14,000.00 due"
        assert await page.locator("#amount-due").inner_text() == "₹14,000.00"
        receipt = page.locator("#payments .receipt")
        await receipt.first.wait_for()
        assert await receipt.count() == 1 and "Deposit" in await receipt.inner_text()
        assert await fits_the_screen(page)
        order = await site.db.orders.find_one({"_id": order["_id"]})
        assert order["status"] == "placed" and order["payment_status"] == "deposit_paid"
        assert order["amount_paid"] == 600_000 and order["amount_due"] == 1_400_000

        # The balance, later, from the order page.
        await page.get_by_role("button", name="Pay balance ₹14,000.00").click()
        assert await page.locator("#pay-amount").inner_text() == "₹14,000.00"
        await page.get_by_role("button", name="Pay ₹14,000.00").click()
        await page.locator("#money-words", has_text="Paid in full: ₹20,000.00").wait_for()
        assert await page.locator("#pay-button").count() == 0  # nothing left to pay
        await page.locator("#payments .receipt", has_text="Balance").wait_for()
        assert await page.locator("#payments .receipt").count() == 2
        b.assert_no_errors()
        assert b.blocked == [] or all("tile.openstreetmap.org" in url for url in b.blocked)  # no payment scripts

    order = await site.db.orders.find_one({"_id": order["_id"]})
    assert order["payment_status"] == "paid" and order["amount_paid"] == 2_000_000 and order["amount_due"] == 0


async def paid_order(site: Site, token: str, package_id: str, outcome: str = "succeeded") -> Any:
    """A deposit order the customer tried to pay through the simulator's API."""
    order = await place_order(site, token, package_id, payment_option="deposit")
    answer = await site.call("POST", "/api/payments/simulated/checkout", token=token,
                             json={"order_id": order["id"], "outcome": outcome})
    assert answer["payment"]["status"] == outcome
    return order


async def test_admin_filters_payments_and_refunds_part_of_one_through_the_dialog(
        site: Site, chromium: Chromium, token_for: Callable[[str, Role], str]) -> None:
    package = await site.add_package("Magic Show Deluxe", price=2_000_000)
    customer_id = uuid.uuid4().hex
    await site.db.users.insert_one({"_id": customer_id, "role": "customer", "email": "lata@example.com",
                                    "name": "Lata Iyer", "addresses": [], "created_at": "2026-01-01T00:00:00.000Z",
                                    "deleted": 0})
    token = token_for(customer_id, "customer")
    order = await paid_order(site, token, package["id"])
    await paid_order(site, token, package["id"], outcome="failed")
    payment = await site.db.payments.find_one({"order_id": order["id"]})
    assert payment["status"] == "succeeded" and payment["amount"] == 600_000

    keys_sent: list[str] = []

    def note_key(request: Request) -> None:
        if request.method == "POST" and "/refund" in request.url:
            keys_sent.append(request.headers.get("idempotency-key", ""))

    async with browse(chromium, viewport={"width": 1280, "height": 900}) as b:
        page = b.page
        page.on("request", note_key)
        await page.goto(site.url + "/admin")
        await sign_in(b, site.settings.dev_admin_email)
        await page.get_by_role("tab", name="Payments").click()
        rows = page.locator("#payment-table tbody tr")
        await rows.nth(1).wait_for()
        assert await rows.count() == 2

        await page.get_by_label("Payment status").select_option("succeeded")
        await page.locator("#payment-table tbody tr", has_text="Declined").wait_for(state="detached")
        assert await rows.count() == 1
        row = page.locator(f"#payment-table tr[data-id='{payment['_id']}']")
        assert "Lata Iyer" in await row.inner_text()
        assert "#" + order["id"][-6:].upper() in await row.inner_text()
        assert await page.locator("[data-total='captured'] strong").inner_text() == "₹6,000.00"
        assert await page.locator("[data-total='refunded'] strong").inner_text() == "₹0.00"
        assert await page.locator("[data-total='net'] strong").inner_text() == "₹6,000.00"

        async with page.expect_download() as download:
            await page.get_by_role("button", name="Export CSV").click()
        assert (await download.value).suggested_filename.startswith("payments-")

        # A part refund: the amount comes prefilled with all that is left, and a reason is required.
        await row.get_by_role("button", name="Refund").click()
        dialog = page.locator("#refund-dialog")
        assert await dialog.get_by_label("Amount to refund (INR)").input_value() == "6000.00"
        await dialog.get_by_label("Amount to refund (INR)").fill("2000")
        await dialog.get_by_role("button", name="Refund").click()
        await dialog.locator("#refund-status", has_text="Give a reason").wait_for()
        await dialog.get_by_label("Reason").fill("Magician arrived late")
        await dialog.get_by_role("button", name="Refund").click()
        await page.locator(".toast", has_text="Refunded ₹2,000.00").wait_for()
        assert await dialog.is_hidden()
        # Refreshed in place; no longer "Paid", it stays in view rather than vanish from the filtered list.
        await row.locator("td.refunded", has_text="₹2,000.00").wait_for()
        assert "Partly refunded" in await row.inner_text()
        assert "no longer matches the filters" in await row.inner_text()
        await page.get_by_label("Payment status").select_option("")
        await page.locator("[data-total='net'] strong", has_text="₹4,000.00").wait_for()
        assert await page.locator("[data-total='refunded'] strong").inner_text() == "₹2,000.00"
        assert await page.locator("[data-total='captured'] strong").inner_text() == "₹6,000.00"

        # Someone else refunds meanwhile: the dialog's 409 is explained, and its retry reuses the key.
        await row.get_by_role("button", name="Refund").click()
        assert await dialog.get_by_label("Amount to refund (INR)").input_value() == "4000.00"
        async with aiohttp.ClientSession() as http, http.post(
                f"{site.url}/api/admin/payments/{payment['_id']}/refund", json={"amount": 100_000, "reason": "phone"},
                headers={"Authorization": f"Bearer {site.admin_token}", "Idempotency-Key": uuid.uuid4().hex}) as res:
            assert res.status == 200, await res.text()
        await dialog.get_by_label("Reason").fill("The rest of the deposit")
        await dialog.get_by_role("button", name="Refund").click()
        await dialog.locator("#refund-status", has_text="Only ₹3,000.00 can still be refunded").wait_for()
        assert await dialog.get_by_label("Amount to refund (INR)").input_value() == "3000.00"
        await dialog.get_by_role("button", name="Refund").click()
        await page.locator(".toast", has_text="Refunded ₹3,000.00").wait_for()
        await row.locator("td.refunded", has_text="₹6,000.00").wait_for()
        assert await row.get_by_role("button", name="Refund").count() == 0  # nothing left to refund
        assert len(keys_sent) == 3 and keys_sent[0] != keys_sent[1] == keys_sent[2]
        # Chromium logs every 4xx answer; the one 409 is the conflict this test provokes.
        refund_url = f"/api/admin/payments/{payment['_id']}/refund"
        conflicts = [e for e in b.errors if "status of 409" in e and refund_url in e]
        assert len(conflicts) == 1
        b.errors = [e for e in b.errors if e not in conflicts]
        b.assert_no_errors()

    stored = await site.db.payments.find_one({"_id": payment["_id"]})
    assert stored["status"] == "refunded" and stored["amount_refunded"] == 600_000
    assert [(r["amount"], r["reason"], r["status"]) for r in stored["refunds"]] == [
        (200_000, "Magician arrived late", "succeeded"), (100_000, "phone", "succeeded"),
        (300_000, "The rest of the deposit", "succeeded")]
    refunded = await eventually(lambda: site.db.orders.find_one({"_id": order["id"], "amount_refunded": 600_000}))
    assert refunded["payment_status"] == "refunded"


@pytest.fixture
async def stripe_fake() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def razorpay_fake() -> AsyncIterator[FakeRazorpay]:
    fake = FakeRazorpay()
    await fake.start()
    yield fake
    await fake.stop()


async def serve_provider_scripts(page: Page, loaded: list[str]) -> None:
    """Answer the two providers' script URLs with the stand-ins (page routes come before the seal)."""
    async def fulfil(route: Route) -> None:
        loaded.append(route.request.url)
        body = FAKE_STRIPE_JS if route.request.url == STRIPE_JS else FAKE_RAZORPAY_JS
        await route.fulfill(status=200, content_type="text/javascript", body=body)

    for url in (STRIPE_JS, RAZORPAY_JS):
        await page.route(url, fulfil)


async def test_with_stripe_and_razorpay_on_the_customer_chooses_and_each_script_loads_only_when_chosen(
        aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
        token_for: Callable[[str, Role], str], chromium: Chromium, stripe_fake: FakeStripe,
        razorpay_fake: FakeRazorpay) -> None:
    site = await start_site(aiohttp_server, make_settings, redis, token_for,
                            stripe_secret_key=stripe_fake.secret_key, stripe_publishable_key="pk_test_" + "p" * 24,
                            stripe_api_base=stripe_fake.base_url, razorpay_key_id=razorpay_fake.key_id,
                            razorpay_key_secret=razorpay_fake.key_secret, razorpay_api_base=razorpay_fake.base_url)
    package = await site.add_package("Bollywood Dance Night", price=2_000_000)
    customer_id = uuid.uuid4().hex
    await site.db.users.insert_one({"_id": customer_id, "role": "customer", "email": "ravi.k@example.com",
                                    "name": "Ravi K", "addresses": [], "created_at": "2026-01-01T00:00:00.000Z",
                                    "deleted": 0})
    order = await place_order(site, token_for(customer_id, "customer"), package["id"], payment_option="deposit")
    loaded: list[str] = []
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await serve_provider_scripts(page, loaded)
        await page.goto(site.url + "/customer")
        await page.locator("#account").get_by_role("button", name="Sign in").click()
        await sign_in(b, "ravi.k@example.com")
        await page.get_by_role("tab", name="My orders").click()
        await page.get_by_role("button", name="Pay for Bollywood Dance Night").click()

        # Stripe first: its script, then the Payment Element; a declined card says so.
        await page.get_by_label("Card details (Stripe)").wait_for()
        assert loaded == [STRIPE_JS]
        assert await page.evaluate("window.__stripe.mounted") == "payment"
        assert await page.evaluate("window.__stripe.key") == "pk_test_" + "p" * 24
        await page.evaluate("window.__stripe.decline = true")
        await page.get_by_role("button", name="Pay ₹6,000.00").click()
        await page.locator("#checkout-status[data-kind='error']", has_text="Your card was declined.").wait_for()

        # Razorpay instead: its script loads now, and its signed answer is verified by the server.
        await page.get_by_label("UPI, card or netbanking (Razorpay)").check()
        pay = page.get_by_role("button", name="Pay ₹6,000.00")
        await pay.wait_for()
        assert loaded == [STRIPE_JS, RAZORPAY_JS]
        rzp = await site.db.payments.find_one({"order_id": order["id"], "provider": "razorpay"})
        payment_id, signature = razorpay_fake.pay(rzp["provider_payment_id"])
        await page.evaluate("(answer) => { window.__rzpAnswer = answer; }", {
            "razorpay_order_id": rzp["provider_payment_id"], "razorpay_payment_id": payment_id,
            "razorpay_signature": signature})
        await pay.click()
        await page.locator("#money-words", has_text="Deposit ₹6,000.00 paid · ₹14,000.00 due").wait_for()
        assert await page.evaluate("window.__rzp.options.amount") == 600_000

        # The balance through Stripe, which the customer's bank (the fake) lets through.
        await page.get_by_role("button", name="Pay balance ₹14,000.00").click()
        await page.get_by_label("Card details (Stripe)").wait_for()
        intent = await site.db.payments.find_one({"order_id": order["id"], "provider": "stripe", "kind": "balance"})
        stripe_fake.succeed(intent["provider_payment_id"])
        await page.get_by_role("button", name="Pay ₹14,000.00").click()
        await page.locator("#money-words", has_text="Paid in full: ₹20,000.00").wait_for()
        assert await page.evaluate("window.__stripe.redirect") == "if_required"
        b.assert_no_errors()

    stored = await site.db.orders.find_one({"_id": order["id"]})
    assert stored["status"] == "placed" and stored["payment_status"] == "paid" and stored["amount_paid"] == 2_000_000
    assert sorted(p["provider"] for p in await site.db.payments.find({"status": "succeeded"}).to_list(None)) == [
        "razorpay", "stripe"]
