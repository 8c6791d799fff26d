"""Notifications: a durable outbox of emails and SMS, its delivery worker, and the worker that
turns order history into messages for the customer.

The outbox is a collection, one document per message:
- `dedupe_key` has a unique index, so enqueueing the same logical message twice stores it once;
- a worker claims a message with one conditional update (pending -> sending, with a lease id),
  and only the lease holder records the outcome;
- a transient failure puts it back to pending with exponential backoff and jitter; a permanent
  one (a refused recipient) ends in `failed`; a message that stays undeliverable past its
  expiry ends in `dead` (or `expired` for sign-in codes); nothing is deleted, so nothing is lost.
- the one gap no provider lets us close: a worker that dies after the provider accepted a message
  but before `sent` is written leaves it `sending`; it is sent again once the lease runs out.
  Emails carry a Message-ID derived from the outbox id, so mail clients fold that duplicate.

Messages marked `sensitive` (sign-in codes) have their body blanked once they leave the pending
state, and are never logged.

Two lanes. Anything carrying a one-time code (sign-in and step-up codes: the `sensitive` messages)
goes in the `code` lane, everything else in `bulk`. Each lane has its own claim query and its own
worker loop, so a code never waits behind order mail: after an SMTP outage the backlog of bulk
mail is worked off oldest first, one at a time, while codes go out CODE_CONCURRENCY at a time as
soon as they are queued. A code is useful for minutes only, so codes whose expiry has passed are
marked `expired` in one update (every HOUSEKEEPING_S in the worker), never sent; one a claim
meets before that is settled `expired` unsent too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from aiohttp import web
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from api.routing import RouteTable
from core import keys
from core.jsonutil import iso, now_ms
from core.settings import Settings
from core.tasks import stop_if_cancelled
from gateway_clients.delivery import DeliveryError
from gateway_clients.messaging import Messengers

logger = logging.getLogger(__name__)

routes = RouteTable("notifications")

OutboxChannel = Literal["email", "sms"]
Lane = Literal["code", "bulk"]

POLL_INTERVAL_S = 1.0
# A queued code should leave within a fraction of a second; the lane's empty poll is one indexed read.
CODE_POLL_INTERVAL_S = 0.25
BATCH = 50
# Sends in flight per lane and process. Codes are few and urgent: several at once, so one slow
# SMTP exchange (or one timing out at 15 s) does not hold up the next person's sign-in. Bulk mail
# goes one at a time, as before, to stay under providers' connection limits.
CODE_CONCURRENCY = 8
BULK_CONCURRENCY = 1
# Longer than any gateway timeout (15 s), so a lease never runs out under a live send.
LEASE_MS = 60_000
# How often a worker looks for messages a dead sender left leased and drops expired codes: well
# inside LEASE_MS, and an expired code found by a claim meanwhile is still not sent (`_deliver`).
HOUSEKEEPING_S = 5.0
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 900.0
# An order update that could not be delivered for two days is no longer worth sending.
MAX_AGE_MS = 2 * 24 * 3600 * 1000

# History statuses the customer hears about, and which of them also go out by SMS.
EMAIL_STATUSES = frozenset({"placed", "assigned", "en_route", "arrived", "setup_complete", "completed",
                            "cancelled", "refunded"})
SMS_STATUSES = frozenset({"placed", "assigned", "en_route", "arrived", "cancelled"})


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.outbox.create_index("dedupe_key", unique=True)
    await db.outbox.create_index([("status", 1), ("next_attempt_ms", 1)])
    await db.outbox.create_index([("lane", 1), ("status", 1), ("next_attempt_ms", 1)])
    await db.orders.create_index("notify_pending")


# --- the outbox -------------------------------------------------------------------------------

async def enqueue(db: AsyncDatabase[dict[str, Any]], *, channel: OutboxChannel, to: str, subject: str, body: str,
                  dedupe_key: str, expires_ms: int | None = None, sensitive: bool = False,
                  lane: Lane | None = None) -> None:
    """Queue one message for delivery. Enqueueing the same `dedupe_key` again does nothing.

    `expires_ms` (ms since epoch) is when the message stops being worth sending; `sensitive`
    blanks the stored body once the message has been handled, and puts it in the `code` lane
    unless `lane` says otherwise.
    """
    now = now_ms()
    doc = {
        "_id": uuid.uuid4().hex, "dedupe_key": dedupe_key, "channel": channel, "to": to, "subject": subject,
        "body": body, "status": "pending", "attempts": 0, "next_attempt_ms": now, "lease": "",
        "lease_until_ms": 0, "created_at": iso(), "expires_ms": expires_ms or now + MAX_AGE_MS,
        "sensitive": 1 if sensitive else 0, "lane": lane or ("code" if sensitive else "bulk"),
    }
    try:
        await db.outbox.insert_one(doc)
    except DuplicateKeyError:
        logger.debug("outbox message %s is already queued", dedupe_key)


def _in_lane(lane: Lane) -> dict[str, Any]:
    # Messages queued before lanes existed have no `lane`: they are bulk (codes among them have
    # long expired).
    return {"lane": "code"} if lane == "code" else {"lane": {"$ne": "code"}}


async def _claim(db: AsyncDatabase[dict[str, Any]], now: int, lane: Lane, *, take_over: bool) -> dict[str, Any] | None:
    lease = uuid.uuid4().hex
    update = {"$set": {"status": "sending", "lease": lease, "lease_until_ms": now + LEASE_MS},
              "$inc": {"attempts": 1}}
    doc = await db.outbox.find_one_and_update(
        {**_in_lane(lane), "status": "pending", "next_attempt_ms": {"$lte": now}}, update,
        sort=[("next_attempt_ms", 1)], return_document=ReturnDocument.AFTER)
    if doc is None and take_over:
        # A worker that died mid-send left its message leased: take it over once the lease is over.
        doc = await db.outbox.find_one_and_update(
            {**_in_lane(lane), "status": "sending", "lease_until_ms": {"$lt": now}}, update,
            return_document=ReturnDocument.AFTER)
    return doc


async def outbox_depth(db: AsyncDatabase[dict[str, Any]]) -> dict[Lane, int]:
    """Messages not yet delivered (pending or being sent), per lane: two indexed counts."""
    return {lane: await db.outbox.count_documents({**_in_lane(lane), "status": {"$in": ["pending", "sending"]}})
            for lane in ("code", "bulk")}


async def expire_codes(db: AsyncDatabase[dict[str, Any]], now: int) -> int:
    """Mark queued codes past their expiry `expired` (body blanked) without sending them."""
    result = await db.outbox.update_many(
        {"lane": "code", "status": "pending", "expires_ms": {"$lte": now}},
        {"$set": {"status": "expired", "body": "", "finished_at": iso()}})
    if result.modified_count:
        logger.info("dropped %d sign-in codes that expired before they could be sent", result.modified_count)
    return int(result.modified_count)


def backoff_ms(attempts: int) -> int:
    """Delay before attempt `attempts + 1`: 2 s, 4 s, 8 s ... capped at 15 min, with +-20 % jitter
    so a fleet of workers does not retry a recovering server in lockstep."""
    delay = min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_CAP_S)
    return int(delay * random.uniform(0.8, 1.2) * 1000)  # noqa: S311 - jitter, not a secret


async def _settle(db: AsyncDatabase[dict[str, Any]], doc: Mapping[str, Any], fields: dict[str, Any]) -> None:
    if doc.get("sensitive") and fields.get("status") != "pending":
        fields["body"] = ""
    await db.outbox.update_one({"_id": doc["_id"], "lease": doc["lease"]}, {"$set": fields})


async def _send(messengers: Messengers, doc: Mapping[str, Any]) -> str:
    channel, to, body = doc.get("channel"), str(doc.get("to", "")), str(doc.get("body", ""))
    if channel == "sms":
        return await messengers.sms.send(to, body)
    if channel == "email":
        return await messengers.email.send(to, str(doc.get("subject", "")), body, message_id=str(doc["_id"]))
    raise DeliveryError(f"unknown channel {channel!r}", permanent=True)


async def _deliver(db: AsyncDatabase[dict[str, Any]], messengers: Messengers, doc: Mapping[str, Any]) -> None:
    now = now_ms()
    if int(doc.get("expires_ms") or 0) <= now:
        status = "expired" if doc.get("sensitive") else "dead"
        logger.warning("outbox message %s (%s) gave up after %s attempts: %s", doc["_id"], doc.get("channel"),
                       int(doc.get("attempts", 1)) - 1, doc.get("last_error") or "expired before delivery")
        await _settle(db, doc, {"status": status, "finished_at": iso()})
        return
    try:
        provider_id = await _send(messengers, doc)
    except DeliveryError as exc:
        stop_if_cancelled()
        if exc.permanent:
            logger.warning("outbox message %s (%s) refused for good: %s", doc["_id"], doc.get("channel"), exc)
            await _settle(db, doc, {"status": "failed", "last_error": str(exc), "finished_at": iso()})
            return
        retry_in = backoff_ms(int(doc.get("attempts", 1)))
        logger.info("outbox message %s (%s) attempt %s failed (%s); retrying in %.1f s", doc["_id"],
                    doc.get("channel"), doc.get("attempts"), exc, retry_in / 1000)
        await _settle(db, doc, {"status": "pending", "next_attempt_ms": now + retry_in, "last_error": str(exc)})
        return
    except Exception as exc:  # a bug or an unexpected library error: retry, never drop
        stop_if_cancelled()
        logger.exception("outbox message %s (%s) failed unexpectedly", doc["_id"], doc.get("channel"))
        await _settle(db, doc, {"status": "pending", "next_attempt_ms": now + backoff_ms(int(doc.get("attempts", 1))),
                                "last_error": type(exc).__name__})
        return
    await _settle(db, doc, {"status": "sent", "sent_at": iso(), "provider_id": provider_id, "last_error": ""})


LANE_CONCURRENCY: dict[Lane, int] = {"code": CODE_CONCURRENCY, "bulk": BULK_CONCURRENCY}


async def deliver_lane(db: AsyncDatabase[dict[str, Any]], messengers: Messengers, lane: Lane, *,
                       limit: int = BATCH, housekeeping: bool = True) -> int:
    """One pass over one lane: up to `limit` due messages, LANE_CONCURRENCY[lane] in flight at a
    time (each sender claims its next message atomically, so none is sent twice); returns how many
    were handled. `housekeeping` also drops expired codes and takes over messages whose sender
    died (the worker asks for it every HOUSEKEEPING_S, not on every poll).

    An empty lane costs one claim: the other senders start only once there is something to send,
    because the lane is polled several times a second in every app process and the embedded
    MongoDB server runs one command at a time (docs/quality.md: idle polls were half its work).
    """
    now = now_ms()
    if lane == "code" and housekeeping:
        await expire_codes(db, now)
    first = await _claim(db, now, lane, take_over=housekeeping)
    if first is None:
        return 0
    budget = limit - 1

    async def sender(doc: dict[str, Any] | None) -> int:
        nonlocal budget
        done = 0
        while True:
            if doc is None:
                if budget <= 0:
                    break
                budget -= 1
                doc = await _claim(db, now_ms(), lane, take_over=housekeeping)
                if doc is None:
                    break
            await _deliver(db, messengers, doc)
            done += 1
            doc = None
        return done

    senders = max(1, min(LANE_CONCURRENCY[lane], limit))
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(sender(first if n == 0 else None)) for n in range(senders)]
    except* Exception as failed:  # a store error: surface the first, as a single sender would
        raise failed.exceptions[0] from None
    return sum(task.result() for task in tasks)


async def deliver_due(db: AsyncDatabase[dict[str, Any]], messengers: Messengers, *, limit: int = BATCH) -> int:
    """One pass over both lanes, codes first: up to `limit` messages each; returns how many were handled."""
    handled = await deliver_lane(db, messengers, "code", limit=limit)
    return handled + await deliver_lane(db, messengers, "bulk", limit=limit)


def _lane_pass(db: AsyncDatabase[dict[str, Any]], messengers: Messengers, lane: Lane) -> Callable[[], Awaitable[int]]:
    """The worker's pass over `lane`, with housekeeping at most every HOUSEKEEPING_S."""
    last = 0.0

    def one_pass() -> Awaitable[int]:
        nonlocal last
        now = time.monotonic()
        housekeeping = now - last >= HOUSEKEEPING_S
        if housekeeping:
            last = now
        return deliver_lane(db, messengers, lane, housekeeping=housekeeping)

    return one_pass


