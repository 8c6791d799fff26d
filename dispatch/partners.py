"""Partner standing (approved, vehicle type), its in-memory cache, and a watch that keeps the
cache honest when a standing event is lost.

Standing changes arrive on PARTNER_EVENTS and drop the cache entry at once, but pub/sub is
at-most-once. Every standing change also stamps `status_at` on the partner's document, so the
watch asks MongoDB every couple of seconds for documents stamped since its last look (an indexed
range read that returns only what changed: O(changes), not O(partners)) and replays each change
as the event that may have been lost. The cache trusts its entries for a minute only while the
watch is succeeding; when the watch has not succeeded recently (MongoDB down, not started yet)
entries live a few seconds. A lost suspension therefore leaves a stale answer for at most a
couple of seconds, not the two minutes a bare TTL allowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from core.jsonutil import iso
from core.tasks import stop_if_cancelled

logger = logging.getLogger(__name__)

# How long a cached standing is trusted while the watch is healthy (it only bounds memory churn:
# the watch invalidates changed entries), and while it is not (then the TTL is the only bound).
CACHE_TTL_S = 60.0
UNWATCHED_TTL_S = 3.0
# The watch's period: the worst-case delay before a lost suspension stops offers and sockets.
WATCH_INTERVAL_S = 2.0
# The watch counts as healthy for this long after its last successful read.
WATCH_HEALTHY_S = 3 * WATCH_INTERVAL_S
# Each read looks this far behind the previous one: `status_at` is stamped by the API process's
# clock, which may run behind ours, and a write stamped just before our read may commit after it.
WATCH_OVERLAP_S = 30.0
_FIELDS = {"status": 1, "vehicle_type": 1, "first_name": 1, "contact_name": 1, "status_at": 1}


@dataclass(frozen=True, slots=True)
class Standing:
    status: str
    vehicle_type: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class StandingChange:
    partner_id: str
    status: str
    at: str


def _standing(doc: dict[str, Any]) -> Standing:
    return Standing(status=str(doc.get("status") or "pending"), vehicle_type=doc.get("vehicle_type"),
                    name=doc.get("first_name") or doc.get("contact_name"))


class PartnerDirectory:
    """Reads `partners` documents, cached briefly so matching does not hit MongoDB per candidate."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.partners = db.partners
        self._cache: dict[str, tuple[float, Standing | None]] = {}  # id -> (fetched, standing)
        self.watched_at = float("-inf")  # monotonic time of the watch's last successful read

    async def ensure_indexes(self) -> None:
        await self.partners.create_index("status_at")

    def forget(self, partner_id: str) -> None:
        self._cache.pop(partner_id, None)

    def _ttl(self, now: float) -> float:
        return CACHE_TTL_S if now - self.watched_at <= WATCH_HEALTHY_S else UNWATCHED_TTL_S

    async def standing(self, partner_id: str) -> Standing | None:
        return (await self.standings([partner_id])).get(partner_id)

    async def fresh_standing(self, partner_id: str) -> Standing | None:
        """Standing read from MongoDB now (for decisions that must not act on a stale answer)."""
        doc = await self.partners.find_one({"_id": partner_id}, _FIELDS)
        standing = None if doc is None else _standing(doc)
        self._cache[partner_id] = (time.monotonic(), standing)
        return standing

    async def standings(self, partner_ids: Iterable[str]) -> dict[str, Standing | None]:
        """Standing per id (None: no partner profile), one MongoDB query for all cache misses."""
        now = time.monotonic()
        oldest = now - self._ttl(now)
        out: dict[str, Standing | None] = {}
        missing: list[str] = []
        for pid in partner_ids:
            hit = self._cache.get(pid)
            if hit is not None and hit[0] > oldest:
                out[pid] = hit[1]
            else:
                missing.append(pid)
        if missing:
            found = {doc["_id"]: doc async for doc in self.partners.find({"_id": {"$in": missing}}, _FIELDS)}
            for pid in missing:
                doc = found.get(pid)
                standing = None if doc is None else _standing(doc)
                self._cache[pid] = (now, standing)
                out[pid] = standing
            if len(self._cache) > 200_000:
                self._cache.clear()
        return out

    async def changed_since(self, since: str) -> list[StandingChange]:
        """Standing changes stamped at or after `since` (an ISO instant), oldest first."""
        cursor = self.partners.find({"status_at": {"$gte": since}}, {"status": 1, "status_at": 1})
        changes = [StandingChange(str(doc["_id"]), str(doc.get("status") or "pending"), str(doc["status_at"]))
                   async for doc in cursor]
        return sorted(changes, key=lambda change: change.at)


class StandingWatch:
    """Replays standing changes read from MongoDB through `on_change`, each one once per process."""

    def __init__(self, directory: PartnerDirectory, on_change: Callable[[StandingChange], Awaitable[None]],
                 interval_s: float = WATCH_INTERVAL_S) -> None:
        self.directory = directory
        self.on_change = on_change
        self.interval_s = interval_s
        self._since = datetime.now(UTC)
        self._seen: dict[tuple[str, str], str] = {}  # (partner, status_at) -> status_at, within the overlap

    async def check(self) -> int:
        """One read: replay the changes not seen yet; returns how many were replayed."""
        started = datetime.now(UTC)
        since = iso(self._since - timedelta(seconds=WATCH_OVERLAP_S))
        changes = await self.directory.changed_since(since)
        self.directory.watched_at = time.monotonic()
        replayed = 0
        for change in changes:
            key = (change.partner_id, change.at)
            if key in self._seen:
                continue
            self.directory.forget(change.partner_id)
            await self.on_change(change)
            self._seen[key] = change.at
            replayed += 1
        self._since = started
        self._seen = {key: at for key, at in self._seen.items() if at >= since}
        return replayed

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.check()
                failing = False
            except Exception as exc:
                stop_if_cancelled()
                if not failing:
                    logger.warning("partner standing watch failed: %s", type(exc).__name__)
                failing = True
            stop_if_cancelled()
            await asyncio.sleep(self.interval_s)
