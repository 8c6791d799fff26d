"""A small stand-in for Google's Geocoding API on loopback, spoken to by the real googlemaps SDK."""

from __future__ import annotations

from typing import Any

from aiohttp import web

# One address, as Google answers it (trimmed to the fields clients read).
MG_ROAD: dict[str, Any] = {
    "place_id": "ChIJfake-12-mg-road",
    "formatted_address": "12, Mahatma Gandhi Road, Ashok Nagar, Bengaluru, Karnataka 560001, India",
    "types": ["street_address"],
    "geometry": {"location": {"lat": 12.9756, "lng": 77.605}, "location_type": "ROOFTOP"},
    "address_components": [
        {"long_name": "12", "short_name": "12", "types": ["street_number"]},
        {"long_name": "Mahatma Gandhi Road", "short_name": "MG Road", "types": ["route"]},
        {"long_name": "Ashok Nagar", "short_name": "Ashok Nagar",
         "types": ["political", "sublocality", "sublocality_level_2"]},
        {"long_name": "Bengaluru", "short_name": "Bengaluru", "types": ["locality", "political"]},
        {"long_name": "Bangalore Urban", "short_name": "Bangalore Urban",
         "types": ["administrative_area_level_2", "political"]},
        {"long_name": "Karnataka", "short_name": "KA", "types": ["administrative_area_level_1", "political"]},
        {"long_name": "India", "short_name": "IN", "types": ["country", "political"]},
        {"long_name": "560001", "short_name": "560001", "types": ["postal_code"]},
    ],
}


class FakeGeocoding:
    """GET /maps/api/geocode/json with `address` (search) or `latlng` (reverse), as Google answers it.

    Every address finds MG_ROAD except "nowhere" (ZERO_RESULTS); every position is named MG_ROAD.
    With `deny` set, Google refuses the key (REQUEST_DENIED). Queries are kept in `requests`.
    """

    def __init__(self, key: str = "AIzaTEST-not-a-real-key") -> None:
        self.key = key
        self.deny = False
        self.requests: list[dict[str, str]] = []

    async def geocode(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append(query)
        if self.deny or query.get("key") != self.key:
            return web.json_response({"status": "REQUEST_DENIED", "results": [],
                                      "error_message": "The provided API key is invalid."})
        if query.get("address", "").strip().lower() == "nowhere":
            return web.json_response({"status": "ZERO_RESULTS", "results": []})
        return web.json_response({"status": "OK", "results": [MG_ROAD]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/maps/api/geocode/json", self.geocode)
        return app
