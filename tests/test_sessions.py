"""Sessions: refresh-token rotation, reuse detection, logout, and the browser cookie's CSRF defence."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

from core import keys
from core.contracts import SESSION_EVENTS
from core.jsonutil import now_ms
from tests.fakes import app_of, latest_code, sign_in

ORIGIN = "http://127.0.0.1:8080"  # in the default settings.allowed_origins
CSRF = {"X-PartyPilot-CSRF": "1"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"__Host-pp_refresh={token}"}


async def refresh(client: TestClient[Any, Any], token: str) -> Any:
    return await client.post("/api/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, phone="+919876543210")
    first = signed["refresh_token"]
    resp = await refresh(client, first)
    assert resp.status == 200
    rotated = await resp.json()
    second = rotated["refresh_token"]
    assert second != first and rotated["user"]["id"] == signed["user"]["id"]
    assert (await client.get("/api/users/profile", headers=bearer(rotated["access_token"]))).status == 200

    reused = await refresh(client, first)
    assert reused.status == 401 and (await reused.json())["error"]["code"] == "refresh_reused"
    # The whole family is gone: the newest refresh token and its access token both stop working.
    assert (await refresh(client, second)).status == 401
    gone = await client.get("/api/users/profile", headers=bearer(rotated["access_token"]))
    assert gone.status == 401 and (await gone.json())["error"]["code"] == "session_revoked"


async def test_parallel_refreshes_with_one_token_let_at_most_one_through(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="race@example.com")
    answers = await asyncio.gather(*[refresh(client, signed["refresh_token"]) for _ in range(6)])
    assert sum(1 for r in answers if r.status == 200) <= 1
    assert all(r.status in (200, 401) for r in answers)


async def test_other_sign_ins_survive_a_revoked_family(client: TestClient[Any, Any]) -> None:
    a = await sign_in(client, email="fam@example.com")
    await app_of(client)[keys.REDIS].flushdb()
    b = await sign_in(client, email="fam@example.com")
    await refresh(client, a["refresh_token"])
    await refresh(client, a["refresh_token"])  # reuse: revokes a's family only
    assert (await client.get("/api/users/profile", headers=bearer(b["access_token"]))).status == 200
    assert (await refresh(client, b["refresh_token"])).status == 200


async def test_unknown_and_expired_refresh_tokens_are_refused(client: TestClient[Any, Any]) -> None:
    unknown = await refresh(client, "x" * 43)
    assert unknown.status == 401 and (await unknown.json())["error"]["code"] == "invalid_refresh_token"
    signed = await sign_in(client, email="old@example.com")
    await app_of(client)[keys.DB].sessions.update_one({}, {"$set": {"expires_ms": now_ms() - 1}})
    expired = await refresh(client, signed["refresh_token"])
    assert expired.status == 401 and (await expired.json())["error"]["code"] == "session_expired"


async def test_logout_kills_the_access_token_at_once_and_tells_dispatch(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, phone="+919876543210")
    pubsub = app_of(client)[keys.REDIS].pubsub()
    await pubsub.subscribe(SESSION_EVENTS)
    try:
        client.session.cookie_jar.clear()  # a bearer-only logout, as a native client does it
        resp = await client.post("/api/auth/logout", json={}, headers=bearer(signed["access_token"]))
        assert resp.status == 200
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
        assert message is not None
        event = json.loads(message["data"])
        assert event == {"type": "session_revoked", "user_id": signed["user"]["id"],
                         "session_id": event["session_id"]} and event["session_id"]
    finally:
        await pubsub.aclose()
    after = await client.get("/api/users/profile", headers=bearer(signed["access_token"]))
    assert after.status == 401 and (await after.json())["error"]["code"] == "session_revoked"
    assert (await refresh(client, signed["refresh_token"])).status == 401


async def test_logout_with_only_the_refresh_token(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="rt@example.com")
    client.session.cookie_jar.clear()
    assert (await client.post("/api/auth/logout", json={})).status == 401  # nothing names a session
    resp = await client.post("/api/auth/logout", json={"refresh_token": signed["refresh_token"]})
    assert resp.status == 200
    assert (await client.get("/api/users/profile", headers=bearer(signed["access_token"]))).status == 401


async def test_sign_in_sets_a_host_only_secure_http_only_strict_cookie(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/api/auth/send-otp", json={"email": "c@example.com"})
    assert resp.status == 200
    code = await latest_code(app_of(client), "email", "c@example.com")
    signed_resp = await client.post("/api/auth/verify-otp", json={"email": "c@example.com", "code": code})
    header = signed_resp.headers["Set-Cookie"]
    assert header.startswith("__Host-pp_refresh=")
    parts = {p.strip().split("=")[0].lower() for p in header.split(";")}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= parts and "domain" not in parts
    assert "SameSite=Strict" in header and "Path=/" in header
    assert (await signed_resp.json())["refresh_token"] in header


async def test_cookie_refresh_needs_an_allowed_origin_and_the_csrf_header(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="csrf@example.com")
    token = signed["refresh_token"]
    client.session.cookie_jar.clear()
    for headers in ({}, {"Origin": ORIGIN}, {"Origin": "https://evil.example", **CSRF}, {**CSRF},
                    {"Origin": ORIGIN, "X-PartyPilot-CSRF": "yes"}):
        resp = await client.post("/api/auth/refresh", json={}, headers={**cookie(token), **headers})
        assert resp.status == 403, headers
        assert (await resp.json())["error"]["code"] == "csrf_failed"
    resp = await client.post("/api/auth/refresh", json={}, headers={**cookie(token), "Origin": ORIGIN, **CSRF})
    assert resp.status == 200
    body = await resp.json()
    assert "refresh_token" not in body  # a browser keeps it in the HttpOnly cookie only
    new_cookie = resp.cookies["__Host-pp_refresh"].value
    assert new_cookie and new_cookie != token
    # The refused attempts did not consume the token; the successful one rotated it.
    assert (await refresh(client, new_cookie)).status == 200


async def test_logout_clears_the_cookie(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="bye@example.com")
    client.session.cookie_jar.clear()
    resp = await client.post("/api/auth/logout", json={},
                             headers={**cookie(signed["refresh_token"]), "Origin": ORIGIN, **CSRF})
    assert resp.status == 200
    assert resp.cookies["__Host-pp_refresh"].value == ""
    assert (await refresh(client, signed["refresh_token"])).status == 401
