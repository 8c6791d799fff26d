"""Stripe and Razorpay providers through the real SDKs, against fakes of their APIs on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.settings import Settings
from gateway_clients.payments import CheckoutRequest, PaymentError, SignatureError
from gateway_clients.razorpay_payments import RazorpayPayments, receipt_for
from gateway_clients.stripe_payments import StripePayments
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe, stripe_signature

STRIPE_WHSEC = "whsec_test_" + "w" * 24
RAZORPAY_WHSEC = "razorpay-webhook-secret"
TOLERANCE_S = 300


def checkout(key: str = "pp-pay_0001", *, amount: int = 50000, currency: str = "INR") -> CheckoutRequest:
    return CheckoutRequest(payment_id="pay_0001", order_id="ord_0001", customer_id="usr_0001", kind="deposit",
                           amount=amount, currency=currency, idempotency_key=key, description="PartyPilot order")


def make_settings(**values: Any) -> Settings:
    return Settings.model_validate({"env": "test", "payment_timeout_s": 5, "webhook_tolerance_s": TOLERANCE_S,
                                    **values})


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


def stripe_settings(fake: FakeStripe, **values: Any) -> Settings:
    return make_settings(stripe_secret_key=fake.secret_key, stripe_publishable_key="pk_test_" + "p" * 24,
                         stripe_webhook_secret=STRIPE_WHSEC, stripe_api_base=fake.base_url, **values)


def razorpay_settings(fake: FakeRazorpay, **values: Any) -> Settings:
    return make_settings(razorpay_key_id=fake.key_id, razorpay_key_secret=fake.key_secret,
                         razorpay_webhook_secret=RAZORPAY_WHSEC, razorpay_api_base=fake.base_url, **values)


@pytest.fixture
async def stripe_provider(stripe_fake: FakeStripe) -> AsyncIterator[StripePayments]:
    provider = StripePayments.from_settings(stripe_settings(stripe_fake))
    yield provider
    await provider.aclose()


@pytest.fixture
async def razorpay_provider(razorpay_fake: FakeRazorpay) -> AsyncIterator[RazorpayPayments]:
    provider = RazorpayPayments.from_settings(razorpay_settings(razorpay_fake))
    yield provider
    await provider.aclose()


# --- Stripe ------------------------------------------------------------------------------------

async def test_stripe_same_idempotency_key_returns_the_same_intent(stripe_provider: StripePayments,
                                                                     stripe_fake: FakeStripe) -> None:
    first = await stripe_provider.create_checkout(checkout())
    again = await stripe_provider.create_checkout(checkout())
    assert again == first
    assert first.provider_payment_id.startswith("pi_") and first.client_secret
    assert (first.amount, first.currency) == (50000, "INR")
    assert stripe_provider.public_key == "pk_test_" + "p" * 24
    intent = stripe_fake.intents[first.provider_payment_id]
    assert intent["currency"] == "inr" and intent["automatic_payment_methods"] == {"enabled": True}
    assert intent["metadata"] == {"order_id": "ord_0001", "customer_id": "usr_0001", "payment_id": "pay_0001",
                                  "kind": "deposit"}
    other = await stripe_provider.create_checkout(checkout("pp-pay_0002"))
    assert other.provider_payment_id != first.provider_payment_id
    assert len(stripe_fake.intents) == 2


async def test_stripe_fetch_reports_pending_failed_succeeded_and_cancelled(stripe_provider: StripePayments,
                                                                           stripe_fake: FakeStripe) -> None:
    pi_id = (await stripe_provider.create_checkout(checkout())).provider_payment_id
    pending = await stripe_provider.fetch(pi_id)
    assert (pending.status, pending.charge_id, pending.failure_message) == ("pending", None, None)
    assert pending.metadata["order_id"] == "ord_0001" and pending.currency == "INR"

    stripe_fake.fail(pi_id, "Your card has insufficient funds.")
    failed = await stripe_provider.fetch(pi_id)
    assert (failed.status, failed.failure_message) == ("failed", "Your card has insufficient funds.")

    charge_id = stripe_fake.succeed(pi_id)["latest_charge"]
    paid = await stripe_provider.fetch(pi_id)
    assert (paid.status, paid.charge_id, paid.amount, paid.failure_message) == ("succeeded", charge_id, 50000, None)

    other = (await stripe_provider.create_checkout(checkout("pp-pay_0002"))).provider_payment_id
    stripe_fake.cancel(other)
    assert (await stripe_provider.fetch(other)).status == "failed"


async def test_stripe_refunds_partially_then_fully_and_refuses_more_than_captured(
        stripe_provider: StripePayments, stripe_fake: FakeStripe) -> None:
    pi_id = (await stripe_provider.create_checkout(checkout(amount=1000))).provider_payment_id
    with pytest.raises(PaymentError) as uncaptured:
        await stripe_provider.refund(pi_id, charge_id=None, amount=1000, idempotency_key="rf-0", reason="x")
    assert not uncaptured.value.retryable
    stripe_fake.succeed(pi_id)

    with pytest.raises(PaymentError) as too_much:
        await stripe_provider.refund(pi_id, charge_id=None, amount=1001, idempotency_key="rf-1", reason="too much")
    assert not too_much.value.retryable and "unrefunded amount" in str(too_much.value)

    part = await stripe_provider.refund(pi_id, charge_id=None, amount=300, idempotency_key="rf-2", reason="late")
    assert (part.amount, part.status) == (300, "succeeded") and part.provider_refund_id.startswith("re_")
    assert stripe_fake.refunds[part.provider_refund_id]["metadata"] == {"reason": "late"}
    rest = await stripe_provider.refund(pi_id, charge_id=None, amount=700, idempotency_key="rf-3", reason="r" * 500)
    assert rest.amount == 700
    assert stripe_fake.refunds[rest.provider_refund_id]["metadata"]["reason"] == "r" * 200
    with pytest.raises(PaymentError) as nothing_left:
        await stripe_provider.refund(pi_id, charge_id=None, amount=1, idempotency_key="rf-4", reason="again")
    assert not nothing_left.value.retryable
    assert len(stripe_fake.refunds) == 2

    stripe_fake.refund_status = "pending"
    other = (await stripe_provider.create_checkout(checkout("pp-pay_0002", amount=1000))).provider_payment_id
    stripe_fake.succeed(other)
    pending = await stripe_provider.refund(other, charge_id=None, amount=1000, idempotency_key="rf-5", reason="")
    assert pending.status == "pending"


async def test_stripe_refund_retried_with_the_same_key_refunds_once(stripe_provider: StripePayments,
                                                                    stripe_fake: FakeStripe) -> None:
    pi_id = (await stripe_provider.create_checkout(checkout(amount=1000))).provider_payment_id
    stripe_fake.succeed(pi_id)
    stripe_fake.fail_next = 1
    with pytest.raises(PaymentError) as outage:
        await stripe_provider.refund(pi_id, charge_id=None, amount=400, idempotency_key="rf-1", reason="x")
    assert outage.value.retryable
    first = await stripe_provider.refund(pi_id, charge_id=None, amount=400, idempotency_key="rf-1", reason="x")
    again = await stripe_provider.refund(pi_id, charge_id=None, amount=400, idempotency_key="rf-1", reason="x")
    both = await asyncio.gather(*(stripe_provider.refund(pi_id, charge_id=None, amount=400, idempotency_key="rf-1",
                                                         reason="x") for _ in range(3)))
    assert {first, again, *both} == {first}
    assert len(stripe_fake.refunds) == 1


async def test_stripe_outage_is_retryable_and_never_shows_the_key(stripe_provider: StripePayments,
                                                                  stripe_fake: FakeStripe) -> None:
    stripe_fake.fail_next = 1
    with pytest.raises(PaymentError) as outage:
        await stripe_provider.create_checkout(checkout())
    assert outage.value.retryable
    assert stripe_fake.secret_key not in str(outage.value)
    assert stripe_fake.intents == {}
    created = await stripe_provider.create_checkout(checkout())
    assert list(stripe_fake.intents) == [created.provider_payment_id]


async def test_stripe_wrong_key_is_refused_without_showing_it(stripe_fake: FakeStripe) -> None:
    wrong_key = "sk_test_" + "x" * 24
    provider = StripePayments.from_settings(make_settings(stripe_secret_key=wrong_key,
                                                          stripe_api_base=stripe_fake.base_url))
    try:
        with pytest.raises(PaymentError) as denied:
            await provider.fetch("pi_missing")
    finally:
        await provider.aclose()
    assert not denied.value.retryable
    assert wrong_key not in str(denied.value) and "xxxx" not in str(denied.value)


async def test_stripe_missing_intent_is_refused(stripe_provider: StripePayments) -> None:
    with pytest.raises(PaymentError) as missing:
        await stripe_provider.fetch("pi_missing")
    assert not missing.value.retryable and "resource_missing" in str(missing.value)


async def test_stripe_slower_than_the_deadline_is_retryable(stripe_fake: FakeStripe) -> None:
    provider = StripePayments.from_settings(stripe_settings(stripe_fake, payment_timeout_s=0.5))
    stripe_fake.delay_s = 3
    started = time.monotonic()
    try:
        with pytest.raises(PaymentError) as slow:
            await provider.create_checkout(checkout())
    finally:
        await provider.aclose()
    assert slow.value.retryable
    assert time.monotonic() - started < 1.5


async def test_stripe_unreachable_is_retryable() -> None:
    provider = StripePayments.from_settings(make_settings(stripe_secret_key="sk_test_" + "u" * 24,
                                                          stripe_api_base="http://127.0.0.1:9"))
    try:
        with pytest.raises(PaymentError) as unreachable:
            await provider.fetch("pi_any")
    finally:
        await provider.aclose()
    assert unreachable.value.retryable


async def test_stripe_webhook_events_are_verified_and_normalised(stripe_provider: StripePayments,
                                                                 stripe_fake: FakeStripe) -> None:
    pi_id = (await stripe_provider.create_checkout(checkout())).provider_payment_id
    paid = stripe_fake.succeed(pi_id)
    body, headers = stripe_fake.signed_event("payment_intent.succeeded", paid, STRIPE_WHSEC, event_id="evt_1")
    event = stripe_provider.verify_webhook(body, headers)
    assert (event.event_id, event.type, event.kind) == ("evt_1", "payment_intent.succeeded", "payment_succeeded")
    assert (event.provider_payment_id, event.charge_id, event.amount, event.currency) == \
        (pi_id, paid["latest_charge"], 50000, "INR")
    assert event.metadata["payment_id"] == "pay_0001"

    lower = {k.lower(): v for k, v in headers.items()}
    assert stripe_provider.verify_webhook(body, lower).event_id == "evt_1"

    other = (await stripe_provider.create_checkout(checkout("pp-pay_0002"))).provider_payment_id
    failed = stripe_fake.fail(other, "Your card was declined.")
    event = stripe_provider.verify_webhook(*stripe_fake.signed_event("payment_intent.payment_failed", failed,
                                                                     STRIPE_WHSEC))
    assert (event.kind, event.failure_message, event.provider_payment_id) == \
        ("payment_failed", "Your card was declined.", other)
    cancelled = stripe_fake.cancel(other)
    event = stripe_provider.verify_webhook(*stripe_fake.signed_event("payment_intent.canceled", cancelled,
                                                                     STRIPE_WHSEC))
    assert event.kind == "payment_failed"

    refund = await stripe_provider.refund(pi_id, charge_id=None, amount=100, idempotency_key="rf-1", reason="x")
    refund_obj = dict(stripe_fake.refunds[refund.provider_refund_id])
    for event_type in ("refund.created", "refund.updated", "charge.refund.updated"):
        event = stripe_provider.verify_webhook(*stripe_fake.signed_event(event_type, refund_obj, STRIPE_WHSEC))
        assert (event.kind, event.provider_refund_id, event.provider_payment_id, event.charge_id, event.amount) == \
            ("refund_succeeded", refund.provider_refund_id, pi_id, paid["latest_charge"], 100)
    for status, kind in (("failed", "refund_failed"), ("canceled", "refund_failed"), ("pending", "ignored")):
        event = stripe_provider.verify_webhook(*stripe_fake.signed_event("refund.updated",
                                                                         {**refund_obj, "status": status},
                                                                         STRIPE_WHSEC))
        assert event.kind == kind

    for unknown in ("charge.succeeded", "customer.created", "payment_intent.created"):
        event = stripe_provider.verify_webhook(*stripe_fake.signed_event(unknown, paid, STRIPE_WHSEC))
        assert (event.type, event.kind) == (unknown, "ignored")


async def test_stripe_webhook_signature_failures_are_refused(stripe_provider: StripePayments,
                                                             stripe_fake: FakeStripe) -> None:
    obj = {"id": "pi_1", "object": "payment_intent", "amount": 100, "currency": "inr", "metadata": {}}
    body, headers = stripe_fake.signed_event("payment_intent.succeeded", obj, STRIPE_WHSEC)
    now = int(time.time())
    refused: list[tuple[str, bytes, dict[str, str]]] = [
        ("tampered body", body.replace(b'"amount": 100', b'"amount": 1'), headers),
        ("wrong secret", *stripe_fake.signed_event("payment_intent.succeeded", obj, "whsec_other")),
        ("old timestamp", *stripe_fake.signed_event("payment_intent.succeeded", obj, STRIPE_WHSEC,
                                                    timestamp=now - TOLERANCE_S - 60)),
        ("future timestamp", *stripe_fake.signed_event("payment_intent.succeeded", obj, STRIPE_WHSEC,
                                                       timestamp=now + TOLERANCE_S + 60)),
        ("no header", body, {}),
        ("garbage header", body, {"Stripe-Signature": "nonsense"}),
        ("signed non-JSON", b"not json", {"Stripe-Signature": stripe_signature(STRIPE_WHSEC, b"not json", now)}),
        ("signed non-UTF-8", b"\xff\xfe", {"Stripe-Signature": stripe_signature(STRIPE_WHSEC, b"\xff\xfe", now)}),
    ]
    for what, bad_body, bad_headers in refused:
        with pytest.raises(SignatureError):
            stripe_provider.verify_webhook(bad_body, bad_headers)
            pytest.fail(f"{what} was accepted")
    # Within the tolerance either way is accepted.
    for skew in (-TOLERANCE_S + 30, TOLERANCE_S - 30):
        stripe_provider.verify_webhook(*stripe_fake.signed_event("payment_intent.succeeded", obj, STRIPE_WHSEC,
                                                                 timestamp=now + skew))

    unconfigured = StripePayments.from_settings(make_settings(stripe_secret_key=stripe_fake.secret_key,
                                                              stripe_api_base=stripe_fake.base_url))
    try:
        with pytest.raises(SignatureError):
            unconfigured.verify_webhook(body, headers)
    finally:
        await unconfigured.aclose()


# --- Razorpay ----------------------------------------------------------------------------------

async def test_razorpay_order_carries_our_receipt_and_notes(razorpay_provider: RazorpayPayments,
                                                            razorpay_fake: FakeRazorpay) -> None:
    created = await razorpay_provider.create_checkout(checkout())
    assert created.provider_payment_id.startswith("order_")
    assert (created.amount, created.currency, created.client_secret) == (50000, "INR", None)
    assert razorpay_provider.public_key == razorpay_fake.key_id
    order = razorpay_fake.orders[created.provider_payment_id]
    assert order["receipt"] == "pp-pay_0001"
    assert order["notes"] == {"order_id": "ord_0001", "customer_id": "usr_0001", "payment_id": "pay_0001",
                              "kind": "deposit"}

    long_key = "pp-" + "k" * 60
    long_order = await razorpay_provider.create_checkout(checkout(long_key))
    receipt = razorpay_fake.orders[long_order.provider_payment_id]["receipt"]
    assert len(receipt) <= 40 and receipt == receipt_for(long_key) != receipt_for(long_key + "x")


async def test_razorpay_checkout_signature_is_verified_for_our_order_only(razorpay_provider: RazorpayPayments,
                                                                          razorpay_fake: FakeRazorpay) -> None:
    ours = (await razorpay_provider.create_checkout(checkout())).provider_payment_id
    theirs = (await razorpay_provider.create_checkout(checkout("pp-pay_0002"))).provider_payment_id
    payment_id, signature = razorpay_fake.pay(ours)
    razorpay_provider.verify_checkout(ours, payment_id, signature)

    their_payment, their_signature = razorpay_fake.pay(theirs)
    altered = signature[:-1] + ("1" if signature.endswith("0") else "0")  # always a different last digit
    for order_id, pay_id, sig in ((ours, their_payment, their_signature), (theirs, payment_id, signature),
                                  (ours, payment_id, altered), (ours, payment_id, ""),
                                  (ours, payment_id, "é" * 64)):
        with pytest.raises(SignatureError):
            razorpay_provider.verify_checkout(order_id, pay_id, sig)


async def test_razorpay_fetch_reports_pending_failed_and_succeeded(razorpay_provider: RazorpayPayments,
                                                                   razorpay_fake: FakeRazorpay) -> None:
    order_id = (await razorpay_provider.create_checkout(checkout())).provider_payment_id
    pending = await razorpay_provider.fetch(order_id)
    assert (pending.status, pending.charge_id, pending.amount, pending.currency) == ("pending", None, 50000, "INR")
    assert pending.metadata["order_id"] == "ord_0001"

    razorpay_fake.fail_payment(order_id, "Payment declined by the bank")
    failed = await razorpay_provider.fetch(order_id)
    assert (failed.status, failed.failure_message) == ("failed", "Payment declined by the bank")

    payment_id, _ = razorpay_fake.pay(order_id)
    paid = await razorpay_provider.fetch(order_id)
    assert (paid.status, paid.charge_id, paid.failure_message) == ("succeeded", payment_id, None)

    with pytest.raises(PaymentError) as missing:
        await razorpay_provider.fetch("order_missing")
    assert not missing.value.retryable


async def test_razorpay_refunds_partially_then_fully_and_refuses_more_than_captured(
        razorpay_provider: RazorpayPayments, razorpay_fake: FakeRazorpay) -> None:
    order_id = (await razorpay_provider.create_checkout(checkout(amount=10000))).provider_payment_id
    payment_id, _ = razorpay_fake.pay(order_id)
    with pytest.raises(PaymentError) as too_much:
        await razorpay_provider.refund(order_id, charge_id=payment_id, amount=10001, idempotency_key="pp-rf-0001",
                                       reason="too much")
    assert not too_much.value.retryable

    # Without a charge id the captured payment is found first.
    part = await razorpay_provider.refund(order_id, charge_id=None, amount=3000, idempotency_key="pp-rf-0002",
                                          reason="late")
    assert (part.amount, part.status) == (3000, "succeeded") and part.provider_refund_id.startswith("rfnd_")
    stored = razorpay_fake.refunds[part.provider_refund_id]
    assert (stored["payment_id"], stored["receipt"], stored["notes"], stored["speed_requested"]) == \
        (payment_id, "pp-rf-0002", {"reason": "late"}, "normal")
    rest = await razorpay_provider.refund(order_id, charge_id=payment_id, amount=7000,
                                          idempotency_key="pp-rf-0003", reason="rest")
    assert rest.amount == 7000
    with pytest.raises(PaymentError) as nothing_left:
        await razorpay_provider.refund(order_id, charge_id=payment_id, amount=100, idempotency_key="pp-rf-0004",
                                       reason="again")
    assert not nothing_left.value.retryable
    assert len(razorpay_fake.refunds) == 2
    assert (await razorpay_provider.fetch(order_id)).status == "succeeded"  # fully refunded is still paid

    unpaid = (await razorpay_provider.create_checkout(checkout("pp-pay_0002"))).provider_payment_id
    with pytest.raises(PaymentError) as uncaptured:
        await razorpay_provider.refund(unpaid, charge_id=None, amount=100, idempotency_key="pp-rf-0005", reason="")
    assert not uncaptured.value.retryable

    razorpay_fake.refund_status = "pending"
    other = (await razorpay_provider.create_checkout(checkout("pp-pay_0003"))).provider_payment_id
    razorpay_fake.pay(other)
    pending = await razorpay_provider.refund(other, charge_id=None, amount=100, idempotency_key="pp-rf-0006",
                                             reason="")
    assert pending.status == "pending"


async def test_razorpay_refund_retried_with_the_same_key_refunds_once(razorpay_provider: RazorpayPayments,
                                                                      razorpay_fake: FakeRazorpay) -> None:
    order_id = (await razorpay_provider.create_checkout(checkout(amount=10000))).provider_payment_id
    payment_id, _ = razorpay_fake.pay(order_id)
    key = "pp-" + "refund-key/with:odd chars and more than forty characters"
    first = await razorpay_provider.refund(order_id, charge_id=payment_id, amount=4000, idempotency_key=key,
                                           reason="x")
    again = await razorpay_provider.refund(order_id, charge_id=payment_id, amount=4000, idempotency_key=key,
                                           reason="x")
    assert again == first
    assert razorpay_fake.calls["POST /v1/payments/{id}/refund"] == 1  # the retry found it by its receipt
    # Concurrent first attempts (held together by the delay) all list no refund yet;
    # X-Refund-Idempotency keeps them to one.
    razorpay_fake.delay_s = 0.2
    racing = await asyncio.gather(*(razorpay_provider.refund(order_id, charge_id=payment_id, amount=1000,
                                                             idempotency_key="pp-rf-race", reason="x")
                                    for _ in range(3)))
    assert len(set(racing)) == 1
    assert len(razorpay_fake.refunds) == 2
    assert razorpay_fake.payments[payment_id]["amount_refunded"] == 5000


async def test_razorpay_outage_and_slowness_are_retryable(razorpay_fake: FakeRazorpay) -> None:
    provider = RazorpayPayments.from_settings(razorpay_settings(razorpay_fake, payment_timeout_s=0.5))
    try:
        razorpay_fake.fail_next = 1
        with pytest.raises(PaymentError) as outage:
            await provider.create_checkout(checkout())
        assert outage.value.retryable and razorpay_fake.orders == {}
        assert razorpay_fake.key_secret not in str(outage.value)

        razorpay_fake.delay_s = 3
        started = time.monotonic()
        with pytest.raises(PaymentError) as slow:
            await provider.create_checkout(checkout())
        assert slow.value.retryable
        assert time.monotonic() - started < 1.5
    finally:
        await provider.aclose()


async def test_razorpay_wrong_key_is_refused_without_showing_it(razorpay_fake: FakeRazorpay) -> None:
    secret = "wrong-razorpay-secret-0123"
    provider = RazorpayPayments.from_settings(make_settings(razorpay_key_id=razorpay_fake.key_id,
                                                            razorpay_key_secret=secret,
                                                            razorpay_api_base=razorpay_fake.base_url + "/v1/"))
    try:
        with pytest.raises(PaymentError) as denied:
            await provider.create_checkout(checkout())
    finally:
        await provider.aclose()
    assert not denied.value.retryable and "Authentication failed" in str(denied.value)
    assert secret not in str(denied.value)


async def test_razorpay_unreachable_is_retryable() -> None:
    provider = RazorpayPayments.from_settings(make_settings(razorpay_key_id="rzp_test_x", razorpay_key_secret="s" * 16,
                                                            razorpay_api_base="http://127.0.0.1:9"))
    try:
        with pytest.raises(PaymentError) as unreachable:
            await provider.fetch("order_any")
    finally:
        await provider.aclose()
    assert unreachable.value.retryable


async def test_razorpay_webhook_events_are_verified_and_normalised(razorpay_provider: RazorpayPayments,
                                                                   razorpay_fake: FakeRazorpay) -> None:
    order_id = (await razorpay_provider.create_checkout(checkout(amount=10000))).provider_payment_id
    payment_id, _ = razorpay_fake.pay(order_id)
    payment, order = razorpay_fake.payments[payment_id], razorpay_fake.orders[order_id]

    body, headers = razorpay_fake.signed_webhook("payment.captured", {"payment": payment}, RAZORPAY_WHSEC,
                                                 event_id="evt_captured")
    event = razorpay_provider.verify_webhook(body, headers)
    assert (event.event_id, event.type, event.kind) == ("evt_captured", "payment.captured", "payment_succeeded")
    assert (event.provider_payment_id, event.charge_id, event.amount, event.currency) == \
        (order_id, payment_id, 10000, "INR")
    assert razorpay_provider.verify_webhook(body, {k.lower(): v for k, v in headers.items()}).kind == \
        "payment_succeeded"

    event = razorpay_provider.verify_webhook(*razorpay_fake.signed_webhook(
        "order.paid", {"payment": payment, "order": order}, RAZORPAY_WHSEC))
    assert (event.kind, event.provider_payment_id, event.charge_id) == ("payment_succeeded", order_id, payment_id)
    assert event.metadata["order_id"] == "ord_0001"

    failed_id = razorpay_fake.fail_payment((await razorpay_provider.create_checkout(
        checkout("pp-pay_0002"))).provider_payment_id, "Card declined")
    event = razorpay_provider.verify_webhook(*razorpay_fake.signed_webhook(
        "payment.failed", {"payment": razorpay_fake.payments[failed_id]}, RAZORPAY_WHSEC))
    assert (event.kind, event.charge_id, event.failure_message) == ("payment_failed", failed_id, "Card declined")

    refund = await razorpay_provider.refund(order_id, charge_id=payment_id, amount=2500,
                                            idempotency_key="pp-rf-0001", reason="x")
    refund_entity = razorpay_fake.refunds[refund.provider_refund_id]
    for name, kind in (("refund.processed", "refund_succeeded"), ("refund.failed", "refund_failed")):
        event = razorpay_provider.verify_webhook(*razorpay_fake.signed_webhook(
            name, {"refund": refund_entity, "payment": payment}, RAZORPAY_WHSEC))
        assert (event.kind, event.provider_refund_id, event.charge_id, event.amount, event.provider_payment_id) == \
            (kind, refund.provider_refund_id, payment_id, 2500, order_id)

    for unknown in ("payment.authorized", "refund.created", "payment.dispute.created"):
        event = razorpay_provider.verify_webhook(*razorpay_fake.signed_webhook(
            unknown, {"payment": payment}, RAZORPAY_WHSEC))
        assert (event.type, event.kind) == (unknown, "ignored")


async def test_razorpay_webhook_without_an_event_id_gets_a_stable_one(razorpay_provider: RazorpayPayments,
                                                                      razorpay_fake: FakeRazorpay) -> None:
    body, headers = razorpay_fake.signed_webhook("payment.authorized", {"payment": {"id": "pay_1"}}, RAZORPAY_WHSEC)
    del headers["X-Razorpay-Event-Id"]
    first = razorpay_provider.verify_webhook(body, headers)
    assert first.event_id.startswith("sha256:") and razorpay_provider.verify_webhook(body, headers) == first

    with_id = json.dumps({"id": "evt_in_body", "event": "payment.authorized", "payload": {}}).encode()
    signed = {"X-Razorpay-Signature": razorpay_fake_signature(with_id)}
    assert razorpay_provider.verify_webhook(with_id, signed).event_id == "evt_in_body"


def razorpay_fake_signature(body: bytes, secret: str = RAZORPAY_WHSEC) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_razorpay_webhook_signature_failures_are_refused(razorpay_provider: RazorpayPayments,
                                                               razorpay_fake: FakeRazorpay) -> None:
    body, headers = razorpay_fake.signed_webhook("payment.captured", {"payment": {"id": "pay_1", "amount": 100}},
                                                 RAZORPAY_WHSEC)
    refused: list[tuple[str, bytes, dict[str, str]]] = [
        ("tampered body", body.replace(b'"amount": 100', b'"amount": 1'), headers),
        ("wrong secret", *razorpay_fake.signed_webhook("payment.captured", {"payment": {"id": "pay_1"}}, "other")),
        ("no header", body, {}),
        ("non-ASCII signature", body, {"X-Razorpay-Signature": "é" * 64}),
        ("signed non-JSON", b"not json", {"X-Razorpay-Signature": razorpay_fake_signature(b"not json")}),
        ("signed non-UTF-8", b"\xff", {"X-Razorpay-Signature": razorpay_fake_signature(b"\xff")}),
    ]
    for what, bad_body, bad_headers in refused:
        with pytest.raises(SignatureError):
            razorpay_provider.verify_webhook(bad_body, bad_headers)
            pytest.fail(f"{what} was accepted")

    unconfigured = RazorpayPayments.from_settings(make_settings(razorpay_key_id=razorpay_fake.key_id,
                                                                razorpay_key_secret=razorpay_fake.key_secret))
    try:
        with pytest.raises(SignatureError):
            unconfigured.verify_webhook(body, headers)
    finally:
        await unconfigured.aclose()
