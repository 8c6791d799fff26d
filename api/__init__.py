"""The REST companion under /api: auth, users, packages, orders, payments, partner and admin."""

from __future__ import annotations

from aiohttp import web

from api import health
from api.openapi import add_openapi_routes
from api.routing import Route, RouteTable
from core.settings import Settings

__all__ = ["all_routes", "create_api"]

VERSION = "0.1.0"


def _tables() -> list[RouteTable]:
    return [health.routes]


def all_routes() -> list[Route]:
    return [route for table in _tables() for route in table.routes]


def create_api(settings: Settings) -> web.Application:
    """The /api sub-application. Handlers reach shared resources through request.config_dict."""
    api = web.Application(client_max_size=settings.max_body_bytes)
    routes = all_routes()
    for route in routes:
        api.router.add_route(route.method, route.path, route.handler, name=route.handler.__name__)
    add_openapi_routes(api, routes, VERSION)
    return api
