"""One-time sign-in codes: six digits from `secrets`, stored only as a keyed hash, short-lived,
a few tries each, and rate-limited per destination and per client address.

One live code per destination and purpose: a resend replaces the previous code, so an older code
stops working (a code is bound to the request that made it). Codes for purposes other than signing
in (the step-up codes that confirm an account change, see api/users.py) live in slots of their own
and their digests name the purpose, so a code asked for one job can never do another; the hourly
budget per destination is shared by every purpose. The `otp_codes` collection has a TTL index
on a real datetime for MongoDB's clean-up, and expiry is also checked in code, because the TTL
monitor runs only once a minute (and the embedded server may not run it at all).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from api import ratelimit
from core.errors import BadRequest, RateLimited
from core.jsonutil import iso, now_ms
from core.settings import Settings

Channel = Literal["sms", "email"]
SIGN_IN = "sign-in"
CODE_DIGITS = 6
HOUR_S = 3600


class InvalidCode(BadRequest):
    """Wrong, expired, used-up or never-requested: deliberately one answer for all of them."""

    def __init__(self) -> None:
        super().__init__("the code is wrong or has expired; request a new one", code="invalid_code")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a code goes: a normalised E.164 phone (by SMS) or lower-case email address."""

    channel: Channel
    address: str

    @property
    def field(self) -> Literal["phone", "email"]:
        """The `users` field this destination matches."""
        return "phone" if self.channel == "sms" else "email"


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    expires_in: int
    resend_after: int


def _key(settings: Settings) -> bytes:
    # A key of its own, derived from the JWT secret, so an OTP digest can never be replayed as
    # (or confused with) any other MAC made with that secret.
    return hmac.new(settings.jwt_secret.get_secret_value().encode(), b"partypilot/otp/v1", hashlib.sha256).digest()


def destination_key(settings: Settings, destination: Destination) -> str:
    """A stable pseudonym for a destination: keys rate limits and codes without storing the address."""
    text = f"dest:{destination.channel}:{destination.address}".encode()
    return hmac.new(_key(settings), text, hashlib.sha256).hexdigest()[:40]


def _slot(settings: Settings, destination: Destination, purpose: str) -> str:
    """The `otp_codes` id of the live code for `destination` and `purpose`."""
    if purpose == SIGN_IN:
        return destination_key(settings, destination)  # unchanged since codes had no purpose
    text = f"slot:{purpose}:{destination.channel}:{destination.address}".encode()
    return hmac.new(_key(settings), text, hashlib.sha256).hexdigest()[:40]


