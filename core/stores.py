"""MongoDB and Redis clients: opened in cleanup contexts, probed by the health check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import keys

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 1.5


def make_mongo_client(uri: str) -> AsyncMongoClient[dict[str, Any]]:
    # Short selection timeout: while Mongo is down we answer 503 in about two seconds instead of
    # hanging for the driver's default 30 s. Retryable writes need a replica set; on the
    # standalone embedded server, idempotency keys keep writes single instead.
    # connectTimeoutMS is also the monitor's heartbeat timeout, and a heartbeat that times out
    # marks the server unknown, clears the pool and cancels every operation in flight
    # (`_OperationCancelled`). 2 s did that whenever a busy server was slow to answer `hello`
    # (the embedded one under the dispatch simulator: a minute of 503s from a server that was
    # only late). A server that is down refuses connections at once, so this costs nothing there.
    return AsyncMongoClient(
        uri,
        serverSelectionTimeoutMS=2000,
        connectTimeoutMS=10000,
        socketTimeoutMS=10000,
        appname="partypilot",
    )


def make_redis(url: str, max_connections: int = 64) -> Redis:
    # Explicit socket timeouts and a short, bounded retry: a dead Redis must surface as a fast
    # error (503), never a hung request. A blocking pool makes bursts wait briefly for a
    # connection instead of failing with MaxConnectionsError (redis-py's default pool raises).
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=2.0,
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
    )
    return Redis.from_pool(pool)


async def mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    client = make_mongo_client(settings.mongodb_uri)
    app[keys.MONGO_CLIENT] = client
    app[keys.DB] = client[settings.mongodb_db]
    yield
    await client.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = make_redis(app[keys.SETTINGS].redis_url)
    app[keys.REDIS] = redis
    yield
    await redis.aclose()


async def mongo_health(db: AsyncDatabase[dict[str, Any]]) -> dict[str, Any]:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await db.command("ping")
            info = await db.client.server_info()
            version = info.get("version")
            server = "mongod"
            if not version:
                # The embedded wire server leaves buildinfo empty but reports itself in serverStatus.
                status = await db.client.admin.command("serverStatus")
                version, server = status.get("version"), str(status.get("process", "unknown"))
        return {"status": "ok", "version": str(version or "unknown"), "server": server}
    except Exception as exc:  # any failure means "down" for the health report
        logger.warning("mongo health check failed: %s", type(exc).__name__)
        return {"status": "down", "error": type(exc).__name__}


async def redis_health(redis: Redis) -> dict[str, Any]:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            info = await redis.info("server")
        return {"status": "ok", "version": str(info.get("redis_version", "unknown"))}
    except Exception as exc:
        logger.warning("redis health check failed: %s", type(exc).__name__)
        return {"status": "down", "error": type(exc).__name__}
