"""Partner standing (approved, vehicle type) with a short in-memory cache."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

# Standing changes arrive on PARTNER_EVENTS and drop the entry at once; the TTL only bounds how
# long a lost event can leave a stale answer.
CACHE_TTL_S = 120.0


@dataclass(frozen=True, slots=True)
class Standing:
    status: str
    vehicle_type: str | None
    name: str | None


class PartnerDirectory:
    """Reads `partners` documents, cached briefly so matching does not hit MongoDB per candidate."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.partners = db.partners
        self._cache: dict[str, tuple[float, Standing | None]] = {}

    def forget(self, partner_id: str) -> None:
        self._cache.pop(partner_id, None)

    async def standing(self, partner_id: str) -> Standing | None:
        return (await self.standings([partner_id])).get(partner_id)

    async def standings(self, partner_ids: Iterable[str]) -> dict[str, Standing | None]:
        """Standing per id (None: no partner profile), one MongoDB query for all cache misses."""
        now = time.monotonic()
        out: dict[str, Standing | None] = {}
        missing: list[str] = []
        for pid in partner_ids:
            hit = self._cache.get(pid)
            if hit is not None and hit[0] > now:
                out[pid] = hit[1]
            else:
                missing.append(pid)
        if missing:
            found = {doc["_id"]: doc async for doc in self.partners.find(
                {"_id": {"$in": missing}}, {"status": 1, "vehicle_type": 1, "first_name": 1, "contact_name": 1})}
            for pid in missing:
                doc = found.get(pid)
                standing = None if doc is None else Standing(
                    status=str(doc.get("status") or "pending"), vehicle_type=doc.get("vehicle_type"),
                    name=doc.get("first_name") or doc.get("contact_name"))
                self._cache[pid] = (now + CACHE_TTL_S, standing)
                out[pid] = standing
            if len(self._cache) > 200_000:
                self._cache.clear()
        return out
