"""With a Google Maps key, candidates are ranked by the distance matrix (the real googlemaps SDK
against a fake Google on loopback); without one, or when Google fails, by the speed model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway_clients.maps import GoogleTravelTimes, LocalTravelTimes
from geo.distance import destination
from tests.dispatch_helpers import CENTER, Env, start_env

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]
KEY = "AIzaTEST-not-a-real-key"


def fake_google(requests: list[dict[str, str]]) -> web.Application:
    """Distance matrix: anything north of the pickup is stuck in traffic (900 s), the rest 60 s."""

    async def matrix(request: web.Request) -> web.Response:
        requests.append(dict(request.query))
        rows = []
        for origin in request.query["origins"].split("|"):
            lat = float(origin.split(",")[0])
            seconds = 900 if lat > CENTER[0] + 0.001 else 60
            rows.append({"elements": [{"status": "OK", "duration": {"value": seconds, "text": ""},
                                       "distance": {"value": 1000, "text": ""}}]})
        return web.json_response({"status": "OK", "rows": rows, "origin_addresses": [],
                                  "destination_addresses": []})

    app = web.Application()
    app.router.add_get("/maps/api/distancematrix/json", matrix)
    return app


async def test_google_travel_times_decide_the_ranking(start_env: StartEnv, aiohttp_server: Any) -> None:
    calls: list[dict[str, str]] = []
    google = await aiohttp_server(fake_google(calls))
    env = await start_env(google_maps_api_key=KEY, google_maps_api_base=f"http://127.0.0.1:{google.port}")
    _, north = await env.partner(*destination(CENTER[0], CENTER[1], 0, 300))
    east_id, east = await env.partner(*destination(CENTER[0], CENTER[1], 90, 1500))
    _, oid = await env.order(*CENTER)
    offer = await east.wait_for("offer")
    assert offer["order_id"] == oid and offer["eta_s"] == 60
    assert not north.events["offer"]
    assert calls and calls[0]["key"] == KEY and calls[0]["mode"] == "driving"
    ranked = (await env.audited(oid, "candidates"))["data"]["candidates"]
    assert ranked[0]["partner_id"] == east_id and [c["eta_s"] for c in ranked] == [60, 900]


async def test_google_failures_fall_back_to_the_speed_model() -> None:
    google = GoogleTravelTimes(KEY, base_url="http://127.0.0.1:9", timeout_s=0.5)
    origins = [destination(CENTER[0], CENTER[1], 0, 1000)]
    assert await google.etas(origins, CENTER, ["car"]) == await LocalTravelTimes().etas(origins, CENTER, ["car"])
    google.close()  # the engine calls this at shutdown; it must not fail after a failed request
