"""GET /api/health: each dependency's state and version."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from api.routing import RouteTable
from core import keys
from core.http import json_response
from core.stores import mongo_health, redis_health

routes = RouteTable("health")


@routes.get("/health", summary="Service health: MongoDB and Redis state and versions",
            responses={503: "a dependency is down; the body names it"})
async def health(request: web.Request) -> web.Response:
    mongo, redis = await asyncio.gather(
        mongo_health(request.config_dict[keys.DB]), redis_health(request.config_dict[keys.REDIS])
    )
    down = [name for name, state in (("mongo", mongo), ("redis", redis)) if state["status"] != "ok"]
    body: dict[str, Any] = {
        "status": "degraded" if down else "ok",
        "mongo": mongo,
        "redis": redis,
        "version": request.config_dict[keys.VERSION],
    }
    if down:
        body["down"] = down
    return json_response(body, status=503 if down else 200, headers={"Cache-Control": "no-store"})
