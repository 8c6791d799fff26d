"""Fixtures: real Redis and the real Mongo wire server on private ports, an app per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings
from core.stores import make_redis
from core.tokens import Role, issue_access_token
from partypilot import localservices
from partypilot.app import create_app

TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localservices.LocalServices]:
    """Redis and nx-27017 for the whole run, on free loopback ports, stopped at the end.

    With MONGODB_URI and REDIS_URL set (e.g. a real MongoDB 7), those are used instead.
    """
    if os.environ.get("MONGODB_URI") and os.environ.get("REDIS_URL"):
        external = localservices.LocalServices(root=Path("."), redis_port=0, mongo_port=0)
        yield external
        return
    root = tmp_path_factory.mktemp("services")
    started = localservices.start(root, localservices.free_port(), localservices.free_port(), persist=False,
                                  tied=True)
    try:
        yield started
    finally:
        localservices.stop(started)


def _uris(services: localservices.LocalServices) -> tuple[str, str]:
    if services.redis_port == 0:
        return os.environ["MONGODB_URI"], os.environ["REDIS_URL"]
    return services.mongodb_uri, services.redis_url


@pytest.fixture
def make_settings(services: localservices.LocalServices, tmp_path: Path) -> Callable[..., Settings]:
    """Build test settings against the session's services, with a fresh database."""
    mongo_uri, redis_url = _uris(services)
    db_name = f"t_{uuid.uuid4().hex[:12]}"

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test", "mongodb_uri": mongo_uri, "redis_url": redis_url, "mongodb_db": db_name,
            "jwt_secret": TEST_SECRET, "data_dir": tmp_path / "data", "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings.model_validate(values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client on the test Redis, flushed before the test so no state leaks between tests."""
    client = make_redis(settings.redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def app(settings: Settings, redis: Redis) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


@pytest.fixture
def token_for(settings: Settings) -> Callable[[str, Role], str]:
    """Mint an access token the way sign-in does, for tests that start from a known identity."""

    def mint(user_id: str, role: Role, session_id: str = "test-session") -> str:
        return issue_access_token(settings, user_id, role, session_id)

    return mint
