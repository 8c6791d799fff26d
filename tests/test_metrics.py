"""GET /api/metrics: Prometheus text that moves with requests, pings and offers, read by admins and
local scrapers only; and the access log line each request leaves."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.logs import make_handler
from tests.dispatch_helpers import CENTER, Env, start_env
from tests.helpers import bearer

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]
RELAYED = {"X-Forwarded-For": "203.0.113.7"}  # as nginx would send it: not a local scraper


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with session.get(f"{url}/api/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        return samples(await resp.text())


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """The JSON lines `partypilot.access` writes while the test runs."""
    stream = io.StringIO()
    handler = make_handler(json_lines=True, stream=stream)
    log = logging.getLogger("partypilot.access")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield stream
    log.removeHandler(handler)
    log.setLevel(level)


async def test_counters_move_with_requests_pings_and_offers(start_env: StartEnv) -> None:
    env = await start_env()
    async with aiohttp.ClientSession() as http:
        before = await scrape(http, env.url)
        partner, sock = await env.partner(*CENTER)
        refused = await sock.call("location", {"lat": CENTER[0], "lng": CENTER[1], "ts": 1})
        code = refused["error"]["code"]
        admin = await env.sock(env.token("admin-1", "admin"))
        assert admin.client.connected
        _, oid = await env.order(*CENTER)
        offer = await sock.wait_for("offer")
        assert offer["order_id"] == oid
        assert (await sock.call("offer_reply", {"order_id": oid, "accept": True}))["ok"]
        for _ in range(3):
            async with http.get(f"{env.url}/api/orders/{oid}?t=secret-token") as resp:
                assert resp.status == 401
        after = await scrape(http, env.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("partypilot_http_requests_total", method="GET", route="/api/orders/{id}", status="401") == 3
    assert moved("partypilot_http_request_duration_seconds_count", method="GET", route="/api/orders/{id}",
                 status="401") == 3
    assert moved("partypilot_location_fixes_total", outcome="accepted") >= 1
    assert moved("partypilot_location_fixes_total", outcome=code) == 1
    assert moved("partypilot_offers_total", outcome="offered") >= 1
    assert moved("partypilot_offers_total", outcome="accepted") == 1
    assert value(after, "partypilot_sockets", role="partner") == 1
    assert value(after, "partypilot_sockets", role="admin") == 1
    assert value(after, "partypilot_sockets", role="customer") == 0
    assert ("partypilot_outbox_depth", frozenset({("lane", "code")})) in after
    # The fleet map ticks about once a second.
    async with aiohttp.ClientSession() as http, asyncio.timeout(5):
        while moved("partypilot_fleet_tick_duration_seconds_count") < 1:
            await asyncio.sleep(0.2)
            after = await scrape(http, env.url)
    assert not any("secret-token" in str(key) for key in after)
    assert partner


async def test_only_admins_and_local_scrapers_may_read_metrics(start_env: StartEnv) -> None:
    env = await start_env()
    async with aiohttp.ClientSession() as http:
        # Relayed by a proxy: loopback no longer counts.
        for headers, status in ((RELAYED, 403), ({**RELAYED, **bearer(env.token("c1", "customer"))}, 403),
                                ({**RELAYED, **bearer("not-a-token")}, 401),
                                ({**RELAYED, **bearer(env.token("a1", "admin"))}, 200)):
            async with http.get(f"{env.url}/api/metrics", headers=headers) as resp:
                assert resp.status == status, (headers, await resp.text())
                if status != 200:
                    body = await resp.json()
                    assert body["error"]["code"] in ("forbidden", "invalid_token", "unauthorized")
        async with http.get(f"{env.url}/api/metrics") as resp:
            assert resp.status == 200
            assert "partypilot_http_requests_total" in await resp.text()
        async with http.get(f"{env.url}/api/openapi.json") as resp:
            op = (await resp.json())["paths"]["/api/metrics"]["get"]
        assert op["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
        assert {"401", "403"} <= set(op["responses"])


async def test_each_request_leaves_one_json_access_line_without_ids_or_tokens(
        start_env: StartEnv, access_log: io.StringIO) -> None:
    env = await start_env()
    token = env.token("cust-7", "customer")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{env.url}/api/orders/o-123?t=tracking-secret", headers={
                **bearer(token), "X-Request-ID": "req-access-1"}) as resp:
            assert resp.status == 404
        async with http.get(f"{env.url}/api/no/such/path") as resp:
            assert resp.status == 404
    lines = [orjson.loads(line) for line in access_log.getvalue().splitlines()]
    mine = [line for line in lines if line["request_id"] == "req-access-1"]
    assert len(mine) == 1
    line: dict[str, Any] = mine[0]
    assert line["logger"] == "partypilot.access"
    assert (line["method"], line["route"], line["status"], line["user_id"]) == ("GET", "/api/orders/{id}", 404,
                                                                                 "cust-7")
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    text = access_log.getvalue()
    assert "o-123" not in text and "tracking-secret" not in text and token not in text
    assert any(entry["route"] == "unmatched" and entry["status"] == 404 for entry in lines)
