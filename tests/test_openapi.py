"""The OpenAPI document lists every registered route with a typed answer, real answers match it, the
docs page answers, and every declared role guard holds."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from redis.asyncio import Redis

import api
from api.auth import REFRESH_COOKIE
from api.openapi import build_openapi
from api.routing import Route, RouteTable
from core.jsonutil import now_ms
from core.settings import Settings
from tests.helpers import BENGALURU, bearer, db_of, future_date, make_order, make_partner, make_user, offer_to
from tests.payment_helpers import order_body, payments_client

# Served by the docs machinery itself rather than declared in a RouteTable.
_SELF_DESCRIBING = {"/openapi.json", "/docs"}


def _registered(sub_app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in sub_app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path in _SELF_DESCRIBING or route.method == "HEAD":
            continue
        found.add((route.method.lower(), "/api" + str(path)))
    return found


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


def test_the_check_notices_a_route_added_outside_the_route_tables(settings: Any) -> None:
    async def undeclared(request: web.Request) -> web.Response:
        return web.Response()

    sub_app = api.create_api(settings)
    sub_app.router.add_route("GET", "/undeclared/{id}", undeclared)
    doc = build_openapi(api.all_routes(), "test")
    assert _registered(sub_app) - _documented(doc) == {("get", "/api/undeclared/{id}")}


async def test_every_registered_route_is_in_the_openapi_document(
    client: TestClient[Any, Any], settings: Any
) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    documented = _documented(doc)
    registered = _registered(api.create_api(settings))
    assert registered, "no routes found: the test would pass vacuously"
    assert registered - documented == set()
    for must in (("get", "/api/packages"), ("post", "/api/orders"), ("put", "/api/partner/orders/{id}/accept"),
                 ("get", "/api/admin/orders"), ("post", "/api/orders/{id}/review")):
        assert must in registered


async def test_documented_bodies_reject_client_prices(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    create = doc["paths"]["/api/orders"]["post"]
    schema_name = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = doc["components"]["schemas"][schema_name]
    assert "price" not in schema["properties"] and schema.get("additionalProperties") is False
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


async def test_docs_page_is_html(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "/api/openapi.json" in await resp.text()


async def test_docs_page_loads_only_committed_files_and_no_inline_script(client: TestClient[Any, Any]) -> None:
    """Swagger UI is vendored (scripts/vendor.sh) and committed like Leaflet: a fresh clone serves it offline,
    and the page runs under script-src 'self'."""
    html = await (await client.get("/api/docs")).text()
    assert re.findall(r"<script>", html) == []
    root = Path(__file__).resolve().parents[1] / "frontend"
    assets = re.findall(r'(?:src|href)="(/(?:vendor|js)/[^"]+)"', html)
    swagger = {"/vendor/swagger-ui/swagger-ui-bundle.js", "/vendor/swagger-ui/swagger-ui.css", "/js/apidocs.js"}
    assert swagger <= set(assets)
    for asset in assets:
        assert (root / asset.lstrip("/")).is_file(), asset
        resp = await client.get(asset)
        assert resp.status == 200, asset
    assert "swagger-ui-dist " in (root / "vendor" / "VERSIONS").read_text()


def test_the_document_is_valid_openapi_3_1(settings: Any) -> None:
    validate(build_openapi(api.all_routes(), "test"))


def test_every_operation_has_a_success_schema_and_the_error_envelope_per_status() -> None:
    doc = build_openapi(api.all_routes(), "test")
    # Statuses declared with a body of their own (the health report's 503) rather than the envelope.
    own_body = {(r.method.lower(), "/api" + r.path, str(status)) for r in api.all_routes()
                for status, answer in r.extra_responses.items() if isinstance(answer, tuple)}
    assert own_body, "no route declares a body of its own for an error status: the exception below is stale"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                content = answer.get("content", {})
                if int(status) < 400 and "application/json" not in content:
                    # A route declared with another media type (the text/plain metrics): its schema is there.
                    assert content and all(media.get("schema") for media in content.values()), (method, path)
                    continue
                assert "application/json" in content and content["application/json"].get("schema"), (method, path)
                if int(status) >= 400 and (method, path, status) not in own_body:
                    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                    assert set(content["application/json"]["example"]["error"]) == {"code", "message", "details"}
            assert any(int(status) < 400 for status in op["responses"]), (method, path)
            if op.get("security"):
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["components"]["securitySchemes"]["refreshCookie"]["name"] == REFRESH_COOKIE


def test_query_and_path_parameters_are_typed_from_their_models() -> None:
    doc = build_openapi(api.all_routes(), "test")
    params = {p["name"]: p for p in doc["paths"]["/api/admin/orders"]["get"]["parameters"]}
    assert params["page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["default"] == 20
    assert "cancelled" in params["status"]["schema"]["enum"] and not params["status"]["required"]
    assert params["from"]["schema"] == {"type": "string", "format": "date"}
    assert params["format"]["schema"] == {"type": "string", "enum": ["json", "csv"], "default": "json"}
    assert params["status"]["allowEmptyValue"] is True  # a form's blank "any" is the filter left off
    slots = {p["name"]: p for p in doc["paths"]["/api/orders/arrival-slots"]["get"]["parameters"]}
    assert not slots["event_date"]["required"] and slots["lat"]["schema"]["maximum"] == 90
    assert slots["event_date"]["schema"]["format"] == "date"
    order = doc["paths"]["/api/orders/{id}"]["get"]["parameters"][0]
    assert order["in"] == "path" and order["required"] and order["schema"]["type"] == "string"
    listed = doc["paths"]["/api/packages"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/PackagePage"}
    page = doc["components"]["schemas"]["PackagePage"]
    assert page["properties"]["items"]["items"] == {"$ref": "#/components/schemas/PackageView"}
    assert page["properties"]["limit"]["maximum"] == 100
    assert set(page["required"]) == {"items", "total", "page", "limit"}


def _success_schemas(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                json_body = answer.get("content", {}).get("application/json")
                if int(status) < 400 and json_body is not None:
                    found[(method, path)] = json_body["schema"]
    return found


def test_every_json_answer_is_a_named_model_with_its_fields() -> None:
    """No operation answers a bare `{"type": "object"}`: each success body is a component with
    properties, so a generated client gets a typed result."""
    doc = build_openapi(api.all_routes(), "test")
    schemas = doc["components"]["schemas"]
    answers = _success_schemas(doc)
    assert len(answers) >= 60
    for (method, path), schema in answers.items():
        assert set(schema) == {"$ref"}, (method, path, schema)
        component = schemas[schema["$ref"].rsplit("/", 1)[1]]
        assert component.get("type") == "object" and component.get("properties"), (method, path)
    typed = {(r.method, r.path) for r in api.all_routes() if r.response is not None}
    untyped = {(r.method, r.path) for r in api.all_routes() if r.response is None}
    assert all(r.media_type != "application/json" for r in api.all_routes() if (r.method, r.path) in untyped)
    print(f"\n{len(typed)} of {len(typed) + len(untyped)} routes declare a response model; the rest answer "
          f"{sorted({r.media_type for r in api.all_routes() if r.response is None})}")


def test_a_json_route_without_a_response_model_cannot_be_declared() -> None:
    table = RouteTable("test")
    with pytest.raises(TypeError, match="declare response="):
        table.get("/untyped", summary="an answer clients could not type")
    table.get("/text", summary="not JSON", media_type="text/plain")  # another media type documents a string

    async def untyped(request: web.Request) -> web.Response:
        return web.json_response({})

    # A Route built by hand, past the table's check, is refused by the document builder too.
    with pytest.raises(ValueError, match="no response model"):
        build_openapi([Route("GET", "/untyped", untyped, "untyped", "test")], "test")


def test_every_example_matches_its_schema() -> None:
    """Examples are what Swagger UI shows and what people copy: each must be a valid answer."""
    doc = build_openapi(api.all_routes(), "test")
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", ()):
            _assert_conforms(doc, {"$ref": f"#/components/schemas/{name}"}, example, name)
            checked += 1
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                for media in answer.get("content", {}).values():
                    if "example" in media:
                        _assert_conforms(doc, media["schema"], media["example"], (method, path, status))
                        checked += 1
    assert checked >= 100


def _assert_conforms(doc: dict[str, Any], schema: dict[str, Any], body: Any, where: Any) -> None:
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, (where, errors[:5], json.dumps(body)[:2000])


class Conformance:
    """Sends requests and checks each answer against the document: its status is one the operation
    documents, its media type too, and its body matches that status's schema."""

    def __init__(self, client: TestClient[Any, Any], doc: dict[str, Any]) -> None:
        self.client = client
        self.doc = doc
        self.checked: set[tuple[str, str]] = set()
        self._templates = [(re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path) for path in doc["paths"]]

    def operation(self, method: str, url: str) -> tuple[str, dict[str, Any]]:
        path = url.split("?", 1)[0]
        # A literal segment wins over a parameter: /api/orders/myorders, not /api/orders/{id}.
        found = sorted((t for rx, t in self._templates if rx.match(path) and method.lower() in self.doc["paths"][t]),
                       key=lambda t: t.count("{"))
        assert found, f"{method} {url} is not in the document"
        return found[0], self.doc["paths"][found[0]][method.lower()]

    async def call(self, method: str, url: str, status: int, *, auth: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None, **kw: Any) -> Any:
        resp = await self.client.request(method, url, headers={**(auth or {}), **(headers or {})}, **kw)
        text = await resp.text()
        assert resp.status == status, (method, url, resp.status, text[:2000])
        template, op = self.operation(method, url)
        answer = op["responses"].get(str(resp.status))
        assert answer is not None, f"{method} {template} answered {resp.status}, which it does not document"
        assert resp.content_type in answer["content"], (method, template, resp.content_type)
        self.checked.add((method, template))
        if resp.content_type != "application/json":
            return text
        body = json.loads(text)
        _assert_conforms(self.doc, answer["content"]["application/json"]["schema"], body, (method, template, status))
        return body


