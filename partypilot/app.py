"""`create_app(settings)`: assemble the REST API, Socket.IO and the static frontend. No I/O here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import api
import dispatch
from core import keys, revocations
from core.contracts import STALE_AFTER_INTERVALS
from core.http import access_middleware, api_error_middleware, json_response, request_id_middleware
from core.jsonutil import now_ms
from core.settings import Settings
from core.stores import mongo_ctx, redis_ctx
from core.tasks import TaskOwner
from partypilot import __version__

PAGES = {
    "/": "index.html",
    "/customer": "customer.html",
    "/partner": "partner.html",
    "/admin": "admin.html",
    "/track": "track.html",
}


async def tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Background tasks are owned by the app: cancelled and awaited before the stores close."""
    app[keys.TASKS] = TaskOwner()
    yield
    await app[keys.TASKS].aclose()


async def revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keep Redis's copy of ended sessions whole, for readers that check only Redis (sockets)."""
    settings = app[keys.SETTINGS]
    app[keys.TASKS].spawn(revocations.watch(app[keys.DB], app[keys.REDIS], settings.access_token_ttl_s),
                          name="core:revocations:watch")
    yield


def create_app(settings: Settings) -> web.Application:
    """Build the whole product for `settings`. Connections open when the app starts."""
    app = web.Application(
        middlewares=[request_id_middleware, access_middleware, api_error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.VERSION] = __version__
    app[keys.METRIC_SAMPLERS] = []  # each side adds what /api/metrics reads at scrape time
    # Dependency order: stores first, then the tasks that use them; cleanup runs in reverse,
    # so tasks stop before the stores close.
    app.cleanup_ctx.extend([mongo_ctx, redis_ctx, tasks_ctx, revocations_ctx, *api.contexts()])
    app.add_subapp("/api", api.create_api(settings))
    dispatch.setup(app, settings)  # adds its own cleanup context after the API's
    _add_frontend(app, settings.frontend_dir, settings.data_dir / "media")
    return app


# The installable partner app. The service worker is served from the root because a worker's
# scope cannot reach above its own folder (it registers for /partner only); both files are
# revalidated on every load so a deploy reaches installed phones at their next visit.
APP_FILES = {
    "/partner-sw.js": ("partner-sw.js", "text/javascript"),
    "/partner.webmanifest": ("partner.webmanifest", "application/manifest+json"),
}


def client_config(settings: Settings) -> dict[str, Any]:
    """The settings pages must agree with the server on, and the server's clock (so a phone can
    judge its fixes' age as the server does). Public: nothing here is secret."""
    return {"ping_interval_s": settings.ping_interval_s, "stale_after_intervals": STALE_AFTER_INTERVALS,
            "map_tile_url": settings.map_tile_url, "map_attribution": settings.map_attribution,
            "locale": settings.locale, "server_time_ms": now_ms()}


async def get_client_config(request: web.Request) -> web.Response:
    return json_response(client_config(request.app[keys.SETTINGS]), headers={"Cache-Control": "no-store"})


def _add_frontend(app: web.Application, root: Path, media: Path) -> None:
    for path, page in PAGES.items():
        app.router.add_get(path, _page_handler(root / page), name=f"page:{page}")
        if path != "/":
            app.router.add_get(f"{path}/", _to_canonical(path), name=f"page:{page}:slash")
    for path, (name, content_type) in APP_FILES.items():
        app.router.add_get(path, _page_handler(root / name, content_type), name=f"app:{name}")
    app.router.add_get("/config.json", get_client_config, name="config")
    for folder in ("js", "css", "vendor", "img"):
        if (root / folder).is_dir():
            app.router.add_static(f"/{folder}", root / folder)
    media.mkdir(parents=True, exist_ok=True)
    app.router.add_static("/media", media)


def _to_canonical(path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`/customer/` and friends: a permanent redirect to the page's one address, query kept (a
    tracking link typed with a slash still works; the service worker's scope is the canonical path)."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        query = request.query_string
        raise web.HTTPPermanentRedirect(f"{path}?{query}" if query else path)

    return redirect


def _page_handler(file: Path, content_type: str | None = None,
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    headers = {"Cache-Control": "no-cache"}
    if content_type:
        headers["Content-Type"] = content_type

    async def page(request: web.Request) -> web.StreamResponse:
        # FileResponse answers 404 itself when the page is missing.
        return web.FileResponse(file, headers=headers)

    return page
