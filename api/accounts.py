"""Accounts: identifiers (E.164 phones, email addresses), finding and creating users, passwords,
step-up proofs for sensitive changes, the profile view, partner applications, and deleting an
account by anonymising it.

Deleting an account and applying as a partner each write several collections. Each starts with a
durable marker (`users.deletion_pending`, `partners.application_pending`) and continues with steps
that are safe to repeat, so a retry by the user, or `finish_pending` (run by a worker in
api/users.py), completes whatever a crash interrupted.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, StringConstraints
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis

from api import notifications, otp, ratelimit, sessions
from core.contracts import PARTNER_EVENTS, PartnerEvent
from core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
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
    # Only half-done jobs carry these markers: the sweep finds them without scanning everyone.
    await db.users.create_index("deletion_pending", sparse=True)
    await db.partners.create_index("application_pending", sparse=True)


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
    """A live account; one being deleted is already gone for every purpose but finishing that."""
    user = await db.users.find_one({"_id": user_id})
    if user is None or flag(user.get("deleted")) or flag(user.get("deletion_pending")):
        raise NotFound("no such account")
    return user


def sign_in_addresses(user: Mapping[str, Any]) -> list[otp.Destination]:
    """The email and phone a user signs in with: the account's existing factors."""
    found: list[otp.Destination] = []
    if user.get("email"):
        found.append(otp.Destination("email", str(user["email"])))
    if user.get("phone"):
        found.append(otp.Destination("sms", str(user["phone"])))
    return found


async def tell_every_address(db: AsyncDatabase[dict[str, Any]], user: Mapping[str, Any], *, subject: str,
                             text: str, key: str) -> None:
    """Queue `text` to each of the user's sign-in addresses; `key` makes a repeat a no-op."""
    for destination in sign_in_addresses(user):
        body = f"Hello,\n\n{text}\n\nPartyPilot\n" if destination.channel == "email" else f"PartyPilot: {text}"
        await notifications.enqueue(db, channel=destination.channel, to=destination.address, subject=subject,
                                    body=body, dedupe_key=f"{key}:{destination.channel}")


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


# --- step-up: a fresh proof of an existing factor ------------------------------------------------

StepUpAction = Literal["identifier", "password", "delete_account"]
# What the confirmation message says the code is for, so an owner asked to read it out knows.
STEP_UP_ACTIONS: dict[StepUpAction, str] = {
    "identifier": "add or change the email or phone number you sign in with",
    "password": "set or change your password",
    "delete_account": "DELETE your account",
}
PASSWORD_FAILURE_WINDOW_S = 15 * 60


def step_up_purpose(action: StepUpAction, user_id: str) -> str:
    """The code slot of a step-up code: bound to the action and the account, never a sign-in code."""
    return f"step-up:{action}:{user_id}"


@dataclass(frozen=True, slots=True)
class Proof:
    """What a request offers as a fresh proof that the owner is present; any one will do.

    `verify_code` is a step-up code from POST /api/users/verify/send; `current_email_code` /
    `current_phone_code` are codes sent to that current address (step-up or sign-in codes).
    """

    verify_code: str | None = None
    current_password: str | None = None
    current_email_code: str | None = None
    current_phone_code: str | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.verify_code, self.current_password, self.current_email_code,
                                           self.current_phone_code))


class StepUpRequired(ValidationFailed):
    """The change needs a fresh proof of an existing factor and the request carried none."""

    def __init__(self, user: Mapping[str, Any], action: StepUpAction, extra: list[dict[str, Any]] | None = None
                 ) -> None:
        details = list(extra or [])
        if sign_in_addresses(user):
            details.append({"field": "verify_code", "type": "step_up_required", "message":
                            f"request a code with POST /api/users/verify/send {{\"action\": \"{action}\"}} "
                            "(it goes to your current email or phone), then send it here as verify_code"})
        if user.get("password_hash"):
            details.append({"field": "current_password", "type": "step_up_required",
                            "message": "or send your current password"})
        super().__init__("confirm it is you: this change needs a code sent to your current email or phone, "
                         "or your current password", code="step_up_required", details=details)


