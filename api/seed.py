"""Demo data for development (idempotent) and the admin bootstrap used by the CLI."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from core.jsonutil import iso
from core.settings import Settings

logger = logging.getLogger(__name__)


async def ensure_admin(db: AsyncDatabase[dict[str, Any]], email: str, name: str = "Administrator") -> str:
    """Create the admin account for `email`, or promote the existing account. Returns its id."""
    email = email.strip().lower()
    existing = await db.users.find_one({"email": email}, {"_id": 1})
    if existing is not None:
        await db.users.update_one({"_id": existing["_id"]}, {"$set": {"role": "admin"}})
        return str(existing["_id"])
    user_id = uuid.uuid4().hex
    await db.users.insert_one({"_id": user_id, "role": "admin", "email": email, "name": name,
                               "created_at": iso(), "deleted": False})
    return user_id


async def seed_demo_data(db: AsyncDatabase[dict[str, Any]], settings: Settings) -> None:
    """Idempotent demo data; the dev admin identity comes from settings."""
    if settings.is_development:
        await ensure_admin(db, settings.dev_admin_email)
    logger.info("demo data is in place")
