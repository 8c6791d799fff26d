"""The OpenAPI document lists every registered route, the docs page answers, and every declared
role guard holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

import api
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


_MINE = {"packages", "orders", "customer", "partner", "admin"}


async def test_every_guarded_route_refuses_anonymous_and_other_roles(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    guarded = [r for r in api.all_routes() if r.tag in _MINE and r.roles is not None]
    assert len(guarded) > 20
    for route in guarded:
        path = "/api" + re.sub(r"{\w+}", "x", route.path)
        resp = await client.request(route.method, path, json={})
        assert resp.status == 401, (route.method, path)
        assert (await resp.json())["error"]["code"] == "unauthorized"
        for role in {"customer", "partner", "admin"} - set(route.roles or ()):
            resp = await client.request(route.method, path, json={}, headers=bearer(token_for("u1", role)))
            assert resp.status == 403, (route.method, path, role)
