"""Service areas: named GeoJSON polygons and the question "which area is this point in?"."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shapely.geometry import Point, shape
from shapely.prepared import prep

__all__ = ["DEFAULT_AREAS_FILE", "ServiceArea", "ServiceAreas", "approximate"]

DEFAULT_AREAS_FILE = Path(__file__).resolve().parent / "data" / "service_areas.geojson"

# 0.01 degree of latitude is about 1.1 km; of longitude, about 1.1 km * cos(lat). Coarse enough
# to hide a street address, fine enough to judge the trip.
_APPROX_STEP_DEG = 0.01


@dataclass(frozen=True)
class ServiceArea:
    """One polygon (or multipolygon) we serve, with the city it belongs to."""

    name: str
    city: str
    geometry: Any  # a shapely geometry
    prepared: Any  # the same geometry, prepared for fast repeated point tests
    timezone: str = "UTC"  # IANA name: arrival windows are local times of the area

    def covers(self, lat: float, lng: float) -> bool:
        # GeoJSON and shapely put longitude first.
        return bool(self.prepared.covers(Point(lng, lat)))


class ServiceAreas:
    """The configured set of areas; a point belongs to the first area that covers it."""

    def __init__(self, areas: list[ServiceArea]) -> None:
        self.areas = areas

    @classmethod
    def from_geojson(cls, data: Mapping[str, Any]) -> ServiceAreas:
        """Build from a FeatureCollection (or one Feature) of Polygons/MultiPolygons."""
        features = data.get("features") if data.get("type") == "FeatureCollection" else [data]
        if not isinstance(features, list) or not features:
            raise ValueError("service areas: expected a FeatureCollection with at least one feature")
        areas: list[ServiceArea] = []
        for index, feature in enumerate(features):
            if not isinstance(feature, Mapping) or not isinstance(feature.get("geometry"), Mapping):
                raise ValueError(f"service areas: feature {index} has no geometry")
            geometry = shape(feature["geometry"])
            if geometry.geom_type not in ("Polygon", "MultiPolygon") or not geometry.is_valid:
                raise ValueError(f"service areas: feature {index} is not a valid polygon")
            props = feature.get("properties") or {}
            name = str(props.get("name") or f"area-{index + 1}")
            city = str(props.get("city") or name)
            timezone = str(props.get("timezone") or "UTC")
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"service areas: feature {index} names an unknown time zone {timezone!r}") from None
            areas.append(ServiceArea(name=name, city=city, geometry=geometry, prepared=prep(geometry),
                                     timezone=timezone))
        return cls(areas)

    @classmethod
    def load(cls, path: Path | None = None) -> ServiceAreas:
        """Read a GeoJSON file; the bundled demo areas when `path` is None."""
        target = path or DEFAULT_AREAS_FILE
        return cls.from_geojson(json.loads(target.read_text(encoding="utf-8")))

    def locate(self, lat: float, lng: float) -> ServiceArea | None:
        for area in self.areas:
            if area.covers(lat, lng):
                return area
        return None

    @property
    def cities(self) -> list[str]:
        return sorted({area.city for area in self.areas})


def approximate(lat: float, lng: float) -> tuple[float, float]:
    """The point snapped to a ~1 km grid: what a partner sees before accepting an order."""
    return (round(round(lat / _APPROX_STEP_DEG) * _APPROX_STEP_DEG, 2),
            round(round(lng / _APPROX_STEP_DEG) * _APPROX_STEP_DEG, 2))
