"""Address search and reverse lookup: Google's Geocoding API, or the bundled gazetteer offline.

Both answer with `geo.places.Place`s, so callers never know which one spoke. Google is asked
through the googlemaps SDK (synchronous: kept off the event loop); when it fails or times out, the
gazetteer answers instead, so a customer can always place a venue.

Why geocoding and not Places autocomplete: the SDK's `places_autocomplete` calls the legacy Places
API, which new Google Cloud projects can no longer enable, and the SDK has no client for Places
API (New). The Geocoding API is current, takes partial addresses, and returns coordinates in the
same answer (autocomplete would need a second call per pick for them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from geo.distance import haversine_m
from geo.places import Gazetteer, Place

__all__ = ["GooglePlaces", "LocalPlaces", "Places", "Source", "make_places"]

logger = logging.getLogger(__name__)

Source = Literal["google", "gazetteer"]
Bounds = tuple[float, float, float, float]  # south, west, north, east

# Address components that make up the first address line, in the order they are written.
_LINE1_PARTS = ("subpremise", "premise", "street_number", "route", "neighborhood", "sublocality_level_3",
                "sublocality_level_2", "sublocality_level_1")
_STREET_PARTS = ("subpremise", "premise", "street_number", "route")
_KIND_BY_TYPE = (("street_address", "address"), ("premise", "address"), ("route", "road"),
                 ("point_of_interest", "landmark"), ("establishment", "landmark"), ("sublocality", "locality"),
                 ("neighborhood", "locality"), ("locality", "locality"), ("postal_code", "locality"))


class Places(Protocol):
    source: Source

    async def search(self, text: str, limit: int) -> tuple[list[Place], Source]:
        """Places matching what was typed, best first, and who answered."""
        ...

    async def reverse(self, lat: float, lng: float) -> tuple[Place | None, float | None, Source]:
        """A name for the position (None when there is none), its distance in metres, who answered."""
        ...

    def close(self) -> None:
        """Release connections (at shutdown)."""
        ...


@functools.cache
def bundled_gazetteer() -> Gazetteer:
    """Parsed once per process: every app built in it (tests build many) shares the same one."""
    return Gazetteer.load()


class LocalPlaces:
    """The bundled gazetteer of the demo city: works offline, costs nothing."""

    source: Source = "gazetteer"

    def __init__(self, gazetteer: Gazetteer | None = None) -> None:
        self.gazetteer = gazetteer or bundled_gazetteer()

    async def search(self, text: str, limit: int) -> tuple[list[Place], Source]:
        return self.gazetteer.search(text, limit), "gazetteer"

    async def reverse(self, lat: float, lng: float) -> tuple[Place | None, float | None, Source]:
        found = self.gazetteer.describe(lat, lng)
        return (found[0], found[1], "gazetteer") if found else (None, None, "gazetteer")

    def close(self) -> None:
        """Nothing to release."""


def _component(components: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    for component in components:
        if kind in (component.get("types") or ()):
            return str(component.get("long_name") or "") or None
    return None


def place_from_google(result: Mapping[str, Any]) -> Place | None:
    """One geocoding result as a Place; None when it lacks a position."""
    location = (result.get("geometry") or {}).get("location") or {}
    try:
        lat, lng = float(location["lat"]), float(location["lng"])
    except (KeyError, TypeError, ValueError):
        return None
    components = result.get("address_components") or []
    formatted = str(result.get("formatted_address") or "")
    parts: list[str] = []
    for kind in _LINE1_PARTS:
        value = _component(components, kind)
        if value and value not in parts:
            parts.append(value)
    city = (_component(components, "locality") or _component(components, "administrative_area_level_2")
            or _component(components, "administrative_area_level_1") or "")
    line1 = ", ".join(parts) or formatted.split(",")[0].strip() or city
    types = set(result.get("types") or ())
    kind = next((name for google_type, name in _KIND_BY_TYPE if google_type in types), "address")
    # The building and street ("12, Mahatma Gandhi Road") name an address; else its first part does.
    street = [v for k in _STREET_PARTS if (v := _component(components, k))]
    name = ", ".join(street) if street else (parts[0] if parts else line1)
    return Place(id=f"google:{result.get('place_id') or f'{lat:.6f},{lng:.6f}'}", name=name,
                 kind=kind, label=formatted or line1, line1=line1[:200], city=city[:80],
                 postal_code=_component(components, "postal_code"), lat=lat, lng=lng)


class GooglePlaces:
    """Google's Geocoding API through the googlemaps SDK, biased to the service areas; the
    gazetteer answers whenever Google fails."""

    source: Source = "google"

    def __init__(self, api_key: str, base_url: str | None = None, *, bounds: Bounds | None = None,
                 fallback: LocalPlaces | None = None, timeout_s: float = 3.0) -> None:
        import googlemaps

        kwargs: dict[str, Any] = {"key": api_key, "timeout": timeout_s, "retry_timeout": timeout_s}
        if base_url:
            kwargs["base_url"] = base_url.rstrip("/")
        self.client = googlemaps.Client(**kwargs)
        self.bounds = bounds
        self.fallback = fallback or LocalPlaces()

    async def search(self, text: str, limit: int) -> tuple[list[Place], Source]:
        kwargs: dict[str, Any] = {}
        if self.bounds is not None:
            south, west, north, east = self.bounds
            kwargs["bounds"] = {"southwest": (south, west), "northeast": (north, east)}
        try:
            results = await asyncio.to_thread(self.client.geocode, text, **kwargs)
        except Exception as exc:
            logger.warning("geocoding failed, answering from the gazetteer: %s", type(exc).__name__)
            return await self.fallback.search(text, limit)
        places = [place for place in map(place_from_google, results or []) if place is not None]
        return places[:limit], "google"

    async def reverse(self, lat: float, lng: float) -> tuple[Place | None, float | None, Source]:
        try:
            results = await asyncio.to_thread(self.client.reverse_geocode, (lat, lng))
        except Exception as exc:
            logger.warning("reverse geocoding failed, answering from the gazetteer: %s", type(exc).__name__)
            return await self.fallback.reverse(lat, lng)
        for result in results or []:
            place = place_from_google(result)
            if place is not None:
                return place, haversine_m(lat, lng, place.lat, place.lng), "google"
        return None, None, "google"

    def close(self) -> None:
        """Close the SDK's HTTP session (its keep-alive connections)."""
        self.client.session.close()


def make_places(google_api_key: str | None, base_url: str | None = None, *,
                bounds: Bounds | None = None) -> Places:
    """The configured implementation: Google when a key is set, the gazetteer otherwise."""
    if google_api_key:
        return GooglePlaces(google_api_key, base_url, bounds=bounds)
    return LocalPlaces()
