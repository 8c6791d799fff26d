"""Transport-level defences: JSON only as JSON (login CSRF), no cookie-setting POST from another
site, per-address limits that count an IPv6 /64, per-customer limits, and the settings that keep a
development server off the network and a production one off plain HTTP and file-delivered codes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.ratelimit import address_key
from core import keys
from core.settings import Settings, SettingsError
from partypilot.app import create_app
from tests.fakes import app_of, latest_code
from tests.helpers import BENGALURU, bearer, db_of, future_date, make_order, make_package, make_user

ORIGIN = "http://127.0.0.1:8080"  # in the default settings.allowed_origins


async def _code_for(client: TestClient[Any, Any], email: str) -> str:
    assert (await client.post("/api/auth/send-otp", json={"email": email})).status == 200
    return await latest_code(app_of(client), "email", email)


# --- finding 3: login CSRF --------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    None, "application/jsonx", "application/+json", "json",
])
async def test_a_json_body_sent_as_anything_but_json_is_refused_with_415(
        client: TestClient[Any, Any], content_type: str | None) -> None:
    """A cross-site <form enctype=text/plain> can carry a valid JSON body: it must not sign anyone in."""
    code = await _code_for(client, "victim@example.com")
    raw = json.dumps({"email": "victim@example.com", "code": code}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await client.post("/api/auth/verify-otp", data=raw, headers=headers,
                             skip_auto_headers=() if content_type else ("Content-Type",))
    assert resp.status == 415, (content_type, await resp.text())
    error = (await resp.json())["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert "Set-Cookie" not in resp.headers
    assert await app_of(client)[keys.DB].sessions.count_documents({}) == 0


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
    "application/vnd.partypilot+json", "application/merge-patch+json; charset=utf-8",
])
async def test_json_and_json_suffixed_media_types_are_accepted(
        client: TestClient[Any, Any], content_type: str) -> None:
    resp = await client.post("/api/auth/send-otp", data=json.dumps({"email": "ok@example.com"}).encode(),
                             headers={"Content-Type": content_type})
    assert resp.status == 200, await resp.text()


async def test_authenticated_json_endpoints_refuse_other_media_types_too(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    user = await make_user(db_of(app_of(client)))
    resp = await client.put("/api/users/profile", data=json.dumps({"name": "Mallory"}).encode(),
                            headers={**bearer(token_for(user, "customer")), "Content-Type": "text/plain"})
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_media_type"
    assert (await db_of(app_of(client)).users.find_one({"_id": user}))["name"] != "Mallory"  # type: ignore[index]


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
])
async def test_cookie_setting_posts_from_another_site_are_refused(
        client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    code = await _code_for(client, "csrf@example.com")
    resp = await client.post("/api/auth/verify-otp", json={"email": "csrf@example.com", "code": code}, headers=headers)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"
    assert "Set-Cookie" not in resp.headers
    login = await client.post("/api/auth/login", json={"email": "csrf@example.com", "password": "whatever it is"},
                              headers=headers)
    assert login.status == 403
    for path in ("/api/auth/refresh", "/api/auth/logout"):
        resp = await client.post(path, json={"refresh_token": "x" * 43}, headers=headers)
        assert resp.status == 403, path


@pytest.mark.parametrize("headers", [
    {},  # a native client: no Origin, no Sec-Fetch-*
    {"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},
])
async def test_our_own_pages_and_native_clients_sign_in(client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    code = await _code_for(client, "own@example.com")
    resp = await client.post("/api/auth/verify-otp", json={"email": "own@example.com", "code": code}, headers=headers)
    assert resp.status == 200, await resp.text()


async def test_a_page_served_by_this_host_counts_as_our_own_origin(client: TestClient[Any, Any]) -> None:
    code = await _code_for(client, "host@example.com")
    origin = str(client.make_url("")).rstrip("/")
    resp = await client.post("/api/auth/verify-otp", json={"email": "host@example.com", "code": code},
                             headers={"Origin": origin})
    assert resp.status == 200, await resp.text()


# --- finding 9: per-address limits key IPv6 on the /64 ------------------------------------------

def test_address_keys_group_ipv6_by_the_64_and_keep_ipv4_whole() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == \
        "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("203.0.113.7") == "203.0.113.7" != address_key("203.0.113.8")
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("unknown") == "unknown"


async def test_rotating_through_one_ipv6_64_does_not_escape_the_per_address_limit(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(trust_proxy=True, otp_per_ip_per_hour=3)))
    statuses = []
    for n in range(5):
        resp = await client.post("/api/auth/send-otp", json={"email": f"v6-{n}@example.com"},
                                 headers={"X-Real-IP": f"2001:db8:77:1:{n:x}:{n:x}::{n + 1:x}"})
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429, 429]
    other = await client.post("/api/auth/send-otp", json={"email": "v6-other@example.com"},
                              headers={"X-Real-IP": "2001:db8:77:2::1"})
    assert other.status == 200


# --- finding 9: per-customer limits on orders and tracking links ---------------------------------

def _order_body(package_id: str) -> dict[str, Any]:
    return {"package_id": package_id, "event_date": future_date(), "guests": 20, "payment_option": "cash",
            "address": {"line1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001", **BENGALURU}}


async def test_a_customer_cannot_create_orders_without_limit(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any,
        token_for: Callable[..., str]) -> None:
    client = await aiohttp_client(create_app(make_settings(orders_per_customer_per_hour=2)))
    db = db_of(app_of(client))
    package = await make_package(db)
    customer, other = await make_user(db), await make_user(db)
    auth = bearer(token_for(customer, "customer"))
    keys_used = [uuid.uuid4().hex for _ in range(3)]
    answers = [await client.post("/api/orders", json=_order_body(package), headers={**auth, "Idempotency-Key": k})
               for k in keys_used]
    assert [a.status for a in answers] == [201, 201, 429], [await a.text() for a in answers]
    assert int(answers[2].headers["Retry-After"]) > 0
    assert (await answers[2].json())["error"]["code"] == "rate_limited"
    # A retry of an order already placed still gets it back, and other customers are not affected.
    retry = await client.post("/api/orders", json=_order_body(package),
                              headers={**auth, "Idempotency-Key": keys_used[0]})
    assert retry.status == 200 and (await retry.json())["id"] == (await answers[0].json())["id"]
    theirs = await client.post("/api/orders", json=_order_body(package),
                               headers={**bearer(token_for(other, "customer")), "Idempotency-Key": uuid.uuid4().hex})
    assert theirs.status == 201
    assert await db.orders.count_documents({"customer_id": customer}) == 2


async def test_a_customer_cannot_mint_tracking_links_without_limit(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any,
        token_for: Callable[..., str]) -> None:
    client = await aiohttp_client(create_app(make_settings(tracking_links_per_customer_per_hour=3)))
    db = db_of(app_of(client))
    customer = await make_user(db)
    order = await make_order(db, customer)
    auth = bearer(token_for(customer, "customer"))
    statuses = [(await client.post(f"/api/orders/{order}/tracking-link", headers=auth)).status for _ in range(5)]
    assert statuses == [201, 201, 201, 429, 429]


# --- finding 6: development mode stays on loopback; production refuses clear text and file codes --

PRODUCTION = {
    "PARTYPILOT_ENV": "production", "HOST": "0.0.0.0", "JWT_SECRET": "s" * 48,
    "PARTYPILOT_ALLOWED_ORIGINS": "https://partypilot.example.com",
    "PARTYPILOT_PUBLIC_URL": "https://partypilot.example.com", "PARTYPILOT_PAYMENTS_SIMULATOR": "true",
    "TWILIO_ACCOUNT_SID": "AC" + "a" * 32, "TWILIO_AUTH_TOKEN": "t" * 32, "TWILIO_FROM_NUMBER": "+15005550006",
    "SMTP_HOST": "smtp.example.com",
}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "partypilot.example.com"])
@pytest.mark.parametrize("env", ["development", "test"])
def test_a_development_server_refuses_a_network_address(host: str, env: str) -> None:
    with pytest.raises(SettingsError, match="PARTYPILOT_ALLOW_DEV_ON_NETWORK"):
        Settings.from_env({"PARTYPILOT_ENV": env, "HOST": host})
    with pytest.raises(SettingsError, match="HOST"):
        Settings.from_env({}, host=host)  # the CLI's --host arrives as an override
    allowed = Settings.from_env({"PARTYPILOT_ENV": env, "HOST": host, "PARTYPILOT_ALLOW_DEV_ON_NETWORK": "true"})
    assert allowed.host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_a_development_server_on_loopback_starts(host: str) -> None:
    assert Settings.from_env({"HOST": host}).is_development


def test_production_with_everything_configured_starts_on_any_address() -> None:
    settings = Settings.from_env(PRODUCTION)
    assert settings.is_production and settings.host == "0.0.0.0"


@pytest.mark.parametrize(("change", "names"), [
    ({"PARTYPILOT_ALLOWED_ORIGINS": "http://partypilot.example.com"}, "PARTYPILOT_ALLOWED_ORIGINS"),
    ({"PARTYPILOT_ALLOWED_ORIGINS": "https://a.example.com,http://b.example.com"}, "PARTYPILOT_ALLOWED_ORIGINS"),
    ({"PARTYPILOT_PUBLIC_URL": "http://partypilot.example.com"}, "PARTYPILOT_PUBLIC_URL"),
    ({"TWILIO_ACCOUNT_SID": ""}, "PARTYPILOT_ALLOW_LOCAL_SMS"),
    ({"TWILIO_FROM_NUMBER": ""}, "TWILIO_FROM_NUMBER"),
    ({"SMTP_HOST": ""}, "PARTYPILOT_ALLOW_LOCAL_EMAIL"),
])
def test_production_refuses_clear_text_and_codes_delivered_to_a_file(change: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env({**PRODUCTION, **change})


def test_local_code_delivery_in_production_needs_an_explicit_yes() -> None:
    bare = {k: v for k, v in PRODUCTION.items() if not k.startswith(("TWILIO_", "SMTP_"))}
    settings = Settings.from_env({**bare, "PARTYPILOT_ALLOW_LOCAL_SMS": "true", "PARTYPILOT_ALLOW_LOCAL_EMAIL": "true"})
    assert settings.allow_local_sms and settings.allow_local_email


def test_the_existing_production_messages_still_name_their_settings() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings.from_env({**PRODUCTION, "JWT_SECRET": "short"})
    with pytest.raises(SettingsError, match="not http://localhost:8080"):
        Settings.from_env({**PRODUCTION, "PARTYPILOT_ALLOWED_ORIGINS": "http://localhost:8080"})

