"""Issue 10, finding 1: a stolen access token alone cannot take an account over.

Adding or replacing a sign-in email or phone, setting or changing the password, and deleting the
account need a fresh proof of a factor the account already has (a step-up code sent to a current
address, or the current password); every existing address hears of the change. Also finding 9:
an interrupted deletion is finished by a retry or by the sweep.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from api import accounts
from core import keys
from core.jsonutil import iso
from tests.fakes import app_of, latest_code, local_messages, sign_in, wait_for_message

OWNER = "owner@example.com"
THIEF_PHONE = "+919800000999"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def step_up(client: TestClient[Any, Any], token: str, action: str, *, channel: str = "email",
                  to: str = OWNER) -> str:
    """Ask for a step-up code and read it where the owner would: in the current address's inbox."""
    via = "email" if channel == "email" else "phone"
    resp = await client.post("/api/users/verify/send", headers=bearer(token), json={"action": action, "via": via})
    assert resp.status == 200, await resp.text()
    return await latest_code(app_of(client), channel, to)


async def new_address_code(client: TestClient[Any, Any], **destination: str) -> str:
    """The code /api/auth/send-otp sends to a new address (proof that the caller owns it)."""
    resp = await client.post("/api/auth/send-otp", json=destination)
    assert resp.status == 200, await resp.text()
    channel, to = ("sms", destination["phone"]) if "phone" in destination else ("email", destination["email"])
    return await latest_code(app_of(client), channel, to)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_stolen_access_token_cannot_add_a_second_sign_in_phone(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    stolen = bearer(owner["access_token"])
    # The thief proves the phone they own, which is all the old rule asked of an account
    # that had no phone yet.
    phone_code = await new_address_code(client, phone=THIEF_PHONE)
    resp = await client.put("/api/users/profile", headers=stolen, json={"phone": THIEF_PHONE, "phone_code": phone_code})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "step_up_required" and [d["field"] for d in error["details"]] == ["verify_code"]

    # The step-up code goes to the owner's inbox, never to an address the caller names.
    sent = await client.post("/api/users/verify/send", headers=stolen, json={"action": "identifier"})
    assert sent.status == 200
    answer = await sent.json()
    assert answer["channel"] == "email" and OWNER not in answer["destination"] and "dev_code" not in answer
    refused = await client.post("/api/users/verify/send", headers=stolen, json={"action": "identifier", "via": "phone"})
    assert refused.status == 409 and (await refused.json())["error"]["code"] == "no_such_factor"
    guess = await client.put("/api/users/profile", headers=stolen,
                             json={"phone": THIEF_PHONE, "phone_code": phone_code, "verify_code": "123456"})
    assert guess.status == 400 and (await guess.json())["error"]["code"] == "invalid_code"
    user = await app[keys.DB].users.find_one({"_id": owner["user"]["id"]})
    assert user is not None and "phone" not in user


async def test_a_stolen_access_token_cannot_set_a_first_password(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    await app[keys.REDIS].flushdb()
    other_session = await sign_in(client, email=OWNER)
    resp = await client.put("/api/users/password", headers=bearer(owner["access_token"]),
                            json={"new_password": "thief's own password"})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "step_up_required"
    user = await app[keys.DB].users.find_one({"_id": owner["user"]["id"]})
    assert user is not None and "password_hash" not in user
    # ...and so the owner's other sessions were not ended.
    assert (await client.get("/api/users/profile", headers=bearer(other_session["access_token"]))).status == 200


async def test_a_stolen_access_token_cannot_delete_the_account(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    for body in ({}, {"verify_code": "000000"}, {"current_password": "no password is set"}):
        resp = await client.delete("/api/users/account", headers=bearer(owner["access_token"]), json=body)
        assert resp.status in (400, 401, 422), body
    user = await app[keys.DB].users.find_one({"_id": owner["user"]["id"]})
    assert user is not None and user["deleted"] == 0 and user["email"] == OWNER


async def test_the_owner_adds_a_phone_with_a_step_up_code_and_every_address_hears(
        client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    headers = bearer(owner["access_token"])
    verify_code = await step_up(client, owner["access_token"], "identifier")
    phone_code = await new_address_code(client, phone=THIEF_PHONE)
    # A mistyped new-address code costs neither code: both still work on the next try.
    typo = await client.put("/api/users/profile", headers=headers,
                            json={"phone": THIEF_PHONE, "phone_code": wrong(phone_code), "verify_code": verify_code})
    assert typo.status == 400
    ok = await client.put("/api/users/profile", headers=headers,
                          json={"phone": THIEF_PHONE, "phone_code": phone_code, "verify_code": verify_code})
    assert ok.status == 200 and (await ok.json())["phone"] == THIEF_PHONE
    notice = await wait_for_message(app, "email", OWNER, after=2)  # after the sign-in and step-up codes
    assert notice["subject"] == "PartyPilot: sign-in details changed"
    assert "phone number you use to sign in to PartyPilot was just added" in notice["body"]
    # Used up: the same codes cannot make a second change.
    again = await client.put("/api/users/profile", headers=headers,
                             json={"email": "else@example.com", "email_code": "111111", "verify_code": verify_code})
    assert again.status == 400


async def test_a_step_up_code_is_bound_to_its_action_and_is_no_sign_in_code(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    code = await step_up(client, owner["access_token"], "password")
    deleting = await client.delete("/api/users/account", headers=bearer(owner["access_token"]),
                                   json={"verify_code": code})
    assert deleting.status == 400 and (await deleting.json())["error"]["code"] == "invalid_code"
    signing_in = await client.post("/api/auth/verify-otp", json={"email": OWNER, "code": code})
    assert signing_in.status == 400
    message = [m for m in local_messages(app, "email") if m["to"] == OWNER][-1]
    assert "set or change your password" in message["body"] and "Never share it" in message["body"]
    ok = await client.put("/api/users/password", headers=bearer(owner["access_token"]),
                          json={"new_password": "a long new passphrase", "verify_code": code})
    assert ok.status == 200


async def test_setting_and_changing_a_password_tell_every_address(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    headers = bearer(owner["access_token"])
    verify_code = await step_up(client, owner["access_token"], "identifier")
    phone_code = await new_address_code(client, phone=THIEF_PHONE)
    assert (await client.put("/api/users/profile", headers=headers, json={
        "phone": THIEF_PHONE, "phone_code": phone_code, "verify_code": verify_code})).status == 200
    code = await step_up(client, owner["access_token"], "password", channel="sms", to=THIEF_PHONE)
    assert (await client.put("/api/users/password", headers=headers,
                             json={"new_password": "first long passphrase", "verify_code": code})).status == 200
    for to in (OWNER, THIEF_PHONE):
        notice = await app[keys.DB].outbox.find_one({"to": to, "subject": "PartyPilot: password set"})
        assert notice is not None and "password was just set" in notice["body"], to
    # Changing it with the current password is a proof too; both addresses hear of it.
    resp = await client.put("/api/users/password", headers=headers, json={
        "new_password": "second long passphrase", "current_password": "first long passphrase"})
    assert resp.status == 200
    for channel, to in (("email", OWNER), ("sms", THIEF_PHONE)):
        assert await app[keys.DB].outbox.find_one({"to": to, "subject": "PartyPilot: password changed"}), channel


async def test_deleting_with_the_password_tells_every_address(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    owner = await sign_in(client, email=OWNER)
    headers = bearer(owner["access_token"])
    code = await step_up(client, owner["access_token"], "password")
    assert (await client.put("/api/users/password", headers=headers,
                             json={"new_password": "a long new passphrase", "verify_code": code})).status == 200
    wrong_password = await client.delete("/api/users/account", headers=headers,
                                         json={"current_password": "not the passphrase"})
    assert wrong_password.status == 401 and (await wrong_password.json())["error"]["code"] == "invalid_credentials"
    resp = await client.delete("/api/users/account", headers=headers,
                               json={"current_password": "a long new passphrase"})
    assert resp.status == 200 and (await resp.json())["status"] == "deleted"
    notice = await app[keys.DB].outbox.find_one({"to": OWNER, "subject": "PartyPilot: account deleted"})
    assert notice is not None
    user = await app[keys.DB].users.find_one({"_id": owner["user"]["id"]})
    assert user is not None and user["deleted"] == 1 and "email" not in user and "deletion_pending" not in user


async def test_an_interrupted_deletion_is_finished_by_a_retry(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    db = app[keys.DB]
    owner = await sign_in(client, email=OWNER)
    user_id = owner["user"]["id"]
    # What a crash right after the marker leaves: the owner had proven it was them, nothing else done.
    await db.users.update_one({"_id": user_id}, {"$set": {"deletion_pending": 1,
                                                          "deletion_requested_at": "2026-01-01T00:00:00.000Z"}})
    assert (await client.get("/api/users/profile", headers=bearer(owner["access_token"]))).status == 404
    # The retry needs no new proof (the code would go to addresses about to disappear).
    resp = await client.delete("/api/users/account", headers=bearer(owner["access_token"]), json={})
    assert resp.status == 200
    user = await db.users.find_one({"_id": user_id})
    assert user is not None and user["deleted"] == 1 and "email" not in user and "deletion_pending" not in user
    assert await db.outbox.find_one({"to": OWNER, "subject": "PartyPilot: account deleted"})
    assert (await client.post("/api/auth/refresh", json={"refresh_token": owner["refresh_token"]})).status == 401


async def test_the_sweep_finishes_a_deletion_nobody_retried(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    db = app[keys.DB]
    owner = await sign_in(client, email=OWNER)
    user_id = owner["user"]["id"]
    recent = iso()
    await db.users.update_one({"_id": user_id}, {"$set": {"deletion_pending": 1, "deletion_requested_at": recent}})
    # Within its grace period the request that set the marker is presumed still at work.
    assert await accounts.finish_pending(db, app[keys.REDIS], app[keys.SETTINGS]) == 0
    await db.users.update_one({"_id": user_id}, {"$set": {"deletion_requested_at": "2026-01-01T00:00:00.000Z"}})
    assert await accounts.finish_pending(db, app[keys.REDIS], app[keys.SETTINGS]) == 1
    user = await db.users.find_one({"_id": user_id})
    assert user is not None and user["deleted"] == 1 and "deletion_pending" not in user
    assert (await client.get("/api/users/profile", headers=bearer(owner["access_token"]))).status == 401
    assert await accounts.finish_pending(db, app[keys.REDIS], app[keys.SETTINGS]) == 0