async def check_current_password(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings,
                                 user: Mapping[str, Any], password: str) -> None:
    """Raise 401 invalid_credentials unless `password` is the user's; wrong tries lock it for a
    while, and the lock outlives a Redis loss."""
    # Counted before checking, as at sign-in: parallel guesses cannot exceed the limit.
    attempts = f"password:attempts:{user['_id']}"
    await ratelimit.hit(redis, attempts, settings.otp_max_attempts, PASSWORD_FAILURE_WINDOW_S,
                        message="too many wrong passwords; try again later or confirm with a code", durable=db)
    if not await verify_password(password, user.get("password_hash")):
        raise Unauthorized("the current password is wrong", code="invalid_credentials")
    await ratelimit.reset(redis, attempts, durable=db)


@dataclass(frozen=True, slots=True)
class Proved:
    """What proved the owner present ("password", "email" or "phone"), and the code to redeem."""

    by: str
    ticket: otp.Ticket | None = None


async def check_proof(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings,
                      user: Mapping[str, Any], action: StepUpAction, proof: Proof, client: str) -> Proved:
    """Check one fresh proof of the user's existing factors for `action`. A code is checked, not
    used up: redeem `Proved.ticket` once the rest of the request has been checked too.

    Raises StepUpRequired (422) when none was offered, InvalidCode (400) or 401
    invalid_credentials when the one offered is wrong."""
    if not proof.given:
        raise StepUpRequired(user, action)
    purpose = step_up_purpose(action, str(user["_id"]))
    if proof.verify_code is not None:
        # The code went to one of the current addresses; only a slot that holds a live code is
        # tried, so a wrong guess costs one attempt of that code, as everywhere else.
        for destination in sign_in_addresses(user):
            if await otp.is_pending(db, settings, destination, purpose):
                try:
                    ticket = await otp.check(db, redis, settings, destination, proof.verify_code, client, purpose)
                    return Proved(destination.field, ticket)
                except otp.InvalidCode:
                    continue
        raise otp.InvalidCode()
    if proof.current_password is not None:
        await check_current_password(db, redis, settings, user, proof.current_password)
        return Proved("password")
    for field, code in (("email", proof.current_email_code), ("phone", proof.current_phone_code)):
        if code is None:
            continue
        if not user.get(field):
            raise otp.InvalidCode()
        destination = otp.Destination("email" if field == "email" else "sms", str(user[field]))
        # Either a step-up code for this action or a sign-in code: both prove the address now.
        bound = purpose if await otp.is_pending(db, settings, destination, purpose) else otp.SIGN_IN
        return Proved(field, await otp.check(db, redis, settings, destination, code, client, bound))
    raise StepUpRequired(user, action)  # unreachable: `given` said something was offered


async def prove(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, user: Mapping[str, Any],
                action: StepUpAction, proof: Proof, client: str) -> str:
    """check_proof and redeem at once, for a request that needs nothing else checked."""
    proved = await check_proof(db, redis, settings, user, action, proof, client)
    if proved.ticket is not None:
        await otp.redeem(db, proved.ticket)
    return proved.by


async def check_new_identifiers(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings,
                                user: Mapping[str, Any], new: list[tuple[otp.Destination, str | None, str]],
                                proof: Proof, client: str) -> None:
    """Check that each new (or replacement) email or phone comes with the code sent to it and the
    request with a fresh proof of an existing factor; then use all those codes up together.

    `new` holds (destination, code, name of the code's field). Missing parts get one 422 that
    names them all (step_up_required when the proof is among them)."""
    missing = [{"field": field, "type": "missing", "message": "request a code with /api/auth/send-otp for the "
                "new address, then send it here"} for _, code, field in new if code is None]
    if not proof.given:
        raise StepUpRequired(user, "identifier", extra=missing)
    if missing:
        raise ValidationFailed("a new sign-in email or phone needs the code sent to it", details=missing)
    proved = await check_proof(db, redis, settings, user, "identifier", proof, client)
    tickets = [proved.ticket] if proved.ticket is not None else []
    for destination, code, _ in new:
        assert code is not None  # `missing` is empty
        tickets.append(await otp.check(db, redis, settings, destination, code, client))
    for ticket in tickets:
        await otp.redeem(db, ticket)


