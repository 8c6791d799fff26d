"""Payments through the offline simulator: checkout, capture exactly once, webhooks, balance,
cancellation refunds, admin refunds, expiry of unpaid orders."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from api import notifications
from core import keys
from core.contracts import ORDER_EVENTS, OrderEvent
from core.jsonutil import iso
from core.settings import Settings
from tests.fakes import flush_outbox, local_messages
from tests.helpers import bearer, db_of, make_user
from tests.payment_helpers import customer_with_order, flow, payments_client, simulator, stored_order

PRICE = 2_000_000  # ₹20,000.00
DEPOSIT = PRICE * 3000 // 10_000


@pytest.fixture
async def pay_client(aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis) -> TestClient[Any, Any]:
    return await payments_client(aiohttp_client, make_settings)


async def _pay(client: TestClient[Any, Any], auth: dict[str, str], order_id: str,
               outcome: str = "succeeded") -> dict[str, Any]:
    resp = await client.post("/api/payments/simulated/checkout", json={"order_id": order_id, "outcome": outcome},
                             headers=auth)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _admin(client: TestClient[Any, Any], token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for(await make_user(db_of(client.app), "admin"), "admin"))


async def test_a_deposit_order_waits_for_payment_and_is_not_dispatched(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, _, order = await customer_with_order(pay_client, token_for, price=PRICE)
    assert order["status"] == "pending_payment"
    assert order["payment_status"] == "unpaid"
    assert (order["amount_due"], order["amount_paid"], order["amount_refunded"]) == (PRICE, 0, 0)
    assert order["deposit_amount"] == DEPOSIT
    resp = await pay_client.get("/api/payments/config")
    config = await resp.json()
    assert config["providers"] == ["simulated"] and config["deposit_rate_bp"] == 3000
    assert config["payment_expiry_s"] == 1800 and config["refund_after_assign_bp"] == 5000


async def test_paying_the_deposit_places_the_order_once_and_sends_a_receipt(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    customer_id, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    pubsub = redis.pubsub()
    await pubsub.subscribe(ORDER_EVENTS)
    await pubsub.get_message(timeout=1)

    body = await _pay(pay_client, auth, order["id"])
    assert body["payment"]["status"] == "succeeded" and body["payment"]["kind"] == "deposit"
    assert body["payment"]["amount"] == DEPOSIT and body["payment"]["provider"] == "simulated"
    assert body["order"]["status"] == "placed" and body["order"]["payment_status"] == "deposit_paid"
    assert body["order"]["amount_paid"] == DEPOSIT and body["order"]["amount_due"] == PRICE - DEPOSIT
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    event = OrderEvent.model_validate_json(message["data"])
    assert (event.status, event.prev_status) == ("placed", "pending_payment")  # dispatch starts here
    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # Paying the same thing again changes nothing.
    resp = await pay_client.post("/api/payments/simulated/checkout",
                                 json={"order_id": order["id"], "outcome": "succeeded"}, headers=auth)
    again = await resp.json()
    assert resp.status == 200 and again["payment"]["kind"] == "balance"  # what is owed next: the balance
    db = db_of(pay_client.app)
    assert await db.payments.count_documents({"order_id": order["id"], "status": "succeeded"}) == 2
    stored = await stored_order(pay_client, order["id"])
    assert stored["amount_paid"] == PRICE and stored["payment_status"] == "paid" and stored["amount_due"] == 0

    await flow(pay_client.app).settle_order(order["id"])
    await flush_outbox(pay_client.app)
    customer = await db.users.find_one({"_id": customer_id})
    assert customer is not None
    receipts = [m for m in local_messages(pay_client.app, "email")
                if m["to"] == customer["email"] and "receipt" in m["subject"]]
    assert len(receipts) == 2  # one per payment, however often it was settled
    assert "₹6,000.00" in receipts[0]["body"] + receipts[1]["body"]

    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "nothing_due"


async def test_a_declined_card_leaves_the_order_waiting_and_a_second_attempt_pays(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, payment_option="full", price=PRICE)
    failed = await _pay(pay_client, auth, order["id"], "failed")
    assert failed["payment"]["status"] == "failed" and failed["payment"]["kind"] == "full"
    assert failed["order"]["status"] == "pending_payment" and failed["order"]["amount_paid"] == 0
    paid = await _pay(pay_client, auth, order["id"])
    assert paid["payment"]["id"] == failed["payment"]["id"]  # the same payment, a second card
    assert paid["order"]["status"] == "placed" and paid["order"]["payment_status"] == "paid"


async def test_checkout_is_idempotent_and_only_for_the_orders_customer(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    first = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                  headers=auth)
    second = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                   headers=auth)
    assert first.status == second.status == 200
    a, b = await first.json(), await second.json()
    assert a["payment_id"] == b["payment_id"] and a["provider_payment_id"] == b["provider_payment_id"]
    assert a["amount"] == DEPOSIT and a["kind"] == "deposit"

    intruder = bearer(token_for(await make_user(db_of(pay_client.app)), "customer"))
    resp = await pay_client.post("/api/payments/simulated/checkout",
                                 json={"order_id": order["id"], "outcome": "succeeded"}, headers=intruder)
    assert resp.status == 404
    assert (await stored_order(pay_client, order["id"]))["status"] == "pending_payment"
    # The client cannot name an amount.
    resp = await pay_client.post("/api/payments/simulated/create-payment",
                                 json={"order_id": order["id"], "amount": 1}, headers=auth)
    assert resp.status == 422


async def test_cash_orders_are_placed_at_once_and_take_no_online_payment(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, payment_option="cash", price=PRICE)
    assert order["status"] == "placed" and order["amount_due"] == PRICE and order["payment_status"] == "unpaid"
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "cash_order"


async def test_concurrent_confirmations_record_one_capture(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    created = await resp.json()
    await simulator(pay_client.app).complete(created["provider_payment_id"], "succeeded")
    db = db_of(pay_client.app)
    payment = await db.payments.find_one({"_id": created["payment_id"]})
    assert payment is not None
    # Five confirmations and the webhook delivery, all at once.
    results = await asyncio.gather(*(flow(pay_client.app).confirm(payment, by_role="customer", by_id=None)
                                     for _ in range(5)), simulator(pay_client.app).deliver_due())
    assert all(r["status"] == "succeeded" for r in results[:5])
    stored = await db.payments.find_one({"_id": created["payment_id"]})
    assert stored is not None
    assert [h["status"] for h in stored["history"]] == ["created", "succeeded"]
    order_after = await stored_order(pay_client, order["id"])
    assert order_after["amount_paid"] == DEPOSIT and order_after["status"] == "placed"
    assert [h["status"] for h in order_after["history"]] == ["pending_payment", "placed"]


async def test_the_simulators_webhook_alone_places_the_order_exactly_once(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    """The customer closed the tab after paying: only the webhook tells us. Replayed 30 times."""
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    created = await resp.json()
    sim = simulator(pay_client.app)
    await sim.complete(created["provider_payment_id"], "succeeded")
    db = db_of(pay_client.app)
    queued = await db.simulator_webhooks.find_one({"body": {"$regex": created["provider_payment_id"]}})
    assert queued is not None
    body, headers = sim.signed_request(queued["body"])
    outcomes = []
    for _ in range(30):
        resp = await pay_client.post("/api/payments/webhooks/simulated", data=body, headers=headers)
        assert resp.status == 200
        outcomes.append((await resp.json())["outcome"])
    assert outcomes[0] == "recorded" and set(outcomes[1:]) == {"duplicate"}
    stored = await stored_order(pay_client, order["id"])
    assert stored["status"] == "placed" and stored["amount_paid"] == DEPOSIT
    assert await db.payment_events.count_documents({}) >= 1


async def test_webhooks_with_bad_signatures_change_nothing(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    created = await resp.json()
    sim = simulator(pay_client.app)
    event = {"id": "sim_evt_forged", "type": "payment.succeeded", "created": int(time.time()),
             "data": {"id": created["provider_payment_id"], "status": "succeeded", "amount": DEPOSIT,
                      "currency": "INR", "metadata": {"order_id": order["id"]}}}
    raw = json.dumps(event)
    body, headers = sim.signed_request(raw)
    tampered = body.replace(b'"succeeded"', b'"succeeded" ', 1)
    old_body, old_headers = sim.signed_request(raw, timestamp=int(time.time()) - 3600)
    future_body, future_headers = sim.signed_request(raw, timestamp=int(time.time()) + 3600)
    wrong = dict(headers)
    wrong["Simulator-Signature"] = headers["Simulator-Signature"].split("v1=")[0] + "v1=" + "0" * 64
    for data, hdrs in ((tampered, headers), (body, wrong), (old_body, old_headers), (future_body, future_headers),
                       (body, {"Content-Type": "application/json"})):
        resp = await pay_client.post("/api/payments/webhooks/simulated", data=data, headers=hdrs)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_signature"
    stored = await stored_order(pay_client, order["id"])
    assert stored["status"] == "pending_payment" and stored["amount_paid"] == 0
    assert await db_of(pay_client.app).payment_events.count_documents({}) == 0


async def test_a_failure_webhook_arriving_after_the_capture_changes_nothing(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    paid = await _pay(pay_client, auth, order["id"])
    sim = simulator(pay_client.app)
    late = {"id": "sim_evt_late_failure", "type": "payment.failed", "created": int(time.time()),
            "data": {"id": paid["payment"]["provider_payment_id"], "status": "failed", "amount": DEPOSIT,
                     "currency": "INR", "metadata": {"order_id": order["id"]}}}
    body, headers = sim.signed_request(json.dumps(late))
    resp = await pay_client.post("/api/payments/webhooks/simulated", data=body, headers=headers)
    assert resp.status == 200
    unknown = {"id": "sim_evt_other", "type": "customer.updated", "created": int(time.time()), "data": {}}
    body, headers = sim.signed_request(json.dumps(unknown))
    resp = await pay_client.post("/api/payments/webhooks/simulated", data=body, headers=headers)
    assert resp.status == 200 and (await resp.json())["outcome"] == "ignored"
    db = db_of(pay_client.app)
    payment = await db.payments.find_one({"_id": paid["payment"]["id"]})
    assert payment is not None and payment["status"] == "succeeded"
    assert (await stored_order(pay_client, order["id"]))["amount_paid"] == DEPOSIT


async def test_webhook_with_a_different_amount_is_refused(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    created = await resp.json()
    sim = simulator(pay_client.app)
    event = {"id": "sim_evt_short", "type": "payment.succeeded", "created": int(time.time()),
             "data": {"id": created["provider_payment_id"], "status": "succeeded", "amount": 100,
                      "currency": "INR", "metadata": {"order_id": order["id"]}}}
    body, headers = sim.signed_request(json.dumps(event))
    resp = await pay_client.post("/api/payments/webhooks/simulated", data=body, headers=headers)
    assert resp.status == 200 and (await resp.json())["outcome"] == "payment_mismatch"
    assert (await stored_order(pay_client, order["id"]))["status"] == "pending_payment"


async def test_cancelling_before_dispatch_refunds_everything_and_the_order_ends_refunded(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    customer_id, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    paid = await _pay(pay_client, auth, order["id"])
    resp = await pay_client.post(f"/api/orders/{order['id']}/cancel", json={"reason": "plans changed"},
                                 headers=auth)
    assert resp.status == 200, await resp.text()
    after = await stored_order(pay_client, order["id"])
    assert after["status"] == "refunded" and after["payment_status"] == "refunded"
    assert after["amount_refunded"] == DEPOSIT and after["amount_due"] == 0
    assert [h["status"] for h in after["history"]][-3:] == ["placed", "cancelled", "refunded"]
    payment = await db_of(pay_client.app).payments.find_one({"_id": paid["payment"]["id"]})
    assert payment is not None and payment["status"] == "refunded" and payment["amount_refunded"] == DEPOSIT
    # The simulator holds exactly one refund, for the whole deposit.
    sim_payment = await db_of(pay_client.app).simulator_payments.find_one(
        {"_id": paid["payment"]["provider_payment_id"]})
    assert sim_payment is not None and [r["amount"] for r in sim_payment["refunds"]] == [DEPOSIT]
    await flow(pay_client.app).settle_order(order["id"])
    await flush_outbox(pay_client.app)
    customer = await db_of(pay_client.app).users.find_one({"_id": customer_id})
    assert customer is not None
    notices = [m for m in local_messages(pay_client.app, "email") if m["to"] == customer["email"]
               and "refund for order" in m["subject"]]
    assert len(notices) == 1 and "₹6,000.00" in notices[0]["body"]


async def test_cancelling_after_assignment_refunds_the_policy_share(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, payment_option="full", price=PRICE)
    await _pay(pay_client, auth, order["id"])
    db = db_of(pay_client.app)
    current = await stored_order(pay_client, order["id"])
    await db.orders.update_one({"_id": order["id"]}, {"$set": {
        "status": "assigned", "partner_id": "p1", "version": current["version"] + 1,
        "history": [*current["history"], {"status": "assigned", "at": iso(), "by_role": "partner", "by": "p1",
                                          "reason": None}]}})
    resp = await pay_client.post(f"/api/orders/{order['id']}/cancel", json={}, headers=auth)
    assert resp.status == 200
    after = await stored_order(pay_client, order["id"])
    assert after["amount_refunded"] == PRICE // 2  # refund_after_assign_bp = 50 %
    assert after["status"] == "refunded" and after["payment_status"] == "partially_refunded"


async def test_admin_refunds_partially_never_beyond_what_was_captured_and_retries_refund_once(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, payment_option="full", price=PRICE)
    paid = await _pay(pay_client, auth, order["id"])
    admin = await _admin(pay_client, token_for)
    url = f"/api/admin/payments/{paid['payment']['id']}/refund"
    key = {"Idempotency-Key": uuid.uuid4().hex}

    resp = await pay_client.post(url, json={"amount": 500_000, "reason": "balloons missing"}, headers={**admin, **key})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["payment"]["status"] == "partially_refunded" and body["payment"]["amount_refunded"] == 500_000
    assert body["order"]["payment_status"] == "partially_refunded" and body["order"]["amount_refunded"] == 500_000
    retry = await pay_client.post(url, json={"amount": 500_000, "reason": "balloons missing"}, headers={**admin, **key})
    assert retry.status == 200 and (await retry.json())["payment"]["amount_refunded"] == 500_000

    over = await pay_client.post(url, json={"amount": PRICE, "reason": "too much"},
                                 headers={**admin, "Idempotency-Key": uuid.uuid4().hex})
    assert over.status == 409
    error = (await over.json())["error"]
    assert error["code"] == "refund_exceeds_captured" and error["details"]["refundable"] == PRICE - 500_000

    rest = await pay_client.post(url, json={"reason": "event called off"},
                                 headers={**admin, "Idempotency-Key": uuid.uuid4().hex})
    assert rest.status == 200
    assert (await rest.json())["payment"]["status"] == "refunded"
    sim_payment = await db_of(pay_client.app).simulator_payments.find_one(
        {"_id": paid["payment"]["provider_payment_id"]})
    assert sim_payment is not None and sum(r["amount"] for r in sim_payment["refunds"]) == PRICE
    no_key = await pay_client.post(url, json={"reason": "x"}, headers=admin)
    assert no_key.status == 422
    customer = await pay_client.post(url, json={"reason": "x"}, headers={**auth, **key})
    assert customer.status == 403


async def test_concurrent_refunds_never_exceed_the_capture(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, payment_option="full", price=PRICE)
    paid = await _pay(pay_client, auth, order["id"])
    admin = await _admin(pay_client, token_for)
    url = f"/api/admin/payments/{paid['payment']['id']}/refund"
    responses = await asyncio.gather(*(pay_client.post(url, json={"amount": 800_000, "reason": "race"},
                                                       headers={**admin, "Idempotency-Key": uuid.uuid4().hex})
                                       for _ in range(4)))
    assert sorted(r.status for r in responses) == [200, 200, 409, 409]
    payment = await db_of(pay_client.app).payments.find_one({"_id": paid["payment"]["id"]})
    assert payment is not None and payment["amount_refunded"] == 1_600_000


async def test_history_lists_my_payments_and_admins_filter_total_and_export(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    await _pay(pay_client, auth, order["id"], "failed")
    await _pay(pay_client, auth, order["id"])
    _, other_auth, other = await customer_with_order(pay_client, token_for, payment_option="full", price=PRICE)
    await _pay(pay_client, other_auth, other["id"])

    resp = await pay_client.get("/api/payments/history", headers=auth)
    mine = await resp.json()
    assert mine["total"] == 1 and mine["items"][0]["order_id"] == order["id"]
    row = mine["items"][0]
    for field in ("id", "order_id", "provider", "kind", "status", "amount", "amount_refunded", "currency",
                  "created_at", "provider_payment_id"):
        assert field in row
    assert "client_secret" not in row and "checkout_key" not in row

    admin = await _admin(pay_client, token_for)
    resp = await pay_client.get("/api/admin/payments?status=succeeded&provider=simulated", headers=admin)
    listed = await resp.json()
    assert listed["total"] == 2 and listed["totals"]["INR"]["captured"] == DEPOSIT + PRICE
    assert all(row["customer"]["email"].endswith("@example.test") for row in listed["items"])
    today = datetime.now(UTC).date()
    resp = await pay_client.get(f"/api/admin/payments?date_from={today + timedelta(days=1)}", headers=admin)
    assert (await resp.json())["total"] == 0
    resp = await pay_client.get("/api/admin/payments?format=csv", headers=admin)
    assert resp.status == 200 and resp.content_type == "text/csv"
    lines = (await resp.text()).strip().splitlines()
    assert lines[0].startswith("id,created_at,order_id") and len(lines) == 3
    assert (await pay_client.get("/api/admin/payments", headers=auth)).status == 403


async def test_an_unpaid_order_expires_and_its_customer_is_told(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    customer_id, _, order = await customer_with_order(pay_client, token_for, price=PRICE)
    _, _, paid_late = await customer_with_order(pay_client, token_for, price=PRICE)
    db = db_of(pay_client.app)
    long_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    await db.orders.update_many({"_id": {"$in": [order["id"], paid_late["id"]]}}, {"$set": {"created_at": long_ago}})
    # The second customer paid, but the webhook and the page's confirmation were both lost.
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": paid_late["id"]},
                                 headers=bearer(token_for(paid_late["customer_id"], "customer")))
    created = await resp.json()
    await simulator(pay_client.app).complete(created["provider_payment_id"], "succeeded")
    await db.simulator_webhooks.delete_many({})

    assert await flow(pay_client.app).expire_unpaid() == 1
    expired = await stored_order(pay_client, order["id"])
    assert expired["status"] == "cancelled" and "no payment within 30 minutes" in expired["history"][-1]["reason"]
    rescued = await stored_order(pay_client, paid_late["id"])
    assert rescued["status"] == "placed" and rescued["amount_paid"] == DEPOSIT

    await notifications.notify_orders_once(db, pay_client.app[keys.SETTINGS])
    await flush_outbox(pay_client.app)
    customer = await db.users.find_one({"_id": customer_id})
    assert customer is not None
    assert any("cancelled" in m["subject"] for m in local_messages(pay_client.app, "email")
               if m["to"] == customer["email"])


async def test_a_payment_landing_after_expiry_is_refunded_in_full(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    _, auth, order = await customer_with_order(pay_client, token_for, price=PRICE)
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    created = await resp.json()
    db = db_of(pay_client.app)
    long_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    await db.orders.update_one({"_id": order["id"]}, {"$set": {"created_at": long_ago}})
    assert await flow(pay_client.app).expire_unpaid() == 1
    # The customer completes the payment page they left open.
    await simulator(pay_client.app).complete(created["provider_payment_id"], "succeeded")
    assert await simulator(pay_client.app).deliver_due() >= 1
    after = await stored_order(pay_client, order["id"])
    assert after["status"] == "refunded" and after["amount_paid"] == DEPOSIT and after["amount_refunded"] == DEPOSIT



async def test_the_sweep_finishes_what_a_crash_left_half_done(
    pay_client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    """A process died (1) after marking a payment captured but before updating its order, and (2)
    after reserving a refund but before asking the provider. The sweep completes both, once."""
    _, auth, order = await customer_with_order(pay_client, token_for, payment_option="full", price=PRICE)
    resp = await pay_client.post("/api/payments/simulated/create-payment", json={"order_id": order["id"]},
                                 headers=auth)
    created = await resp.json()
    await simulator(pay_client.app).complete(created["provider_payment_id"], "succeeded")
    await db_of(pay_client.app).simulator_webhooks.delete_many({})  # its webhook never arrives
    payments = flow(pay_client.app)
    await payments.transition(created["payment_id"], "succeeded", by_role="customer")  # ... and then the crash
    assert (await stored_order(pay_client, order["id"]))["status"] == "pending_payment"

    await payments.sweep()
    after = await stored_order(pay_client, order["id"])
    assert after["status"] == "placed" and after["amount_paid"] == PRICE and after["payment_status"] == "paid"

    db = db_of(pay_client.app)
    payment = await db.payments.find_one({"_id": created["payment_id"]})
    assert payment is not None
    reserved = {"id": "rf_crashed", "idempotency_key": "admin:crashed-1", "amount": 250_000, "status": "pending",
                "provider_refund_id": None, "reason": "crash test", "by_role": "admin", "by": "a1", "at": iso()}
    await db.payments.update_one({"_id": payment["_id"]}, {"$set": {"refunds": [reserved],
                                                                     "version": payment["version"] + 1}})
    await payments.sweep()
    await payments.sweep()
    payment = await db.payments.find_one({"_id": created["payment_id"]})
    assert payment is not None
    assert [(r["id"], r["status"]) for r in payment["refunds"]] == [("rf_crashed", "succeeded")]
    assert payment["status"] == "partially_refunded" and payment["amount_refunded"] == 250_000
    sim_payment = await db.simulator_payments.find_one({"_id": created["provider_payment_id"]})
    assert sim_payment is not None and [r["amount"] for r in sim_payment["refunds"]] == [250_000]
    assert (await stored_order(pay_client, order["id"]))["amount_refunded"] == 250_000
