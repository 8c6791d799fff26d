"""Simulated movement along plausible city routes (a street grid) in the demo city."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from geo.distance import bearing_deg, destination, haversine_m
from geo.eta import SPEED_MPS

# Bengaluru, around MG Road: the seeded demo service area.
DEMO_CENTER = (12.9716, 77.5946)
DEMO_RADIUS_M = 8000.0
# Streets run roughly north-south and east-west every ~250 m; moving along them (L-shaped legs)
# looks like driving on a map, where a straight line through blocks would not.
BLOCK_M = 250.0


@dataclass
class Mover:
    """One simulated vehicle: where it is, where it is heading, and how fast it goes."""

    lat: float
    lng: float
    vehicle_type: str = "bike"
    rng: random.Random = field(default_factory=random.Random)
    center: tuple[float, float] = DEMO_CENTER
    radius_m: float = DEMO_RADIUS_M
    waypoints: list[tuple[float, float]] = field(default_factory=list)
    heading: float = 0.0
    speed: float = 0.0

    def go_to(self, lat: float, lng: float) -> None:
        """Replace the route with a street-grid route to (lat, lng)."""
        self.waypoints = grid_route(self.lat, self.lng, lat, lng, self.rng)

    def wander(self) -> None:
        """Pick a random destination inside the area when the route is finished."""
        if not self.waypoints:
            lat, lng = random_point(self.center, self.radius_m, self.rng)
            self.go_to(lat, lng)

    def arrived(self) -> bool:
        return not self.waypoints

    def step(self, dt_s: float) -> tuple[float, float]:
        """Advance `dt_s` seconds along the route at a jittered vehicle speed; return the new position."""
        base = SPEED_MPS.get(self.vehicle_type, 5.5)
        self.speed = max(0.5, self.rng.gauss(base, base * 0.2))
        budget = self.speed * dt_s
        while budget > 0 and self.waypoints:
            tlat, tlng = self.waypoints[0]
            gap = haversine_m(self.lat, self.lng, tlat, tlng)
            if gap <= budget:
                self.heading = bearing_deg(self.lat, self.lng, tlat, tlng) if gap > 0.5 else self.heading
                self.lat, self.lng = tlat, tlng
                self.waypoints.pop(0)
                budget -= gap
            else:
                self.heading = bearing_deg(self.lat, self.lng, tlat, tlng)
                self.lat, self.lng = destination(self.lat, self.lng, self.heading, budget)
                budget = 0
        if not self.waypoints:
            self.speed = 0.0
        return self.lat, self.lng


def random_point(center: tuple[float, float], radius_m: float, rng: random.Random) -> tuple[float, float]:
    """A uniformly distributed point within `radius_m` of `center`."""
    dist = radius_m * math.sqrt(rng.random())
    return destination(center[0], center[1], rng.uniform(0, 360), dist)


def grid_route(lat1: float, lng1: float, lat2: float, lng2: float,
               rng: random.Random) -> list[tuple[float, float]]:
    """Waypoints from point 1 to point 2 along alternating north-south and east-west legs."""
    points: list[tuple[float, float]] = []
    lat, lng = lat1, lng1
    dlat_block = BLOCK_M / 111_320.0
    while True:
        lat_gap, lng_gap = lat2 - lat, lng2 - lng
        if abs(lat_gap) < dlat_block / 2 and abs(lng_gap) < dlat_block / 2:
            break
        blocks = rng.randint(2, 8) * dlat_block
        # Alternate direction, choosing the axis with more distance left more often.
        if abs(lat_gap) > abs(lng_gap) * rng.uniform(0.5, 1.5):
            lat += math.copysign(min(blocks, abs(lat_gap)), lat_gap)
        else:
            lng += math.copysign(min(blocks, abs(lng_gap)), lng_gap)
        points.append((lat, lng))
        if len(points) > 200:
            break
    points.append((lat2, lng2))
    return points
