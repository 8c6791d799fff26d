"""Access tokens: short-lived JWTs with pinned algorithm, audience, issuer and token type."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

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
                       now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    payload = {
        "sub": user_id, "role": role, "sid": session_id, "typ": "access",
        "aud": AUDIENCE, "iss": ISSUER, "iat": issued, "exp": issued + settings.access_token_ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> Claims:
    """Verify signature, algorithm, exp, aud, iss and type; raise Unauthorized otherwise."""
    try:
        payload = jwt.decode(
            token, settings.jwt_secret.get_secret_value(), algorithms=[ALGORITHM], audience=AUDIENCE,
            issuer=ISSUER, options={"require": ["exp", "sub", "aud", "iss", "typ"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired", code="token_expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("the access token is invalid", code="invalid_token") from None
    role = payload.get("role")
    if payload.get("typ") != "access" or role not in ROLES or not isinstance(payload.get("sub"), str):
        raise Unauthorized("the access token is invalid", code="invalid_token")
    return Claims(user_id=payload["sub"], role=role, session_id=str(payload.get("sid", "")),
                  expires_at=int(payload["exp"]))
