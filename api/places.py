"""/api/places and /api/service-areas: find a venue by address, name a position, and where we deliver.

Search and reverse lookup go through one `gateway_clients.places.Places` per process: Google's
Geocoding API when GOOGLE_MAPS_API_KEY is set, the bundled gazetteer of the demo city otherwise
(and whenever Google fails). Every place carries the service area it lies in, or null, so a client
can say "we deliver here" or "not yet" before an order is sent. docs/places.md shows the payloads.

Both lookups are public (a customer picks the venue before signing in is required) and limited per
client address: a typeahead sends a request every few keystrokes, and with Google each one costs
money. What was typed is an address, so it is never logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import mapping

from api import ratelimit
from api.orders import service_areas
from api.routing import RouteTable
from core import keys
from core.http import client_ip, json_response
from gateway_clients.places import Places, make_places
from geo.areas import ServiceAreas
from geo.places import Place

logger = logging.getLogger(__name__)

routes = RouteTable("places")

PLACES: web.AppKey[Places] = web.AppKey("places")
# Per client address and minute, for each lookup. Typing an address with a typeahead (a request per
# pause, about 250 ms apart) costs 10-30 searches; 120 leaves room for a few people behind one
# NAT while keeping a scraper from spending the Google quota.
LOOKUPS_PER_MINUTE = 120
# The service areas change only with a deploy: caches may keep them a while.
AREAS_CACHE_CONTROL = "public, max-age=300"


class PlaceSearchQuery(BaseModel):
    # Not stripped here: the length rules are the documented ones, on the text as sent.
    model_config = ConfigDict(extra="forbid")
    q: str = Field(min_length=1, max_length=200,
                   description="what the customer typed: a street, locality, landmark or PIN code; prefixes and "
                               "small typos are fine, house numbers and the city's name are ignored offline")
    limit: int = Field(6, ge=1, le=10, description="at most this many places")


class ReverseQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="latitude of the position to name")
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False, description="longitude of the position to name")


class PlaceView(BaseModel):
    id: str = Field(description="gz:… for the gazetteer, google:<place_id> for Google, near:… for a reverse lookup")
    name: str
    kind: str = Field(description="locality, road, landmark, address, or nearby (a reverse lookup's answer)")
    label: str = Field(description="one line to show in a list of suggestions")
    line1: str = Field(description="for the order's address.line1; the customer adds the house number")
    city: str = Field(description="for the order's address.city")
    postal_code: str | None = Field(description="for the order's address.postal_code, when known")
    lat: float
    lng: float
    area: str | None = Field(description="the service area the place lies in; null: we do not deliver there yet")


class PlaceSearchAnswer(BaseModel):
    query: str = Field(description="the query as searched (trimmed; blank finds nothing)")
    source: Literal["google", "gazetteer"] = Field(description="who answered")
    places: list[PlaceView] = Field(description="best first; empty when nothing matches")


class ReverseAnswer(BaseModel):
    lat: float = Field(description="the position asked about (a venue pin stays here, not at the named place)")
    lng: float
    area: str | None = Field(description="the service area the position lies in; null: not served yet")
    source: Literal["google", "gazetteer"]
    place: PlaceView | None = Field(description="what the position is called; null when nothing is near enough")
    distance_m: int | None = Field(description="metres from the position to the place it is named after")


class AreaProperties(BaseModel):
    name: str
    city: str
    timezone: str = Field(description="IANA time zone: arrival slots are local times of the area")


class AreaGeometry(BaseModel):
    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any] = Field(description="GeoJSON order: [longitude, latitude]")


class AreaFeature(BaseModel):
    type: Literal["Feature"]
    properties: AreaProperties
    geometry: AreaGeometry


class ServiceAreaCollection(BaseModel):
    """A GeoJSON FeatureCollection (RFC 7946): one Feature per service area."""

    type: Literal["FeatureCollection"]
    features: list[AreaFeature]


def _bounds(areas: ServiceAreas) -> tuple[float, float, float, float] | None:
    """South, west, north, east around every area: where Google should look first."""
    if not areas.areas:
        return None
    boxes = [area.geometry.bounds for area in areas.areas]  # (min lng, min lat, max lng, max lat)
    return (min(b[1] for b in boxes), min(b[0] for b in boxes), max(b[3] for b in boxes), max(b[2] for b in boxes))


async def places_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build this process's address search (Google or the gazetteer); close it at shutdown."""
    settings = app[keys.SETTINGS]
    key = settings.google_maps_api_key.get_secret_value() if settings.google_maps_api_key else None
    places = make_places(key, settings.google_maps_api_base, bounds=_bounds(service_areas(settings.service_areas_file)))
    app[PLACES] = places
    logger.info("address search: %s", places.source)
    yield
    places.close()


