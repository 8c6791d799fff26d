"""Sessions: refresh-token rotation, reuse detection (with the two-tab grace), logout that survives a
Redis loss, and the browser cookie's CSRF defence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from core import keys
from core.contracts import REVOKED_SESSION_KEY, SESSION_EVENTS
from core.jsonutil import now_ms
from core.settings import Settings
from partypilot.app import create_app
from tests.fakes import app_of, latest_code, sign_in

ORIGIN = "http://127.0.0.1:8080"  # in the default settings.allowed_origins
CSRF = {"X-PartyPilot-CSRF": "1"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"__Host-pp_refresh={token}"}


async def refresh(client: TestClient[Any, Any], token: str) -> Any:
    return await client.post("/api/auth/refresh", json={"refresh_token": token})


async def age_rotations(client: TestClient[Any, Any], seconds: float = 60) -> None:
    """Move every rotation `seconds` into the past: beyond the two-tab grace."""
    await app_of(client)[keys.DB].sessions.update_many(
        {"rotated_ms": {"$exists": True}}, {"$set": {"rotated_ms": now_ms() - int(seconds * 1000)}})


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, phone="+919876543210")
    first = signed["refresh_token"]
    resp = await refresh(client, first)
    assert resp.status == 200
    rotated = await resp.json()
    second = rotated["refresh_token"]
    assert second != first and rotated["user"]["id"] == signed["user"]["id"]
    assert (await client.get("/api/users/profile", headers=bearer(rotated["access_token"]))).status == 200

    await age_rotations(client)
    reused = await refresh(client, first)
    assert reused.status == 401 and (await reused.json())["error"]["code"] == "refresh_reused"
    # The whole family is gone: the newest refresh token and its access token both stop working.
    assert (await refresh(client, second)).status == 401
    gone = await client.get("/api/users/profile", headers=bearer(rotated["access_token"]))
    assert gone.status == 401 and (await gone.json())["error"]["code"] == "session_revoked"


async def test_two_tabs_refreshing_at_once_share_one_successor_and_keep_the_session(
        client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="race@example.com")
    answers = await asyncio.gather(*[refresh(client, signed["refresh_token"]) for _ in range(6)])
    assert [r.status for r in answers] == [200] * 6
    successors = {(await r.json())["refresh_token"] for r in answers}
    assert len(successors) == 1 and signed["refresh_token"] not in successors
    # The family is alive: every answer's access token works, and the one successor rotates on.
    for r in answers:
        assert (await client.get("/api/users/profile", headers=bearer((await r.json())["access_token"]))).status == 200
    assert (await refresh(client, successors.pop())).status == 200


async def test_the_grace_ends_with_its_window_or_when_the_successor_is_used(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="grace@example.com")
    second = (await (await refresh(client, signed["refresh_token"])).json())["refresh_token"]
    third = (await (await refresh(client, second)).json())["refresh_token"]
    # The first token's successor was itself replaced: presenting it now is a real reuse.
    reused = await refresh(client, signed["refresh_token"])
    assert reused.status == 401 and (await reused.json())["error"]["code"] == "refresh_reused"
    assert (await refresh(client, third)).status == 401

    await app_of(client)[keys.REDIS].flushdb()  # skip the resend cooldown
    again = await sign_in(client, email="grace@example.com")
    fresh = (await (await refresh(client, again["refresh_token"])).json())["refresh_token"]
    await age_rotations(client, seconds=11)  # the default grace is 10 s
    late = await refresh(client, again["refresh_token"])
    assert late.status == 401 and (await late.json())["error"]["code"] == "refresh_reused"
    assert (await refresh(client, fresh)).status == 401


async def test_without_a_grace_parallel_refreshes_let_at_most_one_through(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(refresh_reuse_grace_s=0)))
    signed = await sign_in(client, email="race0@example.com")
    answers = await asyncio.gather(*[refresh(client, signed["refresh_token"]) for _ in range(6)])
    assert sum(1 for r in answers if r.status == 200) <= 1
    assert all(r.status in (200, 401) for r in answers)


async def test_browsers_get_the_refresh_token_in_the_cookie_only(client: TestClient[Any, Any]) -> None:
    for browser in ({"Origin": ORIGIN}, {"Sec-Fetch-Site": "same-origin"}):
        address = f"b{len(browser)}{next(iter(browser))[:3]}@example.com".lower()
        await app_of(client)[keys.REDIS].flushdb()
        assert (await client.post("/api/auth/send-otp", json={"email": address})).status == 200
        code = await latest_code(app_of(client), "email", address)
        resp = await client.post("/api/auth/verify-otp", json={"email": address, "code": code}, headers=browser)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["access_token"] and "refresh_token" not in body, browser
        assert resp.cookies["__Host-pp_refresh"].value
    # A native client (no Origin, no Sec-Fetch-*) has no cookie jar to rely on: it gets the token.
    native = await sign_in(client, email="native@example.com")
    assert native["refresh_token"]


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


async def test_a_logged_out_token_stays_refused_after_redis_loses_everything(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="durable@example.com")
    other = await sign_in(client, phone="+919800000001")
    client.session.cookie_jar.clear()
    assert (await client.post("/api/auth/logout", json={}, headers=bearer(signed["access_token"]))).status == 200
    redis = app_of(client)[keys.REDIS]
    await redis.flushall()

    gone = await client.get("/api/users/profile", headers=bearer(signed["access_token"]))
    assert gone.status == 401 and (await gone.json())["error"]["code"] == "session_revoked"
    # Sessions nobody ended still work, and the refresh token stays dead too.
    assert (await client.get("/api/users/profile", headers=bearer(other["access_token"]))).status == 200
    assert (await refresh(client, signed["refresh_token"])).status == 401
    # Readers that check Redis alone (the socket server) see the revocation again.
    sid = (await app_of(client)[keys.DB].sessions.find_one({"revoked": 1}))["_id"]  # type: ignore[index]
    assert await redis.exists(REVOKED_SESSION_KEY.format(sid=sid))


async def test_the_revocation_cache_is_rebuilt_for_socket_readers_after_a_flush(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="watch@example.com")
    client.session.cookie_jar.clear()
    assert (await client.post("/api/auth/logout", json={}, headers=bearer(signed["access_token"]))).status == 200
    sid = (await app_of(client)[keys.DB].sessions.find_one({"revoked": 1}))["_id"]  # type: ignore[index]
    redis = app_of(client)[keys.REDIS]
    await redis.flushall()
    # No request comes in: the app's watcher alone restores the key within a few seconds.
    async with asyncio.timeout(5):
        while not await redis.exists(REVOKED_SESSION_KEY.format(sid=sid)):
            await asyncio.sleep(0.1)


async def test_a_session_that_mongodb_cannot_confirm_is_refused(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="closed@example.com")
    # Mark it revoked in MongoDB only, as a process that died before writing Redis would leave it.
    await app_of(client)[keys.DB].sessions.update_one(
        {}, {"$set": {"revoked": 1, "revoked_ms": now_ms(), "revoke_reason": "logout"}})
    await app_of(client)[keys.REDIS].flushall()
    gone = await client.get("/api/users/profile", headers=bearer(signed["access_token"]))
    assert gone.status == 401
