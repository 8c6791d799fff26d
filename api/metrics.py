"""GET /api/metrics: Prometheus text exposition of this process (core.metrics), for admins and local scrapers.

Who may read it: a scraper on this host, connecting over loopback directly (no proxy header: nginx
on the same host would otherwise make every outside caller look local), or a signed-in admin from
anywhere. Everyone else gets 403 in the error envelope. Each process serves its own numbers:
scrape every app port (docs/deploy.md, Metrics).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from api.notifications import outbox_depth
from api.routing import RouteTable
from api.security import authenticate
from core import keys, metrics
from core.errors import Forbidden

routes = RouteTable("metrics")

# Headers a reverse proxy adds: a request carrying one was relayed, whatever its TCP peer says.
_PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


def from_local_scraper(request: web.Request) -> bool:
    """True for a direct loopback connection that no proxy relayed."""
    if any(header in request.headers for header in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:  # a unix socket, or no peer at all
        return False


def _outbox_sampler(db: AsyncDatabase[dict[str, Any]]) -> metrics.Sampler:
    async def sample() -> list[metrics.Metric]:
        depth = await outbox_depth(db)
        return [metrics.gauge("partypilot_outbox_depth", "Outbox messages not yet delivered, by lane", "lane",
                              {lane: float(count) for lane, count in depth.items()})]

    return sample


@routes.get("/metrics", summary="Prometheus metrics of this process (admins, or a scraper on loopback)",
            media_type="text/plain",
            responses={401: "an Authorization header whose token is missing, invalid or expired",
                       403: "neither an admin nor a direct loopback connection"})
async def metrics_text(request: web.Request) -> web.Response:
    """Request counts and latency by route and status, sockets by role, location fixes by outcome,
    offers by outcome, outbox depth and fleet tick duration, in the Prometheus text format. Open to
    direct loopback connections; otherwise send an admin's bearer token."""
    if not from_local_scraper(request):
        if "Authorization" not in request.headers:
            raise Forbidden("metrics are served to admins and to scrapers on this host", code="forbidden")
        await authenticate(request, ("admin",))
    config = request.config_dict
    samplers = [*config.get(keys.METRIC_SAMPLERS, ()), _outbox_sampler(config[keys.DB])]
    body = await metrics.render(samplers)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"})
