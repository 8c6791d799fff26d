"""/api/users: the signed-in user's own profile, password and account.

A stolen access token must not become a permanent takeover, so every change to how the account
is signed in to (adding or replacing the email or phone, setting or changing the password) and
deleting the account needs a fresh proof of a factor the account already has: a step-up code
from POST /api/users/verify/send (sent to a current address, bound to the action), a code sent
to the current address, or the current password (`accounts.check_proof`). A new email or phone
also needs the code sent to it. Every address the account had is told of the change.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api import accounts, notifications, otp, sessions
from api.accounts import Email, Phone, Proof, StepUpAction
from api.auth import Code, StatusResponse, UserView, clear_refresh_cookie
from api.routing import RouteTable
from api.schemas import closed
from core import keys
from core.errors import Conflict
from core.http import client_ip, json_response
from core.jsonutil import iso, now_ms
from core.tasks import stop_if_cancelled
from core.tokens import Claims
from gateway_clients.delivery import mask_email, mask_phone

logger = logging.getLogger(__name__)

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


Password = Annotated[str, StringConstraints(max_length=accounts.PASSWORD_MAX)]
VERIFY_CODE_HELP = "a code from POST /api/users/verify/send for this action (sent to your current email or phone)"


class ProfileUpdate(BaseModel):
    """Only the fields sent change. A new email or phone needs the code sent to it (`email_code`,
    `phone_code`) and a fresh proof of an existing factor: `verify_code`, `current_password`, or a
    code sent to the current address (`current_email_code` / `current_phone_code`)."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    email: Email | None = None
    email_code: Code | None = None
    phone: Phone | None = None
    phone_code: Code | None = None
    current_email_code: Code | None = Field(None, description="a code sent to the account's current email")
    current_phone_code: Code | None = Field(None, description="a code sent to the account's current phone")
    verify_code: Code | None = Field(None, description=VERIFY_CODE_HELP + ' with action "identifier"')
    current_password: Password | None = None
    addresses: list[SavedAddress] | None = Field(None, max_length=10)
    avatar_url: Annotated[str, StringConstraints(max_length=500, pattern=r"^(https://[^\s]+|/media/[^\s]+)$")
                          ] | None = None


class PasswordChange(BaseModel):
    """The new password plus a fresh proof: the current password, or a step-up code."""

    model_config = ConfigDict(extra="forbid")
    current_password: Password | None = Field(None, description="the current password, when one is set")
    verify_code: Code | None = Field(None, description=VERIFY_CODE_HELP + ' with action "password"')
    new_password: Annotated[str, StringConstraints(max_length=accounts.PASSWORD_MAX * 2)]


class AccountDeletion(BaseModel):
    """A fresh proof that the owner asks for the deletion (`{}` finishes an interrupted one)."""

    model_config = ConfigDict(extra="forbid")
    verify_code: Code | None = Field(None, description=VERIFY_CODE_HELP + ' with action "delete_account"')
    current_password: Password | None = None


class StepUpSend(BaseModel):
    """Which change the code will confirm, and where to send it (the email when absent and present)."""

    model_config = ConfigDict(extra="forbid")
    action: StepUpAction
    via: Literal["email", "phone"] | None = None


class StepUpSendResponse(BaseModel):
    model_config = closed({"status": "sent", "action": "password", "channel": "email",
                           "destination": "a***@example.com", "expires_in": 300, "resend_after": 30})
    status: Literal["sent"]
    action: StepUpAction
    channel: Literal["sms", "email"]
    destination: str = Field(description="masked")
    expires_in: int
    resend_after: int
    dev_code: str | None = Field(None, description="development only")


async def _view(request: web.Request, user: dict[str, Any]) -> web.Response:
    db = request.config_dict[keys.DB]
    return json_response(accounts.profile_view(user, await accounts.partner_status(db, user)),
                         headers={"Cache-Control": "no-store"})


@routes.get("/users/profile", summary="My profile", roles=EVERYONE, approved_partner=False, response=UserView)
async def get_profile(request: web.Request, user: Claims) -> web.Response:
    return await _view(request, await accounts.get_user(request.config_dict[keys.DB], user.user_id))


@routes.post("/users/verify/send", summary="Send a code to my current email or phone to confirm a sensitive change",
             body=StepUpSend, roles=EVERYONE, approved_partner=False, response=StepUpSendResponse,
             responses={409: "no_such_factor: the account has no such address", 429: "cooldown or rate limit"})
