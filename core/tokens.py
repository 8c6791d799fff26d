"""Access tokens: short-lived JWTs with pinned algorithm, audience, issuer and token type."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from core.errors import Unauthorized
from core.settings import Settings

ALGORITHM = "HS256"
AUDIENCE = "partypilot"
ISSUER = "partypilot"
Role = Literal["customer", "partner", "admin"]
ROLES: tuple[Role, ...] = ("customer", "partner", "admin")


@dataclass(frozen=True, slots=True)
class Claims:
    """Who is asking: the verified content of an access token."""

    user_id: str
    role: Role
    session_id: str
    expires_at: int


def issue_access_token(settings: Settings, user_id: str, role: Role, session_id: str,
                       now: float | None = None, not_after: int | None = None) -> str:
    """A signed access token; `not_after` (epoch seconds, e.g. the session's end) caps its expiry."""
    issued = int(now if now is not None else time.time())
    expires = issued + settings.access_token_ttl_s
    if not_after is not None:
        expires = min(expires, not_after)
    payload = {
        "sub": user_id, "role": role, "sid": session_id, "typ": "access",
        "aud": AUDIENCE, "iss": ISSUER, "iat": issued, "exp": expires,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def _verified(settings: Settings, token: str, typ: str, what: str) -> dict[str, Any]:
    """The payload of a token of type `typ`: signature, pinned algorithm, exp, aud, iss, typ and
    a string subject all checked; Unauthorized (token_expired / invalid_token) otherwise."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token, settings.jwt_secret.get_secret_value(), algorithms=[ALGORITHM], audience=AUDIENCE,
            issuer=ISSUER, options={"require": ["exp", "sub", "aud", "iss", "typ"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(f"the {what} has expired", code="token_expired") from None
    except jwt.PyJWTError:
        raise Unauthorized(f"the {what} is invalid", code="invalid_token") from None
    if payload.get("typ") != typ or not isinstance(payload.get("sub"), str):
        raise Unauthorized(f"the {what} is invalid", code="invalid_token")
    return payload


def decode_access_token(settings: Settings, token: str) -> Claims:
    """Verify an access token; raise Unauthorized otherwise."""
    payload = _verified(settings, token, "access", "access token")
    role = payload.get("role")
    if role not in ROLES:
        raise Unauthorized("the access token is invalid", code="invalid_token")
    return Claims(user_id=payload["sub"], role=role, session_id=str(payload.get("sid", "")),
                  expires_at=int(payload["exp"]))


# A tracking link lets anyone holding it follow one order's delivery without signing in. It is
# a different token type, so it can never pass as an access token (and vice versa).
TRACKING_TTL_S = 48 * 3600


@dataclass(frozen=True, slots=True)
class TrackingClaims:
    order_id: str
    expires_at: int


def issue_tracking_token(settings: Settings, order_id: str, now: float | None = None,
                         ttl_s: int = TRACKING_TTL_S) -> tuple[str, int]:
    """A signed, expiring token for following `order_id`; returns (token, expires_at)."""
    issued = int(now if now is not None else time.time())
    expires = issued + ttl_s
    payload = {"sub": order_id, "typ": "track", "aud": AUDIENCE, "iss": ISSUER, "iat": issued, "exp": expires}
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM), expires


def decode_tracking_token(settings: Settings, token: str) -> TrackingClaims:
    payload = _verified(settings, token, "track", "tracking link")
    return TrackingClaims(order_id=payload["sub"], expires_at=int(payload["exp"]))