@pytest.fixture
async def pay_client(aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis) -> TestClient[Any, Any]:
    """The whole app where its payment simulator's webhooks reach it."""
    return await payments_client(aiohttp_client, make_settings)


async def test_real_answers_match_their_documented_schemas(pay_client: TestClient[Any, Any],
                                                           token_for: Callable[..., str]) -> None:
    """One day of the product through the API, each answer (successes and errors) checked against the
    document: beside schemathesis's random inputs, the states only a real flow reaches (a paid order,
    a refund, a walked job, a review, an audit trail)."""
    doc = await (await pay_client.get("/api/openapi.json")).json()
    api_ = Conformance(pay_client, doc)
    db = db_of(pay_client.app)
    customer_id, admin_id = await make_user(db), await make_user(db, "admin")
    walker, offered_to = await make_partner(db), await make_partner(db)
    applicant, refused = await make_partner(db, "pending"), await make_partner(db, "pending")
    customer, admin = bearer(token_for(customer_id, "customer")), bearer(token_for(admin_id, "admin"))
    p_walker, p_offered = bearer(token_for(walker, "partner")), bearer(token_for(offered_to, "partner"))
    call = api_.call

    # Anyone: health, the catalog, payment configuration, arrival slots, sign-in errors.
    await call("GET", "/api/health", 200)
    package = await call("POST", "/api/admin/packages", 201, auth=admin, json={
        "name": "Conformance Party", "category": "Kids", "price": 2_000_000, "capacity": 40, "duration_min": 180,
        "tags": ["test"], "features": ["Balloons"], "images": ["/img/packages/kids.svg"]})
    spare = await call("POST", "/api/admin/packages", 201, auth=admin, json={
        "name": "Spare Party", "category": "Themed", "price": 900_000, "capacity": 10, "duration_min": 60})
    await call("PUT", f"/api/admin/packages/{spare['id']}", 200, auth=admin, json={"price": 950_000})
    await call("DELETE", f"/api/admin/packages/{spare['id']}", 200, auth=admin)
    await call("GET", "/api/admin/packages?active=false", 200, auth=admin)
    await call("GET", "/api/packages?q=conformance&sort=price_desc", 200)
    await call("GET", "/api/packages/categories", 200)
    await call("GET", f"/api/packages/{package['id']}", 200)
    await call("GET", "/api/packages/no-such-package", 404)
    await call("GET", "/api/payments/config", 200)
    await call("GET", f"/api/orders/arrival-slots?event_date={future_date()}&lat={BENGALURU['lat']}"
                      f"&lng={BENGALURU['lng']}", 200)
    await call("GET", "/api/orders/arrival-slots?event_date=2001-01-01", 422)
    await call("POST", "/api/auth/send-otp", 200, json={"email": "conformance@example.com"})
    await call("POST", "/api/auth/login", 401, json={"email": "conformance@example.com", "password": "wrong-one"})
    await call("POST", "/api/auth/refresh", 401, json={})
    await call("POST", "/api/payments/webhooks/simulated", 400, data=b"{}")
    await call("GET", "/api/metrics", 200, auth=admin)

    # The customer: profile, favourites, orders, a paid deposit, a tracking link.
    await call("GET", "/api/users/profile", 200, auth=customer)
    await call("PUT", "/api/users/profile", 200, auth=customer, json={"name": "Asha Conformance"})
    await call("POST", "/api/users/verify/send", 200, auth=customer, json={"action": "password"})
    await call("POST", f"/api/users/favorites/{package['id']}", 201, auth=customer)
    await call("POST", f"/api/users/favorites/{package['id']}", 200, auth=customer)
    await call("GET", "/api/users/favorites", 200, auth=customer)
    await call("DELETE", f"/api/users/favorites/{package['id']}", 200, auth=customer)
    key = {"Idempotency-Key": "conformance-order-1"}
    paid = await call("POST", "/api/orders", 201, auth=customer, headers=key, json=order_body(package["id"]))
    await call("POST", "/api/orders", 200, auth=customer, headers=key, json=order_body(package["id"]))
    bad = {**order_body(package["id"]), "guests": 0}
    await call("POST", "/api/orders", 422, auth=customer, headers={"Idempotency-Key": "conformance-bad"}, json=bad)
    await call("POST", "/api/payments/simulated/create-payment", 200, auth=customer, json={"order_id": paid["id"]})
    payment = await call("POST", "/api/payments/simulated/checkout", 200, auth=customer,
                         json={"order_id": paid["id"], "outcome": "succeeded"})
    await call("POST", "/api/payments/stripe/create-intent", 404, auth=customer, json={"order_id": paid["id"]})
    await call("GET", "/api/payments/history", 200, auth=customer)
    link = await call("POST", f"/api/orders/{paid['id']}/tracking-link", 201, auth=customer)
    await call("GET", f"/api/track?t={link['token']}", 200)
    await call("GET", "/api/track?t=not-a-token", 401)

    # Cash orders for the partners: one assigned by an admin and walked to the end, two offered.
    walked = await call("POST", "/api/orders", 201, auth=customer, headers={"Idempotency-Key": "conformance-order-2"},
                        json=order_body(package["id"], "cash"))
    await call("PUT", f"/api/admin/orders/{walked['id']}/assign", 200, auth=admin, json={"partner_id": walker})
    await call("PUT", "/api/partner/location", 200, auth=p_walker, json={**BENGALURU, "accuracy": 10, "ts": now_ms()})
    await call("GET", f"/api/partner/orders/{walked['id']}/arrival", 200, auth=p_walker)
    for status in ("en_route", "arrived", "setup_complete", "completed"):
        await call("PUT", f"/api/partner/orders/{walked['id']}/status", 200, auth=p_walker, json={"status": status})
    await call("PUT", f"/api/partner/orders/{walked['id']}/status", 409, auth=p_walker, json={"status": "completed"})
    await call("GET", "/api/partner/orders/my", 200, auth=p_walker)
    await call("GET", "/api/partner/earnings?period=week", 200, auth=p_walker)
    await call("GET", f"/api/orders/{walked['id']}", 200, auth=p_walker)
    await call("GET", f"/api/orders/{walked['id']}", 200, auth=customer)
    await call("GET", f"/api/orders/{walked['id']}", 200, auth=admin)
    await call("POST", f"/api/orders/{walked['id']}/review", 201, auth=customer, json={"rating": 5, "text": "Lovely"})
    await call("POST", f"/api/orders/{walked['id']}/review", 409, auth=customer, json={"rating": 4})
    await call("GET", f"/api/admin/orders/{walked['id']}/audit", 200, auth=admin)

    declined = await make_order(db, customer_id, package["id"])
    accepted = await make_order(db, customer_id, package["id"])
    for order_id in (declined, accepted):
        await offer_to(db, order_id, [offered_to], ttl_ms=3_600_000)
    offers = await call("GET", "/api/partner/orders/new", 200, auth=p_offered)
    assert {o["id"] for o in offers["items"]} >= {declined, accepted}
    await call("PUT", f"/api/partner/orders/{declined}/decline", 200, auth=p_offered)
    await call("PUT", f"/api/partner/orders/{accepted}/accept?fence=1", 200, auth=p_offered)
    await call("GET", f"/api/orders/{accepted}", 200, auth=p_offered)
    await call("POST", f"/api/orders/{declined}/cancel", 200, auth=admin, json={"reason": "customer called"})
    cancelled = await call("POST", "/api/orders", 201, auth=customer,
                           headers={"Idempotency-Key": "conformance-order-3"}, json=order_body(package["id"], "cash"))
    await call("POST", f"/api/orders/{cancelled['id']}/cancel", 200, auth=customer, json={})
    await call("GET", "/api/orders/myorders?status=cancelled", 200, auth=customer)
    await call("GET", "/api/users/orders", 200, auth=customer)
    await call("GET", "/api/users/stats", 200, auth=customer)
    await call("GET", f"/api/orders/{accepted}", 404, auth=p_walker)

    # The admin: partners, the order board, statistics, customers, payments and a refund.
    await call("GET", "/api/admin/partners", 200, auth=admin)
    await call("PUT", f"/api/admin/partners/{applicant}/approve", 200, auth=admin)
    await call("PUT", f"/api/admin/partners/{applicant}/suspend", 200, auth=admin)
    await call("PUT", f"/api/admin/partners/{refused}/reject", 200, auth=admin)
    await call("PUT", f"/api/admin/partners/{refused}/suspend", 409, auth=admin)
    await call("GET", "/api/admin/orders?status=completed", 200, auth=admin)
    await call("GET", "/api/admin/orders?format=csv", 200, auth=admin)
    await call("GET", "/api/admin/orders/unassigned", 200, auth=admin)
    await call("GET", "/api/admin/stats", 200, auth=admin)
    await call("GET", "/api/admin/customers?q=Asha", 200, auth=admin)
    await call("GET", "/api/admin/payments", 200, auth=admin)
    await call("POST", f"/api/admin/payments/{payment['payment']['id']}/refund", 200, auth=admin,
               headers={"Idempotency-Key": "conformance-refund-1"}, json={"amount": 100_000, "reason": "late"})
    await call("GET", "/api/admin/payments?status=partially_refunded", 200, auth=admin)
    await call("GET", "/api/users/profile", 401)
    await call("GET", "/api/admin/stats", 403, auth=customer)

    # Providers this deployment does not run, and refusals that end nothing.
    await call("POST", "/api/payments/webhooks/stripe", 404, data=b"{}")
    await call("POST", "/api/payments/razorpay/create-order", 404, auth=customer, json={"order_id": paid["id"]})
    await call("POST", "/api/payments/stripe/confirm", 404, auth=customer,
               json={"order_id": paid["id"], "payment_intent_id": "pi_unknown"})
    await call("DELETE", "/api/users/account", 409, auth=customer, json={})  # an order is still active
    await call("POST", "/api/auth/logout", 200, json={},
               auth=bearer(token_for(customer_id, "customer", session_id="conformance-logout")))

    print(f"\n{len(api_.checked)} operations answered as documented")
    assert len(api_.checked) >= 50


