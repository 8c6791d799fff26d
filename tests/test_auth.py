"""Signing in: one-time codes by SMS and email, partner registration, password sign-in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from api import accounts
from api.security import authenticate
from core import keys
from core.errors import AppError
from core.http import error_response
from core.settings import Settings
from partypilot.app import create_app
from tests.fakes import app_of, latest_code, local_messages, sign_in, wait_for_message
from tests.test_security_account import step_up

PHONE = "+919876543210"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_phone_sign_in_creates_the_customer_only_after_the_code_is_verified(
        client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    resp = await client.post("/api/auth/send-otp", json={"phone": PHONE})
    assert resp.status == 200
    sent = await resp.json()
    assert sent["status"] == "sent" and sent["channel"] == "sms" and sent["expires_in"] == 300
    assert PHONE not in sent["destination"] and sent["destination"].endswith("3210")
    assert "dev_code" not in sent
    assert await app[keys.DB].users.count_documents({}) == 0  # nothing created before verification

    code = await latest_code(app, "sms", PHONE)
    resp = await client.post("/api/auth/verify-otp", json={"phone": PHONE, "code": code})
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["role"] == "customer" and body["user"]["phone"] == PHONE
    assert body["access_token"] and body["refresh_token"] and body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    profile = await client.get("/api/users/profile", headers=bearer(body["access_token"]))
    assert profile.status == 200 and (await profile.json())["id"] == body["user"]["id"]

    # The code is single use, and a later sign-in finds the same account.
    again = await client.post("/api/auth/verify-otp", json={"phone": PHONE, "code": code})
    assert again.status == 400 and (await again.json())["error"]["code"] == "invalid_code"
    await app[keys.REDIS].flushdb()  # skip the resend cooldown
    second = await sign_in(client, phone=PHONE)
    assert second["user"]["id"] == body["user"]["id"]
    assert await app[keys.DB].users.count_documents({}) == 1


async def test_email_sign_in_normalises_the_address(client: TestClient[Any, Any]) -> None:
    body = await sign_in(client, email="Jane.Doe@Example.COM")
    assert body["user"]["email"] == "jane.doe@example.com" and body["user"]["role"] == "customer"
    message = local_messages(app_of(client), "email")[-1]
    assert message["to"] == "jane.doe@example.com" and message["subject"] == "Your PartyPilot sign-in code"


async def test_sign_in_code_reaches_the_outbox_but_not_the_log_or_database(
        client: TestClient[Any, Any], caplog: Any) -> None:
    for name in ("api", "core", "gateway_clients", "partypilot", "aiohttp", "twilio"):
        caplog.set_level("DEBUG", logger=name)
    app = app_of(client)
    await client.post("/api/auth/send-otp", json={"phone": PHONE})
    code = await latest_code(app, "sms", PHONE)
    assert code not in caplog.text
    stored = await app[keys.DB].otp_codes.find_one({})
    assert stored is not None and code not in str(stored)
    message = await app[keys.DB].outbox.find_one({"to": PHONE})
    assert message is not None and message["status"] == "sent" and message["body"] == ""


async def test_send_otp_answers_the_same_for_known_and_unknown_accounts(client: TestClient[Any, Any]) -> None:
    await sign_in(client, phone=PHONE)
    await app_of(client)[keys.REDIS].flushdb()
    known = await client.post("/api/auth/send-otp", json={"phone": PHONE})
    unknown = await client.post("/api/auth/send-otp", json={"phone": "+919876500000"})
    assert known.status == unknown.status == 200
    a, b = await known.json(), await unknown.json()
    assert a.pop("destination") != b.pop("destination")
    assert a == b


async def test_dev_code_is_returned_only_in_development(
        aiohttp_client: Any, make_settings: Callable[..., Settings], client: TestClient[Any, Any]) -> None:
    test_env = await client.post("/api/auth/send-otp", json={"email": "a@example.com"})
    assert "dev_code" not in await test_env.json()

    dev_client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(env="development")))
    resp = await dev_client.post("/api/auth/send-otp", json={"email": "b@example.com"})
    body = await resp.json()
    assert resp.status == 200 and len(body["dev_code"]) == 6
    assert body["dev_code"] == await latest_code(app_of(dev_client), "email", "b@example.com")


async def test_bad_destinations_and_unknown_fields_are_422(client: TestClient[Any, Any]) -> None:
    for payload in ({"phone": "9876543210"}, {"phone": "+0123456789"}, {"email": "not-an-email"},
                    {"email": "a@b"}, {}, {"phone": PHONE, "email": "a@example.com"},
                    {"phone": PHONE, "role": "admin"}):
        resp = await client.post("/api/auth/send-otp", json=payload)
        assert resp.status == 422, payload
        assert (await resp.json())["error"]["code"] == "validation_error"
    resp = await client.post("/api/auth/verify-otp", json={"phone": PHONE, "code": "12345"})
    assert resp.status == 422


def partner_gate(app: web.Application) -> web.Application:
    """A tiny app with one route guarded the way every partner endpoint is guarded."""

    async def probe(request: web.Request) -> web.Response:
        try:
            await authenticate(request, ("partner",))
        except AppError as exc:
            return error_response(exc)
        return web.json_response({"ok": True})

    gate = web.Application()
    gate[keys.SETTINGS] = app[keys.SETTINGS]
    gate[keys.DB] = app[keys.DB]
    gate[keys.REDIS] = app[keys.REDIS]
    gate.router.add_get("/probe", probe)
    return gate


BUSINESS = {"company_name": "Ravi Events", "contact_name": "Ravi Kumar", "vehicle_type": "van",
            "service_area": "Bengaluru"}


async def test_partner_signs_in_registers_the_business_and_waits_for_approval(
        client: TestClient[Any, Any], aiohttp_client: Any) -> None:
    app = app_of(client)
    db = app[keys.DB]
    signed = await sign_in(client, email="Ravi@Events.example")  # a code sign-in: a customer account
    resp = await client.post("/api/auth/partner/register", headers=bearer(signed["access_token"]),
                             json={**BUSINESS, "email": "ravi@events.example"})
    assert resp.status == 201 and (await resp.json())["status"] == "pending"
    partner = await db.partners.find_one({"_id": signed["user"]["id"]})
    assert partner is not None and partner["status"] == "pending" and partner["first_name"] == "Ravi"
    assert partner["email"] == "ravi@events.example" and "phone" not in partner
    assert "application_pending" not in partner
    welcome = await wait_for_message(app, "email", "ravi@events.example", after=1)
    assert "application" in welcome["subject"]

    # A retry changes nothing and sends nothing more.
    again = await client.post("/api/auth/partner/register", headers=bearer(signed["access_token"]), json=BUSINESS)
    assert again.status == 201 and (await again.json())["status"] == "pending"
    assert await db.partners.count_documents({}) == 1
    assert await db.outbox.count_documents({"subject": "PartyPilot: partner application received"}) == 1

    # The role is re-read on refresh; then partner endpoints wait for approval.
    refreshed = await (await client.post("/api/auth/refresh", json={"refresh_token": signed["refresh_token"]})).json()
    assert refreshed["user"]["role"] == "partner" and refreshed["user"]["partner_status"] == "pending"
    token = refreshed["access_token"]
    gate_client: TestClient[Any, Any] = await aiohttp_client(partner_gate(app))
    refused = await gate_client.get("/probe", headers=bearer(token))
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "partner_not_approved"
    await db.partners.update_one({"_id": partner["_id"]}, {"$set": {"status": "approved"}})
    assert (await gate_client.get("/probe", headers=bearer(token))).status == 200


async def test_partner_register_needs_a_signed_in_account_and_reveals_nothing(client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    db = app[keys.DB]
    await sign_in(client, email="taken@example.com")
    users, outbox = await db.users.count_documents({}), await db.outbox.count_documents({})
    fields = {**BUSINESS, "phone": "+919811100000"}
    fresh = await client.post("/api/auth/partner/register", json={**fields, "email": "new@example.com"})
    taken = await client.post("/api/auth/partner/register", json={**fields, "email": "taken@example.com"})
    assert fresh.status == taken.status == 401
    assert await fresh.json() == await taken.json()
    # Nothing created, nobody messaged: no unverified account can squat an identifier.
    assert await db.users.count_documents({}) == users and await db.partners.count_documents({}) == 0
    assert await db.outbox.count_documents({}) == outbox


async def test_a_second_identifier_needs_its_own_code_and_answers_alike_whoever_owns_it(
        client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    db = app[keys.DB]
    await sign_in(client, phone="+919811100001")  # someone else's phone
    await app[keys.REDIS].flushdb()
    applicant = await sign_in(client, email="ann@example.com")
    headers = bearer(applicant["access_token"])
    answers = []
    for phone in ("+919811100001", "+919811100002"):
        missing = await client.post("/api/auth/partner/register", headers=headers, json={**BUSINESS, "phone": phone})
        guessed = await client.post("/api/auth/partner/register", headers=headers, json={
            **BUSINESS, "phone": phone, "phone_code": "123456", "verify_code": "123456"})
        answers.append([(r.status, await r.json()) for r in (missing, guessed)])
    assert answers[0] == answers[1]
    assert [status for status, _ in answers[0]] == [422, 400]
    assert answers[0][0][1]["error"]["code"] == "step_up_required"
    assert [d["field"] for d in answers[0][0][1]["error"]["details"]] == ["phone_code", "verify_code"]
    assert await db.partners.count_documents({}) == 0
    assert await db.users.count_documents({"phone": "+919811100002"}) == 0

    # With the new phone's code and a step-up code from the account's email, the phone is added.
    verify_code = await step_up(client, applicant["access_token"], "identifier", to="ann@example.com")
    await client.post("/api/auth/send-otp", json={"phone": "+919811100002"})
    phone_code = await latest_code(app, "sms", "+919811100002")
    resp = await client.post("/api/auth/partner/register", headers=headers, json={
        **BUSINESS, "phone": "+919811100002", "phone_code": phone_code, "verify_code": verify_code})
    assert resp.status == 201
    partner = await db.partners.find_one({"_id": applicant["user"]["id"]})
    assert partner is not None and partner["phone"] == "+919811100002" and partner["email"] == "ann@example.com"
    assert await db.outbox.find_one({"to": "ann@example.com", "subject": "PartyPilot: sign-in details changed"})


async def test_partner_register_refuses_another_accounts_identifier_and_admins(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    signed = await sign_in(client, email="ann@example.com")
    resp = await client.post("/api/auth/partner/register", headers=bearer(signed["access_token"]),
                             json={**BUSINESS, "email": "other@example.com"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "identifier_mismatch"
    admin = await client.post("/api/auth/partner/register", headers=bearer(token_for("admin-1", "admin")),
                              json=BUSINESS)
    assert admin.status == 403


async def test_an_interrupted_partner_registration_is_finished_by_a_retry_or_the_sweep(
        client: TestClient[Any, Any]) -> None:
    app = app_of(client)
    db = app[keys.DB]
    signed = await sign_in(client, email="ann@example.com")
    user_id = signed["user"]["id"]
    # What a crash right after the partner document leaves: the account is still a customer.
    old = "2026-01-01T00:00:00.000Z"
    await db.partners.insert_one({"_id": user_id, "company_name": "Ann Co", "contact_name": "Ann Lee",
                                  "first_name": "Ann", "email": "ann@example.com", "vehicle_type": "car",
                                  "status": "pending", "created_at": old, "status_at": old, "application_pending": 1})
    assert await accounts.finish_pending(db, app[keys.REDIS], app[keys.SETTINGS]) == 1
    user = await db.users.find_one({"_id": user_id})
    assert user is not None and user["role"] == "partner" and user["name"] == "Ann Lee"
    assert (await db.partners.find_one({"_id": user_id}) or {}).get("application_pending") is None
    assert await db.outbox.count_documents({"subject": "PartyPilot: partner application received"}) == 1

    # The same through the user's own retry.
    await db.users.update_one({"_id": user_id}, {"$set": {"role": "customer"}})
    await db.partners.update_one({"_id": user_id}, {"$set": {"application_pending": 1}})
    resp = await client.post("/api/auth/partner/register", headers=bearer(signed["access_token"]), json=BUSINESS)
    assert resp.status == 201
    assert (await db.users.find_one({"_id": user_id}) or {}).get("role") == "partner"
    partner = await db.partners.find_one({"_id": user_id})
    assert partner is not None and partner["company_name"] == "Ann Co" and "application_pending" not in partner


async def test_partner_register_validates_its_input(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="ann@example.com")
    base = {"company_name": "Co", "contact_name": "Ann", "email": "ann@example.com", "phone": "+919811100002",
            "vehicle_type": "van"}
    for change in ({"vehicle_type": "rocket"}, {"phone": "12"}, {"company_name": ""}, {"status": "approved"}):
        resp = await client.post("/api/auth/partner/register", headers=bearer(signed["access_token"]),
                                 json={**base, **change})
        assert resp.status == 422, change


async def test_password_sign_in_with_lockout_after_repeated_failures(client: TestClient[Any, Any]) -> None:
    signed = await sign_in(client, email="pw@example.com")
    token = signed["access_token"]
    weak = await client.put("/api/users/password", json={"new_password": "short"}, headers=bearer(token))
    assert weak.status == 422 and (await weak.json())["error"]["details"][0]["type"] == "weak_password"
    code = await step_up(client, token, "password", to="pw@example.com")
    ok = await client.put("/api/users/password", json={"new_password": "correct horse battery", "verify_code": code},
                          headers=bearer(token))
    assert ok.status == 200

    resp = await client.post("/api/auth/login", json={"email": "PW@example.com", "password": "correct horse battery"})
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["id"] == signed["user"]["id"] and body["user"]["has_password"] is True
    assert "__Host-pp_refresh" in resp.cookies

    for _ in range(5):
        wrong = await client.post("/api/auth/login", json={"email": "pw@example.com", "password": "wrong password!"})
        assert wrong.status == 401 and (await wrong.json())["error"]["code"] == "invalid_credentials"
    locked = await client.post("/api/auth/login", json={"email": "pw@example.com", "password": "correct horse battery"})
    assert locked.status == 429 and int(locked.headers["Retry-After"]) > 0


async def test_parallel_password_guesses_cannot_exceed_the_lockout(client: TestClient[Any, Any]) -> None:
    token = (await sign_in(client, email="race@example.com"))["access_token"]
    pw = {"new_password": "correct horse battery",
          "verify_code": await step_up(client, token, "password", to="race@example.com")}
    assert (await client.put("/api/users/password", json=pw, headers=bearer(token))).status == 200
    guess = {"email": "race@example.com", "password": "wrong password!"}
    wrong = [asyncio.ensure_future(client.post("/api/auth/login", json=guess)) for _ in range(11)]
    # Let the guesses reach the server first (on a loaded 2-core box 50 ms was not always enough);
    # they still race each other, which is what the lockout must survive.
    await asyncio.sleep(0.5)
    right = await client.post("/api/auth/login", json={**guess, "password": "correct horse battery"})
    statuses = sorted([resp.status for resp in await asyncio.gather(*wrong)])
    assert statuses == [401] * 5 + [429] * 6
    assert right.status == 429, "a sixth guess must not be judged, even a right one"


async def test_login_fails_alike_for_unknown_emails_and_accounts_without_password(
        client: TestClient[Any, Any]) -> None:
    await sign_in(client, email="nopw@example.com")
    a = await client.post("/api/auth/login", json={"email": "nopw@example.com", "password": "anything at all"})
    b = await client.post("/api/auth/login", json={"email": "ghost@example.com", "password": "anything at all"})
    assert a.status == b.status == 401
    assert await a.json() == await b.json()


async def test_changing_a_password_needs_the_current_one_and_ends_other_sessions(
        client: TestClient[Any, Any]) -> None:
    first = await sign_in(client, email="two@example.com")
    await app_of(client)[keys.REDIS].flushdb()
    second = await sign_in(client, email="two@example.com")
    pw = {"new_password": "first strong password",
          "verify_code": await step_up(client, first["access_token"], "password", to="two@example.com")}
    assert (await client.put("/api/users/password", json=pw, headers=bearer(first["access_token"]))).status == 200
    # The other session ended at once; the one that changed the password goes on.
    assert (await client.get("/api/users/profile", headers=bearer(second["access_token"]))).status == 401
    assert (await client.get("/api/users/profile", headers=bearer(first["access_token"]))).status == 200
    change = {"new_password": "second strong password"}
    no_current = await client.put("/api/users/password", json=change, headers=bearer(first["access_token"]))
    assert no_current.status == 422 and (await no_current.json())["error"]["code"] == "step_up_required"
    change["current_password"] = "not the password"
    assert (await client.put("/api/users/password", json=change, headers=bearer(first["access_token"]))).status == 401
    change["current_password"] = "first strong password"
    assert (await client.put("/api/users/password", json=change, headers=bearer(first["access_token"]))).status == 200


async def test_account_routes_are_described_in_openapi(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    expected = {("/api/auth/send-otp", "post"), ("/api/auth/verify-otp", "post"), ("/api/auth/refresh", "post"),
                ("/api/auth/logout", "post"), ("/api/auth/partner/register", "post"), ("/api/auth/login", "post"),
                ("/api/users/profile", "get"), ("/api/users/profile", "put"), ("/api/users/password", "put"),
                ("/api/users/account", "delete"), ("/api/users/verify/send", "post")}
    present = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert expected <= present
    assert doc["paths"]["/api/auth/send-otp"]["post"]["requestBody"]
    assert "429" in doc["paths"]["/api/auth/send-otp"]["post"]["responses"]


async def test_a_login_lockout_survives_redis_losing_everything(client: TestClient[Any, Any]) -> None:
    from api.accounts import hash_password  # the password is set directly: this is about sign-in

    signed = await sign_in(client, email="locked@example.com")
    db, redis = app_of(client)[keys.DB], app_of(client)[keys.REDIS]
    await db.users.update_one({"_id": signed["user"]["id"]},
                              {"$set": {"password_hash": await hash_password("correct horse battery")}})
    for _ in range(5):
        wrong = await client.post("/api/auth/login", json={"email": "locked@example.com", "password": "wrong guess!"})
        assert wrong.status == 401
    await redis.flushall()
    locked = await client.post("/api/auth/login", json={"email": "locked@example.com",
                                                        "password": "correct horse battery"})
    assert locked.status == 429 and int(locked.headers["Retry-After"]) > 0
    # Nothing stored names the address or the client: the durable window is keyed by a digest.
    assert "locked@example.com" not in str(await db.rate_limits.find().to_list())


async def test_a_code_budget_survives_redis_losing_everything(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(otp_per_destination_per_hour=2)))
    statuses = []
    for _ in range(3):
        resp = await client.post("/api/auth/send-otp", json={"phone": PHONE})
        statuses.append(resp.status)
        await redis.flushall()  # also clears the 30 s resend cooldown, which is deliberately not durable
    assert statuses == [200, 200, 429]


async def test_the_code_guessing_budget_of_an_address_survives_redis_losing_everything(
        aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(otp_per_ip_per_hour=1, otp_max_attempts=2)))
    for n in range(2):
        resp = await client.post("/api/auth/verify-otp", json={"email": f"g{n}@example.com", "code": "000000"})
        assert resp.status == 400
    await redis.flushall()
    resp = await client.post("/api/auth/verify-otp", json={"email": "g9@example.com", "code": "000000"})
    assert resp.status == 429
