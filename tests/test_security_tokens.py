"""Forged and misused access tokens are refused, on REST and on the Socket.IO connect.

Each forgery is built by hand (header, claims, signature), so the test does not depend on the
library it is checking; a control token built the same way with every claim right must pass, or
the refusals would prove nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.tokens import issue_tracking_token
from tests.dispatch_helpers import Env, make_customer, refusal, start_env
from tests.fakes import app_of
from tests.helpers import bearer, db_of, make_user

__all__ = ["start_env"]

StartEnv = Callable[..., Awaitable[Env]]
Forge = Callable[[str, str], str]  # (secret, user_id) -> token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
    return f"{signing_input.decode()}.{_b64(sign(signing_input))}"


def _claims(user_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "role": "customer", "sid": "forgery", "typ": "access",
                              "aud": "partypilot", "iss": "partypilot", "iat": now, "exp": now + 600}
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _hs(secret: str, digest: Any = hashlib.sha256) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret.encode(), data, digest).digest()


def signed(secret: str, user_id: str, alg: str = "HS256", **changes: Any) -> str:
    """A token signed with the server's own secret, with `changes` made to the right claims."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return _token({"alg": alg, "typ": "JWT"}, _claims(user_id, **changes), _hs(secret, digest))


FORGERIES: dict[str, Forge] = {
    "alg none": lambda s, u: _token({"alg": "none", "typ": "JWT"}, _claims(u), lambda _: b""),
    "alg None": lambda s, u: _token({"alg": "None"}, _claims(u), lambda _: b""),
    "alg NONE with a signature": lambda s, u: _token({"alg": "NONE"}, _claims(u), _hs(s)),
    "no alg": lambda s, u: _token({"typ": "JWT"}, _claims(u), _hs(s)),
    # Key confusion: a server that let the header pick the algorithm could be made to verify an
    # RS256 token with an HMAC of its key material (or the reverse). Only HS256 is ever accepted.
    "RS256 header, HMAC signature with the secret": lambda s, u: _token({"alg": "RS256", "typ": "JWT"},
                                                                         _claims(u), _hs(s)),
    "RS256 header, arbitrary signature": lambda s, u: _token({"alg": "RS256"}, _claims(u), lambda _: b"\x01" * 256),
    "ES256 header": lambda s, u: _token({"alg": "ES256"}, _claims(u), lambda _: b"\x02" * 64),
    "HS512 with the right secret": lambda s, u: signed(s, u, alg="HS512"),
    "HS384 with the right secret": lambda s, u: signed(s, u, alg="HS384"),
    "embedded jwk with its own key": lambda s, u: _token(
        {"alg": "HS256", "jwk": {"kty": "oct", "k": _b64(b"attacker-key")}}, _claims(u), _hs("attacker-key")),
    "wrong secret": lambda s, u: signed("another-secret-0123456789abcdef0123456789", u),
    "signature stripped": lambda s, u: signed(s, u).rsplit(".", 1)[0] + ".",
    "claims altered after signing": lambda s, u: _swap_claims(signed(s, u), _claims(u, role="admin")),
    "wrong aud": lambda s, u: signed(s, u, aud="someone-else"),
    "aud missing": lambda s, u: signed(s, u, aud=None),
    "wrong iss": lambda s, u: signed(s, u, iss="https://evil.example"),
    "iss missing": lambda s, u: signed(s, u, iss=None),
    "typ track": lambda s, u: signed(s, u, typ="track"),
    "typ refresh": lambda s, u: signed(s, u, typ="refresh"),
    "typ missing": lambda s, u: signed(s, u, typ=None),
    "expired": lambda s, u: signed(s, u, iat=int(time.time()) - 1200, exp=int(time.time()) - 60),
    "exp missing": lambda s, u: signed(s, u, exp=None),
    "nbf in the future": lambda s, u: signed(s, u, nbf=int(time.time()) + 600),
    "unknown role": lambda s, u: signed(s, u, role="root"),
    "non-string subject": lambda s, u: signed(s, u, sub=12345),
}
EXPECTED_CODE = {"expired": "token_expired"}


def _swap_claims(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _secret(app: Any) -> str:
    from core import keys

    return str(app[keys.SETTINGS].jwt_secret.get_secret_value())


async def test_the_control_token_is_accepted(client: TestClient[Any, Any]) -> None:
    user = await make_user(db_of(app_of(client)))
    resp = await client.get("/api/users/profile", headers=bearer(signed(_secret(app_of(client)), user)))
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("name", sorted(FORGERIES))
async def test_a_forged_or_misused_token_is_refused_on_rest(client: TestClient[Any, Any], name: str) -> None:
    user = await make_user(db_of(app_of(client)), role="admin")  # admin, so "role" swaps would matter
    token = FORGERIES[name](_secret(app_of(client)), user)
    for path in ("/api/users/profile", "/api/admin/orders"):
        resp = await client.get(path, headers=bearer(token))
        assert resp.status == 401, (name, path, await resp.text())
        assert (await resp.json())["error"]["code"] == EXPECTED_CODE.get(name, "invalid_token"), name


async def test_a_tracking_link_is_not_an_access_token(client: TestClient[Any, Any]) -> None:
    from core import keys

    token, _ = issue_tracking_token(app_of(client)[keys.SETTINGS], "some-order")
    resp = await client.get("/api/users/profile", headers=bearer(token))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_token"


async def test_forged_tokens_are_refused_at_the_socket_connect(start_env: StartEnv) -> None:
    env = await start_env()
    user = await make_customer(env.db)
    secret = env.settings.jwt_secret.get_secret_value()
    control = await env.sock(signed(secret, user))
    assert control.client.connected
    await control.close()
    for name, forge in sorted(FORGERIES.items()):
        refused = await refusal(env, forge(secret, user))
        assert refused["code"] == EXPECTED_CODE.get(name, "invalid_token"), (name, refused)
    tracking, _ = issue_tracking_token(env.settings, "some-order")
    refused = await refusal(env, tracking)
    assert refused["code"] == "invalid_token"