def _digest(settings: Settings, destination: Destination, nonce: str, code: str, purpose: str) -> str:
    text = f"code:{destination.channel}:{destination.address}:{nonce}:{code}"
    if purpose != SIGN_IN:
        text = f"{purpose}:{text}"
    return hmac.new(_key(settings), text.encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.otp_codes.create_index("expires_at", expireAfterSeconds=0)


async def issue(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, destination: Destination,
                client: str, purpose: str = SIGN_IN) -> IssuedCode:
    """Make a fresh code for `destination` and `purpose`, replacing any earlier one. Raises
    RateLimited (429) when the client address, the slot's cooldown or the destination's hourly
    budget says no."""
    dkey = destination_key(settings, destination)
    slot = _slot(settings, destination, purpose)
    # Per-address limits count an IPv6 caller by its /64; the destination's hourly budget is
    # durable (it outlives a Redis loss).
    await ratelimit.hit(redis, f"otp:ip:{ratelimit.address_key(client)}", settings.otp_per_ip_per_hour, HOUR_S,
                        message="too many codes requested from this address; try again later")
    await ratelimit.cooldown(redis, f"otp:{slot}", settings.otp_resend_cooldown_s,
                             message="a code was sent a moment ago; wait before asking for another")
    try:
        await ratelimit.hit(redis, f"otp:dest:{dkey}", settings.otp_per_destination_per_hour, HOUR_S,
                            message="too many codes requested for this destination; try again later",
                            durable=db)
    except RateLimited:
        await ratelimit.release_cooldown(redis, f"otp:{slot}")
        raise
    code = new_code()
    nonce = secrets.token_hex(8)
    expires = datetime.now(UTC) + timedelta(seconds=settings.otp_ttl_s)
    await db.otp_codes.update_one(
        {"_id": slot},
        {"$set": {"digest": _digest(settings, destination, nonce, code, purpose), "nonce": nonce, "attempts": 0,
                  "expires_ms": int(expires.timestamp() * 1000), "expires_at": expires, "created_at": iso()}},
        upsert=True,
    )
    return IssuedCode(code=code, expires_in=settings.otp_ttl_s, resend_after=settings.otp_resend_cooldown_s)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A code that was checked and found right, but not yet used up (see `redeem`)."""

    slot: str
    nonce: str


async def check(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, destination: Destination,
                code: str, client: str, purpose: str = SIGN_IN) -> Ticket:
    """Count an attempt and compare, without using the code up; raise InvalidCode when it is wrong
    (and RateLimited for a client address guessing across many destinations). A code dies after
    `otp_max_attempts` wrong tries. A request that needs several codes checks them all first and
    redeems them together, so one mistyped code does not cost the others."""
    await ratelimit.hit(redis, f"otp-verify:ip:{ratelimit.address_key(client)}",
                        settings.otp_per_ip_per_hour * settings.otp_max_attempts, HOUR_S,
                        message="too many attempts from this address; try again later", durable=db)
    dkey = _slot(settings, destination, purpose)
    # Count the attempt before comparing, in one atomic step: parallel guesses cannot share a try.
    doc = await db.otp_codes.find_one_and_update(
        {"_id": dkey, "attempts": {"$lt": settings.otp_max_attempts}, "expires_ms": {"$gt": now_ms()}},
        {"$inc": {"attempts": 1}},
    )
    if doc is None:
        raise InvalidCode()
    nonce = str(doc.get("nonce", ""))
    expected = str(doc.get("digest", ""))
    if not hmac.compare_digest(expected, _digest(settings, destination, nonce, code, purpose)):
        if int(doc.get("attempts", 0)) + 1 >= settings.otp_max_attempts:
            await db.otp_codes.delete_one({"_id": dkey, "nonce": nonce})
        raise InvalidCode()
    return Ticket(dkey, nonce)


async def redeem(db: AsyncDatabase[dict[str, Any]], ticket: Ticket) -> None:
    """Use a checked code up; InvalidCode if another request used it first."""
    # Single use: only the caller whose delete removes this very code (same nonce) goes on.
    deleted = await db.otp_codes.delete_one({"_id": ticket.slot, "nonce": ticket.nonce})
    if deleted.deleted_count != 1:
        raise InvalidCode()


async def verify(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, destination: Destination,
                 code: str, client: str, purpose: str = SIGN_IN) -> None:
    """Consume the code if it is right; raise InvalidCode otherwise (see `check`)."""
    await redeem(db, await check(db, redis, settings, destination, code, client, purpose))


async def is_pending(db: AsyncDatabase[dict[str, Any]], settings: Settings, destination: Destination,
                     purpose: str = SIGN_IN) -> bool:
    """Whether a live, not used-up code waits for `destination` and `purpose`."""
    found = await db.otp_codes.count_documents(
        {"_id": _slot(settings, destination, purpose), "attempts": {"$lt": settings.otp_max_attempts},
         "expires_ms": {"$gt": now_ms()}}, limit=1)
    return found > 0


async def discard(db: AsyncDatabase[dict[str, Any]], settings: Settings, destination: Destination,
                  purpose: str = SIGN_IN) -> None:
    """Drop any pending code for `destination` and `purpose` (e.g. the account behind it was deleted)."""
    await db.otp_codes.delete_one({"_id": _slot(settings, destination, purpose)})
