"""A speed model for travel time: straight-line distance, a detour factor, a speed per vehicle."""

from __future__ import annotations

from geo.distance import haversine_m

# City speeds in metres per second, door to door, including stops at lights (about 22, 25,
# 20 and 16 km/h). Bigger vehicles are slower in traffic and to park.
SPEED_MPS: dict[str, float] = {"bike": 6.0, "car": 7.0, "van": 5.5, "truck": 4.5}
DEFAULT_SPEED_MPS = 5.5
# Roads are longer than the straight line between two points; 1.35 is typical of dense cities.
DETOUR_FACTOR = 1.35
# Fastest believable ground speed between two pings (about 300 km/h): anything quicker is a GPS jump.
MAX_PLAUSIBLE_SPEED_MPS = 83.0


def road_distance_m(straight_m: float) -> float:
    """Estimated road distance for a straight-line distance."""
    return straight_m * DETOUR_FACTOR


def eta_seconds(straight_m: float, vehicle_type: str | None = None) -> int:
    """Estimated travel time in whole seconds for a straight-line distance and vehicle type."""
    speed = SPEED_MPS.get(vehicle_type or "", DEFAULT_SPEED_MPS)
    return round(road_distance_m(straight_m) / speed)


def eta_between(lat1: float, lng1: float, lat2: float, lng2: float, vehicle_type: str | None = None) -> int:
    """Estimated travel time in seconds from point 1 to point 2."""
    return eta_seconds(haversine_m(lat1, lng1, lat2, lng2), vehicle_type)
