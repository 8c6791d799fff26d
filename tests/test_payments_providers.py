"""Stripe and Razorpay end to end through the product's endpoints and the real SDKs, against fakes
of their APIs on loopback: checkout, confirmation, webhooks, refunds, outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.helpers import bearer, db_of, make_user
from tests.payment_helpers import customer_with_order, payments_client, stored_order

PRICE = 2_000_000
DEPOSIT = PRICE * 3000 // 10_000
STRIPE_WHSEC = "whsec_test_" + "s" * 24
RAZORPAY_WHSEC = "razorpay-webhook-secret-for-tests"


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


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis, stripe_fake: FakeStripe,
                 razorpay_fake: FakeRazorpay) -> TestClient[Any, Any]:
    """The product with both real providers configured (and so no simulator)."""
    return await payments_client(
        aiohttp_client, make_settings, payment_timeout_s=1.0,
        stripe_secret_key=stripe_fake.secret_key, stripe_publishable_key="pk_test_" + "p" * 24,
        stripe_webhook_secret=STRIPE_WHSEC, stripe_api_base=stripe_fake.base_url,
        razorpay_key_id=razorpay_fake.key_id, razorpay_key_secret=razorpay_fake.key_secret,
        razorpay_webhook_secret=RAZORPAY_WHSEC, razorpay_api_base=razorpay_fake.base_url)


async def _intent(client: TestClient[Any, Any], auth: dict[str, str], order_id: str) -> dict[str, Any]:
    resp = await client.post("/api/payments/stripe/create-intent", json={"order_id": order_id}, headers=auth)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_stripe_checkout_confirm_places_the_order(
    client: TestClient[Any, Any], token_for: Callable[..., str], stripe_fake: FakeStripe
) -> None:
    resp = await client.get("/api/payments/config")
    config = await resp.json()
    assert config["providers"] == ["stripe", "razorpay"] and config["stripe_publishable_key"].startswith("pk_test_")
    _, auth, order = await customer_with_order(client, token_for, price=PRICE)
    intent = await _intent(client, auth, order["id"])
    assert intent["amount"] == DEPOSIT and intent["currency"] == "INR" and intent["kind"] == "deposit"
    assert intent["client_secret"].startswith(intent["payment_intent_id"]) and intent["publishable_key"]
    again = await _intent(client, auth, order["id"])
    assert again["payment_intent_id"] == intent["payment_intent_id"] and len(stripe_fake.intents) == 1
    metadata = stripe_fake.intents[intent["payment_intent_id"]]["metadata"]
    assert metadata["order_id"] == order["id"] and metadata["payment_id"] == intent["payment_id"]

    confirm = {"order_id": order["id"], "payment_intent_id": intent["payment_intent_id"]}
    early = await client.post("/api/payments/stripe/confirm", json=confirm, headers=auth)
    assert early.status == 200 and (await early.json())["payment"]["status"] == "created"  # not paid yet
    stripe_fake.succeed(intent["payment_intent_id"])
    resp = await client.post("/api/payments/stripe/confirm", json=confirm, headers=auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["payment"]["status"] == "succeeded" and body["payment"]["charge_id"].startswith("ch_")
    assert body["order"]["status"] == "placed" and body["order"]["amount_paid"] == DEPOSIT

    # The balance goes through the same endpoints: a new intent for what is left.
    balance = await _intent(client, auth, order["id"])
    assert balance["kind"] == "balance" and balance["amount"] == PRICE - DEPOSIT
    assert balance["payment_intent_id"] != intent["payment_intent_id"]


async def test_stripe_confirm_refuses_another_customers_or_a_mismatched_intent(
    client: TestClient[Any, Any], token_for: Callable[..., str], stripe_fake: FakeStripe
) -> None:
    _, auth, order = await customer_with_order(client, token_for, price=PRICE)
    intent = await _intent(client, auth, order["id"])
    stripe_fake.succeed(intent["payment_intent_id"])
    confirm = {"order_id": order["id"], "payment_intent_id": intent["payment_intent_id"]}
    intruder = bearer(token_for(await make_user(db_of(client.app)), "customer"))
    assert (await client.post("/api/payments/stripe/confirm", json=confirm, headers=intruder)).status == 404
    _, other_auth, other = await customer_with_order(client, token_for, price=PRICE)
    crossed = {"order_id": other["id"], "payment_intent_id": intent["payment_intent_id"]}
    assert (await client.post("/api/payments/stripe/confirm", json=crossed, headers=other_auth)).status == 404

    stripe_fake.intents[intent["payment_intent_id"]]["amount"] = 100  # tampered at the provider
    stripe_fake.intents[intent["payment_intent_id"]]["amount_received"] = 100
    resp = await client.post("/api/payments/stripe/confirm", json=confirm, headers=auth)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "payment_mismatch"
    assert (await stored_order(client, order["id"]))["status"] == "pending_payment"


async def test_stripe_webhooks_place_once_in_any_order_and_refuse_forgeries(
    client: TestClient[Any, Any], token_for: Callable[..., str], stripe_fake: FakeStripe
) -> None:
    _, auth, order = await customer_with_order(client, token_for, price=PRICE)
    intent = await _intent(client, auth, order["id"])
    succeeded = stripe_fake.succeed(intent["payment_intent_id"])
    body, headers = stripe_fake.signed_event("payment_intent.succeeded", succeeded, STRIPE_WHSEC)
    # A confirmation racing its webhook, then the webhook replayed 30 times.
    confirm = client.post("/api/payments/stripe/confirm", headers=auth,
                          json={"order_id": order["id"], "payment_intent_id": intent["payment_intent_id"]})
    first = await asyncio.gather(confirm, client.post("/api/payments/webhooks/stripe", data=body, headers=headers))
    assert [r.status for r in first] == [200, 200]
    for _ in range(30):
        resp = await client.post("/api/payments/webhooks/stripe", data=body, headers=headers)
        assert resp.status == 200 and (await resp.json())["outcome"] == "duplicate"
    failed_late = dict(succeeded, status="requires_payment_method",
                       last_payment_error={"message": "Your card was declined."})
    late_body, late_headers = stripe_fake.signed_event("payment_intent.payment_failed", failed_late, STRIPE_WHSEC)
    assert (await client.post("/api/payments/webhooks/stripe", data=late_body, headers=late_headers)).status == 200

    db = db_of(client.app)
    payment = await db.payments.find_one({"provider_payment_id": intent["payment_intent_id"]})
    assert payment is not None and payment["status"] == "succeeded"
    assert [h["status"] for h in payment["history"]] == ["created", "succeeded"]
    after = await stored_order(client, order["id"])
    assert after["status"] == "placed" and after["amount_paid"] == DEPOSIT
    assert [h["status"] for h in after["history"]] == ["pending_payment", "placed"]

    _, auth2, order2 = await customer_with_order(client, token_for, price=PRICE)
    intent2 = await _intent(client, auth2, order2["id"])
    obj = stripe_fake.succeed(intent2["payment_intent_id"])
    good, good_headers = stripe_fake.signed_event("payment_intent.succeeded", obj, STRIPE_WHSEC)
    wrong, wrong_headers = stripe_fake.signed_event("payment_intent.succeeded", obj, "whsec_someone_else")
    old, old_headers = stripe_fake.signed_event("payment_intent.succeeded", obj, STRIPE_WHSEC,
                                                timestamp=1_600_000_000)
    for data, hdrs in ((good.replace(b'"succeeded"', b'"succeeded" ', 1), good_headers), (wrong, wrong_headers),
                       (old, old_headers), (good, {"Content-Type": "application/json"})):
        resp = await client.post("/api/payments/webhooks/stripe", data=data, headers=hdrs)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_signature"
    assert (await stored_order(client, order2["id"]))["status"] == "pending_payment"


async def test_a_stripe_outage_or_timeout_changes_nothing(
    client: TestClient[Any, Any], token_for: Callable[..., str], stripe_fake: FakeStripe
) -> None:
    _, auth, order = await customer_with_order(client, token_for, price=PRICE)
    stripe_fake.fail_next = 1
    resp = await client.post("/api/payments/stripe/create-intent", json={"order_id": order["id"]}, headers=auth)
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "payment_provider_unavailable" and error["details"]["retryable"] is True
    stripe_fake.delay_s = 2.0  # beyond PARTYPILOT_PAYMENT_TIMEOUT_S (1 s here)
    resp = await client.post("/api/payments/stripe/create-intent", json={"order_id": order["id"]}, headers=auth)
    assert resp.status == 503
    assert await db_of(client.app).payments.count_documents({"order_id": order["id"]}) == 0
    stored = await stored_order(client, order["id"])
    assert stored["status"] == "pending_payment" and stored["version"] == 1
    stripe_fake.delay_s = 0.0
    # The retry after the timeout gets the intent the slow call created (same idempotency key), not a second.
    intent = await _intent(client, auth, order["id"])
    await asyncio.sleep(0)
    assert len(stripe_fake.intents) == 1 and intent["payment_intent_id"] in stripe_fake.intents


async def test_stripe_refunds_full_and_partial_through_the_provider_once(
    client: TestClient[Any, Any], token_for: Callable[..., str], stripe_fake: FakeStripe
) -> None:
    _, auth, order = await customer_with_order(client, token_for, payment_option="full", price=PRICE)
    intent = await _intent(client, auth, order["id"])
    stripe_fake.succeed(intent["payment_intent_id"])
    await client.post("/api/payments/stripe/confirm", headers=auth,
                      json={"order_id": order["id"], "payment_intent_id": intent["payment_intent_id"]})
    admin = bearer(token_for(await make_user(db_of(client.app), "admin"), "admin"))
    url = f"/api/admin/payments/{intent['payment_id']}/refund"
    key = {"Idempotency-Key": uuid.uuid4().hex}
    stripe_fake.fail_next = 1
    outage = await client.post(url, json={"amount": 300_000, "reason": "late"}, headers={**admin, **key})
    assert outage.status == 503  # the refund stays pending; the same key retries it
    for _ in range(2):
        resp = await client.post(url, json={"amount": 300_000, "reason": "late"}, headers={**admin, **key})
        assert resp.status == 200, await resp.text()
    assert [r["amount"] for r in stripe_fake.refunds.values()] == [300_000]
    over = await client.post(url, json={"amount": PRICE, "reason": "x"},
                             headers={**admin, "Idempotency-Key": uuid.uuid4().hex})
    assert over.status == 409
    rest = await client.post(url, json={"reason": "called off"}, headers={**admin, "Idempotency-Key": uuid.uuid4().hex})
    assert rest.status == 200 and (await rest.json())["payment"]["status"] == "refunded"
    assert sorted(r["amount"] for r in stripe_fake.refunds.values()) == [300_000, PRICE - 300_000]
    after = await stored_order(client, order["id"])
    assert after["amount_refunded"] == PRICE and after["payment_status"] == "refunded"


async def _razorpay_order(client: TestClient[Any, Any], auth: dict[str, str], order_id: str) -> dict[str, Any]:
    resp = await client.post("/api/payments/razorpay/create-order", json={"order_id": order_id}, headers=auth)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_razorpay_checkout_verifies_the_signature_against_the_stored_order(
    client: TestClient[Any, Any], token_for: Callable[..., str], razorpay_fake: FakeRazorpay
) -> None:
    _, auth, order = await customer_with_order(client, token_for, price=PRICE)
    created = await _razorpay_order(client, auth, order["id"])
    assert created["amount"] == DEPOSIT and created["key_id"] == razorpay_fake.key_id
    _, other_auth, other = await customer_with_order(client, token_for, price=PRICE)
    other_created = await _razorpay_order(client, other_auth, other["id"])

    payment_id, signature = razorpay_fake.pay(created["razorpay_order_id"])
    other_payment, other_signature = razorpay_fake.pay(other_created["razorpay_order_id"])
    # A valid signature, but for another Razorpay order: refused, nothing recorded.
    forged = {"order_id": order["id"], "razorpay_order_id": created["razorpay_order_id"],
              "razorpay_payment_id": other_payment, "razorpay_signature": other_signature}
    resp = await client.post("/api/payments/razorpay/verify", json=forged, headers=auth)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_signature"
    crossed = {"order_id": order["id"], "razorpay_order_id": other_created["razorpay_order_id"],
               "razorpay_payment_id": other_payment, "razorpay_signature": other_signature}
    assert (await client.post("/api/payments/razorpay/verify", json=crossed, headers=auth)).status == 404
    assert (await stored_order(client, order["id"]))["status"] == "pending_payment"

    good = {"order_id": order["id"], "razorpay_order_id": created["razorpay_order_id"],
            "razorpay_payment_id": payment_id, "razorpay_signature": signature}
    resp = await client.post("/api/payments/razorpay/verify", json=good, headers=auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["payment"]["status"] == "succeeded" and body["payment"]["charge_id"] == payment_id
    assert body["order"]["status"] == "placed" and body["order"]["payment_status"] == "deposit_paid"


async def test_razorpay_webhook_places_once_and_a_refund_goes_back_through_razorpay(
    client: TestClient[Any, Any], token_for: Callable[..., str], razorpay_fake: FakeRazorpay
) -> None:
    _, auth, order = await customer_with_order(client, token_for, payment_option="full", price=PRICE)
    created = await _razorpay_order(client, auth, order["id"])
    payment_id, _ = razorpay_fake.pay(created["razorpay_order_id"])
    entity = razorpay_fake.payments[payment_id]
    body, headers = razorpay_fake.signed_webhook("payment.captured", {"payment": entity}, RAZORPAY_WHSEC)
    outcomes = []
    for _ in range(5):
        resp = await client.post("/api/payments/webhooks/razorpay", data=body, headers=headers)
        assert resp.status == 200
        outcomes.append((await resp.json())["outcome"])
    assert outcomes == ["recorded"] + ["duplicate"] * 4
    tampered = await client.post("/api/payments/webhooks/razorpay", data=body + b" ", headers=headers)
    assert tampered.status == 400
    after = await stored_order(client, order["id"])
    assert after["status"] == "placed" and after["payment_status"] == "paid"

    resp = await client.post(f"/api/orders/{order['id']}/cancel", json={"reason": "rain"}, headers=auth)
    assert resp.status == 200
    assert [r["amount"] for r in razorpay_fake.refunds.values()] == [PRICE]
    done = await stored_order(client, order["id"])
    assert done["status"] == "refunded" and done["amount_refunded"] == PRICE
