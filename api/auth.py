"""/api/auth: one-time codes, sessions (refresh, logout), partner registration, password sign-in.

Browsers get the refresh token in a `__Host-` cookie (HttpOnly, Secure, SameSite=Strict); the
cookie is honoured only on /auth/refresh and /auth/logout, and only with an allowed Origin plus
the `X-PartyPilot-CSRF: 1` header, which a cross-site form cannot send. Native clients send the
refresh token in the body instead.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pymongo.asynchronous.database import AsyncDatabase

from api import accounts, notifications, otp, ratelimit, sessions
from api.accounts import Email, Phone
from api.routing import RouteTable
from api.schemas import closed
from core import keys
from core.errors import AppError, Conflict, Forbidden, Unauthorized
from core.http import client_ip, from_browser, json_response, refuse_cross_site
from core.jsonutil import iso, now_ms
from core.settings import Settings
from core.tokens import Claims, decode_access_token
from gateway_clients.delivery import mask_email, mask_phone

logger = logging.getLogger(__name__)

routes = RouteTable("auth")

REFRESH_COOKIE = "__Host-pp_refresh"
CSRF_HEADER = "X-PartyPilot-CSRF"
HOUR_S = 3600
LOGIN_FAILURE_WINDOW_S = 15 * 60

Code = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{6}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Database = AsyncDatabase[dict[str, Any]]
OpaqueToken = Annotated[str, StringConstraints(min_length=20, max_length=200)]


class _DestinationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: Phone | None = Field(None, description="E.164, e.g. +919876543210")
    email: Email | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> _DestinationBody:
        if (self.phone is None) == (self.email is None):
            raise ValueError("send exactly one of phone or email")
        return self

    def destination(self) -> otp.Destination:
        if self.phone is not None:
            return otp.Destination("sms", self.phone)
        assert self.email is not None  # guaranteed by _exactly_one
        return otp.Destination("email", self.email)


class SendOtpBody(_DestinationBody):
    """Where to send a sign-in code."""


class VerifyOtpBody(_DestinationBody):
    """The destination and the code it received."""

    code: Code


class RefreshBody(BaseModel):
    """Native clients send the token here; browsers send `{}` and rely on the cookie."""

    model_config = ConfigDict(extra="forbid")
    refresh_token: OpaqueToken | None = None


class LogoutBody(RefreshBody):
    """Which session to end: the bearer token's, and/or the refresh token's (body or cookie)."""


class PartnerRegisterBody(BaseModel):
    """The business, applied for on the signed-in account. `email` / `phone` may repeat the
    account's; one the account lacks is added only with its own code plus a step-up proof."""

    model_config = ConfigDict(extra="forbid")
    company_name: Name
    contact_name: Name
    email: Email | None = Field(None, description="the account's email, or one to add (with email_code)")
    phone: Phone | None = Field(None, description="the account's phone, or one to add (with phone_code)")
    vehicle_type: Literal["bike", "car", "van", "truck"]
    service_area: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)] | None = None
    email_code: Code | None = Field(None, description="the code /api/auth/send-otp sent to a new email")
    phone_code: Code | None = Field(None, description="the code /api/auth/send-otp sent to a new phone")
    verify_code: Code | None = Field(None, description='a code from POST /api/users/verify/send, action "identifier", '
                                     "needed to add an email or phone")
    current_password: Annotated[str, StringConstraints(max_length=accounts.PASSWORD_MAX)] | None = None


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=accounts.PASSWORD_MAX)]


class SendOtpResponse(BaseModel):
    model_config = closed({"status": "sent", "channel": "email", "destination": "a***@example.com", "expires_in": 300,
                           "resend_after": 30})
    status: Literal["sent"]
    channel: Literal["sms", "email"]
    destination: str = Field(description="masked")
    expires_in: int
    resend_after: int
    dev_code: str | None = Field(None, description="development only")


_USER_EXAMPLE: dict[str, Any] = {
    "id": "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "role": "customer", "name": "Asha Rao", "email": "asha@example.com",
    "phone": "+919845012345", "addresses": [{"label": "Home", "line1": "12 Church Street", "city": "Bengaluru",
                                            "postal_code": "560001", "lat": 12.9752, "lng": 77.6033}],
    "avatar_url": None, "created_at": "2026-09-14T12:00:00.000Z", "has_password": False}


