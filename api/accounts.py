"""Accounts: identifiers (E.164 phones, email addresses), finding and creating users, passwords,
the profile view, and deleting an account by anonymising it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis

from api import otp, sessions
from core.contracts import PARTNER_EVENTS, PartnerEvent
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.jsonutil import iso
from core.orderflow import ACTIVE
from core.settings import Settings

logger = logging.getLogger(__name__)

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
# Deliberately simple and strict: dot-atom local part, dotted host names, an alphabetic TLD.
EMAIL_PATTERN = (r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                 r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")

Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=E164_PATTERN)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=EMAIL_PATTERN),
                  AfterValidator(str.lower)]

DELETED_NAME = "Deleted user"


def flag(value: Any) -> bool:
    """Stored 0/1 (or a legacy boolean) as a bool."""
    return bool(value) and value not in ("0", "false")


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    # Sparse: anonymised accounts have neither field, and many documents may lack one of them.
    await db.users.create_index("email", unique=True, sparse=True)
    await db.users.create_index("phone", unique=True, sparse=True)


# --- finding and creating users ---------------------------------------------------------------

async def find_by_destination(db: AsyncDatabase[dict[str, Any]], destination: otp.Destination
                              ) -> dict[str, Any] | None:
    return await db.users.find_one({destination.field: destination.address})


async def sign_in_user(db: AsyncDatabase[dict[str, Any]], destination: otp.Destination) -> dict[str, Any]:
    """The account behind a verified destination; a customer account is created on first use."""
    user = await find_by_destination(db, destination)
    if user is not None:
        return user
    doc: dict[str, Any] = {"_id": uuid.uuid4().hex, "role": "customer", destination.field: destination.address,
                           "name": "", "addresses": [], "created_at": iso(), "deleted": 0}
    try:
        await db.users.insert_one(doc)
        logger.info("customer account %s created on first sign-in", doc["_id"])
        return doc
    except DuplicateKeyError:
        # Two verifications raced to create the account: the other one won; use its account.
        existing = await find_by_destination(db, destination)
        if existing is None:
            raise
        return existing


async def get_user(db: AsyncDatabase[dict[str, Any]], user_id: str) -> dict[str, Any]:
    user = await db.users.find_one({"_id": user_id})
    if user is None or flag(user.get("deleted")):
        raise NotFound("no such account")
    return user


async def partner_status(db: AsyncDatabase[dict[str, Any]], user: Mapping[str, Any]) -> str | None:
    if user.get("role") != "partner":
        return None
    partner = await db.partners.find_one({"_id": user["_id"]}, {"status": 1})
    return str(partner["status"]) if partner and partner.get("status") else None


def profile_view(user: Mapping[str, Any], partner_state: str | None = None) -> dict[str, Any]:
    """What a user may see of their own account (never hashes or internal flags)."""
    view: dict[str, Any] = {
        "id": str(user["_id"]), "role": user.get("role"), "name": user.get("name") or "",
        "email": user.get("email"), "phone": user.get("phone"),
        "addresses": [dict(a) for a in user.get("addresses") or [] if isinstance(a, Mapping)],
        "avatar_url": user.get("avatar_url"), "created_at": user.get("created_at"),
        "has_password": bool(user.get("password_hash")),
    }
    if partner_state is not None:
        view["partner_status"] = partner_state
    return view


# --- passwords --------------------------------------------------------------------------------

# scrypt with OWASP's N=2^14, r=8, p=5 profile: 16 MiB per hash, about 0.2 s on our 2-core box.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2 ** 14, 8, 5, 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024
PASSWORD_MIN, PASSWORD_MAX = 10, 128


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=_SCRYPT_LEN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password_sync(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password_sync(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password_sync(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    # scrypt holds the CPU for ~0.2 s: run it off the event loop.
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password: str, stored: str | None) -> bool:
    """Check `password` against `stored`; with no stored hash, spend the same time and say no,
    so response times do not tell which accounts have a password."""
    if not stored:
        await asyncio.to_thread(verify_password_sync, password, _dummy_hash())
        return False
    return await asyncio.to_thread(verify_password_sync, password, stored)


def check_password_strength(password: str, user: Mapping[str, Any]) -> None:
    """Length first (NIST 800-63B), plus refusals of the obviously guessable."""
    problems: list[str] = []
    if len(password) < PASSWORD_MIN:
        problems.append(f"use at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        problems.append(f"use at most {PASSWORD_MAX} characters")
    if len(set(password)) < 5:
        problems.append("use at least 5 different characters")
    lowered = password.lower()
    local = str(user.get("email") or "").partition("@")[0].lower()
    digits = str(user.get("phone") or "")[-7:]
    if (len(local) >= 4 and local in lowered) or (digits and digits in lowered) or "partypilot" in lowered:
        problems.append("do not build the password from your email, phone or the site's name")
    if problems:
        raise ValidationFailed("the password is too weak", details=[
            {"field": "new_password", "message": text, "type": "weak_password"} for text in problems])


# --- deleting an account ----------------------------------------------------------------------

async def delete_account(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, user_id: str) -> None:
    """Anonymise the account: personal data goes, order records stay, every session ends.

    Refused while the user has an active order (as customer or as assigned partner).
    """
    user = await get_user(db, user_id)
    if user.get("role") == "admin":
        raise Forbidden("administrator accounts are removed with the command-line tools", code="forbidden")
    statuses = sorted(ACTIVE)
    active = await db.orders.count_documents({"customer_id": user_id, "status": {"$in": statuses}})
    active += await db.orders.count_documents({"partner_id": user_id, "status": {"$in": statuses}})
    if active:
        raise Conflict("finish or cancel your active orders before deleting the account", code="active_orders",
                       details={"active_orders": active})
    at = iso()
    await db.users.update_one({"_id": user_id}, {
        "$set": {"name": DELETED_NAME, "addresses": [], "deleted": 1, "deleted_at": at},
        "$unset": {"email": "", "phone": "", "avatar_url": "", "password_hash": ""},
    })
    if user.get("phone"):
        await otp.discard(db, settings, otp.Destination("sms", str(user["phone"])))
    if user.get("email"):
        await otp.discard(db, settings, otp.Destination("email", str(user["email"])))
    if user.get("role") == "partner":
        await _anonymise_partner(db, redis, user_id, at)
    await _strip_order_details(db, user_id, at)
    await sessions.revoke_all(db, redis, settings, user_id, reason="account_deleted")
    logger.info("account %s deleted (anonymised)", user_id)


async def _anonymise_partner(db: AsyncDatabase[dict[str, Any]], redis: Redis, user_id: str, at: str) -> None:
    await db.partners.update_one({"_id": user_id}, {
        "$set": {"company_name": DELETED_NAME, "contact_name": DELETED_NAME, "first_name": "",
                 "status": "suspended", "status_at": at},
        "$unset": {"email": "", "phone": ""},
    })
    # Dispatch stops offering work to the partner on this event, as for any suspension.
    await redis.publish(PARTNER_EVENTS, PartnerEvent(partner_id=user_id, status="suspended", at=at).model_dump_json())


async def _strip_order_details(db: AsyncDatabase[dict[str, Any]], user_id: str, at: str) -> None:
    # Order records are kept for accounting, but the customer's street line and free-text notes
    # are personal data with no further use once every order is finished.
    cursor = db.orders.find({"customer_id": user_id}, {"address": 1})
    for order in await cursor.to_list():
        raw = order.get("address")
        address: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        kept: dict[str, Any] = {key: address[key] for key in ("city", "postal_code") if key in address}
        for key in ("lat", "lng"):
            if isinstance(address.get(key), int | float):
                kept[key] = round(float(address[key]), 2)  # about a kilometre: the area, not the door
        await db.orders.update_one({"_id": order["_id"]}, {
            "$set": {"address": {"line1": "", **kept}, "notes": "", "updated_at": at}, "$inc": {"version": 1}})
