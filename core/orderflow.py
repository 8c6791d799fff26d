"""The order state machine: the one place that changes an order's status.

Every change is a single conditional `find_one_and_update` on the order's `version` and
current status (plus any caller preconditions, such as the offer's fencing number), so exactly
one of several racing writers wins, across processes. The history entry is written in the same
update. After the commit an `OrderEvent` is published on Redis as a hint for other processes.

The history array is rewritten with `$set` rather than `$push`: the embedded wire server
stores `$push`ed sub-documents as strings, and a version-checked `$set` is exact on both.

One job at a time: a partner is claimed in its `partners` document (PARTNER_JOB_FIELD) with a
conditional update before the order's own conditional transition to `assigned`, and the claim is
released if that transition loses. Two orders racing for one partner therefore have one winner:
the second claim finds the first. A claim outlives its job only if a process dies between the two
writes; the next claim attempt finds it is not backed by a live job and clears it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import ORDER_EVENTS, PARTNER_JOB_FIELD, LatLng, OrderEvent
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

# A job ends (and frees its partner's claim) when the order reaches one of these.
ENDED = frozenset({"completed", "cancelled", "refunded"})
# Assignment ends the order's wait for a partner: its retry schedule and alert are cleared.
_ASSIGNED_CLEARS = {"dispatch_exhausted": 0, "dispatch_retry_ms": 0, "dispatch_alert_ms": 0}
CLAIM_AT_FIELD = "current_order_ms"
# A claim younger than this is an accept in flight (claim written, order update not yet): it is
# never judged stale, whatever the order says, or two accepts could both pass.
CLAIM_IN_FLIGHT_MS = 10_000

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
        add_to_set: Mapping[str, Sequence[str]] | None = None,
        conflict_message: str | None = None,
        record_same: bool = False,
    ) -> dict[str, Any]:
        """Move `order_id` to `to` if the table (and `allowed_from`, `expect`) allow it.

        A move to the current status writes a history entry only with `record_same` (an admin
        reassignment is a change the customer hears about; a new offer round is not).
        `add_to_set` adds ids to array fields in the same update (`$addToSet`), so writers that
        each add to an array (a REST decline and the dispatch engine) never overwrite each other.
        Raises NotFound for an unknown order and Conflict (code `illegal_transition`, or
        `precondition_failed` when `expect` did not hold) otherwise. Returns the order after.
        A partner whose job ended here (or who was replaced) has its claim released.
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
                                          int(doc.get("notify_pending", 0) or 0),
                                          **(_ASSIGNED_CLEARS if to == "assigned" else {}), **(set_fields or {})}
            query: dict[str, Any] = {"_id": order_id, "version": version, "status": current, **(expect or {})}
            update: dict[str, Any] = {"$set": update_set}
            if add_to_set:
                update["$addToSet"] = {field: {"$each": list(ids)} for field, ids in add_to_set.items()}
            after = await self.orders.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
            if after is not None:
                previous = doc.get("partner_id")
                if previous and (to in ENDED or after.get("partner_id") != previous):
                    await self.release_partner(str(previous), order_id)
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
        """The partner takes the order: only while the round that offered it to them is open (the
        order is `offered`, they hold the offer and have not declined it, and, when given, the
        fencing number is the same), and the partner has no other job. Exactly one of any number
        of racing accepts wins.

        The round's timer, not the clock, closes it: an offer that reached the phone late (a busy
        server, a slow network) can still be taken until the timer has moved the round on to
        other partners, since until then nobody else has been offered the order. Judging by
        `offer_expires_ms` instead lost every accept once delivery took longer than the timeout,
        and the cascade never assigned anything again (docs/quality.md, Results)."""
        # `$in`, not equality: the embedded wire server matches nothing by equality on an indexed array.
        expect: dict[str, Any] = {"offer_partner_ids": {"$in": [partner_id]},
                                  "declined_partner_ids": {"$nin": [partner_id]}}
        if fence is not None:
            expect["offer_fence"] = fence
        return await self.assign(order_id, partner_id, by_role="partner", by_id=partner_id,
                                 allowed_from=frozenset({"offered"}), expect=expect,
                                 conflict_message="this offer is no longer open")

    async def assign(self, order_id: str, partner_id: str, *, by_role: str, by_id: str | None,
                     reason: str | None = None, allowed_from: frozenset[str] | None = None,
                     expect: Mapping[str, Any] | None = None, conflict_message: str | None = None,
                     record_same: bool = False) -> dict[str, Any]:
        """Give the order to `partner_id`: claim the partner, then transition the order; the claim
        is released if the transition loses. Raises Conflict `partner_busy` when the partner has
        another active job."""
        fresh = await self.claim_partner(partner_id, order_id)
        try:
            after = await self.transition(
                order_id, "assigned", by_role=by_role, by_id=by_id, reason=reason, allowed_from=allowed_from,
                expect=expect, conflict_message=conflict_message, record_same=record_same,
                set_fields={"partner_id": partner_id, "assigned_at": iso(), "offer_partner_ids": [],
                            "offer_expires_ms": 0})
        except BaseException:
            # Only a claim taken here is given back: one that already named this order (a repeated
            # accept of an order the partner has) still stands for the job.
            if fresh:
                await self.release_partner(partner_id, order_id)
            raise
        # Two writers can share one claim (an admin's assignment and the partner's own accept of
        # the same order): the loser's release may land after the winner's commit. Whoever writes
        # last sees the other: the committer re-asserts an emptied claim here, and release_partner
        # re-reads the order after emptying one.
        await self._reclaim(partner_id, order_id)
        return after

    async def claim_partner(self, partner_id: str, order_id: str) -> bool:
        """Claim the partner for `order_id`; True when newly claimed, False when it already was.

        Two conditional updates rather than one with `$or`: the embedded wire server ignores `_id`
        in a find-and-modify whose filter has an `$or`, so each precondition is tried alone.
        """
        partners = self.orders.database.partners
        claim = {"$set": {PARTNER_JOB_FIELD: order_id, CLAIM_AT_FIELD: now_ms()}}
        for _ in range(_MAX_RACES):
            if await partners.find_one_and_update({"_id": partner_id, PARTNER_JOB_FIELD: {"$exists": False}}, claim):
                return True
            before = await partners.find_one_and_update(
                {"_id": partner_id, PARTNER_JOB_FIELD: {"$in": ["", order_id]}}, claim,
                return_document=ReturnDocument.BEFORE)
            if before is not None:
                return before.get(PARTNER_JOB_FIELD) != order_id
            current = await partners.find_one({"_id": partner_id}, {PARTNER_JOB_FIELD: 1, CLAIM_AT_FIELD: 1})
            if current is None:
                raise NotFound("no such partner", code="partner_not_found")
            held = str(current.get(PARTNER_JOB_FIELD) or "")
            if not held:
                continue  # released meanwhile: claim again
            if await self._claim_is_live(partner_id, held, int(current.get(CLAIM_AT_FIELD) or 0)):
                raise Conflict("this partner is on another job", code="partner_busy")
            # Left by a process that died between claim and release: clear exactly that claim.
            logger.info("releasing a stale claim of partner %s on order %s", partner_id, held)
            await partners.update_one({"_id": partner_id, PARTNER_JOB_FIELD: held}, {"$set": {PARTNER_JOB_FIELD: ""}})
        raise Conflict("the partner is changing too quickly; try again", code="busy")

    async def _claim_is_live(self, partner_id: str, order_id: str, claimed_ms: int) -> bool:
        """Whether a claim on `order_id` stands: its job is active with the partner, its accept may
        still be in flight (the order is offered to them), or it is too young to judge."""
        if now_ms() - claimed_ms < CLAIM_IN_FLIGHT_MS:
            return True
        order = await self.orders.find_one({"_id": order_id}, {"status": 1, "partner_id": 1, "offer_partner_ids": 1,
                                                               "offer_expires_ms": 1})
        if order is None:
            return False
        if order.get("status") in TRACKABLE:
            return order.get("partner_id") == partner_id
        return order.get("status") == "offered" and partner_id in (order.get("offer_partner_ids") or []) \
            and int(order.get("offer_expires_ms") or 0) > now_ms()

    async def claim_active_jobs(self) -> int:
        """Claim the partners of active jobs that no claim names yet (jobs assigned before claims
        existed). Conditional: an existing claim is never replaced. Returns how many were claimed."""
        partners = self.orders.database.partners
        claimed = 0
        async for order in self.orders.find({"status": {"$in": sorted(TRACKABLE)}}, {"partner_id": 1}):
            pid = order.get("partner_id")
            if not isinstance(pid, str) or not pid:
                continue
            for free in ({"$exists": False}, ""):
                result = await partners.update_one({"_id": pid, PARTNER_JOB_FIELD: free}, {"$set": {
                    PARTNER_JOB_FIELD: str(order["_id"]), CLAIM_AT_FIELD: now_ms()}})
                if result.modified_count:
                    claimed += 1
                    break
        return claimed

    async def release_partner(self, partner_id: str, order_id: str) -> None:
        """Free the partner if (and only if) its claim names `order_id` and the order is not (or no
        longer) their job: a release that raced an assignment of the same partner to the same order
        puts the claim back (see `assign`)."""
        try:
            released = await self.orders.database.partners.update_one(
                {"_id": partner_id, PARTNER_JOB_FIELD: order_id}, {"$set": {PARTNER_JOB_FIELD: ""}})
            if not released.modified_count:
                return
            order = await self.orders.find_one({"_id": order_id}, {"status": 1, "partner_id": 1})
            if order is not None and order.get("status") in TRACKABLE and order.get("partner_id") == partner_id:
                await self._reclaim(partner_id, order_id)
        except Exception as exc:  # the next claim finds the stale one and clears it
            logger.warning("could not release partner %s from %s: %s", partner_id, order_id, type(exc).__name__)

    async def _reclaim(self, partner_id: str, order_id: str) -> None:
        """Put back an emptied claim for the partner's committed job (one read when nothing raced).
        A claim naming another order by now means a third writer took the partner in between:
        logged for an admin (the startup reconciliation, `claim_active_jobs`, never replaces it)."""
        partners = self.orders.database.partners
        current = await partners.find_one({"_id": partner_id}, {PARTNER_JOB_FIELD: 1})
        if current is None:
            return
        held = current.get(PARTNER_JOB_FIELD)
        if held == order_id:
            return
        if held:
            logger.warning("partner %s is claimed by order %s while order %s names them", partner_id, held, order_id)
            return
        free: Any = {"$exists": False} if held is None else ""
        claim = {"$set": {PARTNER_JOB_FIELD: order_id, CLAIM_AT_FIELD: now_ms()}}
        if (await partners.update_one({"_id": partner_id, PARTNER_JOB_FIELD: free}, claim)).modified_count:
            logger.info("restored the claim of partner %s on order %s after a racing release", partner_id, order_id)

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
