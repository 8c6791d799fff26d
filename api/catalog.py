"""The active package catalog held in memory, invalidated on change across processes.

The embedded Mongo answers the catalog query a few hundred times a second; aiohttp serves the
same bytes from memory many times faster. So each process keeps a snapshot of the active
packages and filters, sorts and pages it in Python.

Invalidation: every write to `packages` ends with `Catalog.changed()`, which INCRs a version
counter in Redis and publishes on a channel. Each process's watcher marks its snapshot stale on
the message (prompt), and every request re-reads the counter at most once a second (a lost
pub/sub message costs at most that second). A snapshot older than `max_age_s` is reloaded anyway,
which covers writers that cannot reach Redis (e.g. `partypilot seed` run beside a live server).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from api.schemas import Page, closed
from core import keys
from core.tasks import stop_if_cancelled

logger = logging.getLogger(__name__)

CATALOG_VERSION_KEY = "pp:catalog:version"
CATALOG_CHANNEL = "pp:events:catalog"
CATEGORIES = ("Kids", "Weddings", "Corporate", "Casual", "Festival", "Themed")
_RESPONSE_CACHE_SIZE = 512


class PackageView(BaseModel):
    """A package as every route shows it (`package_view`)."""

    model_config = closed({
        "id": "3f9c2a7e5b1d4c8e9a0b1c2d3e4f5a6b", "name": "Superhero Birthday Bash", "slug": "superhero-birthday-bash",
        "description": "Capes, masks and a training course for up to 30 young heroes.", "category": "Kids",
        "tags": ["birthday", "superhero"], "price": 1_500_000, "currency": "INR", "capacity": 30,
        "duration_min": 180, "features": ["Balloon arch", "Face painting"], "images": ["/img/packages/kids.svg"],
        "active": True, "rating_count": 12, "rating_avg": 4.6, "created_at": "2026-11-02T09:30:00.000Z",
        "updated_at": "2026-11-20T14:05:12.000Z"})

    id: str
    name: str
    slug: str
    description: str
    category: str = Field(description="Kids, Weddings, Corporate, Casual, Festival or Themed")
    tags: list[str]
    price: int = Field(description="minor units (paise)")
    currency: str
    capacity: int = Field(description="most guests it hosts")
    duration_min: int
    features: list[str]
    images: list[str] = Field(description="site paths (/img/...) or http(s) URLs")
    active: bool = Field(description="false once archived: only admins and favourites still show it")
    rating_count: int
    rating_avg: float | None = Field(None, description="1-5; present once there are reviews")
    created_at: str
    updated_at: str


class PackagePage(Page[PackageView]):
    pass


def package_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A package as the API shows it. Flags are normalised (the wire server returns 0/1), and
    rating fields appear only once there are reviews."""
    out: dict[str, Any] = {
        "id": str(doc["_id"]), "name": doc.get("name", ""), "slug": doc.get("slug", ""),
        "description": doc.get("description", ""), "category": doc.get("category", ""),
        "tags": list(doc.get("tags") or []), "price": int(doc.get("price", 0)),
        "currency": doc.get("currency", ""), "capacity": int(doc.get("capacity", 0)),
        "duration_min": int(doc.get("duration_min", 0)), "features": list(doc.get("features") or []),
        "images": list(doc.get("images") or []), "active": bool(doc.get("active", 0)),
        "rating_count": int(doc.get("rating_count", 0) or 0),
        "created_at": doc.get("created_at", ""), "updated_at": doc.get("updated_at", ""),
    }
    if out["rating_count"] > 0 and doc.get("rating_avg") is not None:
        out["rating_avg"] = float(doc["rating_avg"])
    return out


@dataclass
class Snapshot:
    """The active packages at one catalog version, plus rendered responses for that version."""

    version: int | None
    loaded_at: float
    packages: tuple[dict[str, Any], ...]
    by_id: dict[str, dict[str, Any]]
    responses: OrderedDict[Any, bytes] = field(default_factory=OrderedDict)

    def remember(self, key: Any, body: bytes) -> bytes:
        self.responses[key] = body
        if len(self.responses) > _RESPONSE_CACHE_SIZE:
            self.responses.popitem(last=False)
        return body


