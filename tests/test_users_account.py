"""The signed-in user's profile and account: reading, editing, and deleting by anonymisation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core import keys
from core.jsonutil import iso
from tests.fakes import app_of, latest_code, sign_in
from tests.test_security_account import step_up

HOME = {"label": "Home", "line1": "12 MG Road", "city": "Bengaluru", "postal_code": "560001",
        "lat": 12.9756, "lng": 77.605}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_profile_needs_a_token(client: TestClient[Any, Any]) -> None:
    for method in ("GET", "PUT"):
        resp = await client.request(method, "/api/users/profile", json={"name": "x"})
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.get("/api/users/profile", headers=bearer("not-a-jwt"))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_token"


async def test_profile_read_and_update(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, phone="+919876543210")
    headers = bearer(signed["access_token"])
    resp = await client.put("/api/users/profile", headers=headers, json={
        "name": "  Asha Rao ", "addresses": [HOME], "avatar_url": "https://img.example/a.png"})
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "Asha Rao" and body["addresses"] == [HOME]
    assert body["avatar_url"] == "https://img.example/a.png" and body["phone"] == "+919876543210"
    again = await (await client.get("/api/users/profile", headers=headers)).json()
    assert again == body
    assert "password_hash" not in again and again["has_password"] is False


@pytest.mark.parametrize("payload", [
    {"name": "x" * 101},
    {"addresses": [{**HOME, "lat": 91}]},
    {"addresses": [{**HOME, "line1": ""}]},
    {"addresses": [{k: v for k, v in HOME.items() if k != "city"}]},
    {"addresses": [HOME] * 11},
    {"avatar_url": "javascript:alert(1)"},
    {"role": "admin"},
    {"phone": "12345"},
    {"email": "nope"},
    {"name": 42},
])
async def test_profile_update_refuses_bad_input_with_422(client: TestClient[Any, Any],
                                                         payload: dict[str, Any]) -> None:
    signed = await sign_in(client, email="bad@example.com")
    resp = await client.put("/api/users/profile", headers=bearer(signed["access_token"]), json=payload)
    assert resp.status == 422, payload
    body = await resp.json()
    assert body["error"]["code"] == "validation_error" and body["error"]["details"]
    user = await app_of(client)[keys.DB].users.find_one({"email": "bad@example.com"})
    assert user is not None and user.get("role") == "customer" and user.get("name") == ""  # nothing written


async def test_a_new_email_needs_the_code_sent_to_it(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    signed = await sign_in(client, phone="+919876543210")
    headers = bearer(signed["access_token"])
    missing = await client.put("/api/users/profile", headers=headers, json={"email": "me@example.com"})
    assert missing.status == 422 and missing.headers["Content-Type"].startswith("application/json")
    assert [d["field"] for d in (await missing.json())["error"]["details"]] == ["email_code", "verify_code"]
    verify_code = await step_up(client, signed["access_token"], "identifier", channel="sms", to="+919876543210")
    await client.post("/api/auth/send-otp", json={"email": "me@example.com"})
    code = await latest_code(app, "email", "me@example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    bad = await client.put("/api/users/profile", headers=headers,
                           json={"email": "me@example.com", "email_code": wrong, "verify_code": verify_code})
    assert bad.status == 400
    ok = await client.put("/api/users/profile", headers=headers,
                          json={"email": "Me@Example.com", "email_code": code, "verify_code": verify_code})
    assert ok.status == 200 and (await ok.json())["email"] == "me@example.com"


async def test_replacing_an_email_needs_a_code_from_the_current_one_too(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    signed = await sign_in(client, email="old@example.com")
    headers = bearer(signed["access_token"])
    await client.post("/api/auth/send-otp", json={"email": "new@example.com"})
    new_code = await latest_code(app, "email", "new@example.com")
    # A stolen access token plus the thief's own inbox is not enough.
    resp = await client.put("/api/users/profile", headers=headers,
                            json={"email": "new@example.com", "email_code": new_code})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "step_up_required" and [d["field"] for d in error["details"]] == ["verify_code"]
    resp = await client.put("/api/users/profile", headers=headers,
                            json={"email": "new@example.com", "email_code": new_code, "current_email_code": "000000"})
    assert resp.status == 400
    user = await app[keys.DB].users.find_one({"_id": signed["user"]["id"]})
    assert user is not None and user["email"] == "old@example.com"


async def test_the_previous_email_hears_that_it_was_replaced(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    signed = await sign_in(client, email="old@example.com")
    await app[keys.REDIS].flushdb()  # past the resend cooldown of the sign-in code
    sent = await client.post("/api/auth/send-otp", json={"email": "old@example.com"})
    assert sent.status == 200
    current_code = await latest_code(app, "email", "old@example.com")
    await client.post("/api/auth/send-otp", json={"email": "new@example.com"})
    code = await latest_code(app, "email", "new@example.com")
    resp = await client.put("/api/users/profile", headers=bearer(signed["access_token"]),
                            json={"email": "new@example.com", "email_code": code, "current_email_code": current_code})
    assert resp.status == 200 and (await resp.json())["email"] == "new@example.com"
    alert = await app[keys.DB].outbox.find_one({"to": "old@example.com", "subject": {"$regex": "changed"}})
    assert alert is not None and "If this was not you" in alert["body"]


async def test_an_email_of_another_account_is_refused(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    await sign_in(client, email="owner@example.com")
    await app[keys.REDIS].flushdb()
    other = await sign_in(client, phone="+919876543211")
    verify_code = await step_up(client, other["access_token"], "identifier", channel="sms", to="+919876543211")
    await client.post("/api/auth/send-otp", json={"email": "owner@example.com"})
    code = await latest_code(app, "email", "owner@example.com")
    resp = await client.put("/api/users/profile", headers=bearer(other["access_token"]),
                            json={"email": "owner@example.com", "email_code": code, "verify_code": verify_code})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "destination_taken"


async def _order(app: Any, customer_id: str, status: str) -> str:
    order_id = uuid.uuid4().hex
    await app[keys.DB].orders.insert_one({
        "_id": order_id, "customer_id": customer_id, "package_id": "p1", "status": status, "version": 1,
        "package": {"name": "Kids Party", "price": 100000, "currency": "INR"}, "price": 100000, "currency": "INR",
        "address": {"line1": "12 MG Road", "city": "Bengaluru", "postal_code": "560001", "lat": 12.97561,
                    "lng": 77.60501},
        "notes": "Gate code 4411", "history": [{"status": status, "at": iso(), "by_role": "customer",
                                                "by": customer_id, "reason": None}],
        "created_at": iso(), "updated_at": iso(), "notify_pending": 0, "notified_upto": 1})
    return order_id


async def test_account_deletion_is_refused_while_an_order_is_active(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    signed = await sign_in(client, phone="+919876543210")
    await _order(app, signed["user"]["id"], "en_route")
    # Refused before any proof is asked for (or used up).
    resp = await client.delete("/api/users/account", headers=bearer(signed["access_token"]), json={})
    assert resp.status == 409
    body = await resp.json()
    assert body["error"]["code"] == "active_orders" and body["error"]["details"]["active_orders"] == 1
    assert (await client.get("/api/users/profile", headers=bearer(signed["access_token"]))).status == 200


async def test_account_deletion_anonymises_keeps_orders_and_ends_sessions(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    db = app[keys.DB]
    signed = await sign_in(client, phone="+919876543210")
    user_id = signed["user"]["id"]
    headers = bearer(signed["access_token"])
    await client.put("/api/users/profile", headers=headers, json={"name": "Asha Rao", "addresses": [HOME]})
    order_id = await _order(app, user_id, "completed")
    code = await step_up(client, signed["access_token"], "delete_account", channel="sms", to="+919876543210")
    resp = await client.delete("/api/users/account", headers=headers, json={"verify_code": code})
    assert resp.status == 200

    user = await db.users.find_one({"_id": user_id})
    assert user is not None and user["deleted"] == 1 and user["name"] == "Deleted user"
    assert "phone" not in user and "email" not in user and user["addresses"] == []
    order = await db.orders.find_one({"_id": order_id})
    assert order is not None and order["status"] == "completed" and order["customer_id"] == user_id
    assert order["notes"] == "" and order["address"]["line1"] == "" and order["address"]["lat"] == 12.98
    # Every session ended at once, and the phone now starts a brand-new account.
    assert (await client.get("/api/users/profile", headers=headers)).status == 401
    assert (await client.post("/api/auth/refresh", json={"refresh_token": signed["refresh_token"]})).status == 401
    await app[keys.REDIS].flushdb()
    fresh = await sign_in(client, phone="+919876543210")
    assert fresh["user"]["id"] != user_id and fresh["user"]["name"] == ""


async def test_admins_cannot_delete_themselves_here(client: TestClient[Any, Any], token_for: Any) -> None:
    resp = await client.delete("/api/users/account", headers=bearer(token_for("admin-1", "admin")))
    assert resp.status == 403
