"""Great-circle distance, initial bearing and bounding boxes on a spherical Earth."""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8

# (min_lng, min_lat, max_lng, max_lat), the GeoJSON order used on the wire.
BBox = tuple[float, float, float, float]


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Distance in metres between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Initial compass bearing from point 1 to point 2, in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return (math.degrees(math.atan2(x, y)) + 360.0) % 360.0


def destination(lat: float, lng: float, bearing: float, distance_m: float) -> tuple[float, float]:
    """The point reached from (lat, lng) after `distance_m` along `bearing` degrees."""
    delta = distance_m / EARTH_RADIUS_M
    theta = math.radians(bearing)
    p1, l1 = math.radians(lat), math.radians(lng)
    p2 = math.asin(math.sin(p1) * math.cos(delta) + math.cos(p1) * math.sin(delta) * math.cos(theta))
    l2 = l1 + math.atan2(math.sin(theta) * math.sin(delta) * math.cos(p1),
                         math.cos(delta) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def bbox_around(lat: float, lng: float, radius_m: float) -> BBox:
    """The smallest box (min_lng, min_lat, max_lng, max_lat) holding a circle of `radius_m`."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlng = math.degrees(radius_m / (EARTH_RADIUS_M * max(math.cos(math.radians(lat)), 1e-9)))
    return (max(-180.0, lng - dlng), max(-90.0, lat - dlat), min(180.0, lng + dlng), min(90.0, lat + dlat))


def in_bbox(lat: float, lng: float, box: BBox) -> bool:
    """Whether the point lies inside `box` (edges included; boxes do not cross the antimeridian)."""
    min_lng, min_lat, max_lng, max_lat = box
    return min_lat <= lat <= max_lat and min_lng <= lng <= max_lng


def valid_bbox(box: BBox) -> bool:
    """Whether `box` is well-formed: in range and min below max."""
    min_lng, min_lat, max_lng, max_lat = box
    return (-180.0 <= min_lng <= max_lng <= 180.0) and (-90.0 <= min_lat <= max_lat <= 90.0)


def bbox_center_and_size(box: BBox) -> tuple[float, float, float, float]:
    """(center_lat, center_lng, width_m, height_m) of a search box holding `box`, for a Redis
    GEOSEARCH BYBOX, which measures a point's east-west offset at the point's own latitude: the
    width is taken where `box` is widest (nearest the equator), so no corner is cut off; callers
    filter the results with `in_bbox`. Meaningless for 180 degrees of longitude or more."""
    min_lng, min_lat, max_lng, max_lat = box
    clat, clng = (min_lat + max_lat) / 2, (min_lng + max_lng) / 2
    widest = min(max(0.0, min_lat), max_lat)
    width = haversine_m(widest, min_lng, widest, max_lng)
    height = haversine_m(min_lat, clng, max_lat, clng)
    return clat, clng, width, height