class Catalog:
    """One per process: `snapshot()` for reads, `changed()` after every write."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], redis: Redis, *, check_interval_s: float = 1.0,
                 max_age_s: float = 60.0) -> None:
        self.db = db
        self.redis = redis
        self.check_interval_s = check_interval_s
        self.max_age_s = max_age_s
        self._snap: Snapshot | None = None
        self._checked_at = -math.inf
        self._force = False
        self._lock = asyncio.Lock()

    def _usable(self, now: float) -> Snapshot | None:
        """The snapshot, if nothing says it may be out of date."""
        snap = self._snap
        if (snap is None or self._force or now - self._checked_at >= self.check_interval_s
                or now - snap.loaded_at >= self.max_age_s):
            return None
        return snap

    async def snapshot(self) -> Snapshot:
        snap = self._usable(time.monotonic())
        if snap is not None:
            return snap
        async with self._lock:  # one reload however many requests miss at once
            return await self._refresh()

    async def _refresh(self) -> Snapshot:
        now = time.monotonic()
        snap = self._usable(now)
        if snap is not None:
            return snap  # another waiter refreshed while we queued
        snap = self._snap
        # Cleared before reading: a change announced while we load sets it again.
        forced, self._force = self._force, False
        version = await self._read_version()
        if (snap is not None and not forced and version is not None and snap.version == version
                and now - snap.loaded_at < self.max_age_s):
            self._checked_at = now
            return snap
        # The version is read before the documents: a write landing in between makes the next
        # check see a newer version and reload, never the other way round.
        docs = await self.db.packages.find({"active": 1}).to_list(None)
        packages = tuple(package_view(doc) for doc in docs)
        snap = Snapshot(version=version, loaded_at=now, packages=packages,
                        by_id={p["id"]: p for p in packages})
        self._snap = snap
        self._checked_at = now
        logger.debug("catalog reloaded: %d active packages at version %s", len(packages), version)
        return snap

    async def _read_version(self) -> int | None:
        try:
            raw = await self.redis.get(CATALOG_VERSION_KEY)
        except Exception as exc:  # Redis down: fall back to max-age expiry
            logger.warning("catalog version unavailable: %s", type(exc).__name__)
            return None
        return int(raw) if raw is not None else 0

    def mark_stale(self, *, reload: bool = False) -> None:
        """Re-check the version on the next read; with `reload`, load the documents regardless
        (covers a version counter that went back to an old value when Redis lost its data)."""
        self._checked_at = -math.inf
        if reload:
            self._force = True

    async def changed(self) -> None:
        """Announce a write to `packages` to every process (this one included)."""
        self.mark_stale(reload=True)
        try:
            version = await self.redis.incr(CATALOG_VERSION_KEY)
            await self.redis.publish(CATALOG_CHANNEL, str(version))
        except Exception as exc:  # the write is committed; others catch up within max_age_s
            logger.warning("could not announce a catalog change: %s", type(exc).__name__)

    async def watch(self) -> None:
        """Mark the snapshot stale whenever another process announces a change."""
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CATALOG_CHANNEL)
                # Anything published while we were not subscribed is lost: reload now.
                self.mark_stale(reload=True)
                delay = 0.1
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is not None:
                        self.mark_stale(reload=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("catalog watcher lost Redis (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:  # closing a broken connection may fail too; nothing to do
                    logger.debug("catalog watcher: pubsub close failed")


CATALOG: web.AppKey[Catalog] = web.AppKey("catalog", Catalog)


async def catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: install this process's catalog and run its watcher as an owned task."""
    catalog = Catalog(app[keys.DB], app[keys.REDIS])
    app[CATALOG] = catalog
    app[keys.TASKS].spawn(catalog.watch(), name="api:catalog:watch")
    yield


def catalog_of(request: web.Request) -> Catalog:
    return request.config_dict[CATALOG]
