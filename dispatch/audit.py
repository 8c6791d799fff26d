"""The dispatch audit trail: one MongoDB document per decision, readable by admins via the API."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from core.contracts import DISPATCH_AUDIT
from core.jsonutil import iso

logger = logging.getLogger(__name__)

# Which process took a decision: lets operators (and the two-process test) follow an order
# across processes.
NODE = f"{socket.gethostname()}:{os.getpid()}"


class AuditTrail:
    """Appends decisions as separate documents (never $push: see DESIGN.md)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = db[DISPATCH_AUDIT]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("order_id", 1), ("at", 1)])

    async def record(self, order_id: str, event: str, data: dict[str, Any]) -> None:
        """Append one decision. An audit write failure is logged, never fatal to dispatch."""
        doc = {"_id": uuid.uuid4().hex, "order_id": order_id, "at": iso(), "event": event,
               "data": {**data, "node": NODE}}
        try:
            await self.collection.insert_one(doc)
        except Exception as exc:
            logger.warning("audit write failed for order %s (%s): %s", order_id, event, type(exc).__name__)