async def add_identifiers(db: AsyncDatabase[dict[str, Any]], user: Mapping[str, Any],
                          destinations: list[otp.Destination], at: str) -> None:
    """Give the account new (or replacement) sign-in addresses, already proven by
    check_new_identifiers; the partner record follows, and every address it had is told."""
    changes: dict[str, Any] = {d.field: d.address for d in destinations}
    try:
        await db.users.update_one({"_id": user["_id"]}, {"$set": {**changes, "updated_at": at}})
    except DuplicateKeyError:
        raise Conflict("that email or phone belongs to another account", code="destination_taken") from None
    if user.get("role") == "partner":
        await db.partners.update_one({"_id": user["_id"]}, {"$set": changes})
    await tell_identifier_change(db, user, list(changes), at)


async def tell_identifier_change(db: AsyncDatabase[dict[str, Any]], before: Mapping[str, Any],
                                 changed: list[str], at: str) -> None:
    """Tell every address the account had that a sign-in email or phone was added or replaced."""
    what = " and ".join("email address" if field == "email" else "phone number" for field in changed)
    verb = "changed" if any(before.get(field) for field in changed) else "added"
    await tell_every_address(db, before, subject="PartyPilot: sign-in details changed", key=(
        f"identifier-changed:{before['_id']}:{'+'.join(changed)}:{at}"), text=(
        f"The {what} you use to sign in to PartyPilot was just {verb}. If this was not you, contact "
        "support at once: someone may have access to your account."))


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


# --- partner applications ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PartnerApplication:
    company_name: str
    contact_name: str
    vehicle_type: str
    service_area: str | None = None


async def apply_as_partner(db: AsyncDatabase[dict[str, Any]], user: Mapping[str, Any],
                           application: PartnerApplication) -> str:
    """Turn a signed-in account into a pending partner; returns the partner's status.

    Idempotent per user: the partner document (keyed on the user id) is the durable marker, and
    a second application changes nothing but finishes what a first one left undone.
    """
    user_id, at = str(user["_id"]), iso()
    partner: dict[str, Any] = {
        "_id": user_id, "company_name": application.company_name, "contact_name": application.contact_name,
        "first_name": application.contact_name.split()[0], "email": user.get("email"), "phone": user.get("phone"),
        "vehicle_type": application.vehicle_type, "status": "pending", "created_at": at, "status_at": at,
        "application_pending": 1,
    }
    partner = {key: value for key, value in partner.items() if value is not None}
    if application.service_area:
        partner["service_area"] = application.service_area
    try:
        await db.partners.insert_one(partner)
        logger.info("partner %s applied, pending approval", user_id)
    except DuplicateKeyError:
        pass  # applied before (perhaps interrupted): finish that application, never start another
    await finish_application(db, user_id)
    found = await db.partners.find_one({"_id": user_id}, {"status": 1})
    return str((found or {}).get("status") or "pending")


async def finish_application(db: AsyncDatabase[dict[str, Any]], user_id: str) -> bool:
    """The steps after the partner document: the account's role, then the confirmation. Each is
    safe to repeat; the marker goes last. Returns whether an application was pending."""
    partner = await db.partners.find_one({"_id": user_id, "application_pending": 1})
    if partner is None:
        return False
    user = await db.users.find_one({"_id": user_id})
    if user is None or flag(user.get("deleted")) or flag(user.get("deletion_pending")):
        await db.partners.update_one({"_id": user_id}, {"$unset": {"application_pending": ""}})
        return True
    changes: dict[str, Any] = {"role": "partner", "updated_at": iso()}
    if not user.get("name"):
        changes["name"] = partner.get("contact_name") or ""
    # Conditional on the role: an admin account is never turned into a partner.
    await db.users.update_one({"_id": user_id, "role": {"$in": ["customer", "partner"]}}, {"$set": changes})
    await tell_every_address(db, user, subject="PartyPilot: partner application received",
                             key=f"partner-registered:{user_id}", text=(
        f"Thank you for applying to deliver with PartyPilot as {partner.get('company_name')}. We review "
        "applications within two working days; sign in to see your status. If this was not you, contact "
        "support: someone may have access to your account."))
    await db.partners.update_one({"_id": user_id}, {"$unset": {"application_pending": ""}})
    return True


