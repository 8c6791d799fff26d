"""Whether a partner is at the venue: the check behind "I've arrived".

The position is the partner's last fix as dispatch stored it: the Redis state hash first, MongoDB's
recovery copy (`partner_positions`) when Redis has none. A fix counts only while it is fresh by its
own time (`min(ts, seen)`: the phone's clock, never later than when the server received it), the
same rule that greys a partner on the fleet map, so a buffered or clock-skewed fix cannot vouch
for an arrival. Its accuracy (a 95 % radius) is allowed for, but never more than the radius again.

`assess` answers where the partner stands: the partner page asks after each shared fix and offers
"I've arrived" as one tap once `at_venue`; a status change to `arrived` from elsewhere is refused
with its code (409), unless it carries a reason: then it is accepted and flagged for admins
(`arrival_unverified`, see `unverified_flag`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import PARTNER_POSITIONS, PARTNER_STATE, STALE_AFTER_INTERVALS
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


@dataclass(frozen=True, slots=True)
class Assessment:
    """Where the partner stands against the venue: `code` is None when they are at it."""

    code: str | None  # not_at_venue, position_stale, position_unknown
    message: str
    details: dict[str, Any]

    @property
    def at_venue(self) -> bool:
        return self.code is None


def assess(fix: Fix | None, venue: Mapping[str, Any], settings: Settings, *, now: int | None = None) -> Assessment:
    """Whether `fix` is fresh and within the arrival radius of `venue` (lat, lng), and if not, why."""
    radius = settings.arrival_radius_m
    stale_ms = int(settings.ping_interval_s * STALE_AFTER_INTERVALS * 1000)
    now = now_ms() if now is None else now
    try:
        venue_lat, venue_lng = float(venue["lat"]), float(venue["lng"])
    except (KeyError, TypeError, ValueError):
        # An order without a located venue cannot be checked; nothing to hold it to.
        return Assessment(None, "The venue has no map position: mark arrival when you are there.",
                          {"radius_m": radius, "distance_m": None})
    if fix is None:
        return Assessment("position_unknown", "We have no position from you yet: go on duty so your phone shares "
                          "its location, then tap \"I've arrived\" again.", {"radius_m": radius})
    age_s = max(0, now - fix.at_ms) // 1000
    if now - fix.at_ms > stale_ms:
        return Assessment("position_stale", f"Your last shared position is {_age(age_s)} old: keep PartyPilot open "
                          "with location on so it can share a fresh one, then tap \"I've arrived\" again.",
                          {"radius_m": radius, "fix_age_s": age_s, "stale_after_s": stale_ms // 1000})
    distance = haversine_m(fix.lat, fix.lng, venue_lat, venue_lng)
    allowance = min(fix.accuracy_m or 0.0, float(radius))
    details = {"distance_m": round(distance), "radius_m": radius,
               "accuracy_m": None if fix.accuracy_m is None else round(fix.accuracy_m), "fix_age_s": age_s}
    if distance - allowance > radius:
        return Assessment("not_at_venue", f"You are {_far(distance)} from the venue. Mark arrival when you are "
                          f"within {_far(radius)} of it.", details)
    return Assessment(None, "You are at the venue.", details)


def unverified_flag(found: Assessment, reason: str, at: str) -> dict[str, Any]:
    """What an order records when its partner marked arrival away from the venue, with a reason."""
    return {"code": found.code, "reason": reason, "distance_m": found.details.get("distance_m"),
            "radius_m": found.details.get("radius_m"), "fix_age_s": found.details.get("fix_age_s"), "at": at}


def unverified_note(found: Assessment, reason: str) -> str:
    """The history entry's reason: what the check said, then the partner's words."""
    distance = found.details.get("distance_m")
    where = {"not_at_venue": f"{_far(float(distance or 0))} from the venue",
             "position_stale": "with no fresh position", "position_unknown": "with no position"}[str(found.code)]
    return f"Marked arrived {where}: {reason}"


def _age(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
