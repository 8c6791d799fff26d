"""Typed application keys: the one place that says what lives on the aiohttp app."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import LocationSink
from core.metrics import Sampler
from core.settings import Settings
from core.tasks import TaskOwner
from core.tokens import Claims

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
MONGO_CLIENT: web.AppKey[AsyncMongoClient[dict[str, Any]]] = web.AppKey("mongo_client")
DB: web.AppKey[AsyncDatabase[dict[str, Any]]] = web.AppKey("db")
REDIS: web.AppKey[Redis] = web.AppKey("redis")
TASKS: web.AppKey[TaskOwner] = web.AppKey("tasks")
# Set by the dispatch engine, used by the REST fallback for locations (api does not import dispatch).
LOCATION_SINK: web.AppKey[LocationSink] = web.AppKey("location_sink")
VERSION: web.AppKey[str] = web.AppKey("version")
# Read at each /api/metrics scrape: each side registers what describes its live state (core.metrics).
METRIC_SAMPLERS: web.AppKey[list[Sampler]] = web.AppKey("metric_samplers")
# Who is asking, once a route authenticated them; the access log reads the user id from it.
CLAIMS: web.RequestKey[Claims] = web.RequestKey("claims", Claims)
