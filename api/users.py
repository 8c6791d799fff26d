"""/api/users: the signed-in user's own profile, password and account.

Changing the email or phone (sign-in identifiers) needs a code sent to the new destination
through /api/auth/send-otp and, when one is being replaced, a code sent to the current one too:
a stolen access token alone cannot move an account to the thief's address. The previous
destination is also told of the change.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from api import accounts, notifications, otp, ratelimit, sessions
from api.accounts import Email, Phone
from api.auth import LOGIN_FAILURE_WINDOW_S, Code, StatusResponse, UserView, clear_refresh_cookie
from api.routing import RouteTable
from core import keys
from core.errors import Conflict, Unauthorized, ValidationFailed
from core.http import client_ip, json_response
from core.jsonutil import iso
from core.tokens import Claims

routes = RouteTable("users")

EVERYONE = ("customer", "partner", "admin")
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class SavedAddress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Annotated[str, StringConstraints(strip_whitespace=True, max_length=40)] = ""
    line1: Text
    city: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class ProfileUpdate(BaseModel):
    """Only the fields sent change. A new email or phone needs the code sent to it; replacing an
    existing one also needs a code sent to the current address (`current_*_code`)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    email: Email | None = None
    email_code: Code | None = None
    phone: Phone | None = None
    phone_code: Code | None = None
    current_email_code: Code | None = None
    current_phone_code: Code | None = None
    addresses: list[SavedAddress] | None = Field(None, max_length=10)
    avatar_url: Annotated[str, StringConstraints(max_length=500, pattern=r"^(https://[^\s]+|/media/[^\s]+)$")
                          ] | None = None


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: Annotated[str, StringConstraints(max_length=accounts.PASSWORD_MAX)] | None = Field(
        None, description="required when a password is already set")
    new_password: Annotated[str, StringConstraints(max_length=accounts.PASSWORD_MAX * 2)]


async def _view(request: web.Request, user: dict[str, Any]) -> web.Response:
    db = request.config_dict[keys.DB]
    return json_response(accounts.profile_view(user, await accounts.partner_status(db, user)),
                         headers={"Cache-Control": "no-store"})


@routes.get("/users/profile", summary="My profile", roles=EVERYONE, approved_partner=False, response=UserView)
async def get_profile(request: web.Request, user: Claims) -> web.Response:
    return await _view(request, await accounts.get_user(request.config_dict[keys.DB], user.user_id))


@routes.put("/users/profile", summary="Update my name, addresses, avatar, email or phone", body=ProfileUpdate,
            roles=EVERYONE, approved_partner=False, response=UserView,
            responses={400: "invalid_code for a new email or phone", 409: "the email or phone is in use"})
async def update_profile(request: web.Request, body: ProfileUpdate, user: Claims) -> web.Response:
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    current = await accounts.get_user(db, user.user_id)
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.addresses is not None:
        changes["addresses"] = [address.model_dump() for address in body.addresses]
    if body.avatar_url is not None:
        changes["avatar_url"] = body.avatar_url
    ip = client_ip(request, settings.trust_proxy)
    steps = [
        (otp.Destination("email", body.email) if body.email else None, body.email_code, "email_code",
         body.current_email_code, "current_email_code"),
        (otp.Destination("sms", body.phone) if body.phone else None, body.phone_code, "phone_code",
         body.current_phone_code, "current_phone_code"),
    ]
    for destination, code, field, current_code, current_field in steps:
        if destination is None or current.get(destination.field) == destination.address:
            continue
        previous = current.get(destination.field)
        missing = [name for name, value in ((field, code), (current_field, current_code))
                   if value is None and (name == field or previous)]
        if missing:
            raise ValidationFailed("changing a sign-in email or phone needs one-time codes", details=[
                {"field": name, "message": "request a code with /api/auth/send-otp for "
                 + ("the new" if name == field else "the current") + " address, then send it here",
                 "type": "missing"} for name in missing])
        if previous:
            assert current_code is not None
            await otp.verify(db, redis, settings, otp.Destination(destination.channel, str(previous)),
                             current_code, ip)
        assert code is not None
        await otp.verify(db, redis, settings, destination, code, ip)
        changes[destination.field] = destination.address
    if changes:
        changes["updated_at"] = iso()
        try:
            await db.users.update_one({"_id": user.user_id}, {"$set": changes})
        except DuplicateKeyError:
            raise Conflict("that email or phone belongs to another account", code="destination_taken") from None
        contact = {k: changes[k] for k in ("email", "phone") if k in changes}
        if contact and current.get("role") == "partner":
            await db.partners.update_one({"_id": user.user_id}, {"$set": contact})
        await _alert_previous_destinations(db, current, contact, changes["updated_at"])
    return await _view(request, await accounts.get_user(db, user.user_id))


async def _alert_previous_destinations(db: AsyncDatabase[dict[str, Any]], before: dict[str, Any],
                                       changed: Collection[str], at: str) -> None:
    """Tell the old email/phone that a sign-in identifier moved away from it (see the module docstring)."""
    text = ("The {what} you use to sign in to PartyPilot was just changed. If this was not you, contact "
            "support at once: someone may have access to your account.")
    for field, what in (("email", "email address"), ("phone", "phone number")):
        old = before.get(field)
        if field not in changed or not old:
            continue
        channel: notifications.OutboxChannel = "email" if field == "email" else "sms"
        await notifications.enqueue(db, channel=channel, to=str(old), subject="PartyPilot: sign-in details changed",
                                    body=text.format(what=what), dedupe_key=f"identifier-changed:{before['_id']}:"
                                    f"{field}:{at}")


@routes.put("/users/password", summary="Set or change my password (for POST /api/auth/login)",
            body=PasswordChange, roles=EVERYONE, approved_partner=False, response=StatusResponse,
            responses={401: "current_password is wrong", 409: "email_required: add an email first",
                       429: "too many wrong current passwords"})
async def change_password(request: web.Request, body: PasswordChange, user: Claims) -> web.Response:
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    current = await accounts.get_user(db, user.user_id)
    if not current.get("email"):
        raise Conflict("password sign-in uses your email: add an email to your profile first", code="email_required")
    if current.get("password_hash"):
        # Counted before checking, as at sign-in: parallel guesses cannot exceed the limit.
        attempts = f"password:attempts:{user.user_id}"
        await ratelimit.hit(redis, attempts, settings.otp_max_attempts, LOGIN_FAILURE_WINDOW_S)
        if not body.current_password or not await accounts.verify_password(body.current_password,
                                                                           current["password_hash"]):
            raise Unauthorized("the current password is wrong", code="invalid_credentials")
        await ratelimit.reset(redis, attempts)
    accounts.check_password_strength(body.new_password, current)
    await db.users.update_one({"_id": user.user_id}, {"$set": {
        "password_hash": await accounts.hash_password(body.new_password), "password_changed_at": iso()}})
    # A changed factor ends every other session (ASVS 7.4.3); this one stays signed in.
    await sessions.revoke_all(db, redis, settings, user.user_id, reason="password_changed", keep=user.session_id)
    return json_response({"status": "password_set"})


@routes.delete("/users/account", summary="Delete my account: personal data is anonymised, orders are kept",
               roles=("customer", "partner"), approved_partner=False, response=StatusResponse,
               responses={409: "active_orders: finish or cancel them first"})
async def delete_account(request: web.Request, user: Claims) -> web.Response:
    await accounts.delete_account(request.config_dict[keys.DB], request.config_dict[keys.REDIS],
                                  request.config_dict[keys.SETTINGS], user.user_id)
    response = json_response({"status": "deleted"})
    clear_refresh_cookie(response)
    return response