class UserView(BaseModel):
    """The signed-in user's own account (never hashes or internal flags)."""

    model_config = closed(_USER_EXAMPLE)
    id: str
    role: Literal["customer", "partner", "admin"]
    name: str
    email: str | None
    phone: str | None
    addresses: list[dict[str, Any]]
    avatar_url: str | None
    created_at: str | None
    has_password: bool
    partner_status: str | None = Field(None, description="for an account that applied as a partner: its standing")


class TokenResponse(BaseModel):
    model_config = closed({"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwYzFkIn0.c2lnbmF0dXJl",
                           "refresh_token": "Vh3kq9dD1z0mXJp7bN2rT5yW8aC4eF6gH1iK3lM5nO7", "token_type": "Bearer",
                           "expires_in": 900, "refresh_expires_in": 2_592_000, "user": _USER_EXAMPLE})
    access_token: str
    refresh_token: str | None = Field(None, description="absent when the refresh came from the cookie")
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_expires_in: int
    user: UserView


class StatusResponse(BaseModel):
    model_config = closed({"status": "signed_out"}, {"status": "pending", "message": "Application received."})
    status: str
    message: str | None = None


async def ensure_indexes(db: Database) -> None:
    """Indexes of the account modules (api/__init__ calls this for the `auth` module)."""
    await accounts.ensure_indexes(db)
    await otp.ensure_indexes(db)
    await sessions.ensure_indexes(db)
    await ratelimit.ensure_indexes(db)


# --- helpers ----------------------------------------------------------------------------------

def _client(request: web.Request) -> str:
    """The caller as per-address limits count it (an IPv6 address by its /64)."""
    return ratelimit.address_key(client_ip(request, request.config_dict[keys.SETTINGS].trust_proxy))


def _same_site_only(request: web.Request) -> None:
    """Cookie-setting POSTs refuse browsers on other sites: no signing a victim into our account."""
    refuse_cross_site(request, request.config_dict[keys.SETTINGS].allowed_origins)


def set_refresh_cookie(response: web.Response, grant: sessions.Grant) -> None:
    response.set_cookie(REFRESH_COOKIE, grant.refresh_token, max_age=grant.refresh_expires_in, path="/",
                        secure=True, httponly=True, samesite="Strict")


