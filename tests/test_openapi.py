"""The OpenAPI document lists every registered route, the docs page answers, and every declared
role guard holds."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

import api
from api.auth import REFRESH_COOKIE
from api.openapi import build_openapi
from tests.helpers import bearer

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
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                content = answer.get("content", {})
                if int(status) < 400 and "application/json" not in content:
                    # A route declared with another media type (the text/plain metrics): its schema is there.
                    assert content and all(media.get("schema") for media in content.values()), (method, path)
                    continue
                assert "application/json" in content and content["application/json"].get("schema"), (method, path)
                if int(status) >= 400:
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
    slots = {p["name"]: p for p in doc["paths"]["/api/orders/arrival-slots"]["get"]["parameters"]}
    assert slots["event_date"]["required"] and slots["lat"]["schema"]["maximum"] == 90
    order = doc["paths"]["/api/orders/{id}"]["get"]["parameters"][0]
    assert order["in"] == "path" and order["required"] and order["schema"]["type"] == "string"
    listed = doc["paths"]["/api/packages"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/Page"}


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
