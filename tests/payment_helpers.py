"""Shared steps of the payment tests: an app on a known port (so the simulator's webhooks reach it),
a customer with an order, and reading an order's money."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from api.catalog import CATALOG
from api.paymentflow import PROVIDERS, PaymentFlow
from core import keys
from core.settings import Settings
from gateway_clients.simulated_payments import SimulatedPayments
from partypilot import localservices
from partypilot.app import create_app
from tests.helpers import BENGALURU, bearer, db_of, future_date, make_package, make_user


async def payments_client(aiohttp_client: Any, make_settings: Callable[..., Settings],
                          **overrides: Any) -> TestClient[Any, Any]:
    """The whole app, listening where its own simulator sends webhooks."""
    port = localservices.free_port()
    settings = make_settings(port=port, payments_simulator_webhook_url=
                             f"http://127.0.0.1:{port}/api/payments/webhooks/simulated", **overrides)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings), server_kwargs={"port": port})
    return client


def flow(app: web.Application) -> PaymentFlow:
    return PaymentFlow(app[keys.DB], app[keys.REDIS], app[keys.SETTINGS], app[PROVIDERS])


def simulator(app: web.Application) -> SimulatedPayments:
    provider = app[PROVIDERS]["simulated"]
    assert isinstance(provider, SimulatedPayments)
    return provider


def order_body(package_id: str, payment_option: str = "deposit") -> dict[str, Any]:
    return {"package_id": package_id, "event_date": future_date(), "guests": 20, "notes": "",
            "address": {"line1": "12 Church Street", "city": "Bengaluru", "postal_code": "560001", **BENGALURU},
            "payment_option": payment_option}


async def customer_with_order(client: TestClient[Any, Any], token_for: Callable[..., str], *,
                              payment_option: str = "deposit", price: int = 2_000_000,
                              ) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A customer (with an email for receipts) who placed an order through the API."""
    db = db_of(client.app)
    package_id = await make_package(db, price=price)
    client.app[CATALOG].mark_stale(reload=True)  # as the admin API does after a package write
    user_id = await make_user(db)
    auth = bearer(token_for(user_id, "customer"))
    resp = await client.post("/api/orders", json=order_body(package_id, payment_option),
                             headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
    assert resp.status == 201, await resp.text()
    return user_id, auth, await resp.json()


async def stored_order(client: TestClient[Any, Any], order_id: str) -> dict[str, Any]:
    order = await db_of(client.app).orders.find_one({"_id": order_id})
    assert order is not None
    return order