# --- deleting an account ----------------------------------------------------------------------

async def check_deletable(db: AsyncDatabase[dict[str, Any]], user: Mapping[str, Any]) -> None:
    """Refuse to delete an admin (403) or an account with an active order (409 active_orders)."""
    user_id = str(user["_id"])
    if user.get("role") == "admin":
        raise Forbidden("administrator accounts are removed with the command-line tools", code="forbidden")
    statuses = sorted(ACTIVE)
    active = await db.orders.count_documents({"customer_id": user_id, "status": {"$in": statuses}})
    active += await db.orders.count_documents({"partner_id": user_id, "status": {"$in": statuses}})
    if active:
        raise Conflict("finish or cancel your active orders before deleting the account", code="active_orders",
                       details={"active_orders": active})


async def delete_account(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, user_id: str) -> None:
    """Anonymise the account: personal data goes, order records stay, every session ends.

    Refused while the user has an active order (as customer or as assigned partner). The caller
    checks the owner's proof first.
    """
    user = await get_user(db, user_id)
    await check_deletable(db, user)
    # The marker first: from here on the account is gone for every other purpose, and a retry
    # or the sweep finishes the job (finish_deletion).
    await db.users.update_one({"_id": user_id, "deleted": {"$ne": 1}},
                              {"$set": {"deletion_pending": 1, "deletion_requested_at": iso()}})
    await finish_deletion(db, redis, settings, user_id)


async def deletion_pending(db: AsyncDatabase[dict[str, Any]], user_id: str) -> bool:
    return await db.users.count_documents({"_id": user_id, "deletion_pending": 1}, limit=1) > 0


async def finish_deletion(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, user_id: str) -> bool:
    """The deletion steps after the marker, each safe to repeat; the marker goes last. Returns
    whether a deletion was pending."""
    user = await db.users.find_one({"_id": user_id, "deletion_pending": 1})
    if user is None:
        return False
    at = str(user.get("deletion_requested_at") or iso())
    # Told while the addresses are still known (the dedupe key makes a repeat a no-op).
    await tell_every_address(db, user, subject="PartyPilot: account deleted", key=f"account-deleted:{user_id}",
                             text="Your PartyPilot account was deleted. If this was not you, contact support.")
    for destination in sign_in_addresses(user):
        await otp.discard(db, settings, destination)
        for action in STEP_UP_ACTIONS:
            await otp.discard(db, settings, destination, step_up_purpose(action, user_id))
    if user.get("role") == "partner":
        await _anonymise_partner(db, redis, user_id, at)
    await _strip_order_details(db, user_id, at)
    await db.users.update_one({"_id": user_id}, {
        "$set": {"name": DELETED_NAME, "addresses": [], "deleted": 1, "deleted_at": at},
        "$unset": {"email": "", "phone": "", "avatar_url": "", "password_hash": ""},
    })
    await sessions.revoke_all(db, redis, settings, user_id, reason="account_deleted")
    await db.users.update_one({"_id": user_id}, {"$unset": {"deletion_pending": "", "deletion_requested_at": ""}})
    logger.info("account %s deleted (anonymised)", user_id)
    return True


# A live request finishes its own steps within seconds; the sweep leaves it that long.
PENDING_GRACE_S = 60


async def finish_pending(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, *,
                         limit: int = 100) -> int:
    """Complete deletions and partner applications that a crash left half done; returns how many."""
    before = iso(datetime.now(UTC) - timedelta(seconds=PENDING_GRACE_S))
    done = 0
    for doc in await db.users.find({"deletion_pending": 1, "deletion_requested_at": {"$lt": before}},
                                   {"_id": 1}).limit(limit).to_list():
        done += await finish_deletion(db, redis, settings, str(doc["_id"]))
    for doc in await db.partners.find({"application_pending": 1, "created_at": {"$lt": before}},
                                      {"_id": 1}).limit(limit).to_list():
        done += await finish_application(db, str(doc["_id"]))
    return done


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
