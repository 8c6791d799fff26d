"""Picking a venue: address search and reverse lookup (the gazetteer offline, Google's Geocoding API
through the real googlemaps SDK against a fake on loopback), and the published service areas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

import api
from api import places
from api.openapi import build_openapi
from api.places import LOOKUPS_PER_MINUTE, PlaceSearchAnswer, PlaceView, ReverseAnswer
from core.settings import Settings
from geo.areas import ServiceAreas
from geo.places import Gazetteer
from partypilot.app import create_app
from tests.fakes.geocoding import FakeGeocoding

CENTRAL = "Bengaluru Central"


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return Gazetteer.load()


# --- the gazetteer ---------------------------------------------------------------------------------

def test_the_bundled_gazetteer_names_hundreds_of_places_in_and_around_the_demo_city(gazetteer: Gazetteer) -> None:
    assert len(gazetteer.places) >= 250
    assert {p.kind for p in gazetteer.places} == {"locality", "road", "landmark"}
    for place in gazetteer.places:
        assert 12.6 < place.lat < 13.45 and 77.3 < place.lng < 77.9, place
        assert place.postal_code is not None and len(place.postal_code) == 6 and place.postal_code.isdigit(), place
        assert place.city == "Bengaluru" and place.line1.startswith(place.name)
    areas = ServiceAreas.load()
    served = sum(1 for p in gazetteer.places if areas.locate(p.lat, p.lng))
    assert served > 0.9 * len(gazetteer.places)  # and a few outside, to say "not yet" about
    assert served < len(gazetteer.places)


@pytest.mark.parametrize(("typed", "first"), [
    ("kora", "Koramangala"),                         # a prefix, still being typed
    ("koramangla", "Koramangala"),                   # a typo
    ("Indira nagar", "Indiranagar"),                 # spelt apart
    ("indiranagr", "Indiranagar"),
    ("white field", "Whitefield"),
    ("12 MG Road, Bengaluru", "MG Road"),            # a house number and the city: nobody's name
    ("Mahatma Gandhi Rd", "MG Road"),                # an alias, abbreviated
    ("5th block koramangala", "Koramangala 5th Block"),
    ("koramangala 5 blk", "Koramangala 5th Block"),  # the 5th Block, not the 1st
    ("hsr", "HSR Layout"),
    ("majestic", "Kempegowda Bus Station"),
    ("lalbag", "Lalbagh Botanical Garden"),
    ("St. John's", "St John's Medical College"),
    ("560034", "Koramangala"),                       # a PIN code names its area
    ("MALLESWARAM", "Malleshwaram"),
])
def test_search_forgives_what_people_type(gazetteer: Gazetteer, typed: str, first: str) -> None:
    found = gazetteer.search(typed)
    assert found, typed
    assert found[0].name == first, (typed, [p.name for p in found])


def test_search_finds_nothing_for_nonsense_or_only_the_city(gazetteer: Gazetteer) -> None:
    assert gazetteer.search("xyzzy qwerty") == []
    assert gazetteer.search("Bengaluru, Karnataka") == []
    assert gazetteer.search("   ") == []
    assert len(gazetteer.search("road", limit=3)) == 3


def test_reverse_lookup_names_the_nearest_landmark_or_the_locality(gazetteer: Gazetteer) -> None:
    ub_city = next(p for p in gazetteer.places if p.name == "UB City")
    found = gazetteer.describe(ub_city.lat, ub_city.lng)
    assert found is not None
    place, distance = found
    assert place.line1 == "Near UB City, Ashok Nagar" and place.postal_code == "560001" and distance < 1
    assert place.kind == "nearby" and (place.lat, place.lng) == (ub_city.lat, ub_city.lng)
    # No road or landmark within a few hundred metres: the neighbourhood names it.
    yelahanka = gazetteer.describe(13.1007, 77.5963)
    assert yelahanka is not None and yelahanka[0].line1 == "Yelahanka" and yelahanka[0].postal_code == "560064"
    assert gazetteer.describe(0.0, 0.0) is None
    assert gazetteer.describe(12.60, 77.10) is None


# --- the routes, offline ---------------------------------------------------------------------------

async def test_search_answers_places_with_the_area_they_lie_in(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/places/search", params={"q": "  kora ", "limit": "3"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["query"] == "kora" and body["source"] == "gazetteer" and len(body["places"]) == 3
    first = body["places"][0]
    assert first["name"] == "Koramangala" and first["area"] == CENTRAL and first["kind"] == "locality"
    assert set(first) == {"id", "name", "kind", "label", "line1", "city", "postal_code", "lat", "lng", "area"}
    assert first["label"] == "Koramangala, Bengaluru 560034" and first["postal_code"] == "560034"
    # Outside every service area: found, and said to be not served yet.
    resp = await client.get("/api/places/search", params={"q": "nandi hills"})
    assert (await resp.json())["places"][0]["area"] is None
    # Nothing matches: an empty list, not an error.
    resp = await client.get("/api/places/search", params={"q": "xyzzy"})
    assert resp.status == 200 and (await resp.json())["places"] == []
    resp = await client.get("/api/places/search", params={"q": "   "})
    assert resp.status == 200 and await resp.json() == {"query": "", "source": "gazetteer", "places": []}


async def test_reverse_names_a_position_and_says_whether_it_is_served(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/places/reverse", params={"lat": "12.9716", "lng": "77.5962"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["lat"] == 12.9716 and body["area"] == CENTRAL and body["source"] == "gazetteer"
    assert body["place"]["line1"] == "Near UB City, Ashok Nagar" and body["distance_m"] == 0
    assert body["place"]["city"] == "Bengaluru" and body["place"]["postal_code"] == "560001"
    # The middle of the sea: nothing to call it, and not served.
    resp = await client.get("/api/places/reverse", params={"lat": "0", "lng": "0"})
    body = await resp.json()
    assert resp.status == 200 and body["place"] is None and body["distance_m"] is None and body["area"] is None


@pytest.mark.parametrize("query", [
    "", "?q=", "?q=" + "x" * 201, "?q=kora&limit=0", "?q=kora&limit=11", "?q=kora&limit=two",
    "?q=kora&q=indira", "?q=kora&page=1",
])
async def test_search_refuses_bad_queries_in_the_error_envelope(client: TestClient[Any, Any], query: str) -> None:
    resp = await client.get("/api/places/search" + query)
    assert resp.status == 422, (query, await resp.text())
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error" and error["details"], query


@pytest.mark.parametrize("query", [
    "", "?lat=12.97", "?lng=77.59", "?lat=91&lng=77", "?lat=12&lng=-181", "?lat=abc&lng=77", "?lat=nan&lng=77",
    "?lat=12&lng=inf", "?lat=1e400&lng=77", "?lat=true&lng=77", "?lat=12&lng=77&lat=13", "?lat=12&lng=77&x=1",
])
async def test_reverse_refuses_bad_positions_in_the_error_envelope(client: TestClient[Any, Any], query: str) -> None:
    resp = await client.get("/api/places/reverse" + query)
    assert resp.status == 422, (query, await resp.text())
    assert (await resp.json())["error"]["code"] == "validation_error", query


async def test_lookups_are_limited_per_client_address(client: TestClient[Any, Any]) -> None:
    for _ in range(LOOKUPS_PER_MINUTE):
        resp = await client.get("/api/places/search", params={"q": "indiranagar"})
        assert resp.status == 200
    resp = await client.get("/api/places/search", params={"q": "indiranagar"})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "rate_limited"
    # Each lookup has its own budget: naming the pin still works.
    resp = await client.get("/api/places/reverse", params={"lat": "12.97", "lng": "77.64"})
    assert resp.status == 200


async def test_service_areas_are_published_as_geojson_our_own_loader_reads_back(
        client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/service-areas")
    assert resp.status == 200
    assert resp.headers["Cache-Control"].startswith("public")
    body = await resp.json()
    assert body["type"] == "FeatureCollection"
    assert [f["properties"]["name"] for f in body["features"]] == [CENTRAL, "Bengaluru North (Airport corridor)"]
    first = body["features"][0]
    assert first["type"] == "Feature" and first["geometry"]["type"] == "Polygon"
    assert first["properties"] == {"name": CENTRAL, "city": "Bengaluru", "timezone": "Asia/Kolkata"}
    assert first["geometry"]["coordinates"][0][0] == [77.46, 12.84]  # GeoJSON order: longitude first
    areas = ServiceAreas.from_geojson(body)
    area = areas.locate(12.9716, 77.5946)
    assert area is not None and area.name == CENTRAL
    assert areas.locate(13.3702, 77.6835) is None  # Nandi Hills


def test_the_openapi_document_describes_the_new_routes() -> None:
    doc = build_openapi(api.all_routes(), "test")
    search = doc["paths"]["/api/places/search"]["get"]
    params = {p["name"]: p for p in search["parameters"]}
    assert params["q"]["required"] and params["q"]["schema"]["maxLength"] == 200
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 6}
    assert search["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PlaceSearchAnswer"}
    assert {"422", "429"} <= set(search["responses"]) and "security" not in search
    reverse = doc["paths"]["/api/places/reverse"]["get"]
    assert {p["name"] for p in reverse["parameters"]} == {"lat", "lng"}
    assert "Retry-After" in reverse["responses"]["429"]["headers"]
    areas = doc["paths"]["/api/service-areas"]["get"]["responses"]["200"]["content"]["application/json"]
    assert areas["schema"] == {"$ref": "#/components/schemas/ServiceAreaCollection"}
    assert "PlaceView" in doc["components"]["schemas"] and "AreaFeature" in doc["components"]["schemas"]


# --- the routes, with a Google key: the real SDK against a fake Google ------------------------------

async def _google_client(aiohttp_client: Any, aiohttp_server: Any, make_settings: Callable[..., Settings],
                         fake: FakeGeocoding) -> TestClient[Any, Any]:
    google = await aiohttp_server(fake.app())
    settings = make_settings(google_maps_api_key=fake.key, google_maps_api_base=f"http://127.0.0.1:{google.port}")
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def test_with_a_google_key_search_and_reverse_go_through_googles_geocoding(
        aiohttp_client: Any, aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis) -> None:
    fake = FakeGeocoding()
    client = await _google_client(aiohttp_client, aiohttp_server, make_settings, fake)
    resp = await client.get("/api/places/search", params={"q": "12 MG Road"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["source"] == "google"
    place = body["places"][0]
    assert place["id"] == "google:ChIJfake-12-mg-road" and place["kind"] == "address"
    assert place["name"] == "12, Mahatma Gandhi Road" and place["line1"] == "12, Mahatma Gandhi Road, Ashok Nagar"
    assert place["city"] == "Bengaluru" and place["postal_code"] == "560001" and place["area"] == CENTRAL
    asked = fake.requests[-1]
    assert asked["key"] == fake.key and asked["address"] == "12 MG Road"
    assert asked["bounds"] == "12.82,77.43|13.26,77.82"  # around the service areas: south-west|north-east

    resp = await client.get("/api/places/reverse", params={"lat": "12.9756", "lng": "77.605"})
    body = await resp.json()
    assert body["source"] == "google" and body["place"]["line1"] == "12, Mahatma Gandhi Road, Ashok Nagar"
    assert body["distance_m"] == 0 and body["area"] == CENTRAL
    assert fake.requests[-1]["latlng"] == "12.9756,77.605"

    resp = await client.get("/api/places/search", params={"q": "nowhere"})
    body = await resp.json()
    assert body["source"] == "google" and body["places"] == []


async def test_when_google_refuses_the_gazetteer_answers(
        aiohttp_client: Any, aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis) -> None:
    fake = FakeGeocoding()
    fake.deny = True
    client = await _google_client(aiohttp_client, aiohttp_server, make_settings, fake)
    resp = await client.get("/api/places/search", params={"q": "koramangala"})
    assert resp.status == 200
    body = await resp.json()
    assert body["source"] == "gazetteer" and body["places"][0]["name"] == "Koramangala"
    resp = await client.get("/api/places/reverse", params={"lat": "12.9716", "lng": "77.5962"})
    body = await resp.json()
    assert body["source"] == "gazetteer" and body["place"]["line1"] == "Near UB City, Ashok Nagar"
    assert len(fake.requests) == 2  # asked once each: a refusal is not retried


def test_docs_show_every_route_and_every_field_of_its_answers() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "places.md").read_text(encoding="utf-8")
    for route in places.routes.routes:
        assert f"`{route.method} /api{route.path}" in doc, route.path
    for model in (PlaceView, PlaceSearchAnswer, ReverseAnswer):
        for field in model.model_fields:
            assert f'"{field}"' in doc, (model.__name__, field)