async def outbox_worker(app: web.Application) -> None:
    """Deliver due outbox messages until cancelled, through the gateways the settings choose: one
    loop per lane, so codes never wait for a bulk pass to finish."""
    messengers = Messengers.from_settings(app[keys.SETTINGS])
    db = app[keys.DB]
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_poll("outbox codes", _lane_pass(db, messengers, "code"),
                                    interval_s=CODE_POLL_INTERVAL_S))
            group.create_task(_poll("outbox", _lane_pass(db, messengers, "bulk")))
    finally:
        await messengers.aclose()


# --- order notifications ----------------------------------------------------------------------

def _entry_text(status: str, order: Mapping[str, Any], entry: Mapping[str, Any], partner_name: str,
                settings: Settings) -> tuple[str, str, str]:
    """(email subject, email body, sms text) for one history entry."""
    raw_package = order.get("package")
    package: Mapping[str, Any] = raw_package if isinstance(raw_package, Mapping) else {}
    name = str(package.get("name") or "your PartyPilot package")
    date = str(order.get("event_date") or "")
    ref = str(order["_id"])[-6:].upper()
    link = f"{settings.public_url.rstrip('/')}/customer"
    reason = f" Reason: {entry['reason']}." if entry.get("reason") else ""
    partner = partner_name or "Your partner"
    lines = {
        "placed": (f"Order {ref} received", f"We have your order for {name} on {date}. We are finding a partner."),
        "assigned": (f"Order {ref}: partner assigned", f"{partner} will deliver and set up {name} on {date}."),
        "en_route": (f"Order {ref}: on the way", f"{partner} is on the way with {name}. Track it live."),
        "arrived": (f"Order {ref}: partner arrived", f"{partner} has arrived with {name}."),
        "setup_complete": (f"Order {ref}: setup complete", f"{name} is set up. Enjoy the event!"),
        "completed": (f"Order {ref} completed", f"Your order for {name} is complete. Thank you! You can rate it now."),
        "cancelled": (f"Order {ref} cancelled", f"Your order for {name} on {date} was cancelled.{reason}"),
        "refunded": (f"Order {ref} refunded", f"The payment for {name} has been refunded."),
    }
    subject, text = lines[status]
    body = f"Hello,\n\n{text}\n\nSee your orders: {link}\n\nPartyPilot\n"
    return f"PartyPilot: {subject}", body, f"PartyPilot: {text} ({ref})"