def clear_refresh_cookie(response: web.Response) -> None:
    response.del_cookie(REFRESH_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def cookie_refresh_token(request: web.Request, settings: Settings) -> str | None:
    """The refresh cookie, if present, after the CSRF checks (403 when they fail)."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        return None
    if request.headers.get("Origin") not in settings.allowed_origins or request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"cookie sign-in needs an allowed Origin and the {CSRF_HEADER}: 1 header",
                        code="csrf_failed")
    return token


async def _grant_response(request: web.Request, grant: sessions.Grant, *, include_refresh: bool = True
                          ) -> web.Response:
    db = request.config_dict[keys.DB]
    user = await accounts.get_user(db, grant.user_id)
    body = {**grant.body(), "user": accounts.profile_view(user, await accounts.partner_status(db, user))}
    # A browser gets the refresh token in the HttpOnly cookie only, out of reach of script.
    if not include_refresh or from_browser(request):
        body.pop("refresh_token")
    response = json_response(body, headers={"Cache-Control": "no-store"})
    set_refresh_cookie(response, grant)
    return response


def _masked(destination: otp.Destination) -> str:
    return mask_phone(destination.address) if destination.channel == "sms" else mask_email(destination.address)


# --- one-time codes ---------------------------------------------------------------------------

# A sign-in message starts "<code> SIGN_IN_CODE_PHRASE": `partypilot codes` finds codes in the local outbox by it.
SIGN_IN_CODE_PHRASE = "is your PartyPilot sign-in code"


@routes.post("/auth/send-otp", summary="Send a 6-digit sign-in code by SMS or email", body=SendOtpBody,
             response=SendOtpResponse, responses={429: "cooldown or rate limit; see Retry-After"})
async def send_otp(request: web.Request, body: SendOtpBody) -> web.Response:
    settings, db = request.config_dict[keys.SETTINGS], request.config_dict[keys.DB]
    destination = body.destination()
    # No account lookup here: the answer, and the work behind it, is the same for everyone.
    issued = await otp.issue(db, request.config_dict[keys.REDIS], settings, destination, _client(request))
    minutes = max(settings.otp_ttl_s // 60, 1)
    await notifications.enqueue(
        db, channel=destination.channel, to=destination.address, subject="Your PartyPilot sign-in code",
        body=f"{issued.code} {SIGN_IN_CODE_PHRASE}. It expires in {minutes} min. "
             "Never share it: PartyPilot staff will never ask for it.",
        dedupe_key=f"otp:{uuid.uuid4().hex}", expires_ms=now_ms() + settings.otp_ttl_s * 1000, sensitive=True,
    )
    answer: dict[str, Any] = {"status": "sent", "channel": destination.channel, "destination": _masked(destination),
                              "expires_in": issued.expires_in, "resend_after": issued.resend_after}
    if settings.is_development:
        answer["dev_code"] = issued.code
    return json_response(answer, headers={"Cache-Control": "no-store"})


@routes.post("/auth/verify-otp", summary="Sign in with a code; creates the customer account on first use",
             body=VerifyOtpBody, response=TokenResponse,
             responses={400: "invalid_code: wrong, expired or used up", 429: "too many attempts"})
async def verify_otp(request: web.Request, body: VerifyOtpBody) -> web.Response:
    _same_site_only(request)
    settings, db = request.config_dict[keys.SETTINGS], request.config_dict[keys.DB]
    destination = body.destination()
    await otp.verify(db, request.config_dict[keys.REDIS], settings, destination, body.code, _client(request))
    user = await accounts.sign_in_user(db, destination)
    grant = await sessions.start(db, settings, user)
    return await _grant_response(request, grant)


# --- sessions ---------------------------------------------------------------------------------

@routes.post("/auth/refresh", summary="Trade a refresh token (body or cookie) for a new pair; rotates it",
             body=RefreshBody, response=TokenResponse, headers=(CSRF_HEADER,),
             responses={401: "invalid, expired, revoked or reused refresh token",
                        403: "cookie used without an allowed Origin and the CSRF header"})
async def refresh(request: web.Request, body: RefreshBody) -> web.Response:
    _same_site_only(request)
    settings = request.config_dict[keys.SETTINGS]
    token = body.refresh_token
    from_cookie = token is None
    if token is None:
        token = cookie_refresh_token(request, settings)
    if token is None:
        raise Unauthorized("send a refresh token", code="invalid_refresh_token")
    grant = await sessions.rotate(request.config_dict[keys.DB], request.config_dict[keys.REDIS], settings, token)
    # A browser keeps its refresh token in the HttpOnly cookie only: do not hand it to script.
    return await _grant_response(request, grant, include_refresh=not from_cookie)


@routes.post("/auth/logout", summary="End the session: its refresh tokens, access tokens and sockets",
             body=LogoutBody, response=StatusResponse, headers=(CSRF_HEADER,),
             responses={401: "no bearer or refresh token identifies a session"})
async def logout(request: web.Request, body: LogoutBody) -> web.Response:
    _same_site_only(request)
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    targets: dict[str, str] = {}
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        try:
            claims = decode_access_token(settings, header[7:].strip())
            if claims.session_id:
                targets[claims.session_id] = claims.user_id
        except AppError:
            pass  # an expired access token must not stop a logout that names its refresh token
    token = body.refresh_token or cookie_refresh_token(request, settings)
    if token:
        found = await sessions.find_by_token(db, token)
        if found is not None:
            targets[str(found["_id"])] = str(found["user_id"])
    if not targets:
        raise Unauthorized("no session to end: send the access token or the refresh token", code="unauthorized")
    for session_id, user_id in targets.items():
        await sessions.revoke(db, redis, settings, session_id, user_id, reason="logout")
    response = json_response({"status": "signed_out"})
    clear_refresh_cookie(response)
    return response


# --- partners ---------------------------------------------------------------------------------

@routes.post("/auth/partner/register", summary="Apply as a partner with the signed-in account; work once approved",
             body=PartnerRegisterBody, response=StatusResponse, status=201, roles=("customer", "partner"),
             approved_partner=False,
             responses={400: "invalid_code", 401: "sign in first (with a one-time code)",
                        403: "admins cannot apply", 409: "identifier_mismatch, or destination_taken",
                        422: "step_up_required to add an email or phone", 429: "too many registrations"})
async def register_partner(request: web.Request, body: PartnerRegisterBody, user: Claims) -> web.Response:
    """Registration verifies what it claims: the applicant signed in with a code, so the account's
    identifier is proven; it never looks at, or reveals, any other account (issue 10, finding 2)."""
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    await ratelimit.hit(redis, f"partner-register:ip:{_client(request)}", settings.otp_per_ip_per_hour, HOUR_S)
    current = await accounts.get_user(db, user.user_id)
    await _add_partner_identifiers(request, body, current)
    status = await _create_partner(db, await accounts.get_user(db, user.user_id), body)
    # The access token still says "customer": the client refreshes to act as a partner.
    return json_response({"status": status, "message": "Application received. Partner features open once an "
                          "administrator approves you; refresh your session to see your status."}, status=201)


async def _add_partner_identifiers(request: web.Request, body: PartnerRegisterBody, current: dict[str, Any]) -> None:
    """Add the email or phone the application names and the account lacks, each proven by its own
    code and a step-up proof of the account's existing factor (as on PUT /api/users/profile)."""
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    wanted = [(otp.Destination("email", body.email) if body.email else None, body.email_code, "email_code"),
              (otp.Destination("sms", body.phone) if body.phone else None, body.phone_code, "phone_code")]
    new: list[tuple[otp.Destination, str | None, str]] = []
    for destination, code, field in wanted:
        if destination is None or current.get(destination.field) == destination.address:
            continue
        if current.get(destination.field):
            raise Conflict(f"this is not the {destination.field} of the account you signed in with; change it in "
                           "your profile, or leave it out", code="identifier_mismatch",
                           details={"field": destination.field})
        new.append((destination, code, field))
    if not new:
        return
    proof = accounts.Proof(verify_code=body.verify_code, current_password=body.current_password)
    await accounts.check_new_identifiers(db, redis, settings, current, new, proof, _client(request))
    await accounts.add_identifiers(db, current, [d for d, _, _ in new], iso())


async def _create_partner(db: Database, user: dict[str, Any], body: PartnerRegisterBody) -> str:
    """The pending partner behind `user` (idempotent; see accounts.apply_as_partner); its status."""
    return await accounts.apply_as_partner(db, user, accounts.PartnerApplication(
        company_name=body.company_name, contact_name=body.contact_name, vehicle_type=body.vehicle_type,
        service_area=body.service_area))


# --- passwords --------------------------------------------------------------------------------

@routes.post("/auth/login", summary="Sign in with email and password (set one at PUT /api/users/password)",
             body=LoginBody, response=TokenResponse,
             responses={401: "invalid_credentials", 429: "locked after repeated failures, or rate limited"})
async def login(request: web.Request, body: LoginBody) -> web.Response:
    _same_site_only(request)
    settings, db, redis = (request.config_dict[keys.SETTINGS], request.config_dict[keys.DB],
                           request.config_dict[keys.REDIS])
    await ratelimit.hit(redis, f"login:ip:{_client(request)}", settings.otp_per_ip_per_hour * settings.otp_max_attempts,
                        HOUR_S, message="too many sign-in attempts from this address; try again later")
    # Attempts count per email (pseudonymised), known or not, so lockout does not reveal accounts.
    # Each attempt is counted before the password is checked, so parallel guesses cannot all
    # slip past the limit while their hashes are being computed; a success clears the count.
    attempts = "login:attempts:" + otp.destination_key(settings, otp.Destination("email", body.email))
    # Durable: the lockout outlives a Redis loss.
    await ratelimit.hit(redis, attempts, settings.otp_max_attempts, LOGIN_FAILURE_WINDOW_S,
                        message="too many failed sign-ins; try again later or sign in with a code", durable=db)
    user = await db.users.find_one({"email": body.email})
    if not await accounts.verify_password(body.password, (user or {}).get("password_hash")) or user is None:
        raise Unauthorized("the email or password is wrong", code="invalid_credentials")
    await ratelimit.reset(redis, attempts, durable=db)
    grant = await sessions.start(db, settings, user)
    return await _grant_response(request, grant)