CONTEXTS = [places_ctx]


def _areas(request: web.Request) -> ServiceAreas:
    return service_areas(request.config_dict[keys.SETTINGS].service_areas_file)


def place_view(place: Place, areas: ServiceAreas) -> dict[str, Any]:
    area = areas.locate(place.lat, place.lng)
    return {"id": place.id, "name": place.name, "kind": place.kind, "label": place.label, "line1": place.line1,
            "city": place.city, "postal_code": place.postal_code, "lat": place.lat, "lng": place.lng,
            "area": area.name if area else None}


async def _count(request: web.Request, purpose: str) -> None:
    settings = request.config_dict[keys.SETTINGS]
    client = ratelimit.address_key(client_ip(request, settings.trust_proxy))
    await ratelimit.hit(request.config_dict[keys.REDIS], f"{purpose}:ip:{client}", LOOKUPS_PER_MINUTE, 60,
                        message="too many address lookups in the last minute; try again shortly")


@routes.get("/places/search", summary="Places matching what the customer typed, to pick the venue from",
            query=PlaceSearchQuery, response=PlaceSearchAnswer,
            responses={429: "too many lookups from this address in the last minute"})
async def search_places(request: web.Request, *, query: PlaceSearchQuery) -> web.Response:
    """Suggestions for the venue's address as the customer types, each with the service area it lies in."""
    await _count(request, "places-search")
    text = query.q.strip()
    lookup = request.config_dict[PLACES]
    places, source = await lookup.search(text, query.limit) if text else ([], lookup.source)
    areas = _areas(request)
    return json_response({"query": text, "source": source, "places": [place_view(p, areas) for p in places]})


@routes.get("/places/reverse", summary="What a position is called, and whether we deliver there",
            query=ReverseQuery, response=ReverseAnswer,
            responses={429: "too many lookups from this address in the last minute"})
async def reverse_place(request: web.Request, *, query: ReverseQuery) -> web.Response:
    """For "use my location" and a tap on the map: a name to fill the address with. A position with no
    name near it answers 200 with `place: null`."""
    await _count(request, "places-reverse")
    place, distance, source = await request.config_dict[PLACES].reverse(query.lat, query.lng)
    areas = _areas(request)
    area = areas.locate(query.lat, query.lng)
    return json_response({"lat": query.lat, "lng": query.lng, "area": area.name if area else None, "source": source,
                          "place": place_view(place, areas) if place else None,
                          "distance_m": round(distance) if distance is not None else None})


def areas_geojson(areas: ServiceAreas) -> dict[str, Any]:
    """The service areas as a GeoJSON FeatureCollection."""
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": area.name, "city": area.city, "timezone": area.timezone},
         "geometry": mapping(area.geometry)} for area in areas.areas]}


@routes.get("/service-areas", summary="Where we deliver: the service areas as GeoJSON",
            response=ServiceAreaCollection)
async def list_service_areas(request: web.Request) -> web.Response:
    """The polygons an order's venue must lie in, for drawing on a map. Coordinates are [lng, lat]."""
    return json_response(areas_geojson(_areas(request)), headers={"Cache-Control": AREAS_CACHE_CONTROL})
