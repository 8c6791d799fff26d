"""Test helpers: put users, partners, packages and orders straight into the database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from core import keys
from core.jsonutil import iso, now_ms

# Inside the demo service area (MG Road, Bengaluru) and well outside it (Mumbai).
BENGALURU = {"lat": 12.9756, "lng": 77.6050}
MUMBAI = {"lat": 19.0760, "lng": 72.8777}


def unique_phone() -> str:
    """An Indian mobile number no other test user has (phones are unique per account)."""
    return f"+919{uuid.uuid4().int % 10**9:09d}"


def db_of(app: web.Application) -> AsyncDatabase[dict[str, Any]]:
    return app[keys.DB]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def future_date(days: int = 10) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


async def make_user(db: AsyncDatabase[dict[str, Any]], role: str = "customer", **fields: Any) -> str:
    user_id = uuid.uuid4().hex
    doc = {"_id": user_id, "role": role, "email": f"{user_id[:10]}@example.test", "name": f"User {user_id[:4]}",
           "phone": unique_phone(), "addresses": [], "created_at": iso(), "deleted": 0, **fields}
    await db.users.insert_one(doc)
    return user_id


async def make_partner(db: AsyncDatabase[dict[str, Any]], status: str = "approved", **fields: Any) -> str:
    phone = unique_phone()
    partner_id = await make_user(db, "partner", name="Ravi Partner", phone=phone)
    now = iso()
    await db.partners.insert_one({
        "_id": partner_id, "company_name": "Ravi Events", "contact_name": "Ravi Kumar", "first_name": "Ravi",
        "email": f"{partner_id[:10]}@partner.test", "phone": phone, "vehicle_type": "van",
        "status": status, "created_at": now, "status_at": now, **fields,
    })
    return partner_id


async def make_package(db: AsyncDatabase[dict[str, Any]], **fields: Any) -> str:
    package_id = uuid.uuid4().hex
    now = iso()
    doc = {"_id": package_id, "name": f"Test Package {package_id[:6]}", "slug": f"test-{package_id[:12]}",
           "description": "A package for tests", "category": "Kids", "tags": ["test"], "price": 1_500_000,
           "currency": "INR", "capacity": 40, "duration_min": 180, "features": ["Balloons"],
           "images": ["/img/packages/kids.svg"], "active": 1, "rating_count": 0, "created_at": now,
           "updated_at": now, **fields}
    await db.packages.insert_one(doc)
    return package_id


async def make_order(db: AsyncDatabase[dict[str, Any]], customer_id: str, package_id: str | None = None,
                     status: str = "placed", **fields: Any) -> str:
    """An order as api/orders.py would create it, then in `status` (history kept plausible)."""
    order_id = uuid.uuid4().hex
    now = iso()
    price = int(fields.pop("price", 1_500_000))
    doc: dict[str, Any] = {
        "_id": order_id, "customer_id": customer_id, "package_id": package_id or uuid.uuid4().hex,
        "package": {"name": "Test Package", "price": price, "currency": "INR", "category": "Kids",
                    "duration_min": 180},
        "event_date": future_date(), "address": {"line1": "1 MG Road", "city": "Bengaluru",
                                                 "postal_code": "560001", **BENGALURU},
        "guests": 20, "notes": "", "payment_option": "cash", "price": price, "currency": "INR",
        "status": status, "version": 1,
        "history": [{"status": "placed", "at": now, "by_role": "customer", "by": customer_id, "reason": None}],
        "offer_partner_ids": [], "offer_fence": 0, "offer_expires_ms": 0, "declined_partner_ids": [],
        "service_area": "Bengaluru Central", "created_at": now, "updated_at": now, "notify_pending": 0,
        "notified_upto": 1, "reviewed": 0, **fields,
    }
    await db.orders.insert_one(doc)
    return order_id


async def offer_to(db: AsyncDatabase[dict[str, Any]], order_id: str, partner_ids: list[str],
                   ttl_ms: int = 60_000) -> None:
    """Put an order in the state dispatch leaves it in after offering it to `partner_ids`."""
    await db.orders.update_one({"_id": order_id}, {"$set": {
        "status": "offered", "offer_partner_ids": partner_ids, "offer_expires_ms": now_ms() + ttl_ms,
        "offer_fence": 1, "version": 2}})