async def test_a_date_parameter_takes_only_the_documented_form(client: TestClient[Any, Any],
                                                              token_for: Callable[..., str]) -> None:
    """`format: date` is YYYY-MM-DD: pydantic alone would read `0` as the Unix epoch's day."""
    admin = bearer(token_for("admin-1", "admin"))
    for url in ("/api/admin/orders?to=0", "/api/admin/orders?from=1700000000", "/api/admin/payments?date_to=0"):
        resp = await client.get(url, headers=admin)
        assert resp.status == 422, url
        assert (await resp.json())["error"]["code"] == "validation_error"
    for url in ("/api/admin/orders?from=2026-01-01&to=2026-12-31", "/api/admin/payments?date_from=2026-01-01"):
        assert (await client.get(url, headers=admin)).status == 200, url


async def test_a_query_parameter_given_twice_is_refused(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/packages?page=&page=2")
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "page"


async def test_every_guarded_route_refuses_anonymous_and_other_roles(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    guarded = [r for r in api.all_routes() if r.roles is not None]
    assert len(guarded) > 30
    for route in guarded:
        path = "/api" + re.sub(r"{\w+}", "x", route.path)
        resp = await client.request(route.method, path, json={})
        assert resp.status == 401, (route.method, path)
        assert (await resp.json())["error"]["code"] == "unauthorized"
        for role in {"customer", "partner", "admin"} - set(route.roles or ()):
            resp = await client.request(route.method, path, json={}, headers=bearer(token_for("u1", role)))
            assert resp.status == 403, (route.method, path, role)


_BAD_BODIES: list[bytes] = [
    b"", b"null", b"[]", b"[{}]", b"\"text\"", b"42", b"{", b"{\"a\": NaN}", b"{\"a\": Infinity}",
    b"{\"$where\": 1}", b"{\"a.b\": 1}",
]
_BAD_VALUES: list[Any] = ["", "\u202e\U0001f389\x00", 10**30, -10**30, 1e308, -1, 0, True, None, [], {}, [{}],
                          "x" * 5000, "2026-02-30", "abc"]
_BAD_QUERIES = ["?page=-1&limit=abc", "?page=0&limit=0", "?page=99999999999999999999&limit=100",
                "?limit=1e9", "?page=1.5", "?status=%24ne", "?q=%28%5B*", "?from=2026-13-45&to=x", "?format=xml",
                "?fence=-1", "?fence=99999999999999999999", "?from=0001-01-01&to=9999-12-31", "?sort=%00",
                "?min_price=1e400"]


def _fuzz_bodies(route: Any) -> list[bytes]:
    """Bad whole bodies, then each documented field set to each bad value."""
    bodies = list(_BAD_BODIES)
    if route.body is not None:
        for name in route.body.model_fields:
            bodies.extend(json.dumps({name: value}).encode() for value in _BAD_VALUES)
    return bodies


async def test_no_route_answers_500_to_malformed_input(
    client: TestClient[Any, Any], token_for: Callable[..., str], app: web.Application
) -> None:
    from tests.helpers import db_of, make_order, make_package, make_partner, make_user

    db = db_of(app)
    customer = await make_user(db)
    partner = await make_partner(db)
    admin = await make_user(db, "admin")
    package = await make_package(db)
    order = await make_order(db, customer, package, partner_id=partner, status="assigned")
    ids = {"id": order, "package_id": package}
    users = {"customer": customer, "partner": partner, "admin": admin}
    # Deleting the account would turn the rest of the customer's requests into 404s: do it last.
    for route in sorted(api.all_routes(), key=lambda r: r.path == "/users/account"):
        role = (route.roles or ("customer",))[0]
        for path_ids in (ids, {"id": "../%24ne", "package_id": "%00\u00e9" * 3}):
            path = "/api" + re.sub(r"{(\w+)}", lambda m, p=path_ids: p.get(m.group(1), "x"), route.path)
            for query in ("", *_BAD_QUERIES):
                for body in _fuzz_bodies(route) if query == "" else [b"{}"]:
                    # A session of its own per request: a fuzzed logout must not end the others.
                    token = token_for(users[role], role, session_id=uuid.uuid4().hex)
                    headers = {**bearer(token), "Content-Type": "application/json", "Idempotency-Key": "fuzz-key-1"}
                    resp = await client.request(route.method, path + query, data=body, headers=headers)
                    assert resp.status < 500, (route.method, path + query, body[:80], await resp.text())
                    if resp.status >= 400:
                        assert "error" in await resp.json(), (route.method, path, body[:80])


async def test_every_route_with_an_id_answers_404_for_an_unknown_one(
    client: TestClient[Any, Any], token_for: Callable[..., str], app: web.Application
) -> None:
    from tests.helpers import db_of, make_partner, make_user

    db = db_of(app)
    users = {"customer": await make_user(db), "partner": await make_partner(db), "admin": await make_user(db, "admin")}
    # A valid body per route, so that only the id can be wrong.
    bodies: dict[str, dict[str, Any]] = {
        "review_order": {"rating": 5}, "change_status": {"status": "en_route"}, "update_package": {"price": 100},
        "assign_order": {"partner_id": users["partner"]}, "admin_refund": {"reason": "fuzz"},
    }
    with_ids = [r for r in api.all_routes() if "{" in r.path and r.roles is not None]
    assert len(with_ids) >= 12
    for route in with_ids:
        for role in route.roles or ():
            path = "/api" + re.sub(r"{\w+}", uuid.uuid4().hex, route.path)
            body = bodies.get(route.handler.__name__, {})
            resp = await client.request(route.method, path, json=body,
                                        headers=bearer(token_for(users[role], role)))
            assert resp.status == 404, (route.method, route.path, role, await resp.text())


async def test_every_body_and_query_refuses_bad_input_with_the_422_envelope(
    client: TestClient[Any, Any], token_for: Callable[..., str], app: web.Application
) -> None:
    from tests.helpers import db_of, make_partner

    partner = await make_partner(db_of(app))
    checked = 0
    for route in api.all_routes():
        role = (route.roles or ("customer",))[0]
        path = "/api" + re.sub(r"{\w+}", uuid.uuid4().hex, route.path)
        user_id = partner if role == "partner" else uuid.uuid4().hex
        headers = bearer(token_for(user_id, role, session_id=uuid.uuid4().hex))
        attempts = []
        if route.body is not None:
            attempts.append((path, [1, 2]))
        if route.query is not None:
            attempts.append((path + "?page=0&fence=-1", {}))
        for url, body in attempts:
            resp = await client.request(route.method, url, json=body, headers=headers)
            assert resp.status == 422, (route.method, url, await resp.text())
            error = (await resp.json())["error"]
            assert error["code"] == "validation_error" and error["details"], (route.method, url)
            checked += 1
    assert checked > 25
