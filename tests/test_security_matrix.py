"""Who may call what: every /api route times eight callers, called for real against one app.

The routes come from the app's own router; RULES below says, per (method, path), what each caller
gets. A route added without a rule fails `test_every_route_has_a_rule`, and a rule that no longer
matches what the route does fails its row. Resources belong to "customer" and "partner" (the
approved one), so "other_customer" and "other_partner" exercise ownership.

Outcomes: "ok" a 2xx; "pass" past access control into the handler's own rules (no 401/403/404,
no 5xx); "401", "403", "404", "409", "400" exactly that status in the error envelope.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import api
from api import accounts, sessions
from core.settings import Settings
from core.tokens import Role, issue_access_token, issue_tracking_token
from partypilot import localservices
from partypilot.app import create_app
from tests.conftest import TEST_SECRET, _uris
from tests.helpers import BENGALURU, bearer, db_of, future_date, make_order, make_package, make_partner, make_user
from tests.helpers import offer_to as offer_order_to

CALLERS = ("anonymous", "customer", "other_customer", "pending_partner", "partner", "other_partner",
           "suspended_partner", "admin")
PASSWORD = "matrix correct horse 42"
NEW_PASSWORD = "another staple battery 7"

# One row per route: the outcome for each caller, in CALLERS order
#                 anon  cust  other pend  partn other susp  admin
PUBLIC = "ok ok ok ok ok ok ok ok"
SIGNED_IN = "401 ok ok ok ok ok ok ok"
CUSTOMER_ONLY = "401 ok ok 403 403 403 403 403"
CUSTOMER_OWNS = "401 ok 404 403 403 403 403 403"
PARTNER_ONLY = "401 403 403 403 ok ok 403 403"
ADMIN_ONLY = "401 403 403 403 403 403 403 ok"

RULES: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    # Admins, or a scraper on loopback; the matrix calls as if relayed by a proxy (see _prepare).
    ("GET", "/metrics"): "403 403 403 403 403 403 403 ok",
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    # --- signing in: public; the credential is in the body (or the bearer, for logout) ---
    ("POST", "/auth/send-otp"): PUBLIC,
    ("POST", "/auth/verify-otp"): "400 400 400 400 400 400 400 400",  # a wrong code, whoever asks
    ("POST", "/auth/refresh"): SIGNED_IN,  # each caller sends its own session's refresh token
    ("POST", "/auth/logout"): SIGNED_IN,
    ("POST", "/auth/login"): "401 ok ok ok ok ok ok ok",  # anonymous: a wrong password
    # Applying as a partner: signed-in customers and partners (not yet approved ones too); never admins.
    ("POST", "/auth/partner/register"): "401 ok ok ok ok ok ok 403",
    # --- my account: everyone signed in, suspended and pending partners included ---
    ("GET", "/users/profile"): SIGNED_IN,
    ("POST", "/users/verify/send"): SIGNED_IN,
    ("PUT", "/users/profile"): SIGNED_IN,
    ("PUT", "/users/password"): SIGNED_IN,
    ("DELETE", "/users/account"): "401 ok ok ok ok ok ok 403",  # an admin account is not self-service
    # --- customer side ---
    ("GET", "/users/orders"): CUSTOMER_ONLY,
    ("GET", "/users/stats"): CUSTOMER_ONLY,
    ("GET", "/users/favorites"): CUSTOMER_ONLY,
    ("POST", "/users/favorites/{package_id}"): CUSTOMER_ONLY,
    ("DELETE", "/users/favorites/{package_id}"): CUSTOMER_ONLY,
    ("GET", "/packages"): PUBLIC,
    ("GET", "/packages/categories"): PUBLIC,
    ("GET", "/packages/{id}"): PUBLIC,
    ("GET", "/packages/{id}/reviews"): PUBLIC,
    ("POST", "/orders"): CUSTOMER_ONLY,
    ("GET", "/orders/arrival-slots"): PUBLIC,
    ("GET", "/places/search"): PUBLIC,  # picking a venue; limited per client address
    ("GET", "/places/reverse"): PUBLIC,
    ("GET", "/service-areas"): PUBLIC,
    ("GET", "/orders/myorders"): CUSTOMER_ONLY,
    # Someone else's order is indistinguishable from a missing one (404), for customers and partners.
    ("GET", "/orders/{id}"): "401 ok 404 403 ok 404 403 ok",
    ("POST", "/orders/{id}/tracking-link"): CUSTOMER_OWNS,
    ("GET", "/track"): PUBLIC,  # the link's token is the credential
    ("POST", "/orders/{id}/cancel"): "401 ok 404 403 403 403 403 ok",
    ("POST", "/orders/{id}/review"): CUSTOMER_OWNS,
    # --- payments; the test app runs only the simulator: Stripe and Razorpay answer 404 to all ---
    ("GET", "/payments/config"): PUBLIC,
    ("POST", "/payments/stripe/create-intent"): "401 404 404 403 403 403 403 403",
    ("POST", "/payments/stripe/confirm"): "401 404 404 403 403 403 403 403",
    ("POST", "/payments/razorpay/create-order"): "401 404 404 403 403 403 403 403",
    ("POST", "/payments/razorpay/verify"): "401 404 404 403 403 403 403 403",
    ("POST", "/payments/simulated/create-payment"): CUSTOMER_OWNS,
    ("POST", "/payments/simulated/checkout"): CUSTOMER_OWNS,
    # Webhooks: the signature is the credential; a bearer token changes nothing.
    ("POST", "/payments/webhooks/stripe"): "404 404 404 404 404 404 404 404",
    ("POST", "/payments/webhooks/razorpay"): "404 404 404 404 404 404 404 404",
    ("POST", "/payments/webhooks/simulated"): "400 400 400 400 400 400 400 400",
    ("GET", "/payments/history"): CUSTOMER_ONLY,
    ("GET", "/admin/payments"): ADMIN_ONLY,
    ("POST", "/admin/payments/{id}/refund"): "401 403 403 403 403 403 403 pass",  # not captured: 409
    # --- partner side: approved partners only; the offer and the job belong to "partner" ---
    ("GET", "/partner/orders/my"): PARTNER_ONLY,
    ("GET", "/partner/orders/new"): PARTNER_ONLY,
    ("PUT", "/partner/orders/{id}/accept"): "401 403 403 403 ok 409 403 403",  # not offered to you
    ("PUT", "/partner/orders/{id}/decline"): "401 403 403 403 ok 409 403 403",
    ("PUT", "/partner/orders/{id}/status"): "401 403 403 403 ok 404 403 403",  # not assigned to you
    ("GET", "/partner/orders/{id}/arrival"): "401 403 403 403 ok 404 403 403",  # not assigned to you
    ("PUT", "/partner/location"): PARTNER_ONLY,
    ("GET", "/partner/earnings"): PARTNER_ONLY,
    # --- admin ---
    ("GET", "/admin/packages"): ADMIN_ONLY,
    ("POST", "/admin/packages"): ADMIN_ONLY,
    ("PUT", "/admin/packages/{id}"): ADMIN_ONLY,
    ("DELETE", "/admin/packages/{id}"): ADMIN_ONLY,
    ("GET", "/admin/partners"): ADMIN_ONLY,
    ("PUT", "/admin/partners/{id}/approve"): ADMIN_ONLY,
    ("PUT", "/admin/partners/{id}/reject"): ADMIN_ONLY,
    ("PUT", "/admin/partners/{id}/suspend"): ADMIN_ONLY,
    ("GET", "/admin/partners/dark"): ADMIN_ONLY,
    ("GET", "/admin/orders"): ADMIN_ONLY,
    ("GET", "/admin/orders/unassigned"): ADMIN_ONLY,
    ("GET", "/admin/orders/attention"): ADMIN_ONLY,
    ("GET", "/admin/orders/{id}/audit"): ADMIN_ONLY,
    ("GET", "/admin/orders/{id}/candidates"): ADMIN_ONLY,
    ("GET", "/admin/orders/{id}/contacts"): ADMIN_ONLY,
    ("PUT", "/admin/orders/{id}/assign"): ADMIN_ONLY,
    ("GET", "/admin/stats"): ADMIN_ONLY,
    ("GET", "/admin/stats/series"): ADMIN_ONLY,
    ("GET", "/admin/customers"): ADMIN_ONLY,
}

# Error codes that must accompany a refusal: who was refused, and why.
PARTNER_STANDING = {"pending_partner": "partner_not_approved", "suspended_partner": "partner_suspended"}


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of everything the /api sub-application answers, from its router."""
    sub = next(r.get_info()["app"] for r in app.router.resources() if r.get_info().get("prefix") == "/api")
    found = set()
    for route in sub.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        found.add((route.method, str(info.get("path") or info.get("formatter")).removeprefix("/api")))
    return found


