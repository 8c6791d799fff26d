"""Whether a partner is at the venue: the check behind "I've arrived".

The position is the partner's last fix as dispatch stored it: the Redis state hash first, MongoDB's
recovery copy (`partner_positions`) when Redis has none. A fix counts only while it is fresh by its
own time (`min(ts, seen)`: the phone's clock, never later than when the server received it), the
same rule that greys a partner on the fleet map, so a buffered or clock-skewed fix cannot vouch
for an arrival. Its accuracy (a 95 % radius) is allowed for, but never more than the radius again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import PARTNER_POSITIONS, PARTNER_STATE, STALE_AFTER_INTERVALS
from core.errors import Conflict
from core.jsonutil import now_ms
from core.settings import Settings
from geo.distance import haversine_m

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fix:
    lat: float
    lng: float
    at_ms: int  # when the fix was taken, capped by its receipt
    accuracy_m: float | None


def _fix(raw: Mapping[Any, Any]) -> Fix | None:
    try:
        lat, lng = float(raw["lat"]), float(raw["lng"])
        ts, seen = int(float(raw.get("ts") or 0)), int(float(raw.get("seen") or 0))
        accuracy = raw.get("accuracy")
        accuracy_m = float(accuracy) if accuracy not in (None, "") else None
    except (KeyError, TypeError, ValueError):
        return None
    at = min(ts, seen) if ts > 0 and seen > 0 else ts or seen
    return Fix(lat, lng, at, accuracy_m) if at > 0 else None


async def last_fix(redis: Redis, db: AsyncDatabase[dict[str, Any]], partner_id: str) -> Fix | None:
    """The partner's newest known fix, from Redis or (after Redis lost it) from MongoDB."""
    fixes: list[Fix] = []
    try:
        state = await redis.hgetall(PARTNER_STATE.format(partner_id=partner_id))
        if (found := _fix(state)) is not None:
            fixes.append(found)
    except Exception as exc:  # Redis down: MongoDB's copy is at most a few seconds older
        logger.warning("partner state unavailable: %s", type(exc).__name__)
    if not fixes:
        doc = await db[PARTNER_POSITIONS].find_one({"_id": partner_id})
        if doc is not None and (found := _fix(doc)) is not None:
            fixes.append(found)
    return max(fixes, key=lambda f: f.at_ms) if fixes else None


def _far(metres: float) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{round(metres / 10) * 10:.0f} m"


def check_arrival(fix: Fix | None, venue: Mapping[str, Any], settings: Settings, *, now: int | None = None) -> None:
    """Raise Conflict unless `fix` is fresh and within the arrival radius of `venue` (lat, lng)."""
    radius = settings.arrival_radius_m
    stale_ms = int(settings.ping_interval_s * STALE_AFTER_INTERVALS * 1000)
    now = now_ms() if now is None else now
    try:
        venue_lat, venue_lng = float(venue["lat"]), float(venue["lng"])
    except (KeyError, TypeError, ValueError):
        return  # an order without a located venue cannot be checked; nothing to hold it to
    if fix is None:
        raise Conflict("We have no position from you yet: go on duty so your phone shares its location, "
                       "then tap \"I've arrived\" again.", code="position_unknown",
                       details={"radius_m": radius})
    age_s = max(0, now - fix.at_ms) // 1000
    if now - fix.at_ms > stale_ms:
        raise Conflict(f"Your last shared position is {_age(age_s)} old: keep PartyPilot open with location on "
                       "so it can share a fresh one, then tap \"I've arrived\" again.", code="position_stale",
                       details={"radius_m": radius, "fix_age_s": age_s, "stale_after_s": stale_ms // 1000})
    distance = haversine_m(fix.lat, fix.lng, venue_lat, venue_lng)
    allowance = min(fix.accuracy_m or 0.0, float(radius))
    if distance - allowance > radius:
        raise Conflict(f"You are {_far(distance)} from the venue. Mark arrival when you are within {_far(radius)} "
                       "of it.", code="not_at_venue",
                       details={"distance_m": round(distance), "radius_m": radius,
                                "accuracy_m": None if fix.accuracy_m is None else round(fix.accuracy_m),
                                "fix_age_s": age_s})


def _age(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
