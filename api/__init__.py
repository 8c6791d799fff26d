"""The REST companion under /api: auth, users, packages, orders, partner and admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from api import (
    admin,
    analytics,
    auth,
    console,
    customer,
    health,
    metrics,
    notifications,
    orders,
    packages,
    partner,
    payments,
    places,
    users,
)
from api.openapi import add_openapi_routes
from api.routing import Route, RouteTable
from core import __version__, keys
from core.settings import Settings

__all__ = ["all_routes", "contexts", "create_api"]

# Modules with routes. A module may also define `async def ensure_indexes(db)` (run at start-up,
# idempotent), `CONTEXTS`: cleanup contexts that install per-process state, and `WORKERS`:
# `async def worker(app)` coroutines run as owned background tasks.
_MODULES: list[Any] = [health, auth, users, customer, packages, orders, payments, partner, admin, console,
                       analytics, notifications, metrics, places]


def _tables() -> list[RouteTable]:
    return [module.routes for module in _MODULES]


def all_routes() -> list[Route]:
    return [route for table in _tables() for route in table.routes]


def create_api(settings: Settings) -> web.Application:
    """The /api sub-application. Handlers reach shared resources through request.config_dict."""
    api = web.Application(client_max_size=settings.max_body_bytes)
    routes = all_routes()
    for route in routes:
        api.router.add_route(route.method, route.path, route.handler, name=route.handler.__name__)
    add_openapi_routes(api, routes, __version__)
    return api


def contexts() -> list[Callable[[web.Application], AsyncIterator[None]]]:
    """The REST side's cleanup contexts for the root app, in start-up order."""
    module_contexts = [ctx for module in _MODULES for ctx in getattr(module, "CONTEXTS", ())]
    return [indexes_ctx, *module_contexts, workers_ctx]


async def indexes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create every module's indexes (idempotent) before anything serves."""
    db: AsyncDatabase[dict[str, Any]] = app[keys.DB]
    for module in _MODULES:
        ensure: Callable[[AsyncDatabase[dict[str, Any]]], Awaitable[None]] | None = getattr(
            module, "ensure_indexes", None)
        if ensure is not None:
            await ensure(db)
    yield


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the REST side's background workers; the task owner stops them at shutdown."""
    for module in _MODULES:
        for worker in getattr(module, "WORKERS", ()):
            app[keys.TASKS].spawn(worker(app), name=f"api:{module.__name__}:{worker.__name__}")
    yield
