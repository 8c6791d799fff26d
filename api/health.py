"""GET /api/health: each dependency's state and version."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.routing import RouteTable
from api.schemas import closed
from core import keys
from core.http import json_response
from core.stores import mongo_health, redis_health

routes = RouteTable("health")


class StoreHealth(BaseModel):
    model_config = closed()
    status: Literal["ok", "down"]
    version: str | None = Field(None, description="when ok")
    server: str | None = Field(None, description="MongoDB only: mongod, or the embedded server's name")
    error: str | None = Field(None, description="when down: the kind of failure")


class Health(BaseModel):
    """The same body with 200 (all up) and 503 (something down, named in `down`)."""

    model_config = closed({"status": "ok", "mongo": {"status": "ok", "version": "7.0.14", "server": "mongod"},
                           "redis": {"status": "ok", "version": "7.0.15"}, "version": "0.9.0"},
                          {"status": "degraded", "mongo": {"status": "ok", "version": "7.0.14", "server": "mongod"},
                           "redis": {"status": "down", "error": "ConnectionError"}, "version": "0.9.0",
                           "down": ["redis"]})
    status: Literal["ok", "degraded"]
    mongo: StoreHealth
    redis: StoreHealth
    version: str = Field(description="of PartyPilot")
    down: list[Literal["mongo", "redis"]] | None = Field(None, description="when degraded")


@routes.get("/health", summary="Service health: MongoDB and Redis state and versions",
            response=Health, responses={503: ("a dependency is down; the body names it", Health)})
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
