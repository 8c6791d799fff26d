"""Who is asking: bearer-token authentication, role checks and partner standing."""

from __future__ import annotations

from aiohttp import web

from core import keys, revocations
from core.errors import Forbidden, Unauthorized
from core.keys import CLAIMS
from core.tokens import Claims, Role, decode_access_token


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("sign in first: send Authorization: Bearer <access_token>", code="unauthorized")
    return token.strip()


async def authenticate(request: web.Request, roles: tuple[Role, ...], *, approved_partner: bool = True) -> Claims:
    """Verify the bearer token, that its session is live, and that its role may use this route.

    Partners must also be approved and not suspended (checked on every request, so a suspension
    takes effect at once) unless the route says otherwise.
    """
    settings = request.config_dict[keys.SETTINGS]
    claims = decode_access_token(settings, bearer_token(request))
    # Durable: a Redis that lost its revocations rebuilds them from MongoDB before this answers.
    if claims.session_id and await revocations.is_revoked(request.config_dict[keys.DB], request.config_dict[keys.REDIS],
                                                          settings.access_token_ttl_s, claims.session_id):
        raise Unauthorized("this session has ended; sign in again", code="session_revoked")
    if claims.role not in roles:
        raise Forbidden("your role may not use this endpoint", code="forbidden")
    if claims.role == "partner" and approved_partner:
        partner = await request.config_dict[keys.DB].partners.find_one({"_id": claims.user_id}, {"status": 1})
        status = (partner or {}).get("status")
        if status == "suspended":
            raise Forbidden("your partner account is suspended", code="partner_suspended")
        if status != "approved":
            raise Forbidden("your partner account is not approved yet", code="partner_not_approved")
    request[CLAIMS] = claims
    return claims
