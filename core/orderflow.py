"""The order state machine: the one place that changes an order's status.

Every change is a single conditional `find_one_and_update` on the order's `version` and
current status (plus any caller preconditions, such as the offer's fencing number), so exactly
one of several racing writers wins, across processes. The history entry is written in the same
update. After the commit an `OrderEvent` is published on Redis as a hint for other processes.

The history array is rewritten with `$set` rather than `$push`: the embedded wire server
stores `$push`ed sub-documents as strings, and a version-checked `$set` is exact on both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import ORDER_EVENTS, LatLng, OrderEvent
from core.errors import Conflict, NotFound
from core.jsonutil import iso, now_ms

logger = logging.getLogger(__name__)

STATUSES = (
    "pending_payment", "placed", "offered", "assigned", "en_route", "arrived",
    "setup_complete", "completed", "cancelled", "refunded",
)

# from -> allowed next states. `offered -> offered` is a new offer round (no history entry);
# `offered -> placed` is "nobody accepted; waiting for manual assignment";
# `assigned -> assigned` is an admin reassignment.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending_payment": frozenset({"placed", "cancelled"}),
    "placed": frozenset({"offered", "assigned", "cancelled"}),
    "offered": frozenset({"offered", "placed", "assigned", "cancelled"}),
    "assigned": frozenset({"assigned", "en_route", "cancelled"}),
    "en_route": frozenset({"arrived", "cancelled"}),
    "arrived": frozenset({"setup_complete", "cancelled"}),
    "setup_complete": frozenset({"completed"}),
    "completed": frozenset({"refunded"}),
    "cancelled": frozenset({"refunded"}),
    "refunded": frozenset(),
}
# The partner's own path through a job, one step at a time.
PARTNER_NEXT = {"assigned": "en_route", "en_route": "arrived", "arrived": "setup_complete",
                "setup_complete": "completed"}
ACTIVE = frozenset({"pending_payment", "placed", "offered", "assigned", "en_route", "arrived", "setup_complete"})
TRACKABLE = frozenset({"assigned", "en_route", "arrived", "setup_complete"})
ASSIGNABLE = frozenset({"placed", "offered", "assigned"})

_MAX_RACES = 8


def can_transition(current: str, to: str) -> bool:
    return to in TRANSITIONS.get(current, frozenset())


class OrderFlow:
    """Applies transitions to the `orders` collection and announces them."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], redis: Redis) -> None:
        self.orders = db.orders
        self.redis = redis

    async def transition(
        self,
        order_id: str,
        to: str,
        *,
        by_role: str,
        by_id: str | None,
        reason: str | None = None,
        allowed_from: frozenset[str] | None = None,
        expect: Mapping[str, Any] | None = None,
        set_fields: Mapping[str, Any] | None = None,
        conflict_message: str | None = None,
        record_same: bool = False,
    ) -> dict[str, Any]:
        """Move `order_id` to `to` if the table (and `allowed_from`, `expect`) allow it.

        A move to the current status writes a history entry only with `record_same` (an admin
        reassignment is a change the customer hears about; a new offer round is not).
        Raises NotFound for an unknown order and Conflict (code `illegal_transition`, or
        `precondition_failed` when `expect` did not hold) otherwise. Returns the order after.
        """
        for _ in range(_MAX_RACES):
            doc = await self.orders.find_one({"_id": order_id})
            if doc is None:
                raise NotFound("no such order")
            current = doc["status"]
            if not can_transition(current, to) or (allowed_from is not None and current not in allowed_from):
                raise Conflict(conflict_message or f"an order that is {current} cannot become {to}",
                               code="illegal_transition", details={"status": current, "requested": to})
            version = int(doc.get("version", 0))
            at = iso()
            history = _history(doc)
            recorded = to != current or record_same
            if recorded:
                history.append({"status": to, "at": at, "by_role": by_role, "by": by_id, "reason": reason})
            # notify_pending (1/0, not a boolean: see DESIGN.md) tells the notification worker
            # that this order has history entries it has not turned into messages yet.
            update_set: dict[str, Any] = {"status": to, "version": version + 1, "history": history,
                                          "updated_at": at, "notify_pending": 1 if recorded else
                                          int(doc.get("notify_pending", 0) or 0), **(set_fields or {})}
            query: dict[str, Any] = {"_id": order_id, "version": version, "status": current, **(expect or {})}
            after = await self.orders.find_one_and_update(query, {"$set": update_set},
                                                          return_document=ReturnDocument.AFTER)
            if after is not None:
                await self.announce(after, prev_status=current, by_role=by_role, reason=reason)
                return after
            # Lost: either someone else changed the order (retry against the new state) or our
            # own preconditions do not hold (version unchanged: refuse).
            latest = await self.orders.find_one({"_id": order_id}, {"version": 1})
            if latest is None:
                raise NotFound("no such order")
            if int(latest.get("version", 0)) == version:
                raise Conflict(conflict_message or "the order is no longer in the expected state",
                               code="precondition_failed")
        raise Conflict("the order is changing too quickly; try again", code="busy")

    async def accept_offer(self, order_id: str, partner_id: str, *, fence: int | None = None) -> dict[str, Any]:
        """The partner takes the order: only while the offer is theirs, unexpired and (when given)
        still carries the same fencing number. Exactly one of any number of racing accepts wins."""
        # `$in`, not equality: the embedded wire server matches nothing by equality on an indexed array.
        expect: dict[str, Any] = {"offer_partner_ids": {"$in": [partner_id]}, "offer_expires_ms": {"$gt": now_ms()}}
        if fence is not None:
            expect["offer_fence"] = fence
        return await self.transition(
            order_id, "assigned", by_role="partner", by_id=partner_id, allowed_from=frozenset({"offered"}),
            expect=expect, conflict_message="this offer is no longer open",
            set_fields={"partner_id": partner_id, "assigned_at": iso(), "offer_partner_ids": [],
                        "offer_expires_ms": 0},
        )

    async def announce(self, order: Mapping[str, Any], *, prev_status: str | None, by_role: str,
                       reason: str | None = None) -> None:
        """Publish the committed state. A lost message is recovered by readers re-reading Mongo."""
        event = order_event(order, prev_status=prev_status, by_role=by_role, reason=reason)
        try:
            await self.redis.publish(ORDER_EVENTS, event.model_dump_json())
        except Exception as exc:  # the write is committed; subscribers also sweep MongoDB
            logger.warning("could not publish order event for %s: %s", order["_id"], type(exc).__name__)


def _history(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = doc.get("history") or []
    return [dict(entry) for entry in raw if isinstance(entry, Mapping)]


def order_event(order: Mapping[str, Any], *, prev_status: str | None, by_role: str,
                reason: str | None = None) -> OrderEvent:
    address = order.get("address") or {}
    pickup = None
    if isinstance(address, Mapping) and "lat" in address and "lng" in address:
        pickup = LatLng(lat=float(address["lat"]), lng=float(address["lng"]))
    return OrderEvent(
        order_id=str(order["_id"]), status=str(order["status"]), prev_status=prev_status,
        version=int(order.get("version", 0)), at=str(order.get("updated_at") or iso()), by_role=by_role,
        customer_id=str(order.get("customer_id", "")), partner_id=order.get("partner_id") or None,
        pickup=pickup, reason=reason,
    )