async def _partner_first_name(db: AsyncDatabase[dict[str, Any]], partner_id: Any) -> str:
    if not partner_id:
        return ""
    partner = await db.partners.find_one({"_id": partner_id}, {"first_name": 1, "contact_name": 1})
    if partner is None:
        return ""
    return str(partner.get("first_name") or str(partner.get("contact_name") or "").split(" ")[0])


async def notify_order(db: AsyncDatabase[dict[str, Any]], settings: Settings, order: Mapping[str, Any]) -> None:
    """Queue messages for the history entries of `order` (as read) not notified yet, then mark them
    notified if the order is still at the version read."""
    history = list(order.get("history") or [])
    upto = int(order.get("notified_upto") or 0)
    customer = await db.users.find_one({"_id": order.get("customer_id")}, {"email": 1, "phone": 1}) or {}
    partner_name = await _partner_first_name(db, order.get("partner_id")) if upto < len(history) else ""
    for index in range(upto, len(history)):
        entry = history[index]
        status = entry.get("status") if isinstance(entry, Mapping) else None
        if status not in EMAIL_STATUSES:
            continue
        subject, body, sms = _entry_text(str(status), order, entry, partner_name, settings)
        key = f"{order['_id']}:{index}"
        if customer.get("email"):
            await enqueue(db, channel="email", to=str(customer["email"]), subject=subject, body=body,
                          dedupe_key=f"{key}:email")
        if customer.get("phone") and status in SMS_STATUSES:
            await enqueue(db, channel="sms", to=str(customer["phone"]), subject=subject, body=sms,
                          dedupe_key=f"{key}:sms")
    # Only if nobody changed the order meanwhile: a newer version has entries we have not seen,
    # so it stays pending for the next pass (and the dedupe keys make re-enqueueing harmless).
    version = order.get("version")
    await db.orders.update_one(
        {"_id": order["_id"], "version": version if version is not None else {"$exists": False}},
        {"$set": {"notify_pending": 0, "notified_upto": len(history)}},
    )