async def send_step_up_code(request: web.Request, body: StepUpSend, user: Claims) -> web.Response:
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    current = await accounts.get_user(db, user.user_id)
    choices = [d for d in accounts.sign_in_addresses(current) if body.via is None or d.field == body.via]
    if not choices:
        raise Conflict(f"your account has no {body.via or 'email or phone'} to send a code to", code="no_such_factor")
    destination = choices[0]
    issued = await otp.issue(db, redis, settings, destination, client_ip(request, settings.trust_proxy),
                             accounts.step_up_purpose(body.action, user.user_id))
    minutes = max(settings.otp_ttl_s // 60, 1)
    await notifications.enqueue(
        db, channel=destination.channel, to=destination.address, subject="Your PartyPilot confirmation code",
        body=f"{issued.code} is your PartyPilot code to {accounts.STEP_UP_ACTIONS[body.action]}. It expires in "
             f"{minutes} min. Never share it. If you did not ask for it, someone may be signed in to your account: "
             "contact support.",
        dedupe_key=f"step-up:{uuid.uuid4().hex}", expires_ms=now_ms() + settings.otp_ttl_s * 1000, sensitive=True,
    )
    masked = mask_phone(destination.address) if destination.channel == "sms" else mask_email(destination.address)
    answer: dict[str, Any] = {"status": "sent", "action": body.action, "channel": destination.channel,
                              "destination": masked, "expires_in": issued.expires_in,
                              "resend_after": issued.resend_after}
    if settings.is_development:
        answer["dev_code"] = issued.code
    return json_response(answer, headers={"Cache-Control": "no-store"})


@routes.put("/users/profile", summary="Update my name, addresses, avatar, email or phone", body=ProfileUpdate,
            roles=EVERYONE, approved_partner=False, response=UserView,
            responses={400: "invalid_code", 401: "invalid_credentials: current_password is wrong",
                       409: "the email or phone is in use",
                       422: "step_up_required: a new email or phone needs a proof of an existing factor"})
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
    wanted = [(otp.Destination("email", body.email) if body.email else None, body.email_code, "email_code"),
              (otp.Destination("sms", body.phone) if body.phone else None, body.phone_code, "phone_code")]
    new = [(d, code, field) for d, code, field in wanted if d is not None and current.get(d.field) != d.address]
    if new:
        proof = Proof(verify_code=body.verify_code, current_password=body.current_password,
                      current_email_code=body.current_email_code, current_phone_code=body.current_phone_code)
        await accounts.check_new_identifiers(db, redis, settings, current, new, proof,
                                             client_ip(request, settings.trust_proxy))
    at = iso()
    if new:  # first: an address taken by another account (409) leaves the rest unchanged too
        await accounts.add_identifiers(db, current, [d for d, _, _ in new], at)
    if changes:
        changes["updated_at"] = at
        await db.users.update_one({"_id": user.user_id}, {"$set": changes})
    return await _view(request, await accounts.get_user(db, user.user_id))


@routes.put("/users/password", summary="Set or change my password (for POST /api/auth/login)",
            body=PasswordChange, roles=EVERYONE, approved_partner=False, response=StatusResponse,
            responses={400: "invalid_code", 401: "current_password is wrong", 409: "email_required: add an email first",
                       422: "step_up_required, or weak_password", 429: "too many wrong current passwords"})
async def change_password(request: web.Request, body: PasswordChange, user: Claims) -> web.Response:
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    current = await accounts.get_user(db, user.user_id)
    if not current.get("email"):
        raise Conflict("password sign-in uses your email: add an email to your profile first", code="email_required")
    accounts.check_password_strength(body.new_password, current)  # before the proof, so a weak try costs nothing
    proved = await accounts.prove(db, redis, settings, current, "password",
                                  Proof(verify_code=body.verify_code, current_password=body.current_password),
                                  client_ip(request, settings.trust_proxy))
    at = iso()
    await db.users.update_one({"_id": user.user_id}, {"$set": {
        "password_hash": await accounts.hash_password(body.new_password), "password_changed_at": at}})
    # A changed factor ends every other session (ASVS 7.4.3); this one stays signed in.
    await sessions.revoke_all(db, redis, settings, user.user_id, reason="password_changed", keep=user.session_id)
    what = "changed" if current.get("password_hash") else "set"
    await accounts.tell_every_address(db, current, subject=f"PartyPilot: password {what}",
                                      key=f"password-changed:{user.user_id}:{at}", text=(
        f"A password was just {what} for your PartyPilot account and your other sessions were signed out. "
        "If this was not you, contact support at once: someone may have access to your account."))
    logger.info("password %s for %s (proved by %s)", what, user.user_id, proved)
    return json_response({"status": "password_set"})


@routes.delete("/users/account", summary="Delete my account: personal data is anonymised, orders are kept",
               body=AccountDeletion, roles=("customer", "partner"), approved_partner=False, response=StatusResponse,
               responses={400: "invalid_code", 401: "current_password is wrong",
                          409: "active_orders: finish or cancel them first",
                          422: "step_up_required: a code from /api/users/verify/send or the current password"})
async def delete_account(request: web.Request, body: AccountDeletion, user: Claims) -> web.Response:
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    if await accounts.deletion_pending(db, user.user_id):
        # Confirmed before and interrupted: finish it. No new proof is asked for, because the
        # addresses a code would go to may already be gone.
        await accounts.finish_deletion(db, redis, settings, user.user_id)
    else:
        current = await accounts.get_user(db, user.user_id)
        await accounts.check_deletable(db, current)  # before the proof, so a refusal costs no code
        await accounts.prove(db, redis, settings, current, "delete_account",
                             Proof(verify_code=body.verify_code, current_password=body.current_password),
                             client_ip(request, settings.trust_proxy))
        await accounts.delete_account(db, redis, settings, user.user_id)
    response = json_response({"status": "deleted"})
    clear_refresh_cookie(response)
    return response


# --- finishing interrupted work -----------------------------------------------------------------

SWEEP_INTERVAL_S = 30.0  # a half-done deletion or application waits at most this long past its grace


async def pending_account_sweeper(app: web.Application) -> None:
    """Finish deletions and partner applications that a crash left half done, until cancelled."""
    failing = False
    while True:
        try:
            done = await accounts.finish_pending(app[keys.DB], app[keys.REDIS], app[keys.SETTINGS])
            if done:
                logger.info("finished %d interrupted account changes", done)
            failing = False
        except Exception as exc:
            stop_if_cancelled()
            if not failing:  # typically a store outage: say so once and keep trying
                logger.warning("account sweep failed (%s); retrying", type(exc).__name__)
                failing = True
        stop_if_cancelled()
        await asyncio.sleep(SWEEP_INTERVAL_S)


WORKERS = [pending_account_sweeper]
