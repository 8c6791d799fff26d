"""One-time codes: lifetime, lockout, single use, binding, cooldown and rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api import otp
from core import keys
from core.jsonutil import now_ms
from core.settings import Settings
from partypilot.app import create_app
from tests.fakes import app_of, latest_code

PHONE = "+919876543210"


async def send(client: TestClient[Any, Any], **destination: str) -> Any:
    return await client.post("/api/auth/send-otp", json=destination)


async def verify(client: TestClient[Any, Any], code: str, **destination: str) -> Any:
    return await client.post("/api/auth/verify-otp", json={**destination, "code": code})


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_codes_are_six_digits_from_the_whole_range() -> None:
    codes = [otp.new_code() for _ in range(3000)]
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(set(codes)) > 2900  # no small pool
    assert any(c.startswith("0") for c in codes)  # leading zeros are kept, not dropped


async def test_a_code_dies_after_five_wrong_tries(client: TestClient[Any, Any]) -> None:
    await send(client, phone=PHONE)
    code = await latest_code(app_of(client), "sms", PHONE)
    for _ in range(5):
        resp = await verify(client, wrong(code), phone=PHONE)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_code"
    resp = await verify(client, code, phone=PHONE)  # the right code, too late
    assert resp.status == 400
    assert await app_of(client)[keys.DB].otp_codes.count_documents({}) == 0


async def test_four_wrong_tries_still_leave_the_right_code_usable(client: TestClient[Any, Any]) -> None:
    await send(client, email="four@example.com")
    code = await latest_code(app_of(client), "email", "four@example.com")
    for _ in range(4):
        assert (await verify(client, wrong(code), email="four@example.com")).status == 400
    assert (await verify(client, code, email="four@example.com")).status == 200


async def test_an_expired_code_is_refused_even_before_the_ttl_monitor_runs(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    await send(client, phone=PHONE)
    code = await latest_code(app, "sms", PHONE)
    # Expiry is checked in code: move only the checked field into the past.
    await app[keys.DB].otp_codes.update_one({}, {"$set": {"expires_ms": now_ms() - 1}})
    assert (await verify(client, code, phone=PHONE)).status == 400


async def test_short_lifetime_from_settings(aiohttp_client: Any, make_settings: Callable[..., Settings],
                                            redis: Any) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(otp_ttl_s=1)))
    resp = await send(client, phone=PHONE)
    assert (await resp.json())["expires_in"] == 1
    code = await latest_code(app_of(client), "sms", PHONE)
    doc = await app_of(client)[keys.DB].otp_codes.find_one({})
    assert doc is not None and doc["expires_ms"] - now_ms() <= 1000
    await asyncio.sleep(max(doc["expires_ms"] - now_ms(), 0) / 1000 + 0.05)
    assert (await verify(client, code, phone=PHONE)).status == 400


async def test_a_code_is_bound_to_its_destination(client: TestClient[Any, Any]) -> None:
    await send(client, phone=PHONE)
    await send(client, phone="+919876500001")
    code = await latest_code(app_of(client), "sms", PHONE)
    assert (await verify(client, code, phone="+919876500001")).status == 400
    assert (await verify(client, code, phone=PHONE)).status == 200


async def test_resend_is_throttled_then_replaces_the_earlier_code(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    await send(client, phone=PHONE)
    first = await latest_code(app, "sms", PHONE)
    again = await send(client, phone=PHONE)
    assert again.status == 429
    body = await again.json()
    assert body["error"]["code"] == "cooldown"
    assert 0 < int(again.headers["Retry-After"]) <= 30
    await app[keys.REDIS].delete(*[k async for k in app[keys.REDIS].scan_iter("pp:rl:cd:*")])
    assert (await send(client, phone=PHONE)).status == 200
    second = await latest_code(app, "sms", PHONE)
    if second != first:
        assert (await verify(client, first, phone=PHONE)).status == 400  # the older code no longer works
    assert (await verify(client, second, phone=PHONE)).status == 200


async def test_per_destination_hourly_limit(aiohttp_client: Any, make_settings: Callable[..., Settings],
                                            redis: Any) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(
        otp_resend_cooldown_s=1, otp_per_destination_per_hour=2)))
    for _ in range(2):
        assert (await send(client, email="limit@example.com")).status == 200
        await redis.delete(*[k async for k in redis.scan_iter("pp:rl:cd:*")])
    refused = await send(client, email="limit@example.com")
    assert refused.status == 429 and (await refused.json())["error"]["code"] == "rate_limited"
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert (await send(client, email="other@example.com")).status == 200  # others are unaffected


async def test_per_address_hourly_limit(aiohttp_client: Any, make_settings: Callable[..., Settings],
                                        redis: Any) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(otp_per_ip_per_hour=3)))
    for n in range(3):
        assert (await send(client, phone=f"+91987650000{n}")).status == 200
    refused = await send(client, phone="+919876500009")
    assert refused.status == 429 and int(refused.headers["Retry-After"]) > 0


async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(otp_per_ip_per_hour=1)))
    first = await send(client, phone="+919876500001")
    assert first.status == 200
    # Without trust_proxy a spoofed header does not buy a fresh budget.
    spoofed = await client.post("/api/auth/send-otp", json={"phone": "+919876500002"},
                                headers={"X-Forwarded-For": "203.0.113.7"})
    assert spoofed.status == 429


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", ""])
async def test_malformed_codes_are_422(client: TestClient[Any, Any], code: str) -> None:
    assert (await verify(client, code, phone=PHONE)).status == 422
