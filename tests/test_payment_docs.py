"""docs/payments.md is the payments contract: it names every endpoint, setting, state and webhook
event type the code uses, so the page cannot drift from the code."""

from __future__ import annotations

import typing
from pathlib import Path

import api
from api import paymentflow
from core.contracts import PaymentEvent
from core.settings import Settings, env_name
from gateway_clients import razorpay_payments, simulated_payments, stripe_payments

DOC = (Path(__file__).resolve().parent.parent / "docs" / "payments.md").read_text(encoding="utf-8")


def test_every_payment_endpoint_is_documented() -> None:
    routes = [r for r in api.all_routes() if "payments" in r.path]
    assert len(routes) >= 13
    for route in routes:
        assert f"{route.method} /api{route.path}" in DOC, f"{route.method} {route.path} is not in docs/payments.md"


def test_every_payment_setting_is_documented() -> None:
    fields = [f for f in Settings.model_fields if f.startswith(("payment", "stripe", "razorpay", "refund", "webhook",
                                                                 "deposit"))]
    assert len(fields) >= 15
    for field in fields:
        assert f"`{env_name(field)}" in DOC or f"{env_name(field)}`" in DOC, f"{env_name(field)} is not documented"


def test_every_state_and_simulator_event_is_documented() -> None:
    for status in paymentflow.TRANSITIONS:
        assert f"`{status}`" in DOC, status
    for status in typing.get_args(paymentflow.OrderPaymentStatus):
        assert f"| `{status}` |" in DOC, status
    assert set(typing.get_args(PaymentEvent.model_fields["payment_status"].annotation)) == set(
        typing.get_args(paymentflow.OrderPaymentStatus))
    acted_on = [*simulated_payments.EVENT_KINDS, *stripe_payments.PAYMENT_EVENTS, *stripe_payments.REFUND_EVENTS,
                *razorpay_payments.EVENT_KINDS]
    for event_type in acted_on:
        assert f"`{event_type}`" in DOC, event_type
    for header in (simulated_payments.SIGNATURE_HEADER, simulated_payments.EVENT_ID_HEADER):
        assert f"`{header}`" in DOC, header