@dataclass
class World:
    """The callers and what they own, on one app; `fresh` makes a throwaway of a caller's kind."""

    client: TestClient[Any, Any]
    settings: Settings
    ids: dict[str, str] = field(default_factory=dict)
    package: str = ""

    @property
    def db(self) -> Any:
        return db_of(self.client.app)

    async def identity(self, caller: str) -> str:
        """A new account of the caller's kind (with PASSWORD); anonymous has none."""
        hashed = _password_hash()
        if caller in ("customer", "other_customer"):
            return await make_user(self.db, password_hash=hashed)
        if caller == "admin":
            return await make_user(self.db, "admin", password_hash=hashed)
        status = {"pending_partner": "pending", "suspended_partner": "suspended"}.get(caller, "approved")
        partner_id = await make_partner(self.db, status)
        await self.db.users.update_one({"_id": partner_id}, {"$set": {"password_hash": hashed}})
        return partner_id

    @staticmethod
    def role(caller: str) -> Role:
        return "customer" if caller.endswith("customer") else "admin" if caller == "admin" else "partner"

    def headers(self, caller: str, user_id: str | None = None) -> dict[str, str]:
        """A bearer token of a session of its own: a logout in one call ends nothing else."""
        if caller == "anonymous":
            return {}
        token = issue_access_token(self.settings, user_id or self.ids[caller], self.role(caller), uuid.uuid4().hex)
        return bearer(token)