async def notify_orders_once(db: AsyncDatabase[dict[str, Any]], settings: Settings, *, limit: int = 100) -> int:
    """One pass of the order notifier: turn new history entries into outbox messages."""
    orders = await db.orders.find({"notify_pending": 1}).limit(limit).to_list()
    for order in orders:
        await notify_order(db, settings, order)
    return len(orders)


async def order_notifier(app: web.Application) -> None:
    """Watch orders for new history entries until cancelled."""
    await _poll("order notifier", lambda: notify_orders_once(app[keys.DB], app[keys.SETTINGS]))


async def _poll(name: str, one_pass: Callable[[], Awaitable[int]], *, interval_s: float = POLL_INTERVAL_S) -> None:
    failing = False
    while True:
        handled = 0
        try:
            handled = await one_pass()
            if failing:
                logger.info("%s is working again", name)
                failing = False
        except Exception as exc:
            stop_if_cancelled()
            # Typically a store outage: say so once, keep polling, and pick up where we left off.
            if not failing:
                logger.warning("%s pass failed (%s); retrying every %.2g s", name, type(exc).__name__,
                               interval_s)
                failing = True
        # PyMongo can absorb our cancellation and return normally; without this check the loop
        # would poll on, "cancelling" forever, and hold up the app's shutdown.
        stop_if_cancelled()
        if handled < BATCH:
            await asyncio.sleep(interval_s)


WORKERS = [outbox_worker, order_notifier]