_HASH: dict[str, str] = {}


def _password_hash() -> str:
    # scrypt is slow on purpose: hash the one test password once.
    if "h" not in _HASH:
        _HASH["h"] = accounts.hash_password_sync(PASSWORD)
    return _HASH["h"]


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    caller_id: str | None = None  # act as this account (a throwaway) instead of the shared caller


Prepare = Callable[[World, str], Awaitable[Call]]


async def _owned_order(w: World, **fields: Any) -> str:
    return await make_order(w.db, w.ids["customer"], w.package, **fields)


def _order_body(w: World) -> dict[str, Any]:
    return {"package_id": w.package, "event_date": future_date(), "guests": 10, "payment_option": "cash",
            "address": {"line1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001", **BENGALURU}}


def _unpaid(**extra: Any) -> dict[str, Any]:
    return {"status": "pending_payment", "payment_option": "full", "payment_status": "unpaid",
            "amount_due": 1_500_000, "amount_paid": 0, "amount_refunded": 0, **extra}


async def _prepare(w: World, caller: str, method: str, path: str) -> Call:
    """The request that exercises (method, path) for `caller`, with fresh resources where the call changes them."""
    match (method, path):
        case ("GET", "/metrics"):
            # The test client is on loopback, which may scrape freely: look like a relayed caller.
            return Call(method, path, headers={"X-Forwarded-For": "203.0.113.7"})
        case ("POST", "/auth/send-otp"):
            return Call(method, path, {"email": f"{uuid.uuid4().hex[:12]}@example.test"})
        case ("POST", "/auth/verify-otp"):
            return Call(method, path, {"email": f"{uuid.uuid4().hex[:12]}@example.test", "code": "000000"})
        case ("POST", "/auth/refresh"):
            if caller == "anonymous":
                return Call(method, path, {})
            user = await w.db.users.find_one({"_id": w.ids[caller]})
            grant = await sessions.start(w.db, w.settings, user)
            return Call(method, path, {"refresh_token": grant.refresh_token})
        case ("POST", "/auth/logout"):
            return Call(method, path, {})
        case ("POST", "/auth/login"):
            if caller == "anonymous":
                return Call(method, path, {"email": "nobody@example.test", "password": PASSWORD})
            user = await w.db.users.find_one({"_id": w.ids[caller]}, {"email": 1})
            return Call(method, path, {"email": user["email"], "password": PASSWORD})
        case ("POST", "/auth/partner/register"):
            return Call(method, path, {"company_name": "Matrix Events", "contact_name": "Mat Rix",
                                       "vehicle_type": "van"}, caller_id=await w.identity(caller))
        case ("POST", "/users/verify/send"):
            return Call(method, path, {"action": "password"})
        case ("PUT", "/users/profile"):
            return Call(method, path, {"name": "Renamed By Matrix"})
        case ("PUT", "/users/password"):
            return Call(method, path, {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                        caller_id=await w.identity(caller))
        case ("DELETE", "/users/account"):
            return Call(method, path, {"current_password": PASSWORD}, caller_id=await w.identity(caller))
        case ("POST" | "DELETE", "/users/favorites/{package_id}"):
            return Call(method, f"/users/favorites/{w.package}")
        case ("GET", "/packages/{id}"):
            return Call(method, f"/packages/{w.package}")
        case ("GET", "/packages/{id}/reviews"):
            return Call(method, f"/packages/{w.package}/reviews")
        case ("POST", "/orders"):
            return Call(method, path, _order_body(w), {"Idempotency-Key": uuid.uuid4().hex})
        case ("GET", "/orders/arrival-slots"):
            return Call(method, f"{path}?event_date={future_date()}")
        case ("GET", "/admin/stats/series"):
            return Call(method, f"{path}?from=2026-12-01&to=2026-12-03")
        case ("GET", "/places/search"):
            return Call(method, f"{path}?q=koramangala")
        case ("GET", "/places/reverse"):
            return Call(method, f"{path}?lat={BENGALURU['lat']}&lng={BENGALURU['lng']}")
        case ("GET", "/orders/{id}"):
            return Call(method, f"/orders/{w.ids['assigned_order']}")
        case ("POST", "/orders/{id}/tracking-link"):
            return Call(method, f"/orders/{w.ids['assigned_order']}/tracking-link")
        case ("GET", "/track"):
            token, _ = issue_tracking_token(w.settings, w.ids["assigned_order"])
            return Call(method, f"{path}?t={token}")
        case ("POST", "/orders/{id}/cancel"):
            return Call(method, f"/orders/{await _owned_order(w)}/cancel", {"reason": "matrix"})
        case ("POST", "/orders/{id}/review"):
            order = await _owned_order(w, status="completed", partner_id=w.ids["partner"])
            return Call(method, f"/orders/{order}/review", {"rating": 5, "text": "great"})
        case ("POST", "/payments/stripe/create-intent" | "/payments/razorpay/create-order"):
            return Call(method, path, {"order_id": await _owned_order(w, **_unpaid())})
        case ("POST", "/payments/stripe/confirm"):
            return Call(method, path, {"order_id": await _owned_order(w, **_unpaid()), "payment_intent_id": "pi_1"})
        case ("POST", "/payments/razorpay/verify"):
            return Call(method, path, {"order_id": await _owned_order(w, **_unpaid()), "razorpay_order_id": "order_1",
                                       "razorpay_payment_id": "pay_1", "razorpay_signature": "0" * 64})
        case ("POST", "/payments/simulated/create-payment"):
            return Call(method, path, {"order_id": await _owned_order(w, **_unpaid())})
        case ("POST", "/payments/simulated/checkout"):
            return Call(method, path, {"order_id": await _owned_order(w, **_unpaid()), "outcome": "succeeded"})
        case ("POST", "/payments/webhooks/stripe" | "/payments/webhooks/razorpay" | "/payments/webhooks/simulated"):
            return Call(method, path, {"id": "evt_1", "type": "payment_intent.succeeded"})
        case ("POST", "/admin/payments/{id}/refund"):
            payment = uuid.uuid4().hex
            await w.db.payments.insert_one({
                "_id": payment, "order_id": w.ids["assigned_order"], "customer_id": w.ids["customer"],
                "provider": "simulated", "kind": "full", "status": "created", "amount": 1_500_000, "currency": "INR",
                "amount_refunded": 0, "provider_payment_id": f"sim_pi_{payment}", "charge_id": None, "refunds": [],
                "history": [], "version": 1, "applied": 1, "created_at": "2026-01-01T00:00:00Z"})
            return Call(method, f"/admin/payments/{payment}/refund", {"reason": "matrix"},
                        {"Idempotency-Key": uuid.uuid4().hex})
        case ("PUT", "/partner/orders/{id}/accept" | "/partner/orders/{id}/decline"):
            order = await _owned_order(w)
            await offer_order_to(w.db, order, [w.ids["partner"]])
            return Call(method, path.replace("{id}", order))
        case ("PUT", "/partner/orders/{id}/status"):
            order = await _owned_order(w, status="assigned", partner_id=w.ids["partner"])
            return Call(method, f"/partner/orders/{order}/status", {"status": "en_route"})
        case ("GET", "/partner/orders/{id}/arrival"):
            order = await _owned_order(w, status="en_route", partner_id=w.ids["partner"])
            return Call(method, path.replace("{id}", order))
        case ("PUT", "/partner/location"):
            return Call(method, path, {**BENGALURU, "accuracy": 10})
        case ("POST", "/admin/packages"):
            return Call(method, path, {"name": "Matrix Package", "category": "Kids", "price": 100_000,
                                       "capacity": 20, "duration_min": 60})
        case ("PUT" | "DELETE", "/admin/packages/{id}"):
            target = await make_package(w.db)
            return Call(method, f"/admin/packages/{target}", {"price": 120_000} if method == "PUT" else None)
        case ("PUT", "/admin/partners/{id}/approve" | "/admin/partners/{id}/reject"):
            return Call(method, path.replace("{id}", await make_partner(w.db, "pending")))
        case ("PUT", "/admin/partners/{id}/suspend"):
            return Call(method, path.replace("{id}", await make_partner(w.db, "approved")))
        case ("GET", "/admin/orders/{id}/audit" | "/admin/orders/{id}/candidates"
                     | "/admin/orders/{id}/contacts"):
            return Call(method, path.replace("{id}", w.ids["assigned_order"]))
        case ("PUT", "/admin/orders/{id}/assign"):
            return Call(method, f"/admin/orders/{await _owned_order(w)}/assign",
                        {"partner_id": await make_partner(w.db, "approved")})
    assert "{" not in path, f"no preparation for {method} {path}: add one to _prepare"
    return Call(method, path)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(services: localservices.LocalServices, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    """One app for the whole matrix, with generous limits: this file tests access, not rate limits."""
    mongo_uri, redis_url = _uris(services)
    settings = Settings.model_validate({
        "env": "test", "mongodb_uri": mongo_uri, "redis_url": redis_url, "mongodb_db": f"t_{uuid.uuid4().hex[:12]}",
        "jwt_secret": TEST_SECRET, "data_dir": Path(tmp_path_factory.mktemp("matrix")) / "data",
        "log_level": "WARNING", "otp_per_ip_per_hour": 10_000, "otp_per_destination_per_hour": 10_000})
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        w = World(client, settings)
        for caller in CALLERS[1:]:
            w.ids[caller] = await w.identity(caller)
        w.package = await make_package(w.db)
        w.ids["assigned_order"] = await _owned_order(w, status="assigned", partner_id=w.ids["partner"])
        yield w
    finally:
        await client.close()


def test_every_route_has_a_rule(settings: Settings) -> None:
    """A route added without a row here fails: decide who may call it before it ships."""
    served = served_routes(create_app(settings))
    assert len(served) > 50
    assert served - RULES.keys() == set(), "routes without a rule in RULES"
    assert RULES.keys() - served == set(), "rules for routes that no longer exist"
    for row in RULES.values():
        assert len(row.split()) == len(CALLERS), row


def test_rules_agree_with_each_routes_declaration() -> None:
    """A route that declares roles refuses anonymous callers with 401, and admits a declared role
    (apart from partner standing); a public route never answers 401 for lack of a token."""
    for route in api.all_routes():
        row = dict(zip(CALLERS, RULES[(route.method, route.path)].split(), strict=True))
        if route.roles is None:
            continue
        assert row["anonymous"] == "401", (route.method, route.path)
        for caller in CALLERS[1:]:
            role = World.role(caller)
            refused = role not in route.roles or (caller in PARTNER_STANDING and route.approved_partner)
            if refused:
                assert row[caller] == "403", (route.method, route.path, caller)
            else:
                assert row[caller] != "403", (route.method, route.path, caller)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("method", "path"), sorted(RULES), ids=lambda v: str(v))
async def test_route_answers_each_caller_as_its_rule_says(world: World, method: str, path: str) -> None:
    expected = dict(zip(CALLERS, RULES[(method, path)].split(), strict=True))
    declared = {(r.method, r.path): r for r in api.all_routes()}.get((method, path))
    wrong = []
    for caller in CALLERS:
        call = await _prepare(world, caller, method, path)
        headers = {**world.headers(caller, call.caller_id), **call.headers}
        resp = await world.client.request(call.method, "/api" + call.path, json=call.json, headers=headers)
        status, want = resp.status, expected[caller]
        body = await resp.json() if resp.content_type == "application/json" else None
        code = (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None
        if want == "ok":
            good = 200 <= status < 300
        elif want == "pass":
            good = status not in (401, 403, 404) and status < 500
        else:
            good = status == int(want) and code is not None
        # A refusal by the route's guard says who was refused and why.
        if good and declared is not None and declared.roles is not None and want in ("401", "403"):
            if want == "401":
                good = code == "unauthorized"
            elif caller in PARTNER_STANDING and declared.approved_partner and "partner" in declared.roles:
                good = code == PARTNER_STANDING[caller]
            else:
                good = code == "forbidden"
        if not good:
            wrong.append(f"{caller}: expected {want}, got {status} {code or ''}")
    assert not wrong, f"{method} {path}\n" + "\n".join(wrong)
