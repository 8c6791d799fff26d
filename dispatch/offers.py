"""The offer cascade: offer an order to the best candidate(s), time out, cascade, widen, alert.

Redis holds leases (a partner's one pending offer), the holders of each order's offer and the
offer timers; MongoDB holds the truth. Every offer round is a conditional transition on the
order's fencing number, so racing processes cannot both open a round, and accepting requires
the fence of the offer the partner holds: a partner waking up with an old lease changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import OFFER_HOLDERS, OFFER_TIMERS, OrderEvent
from core.errors import AppError
from core.jsonutil import iso, now_ms
from core.orderflow import OrderFlow
from core.settings import Settings
from dispatch import acks
from dispatch.audit import AuditTrail
from dispatch.emitter import Emitter
from dispatch.fleet import FleetIndex, offer_key
from dispatch.matching import Candidate, Matcher

logger = logging.getLogger(__name__)

BY_ROLE = "dispatch"
NO_PARTNER = "no_partner"
LOCK_KEY = "pp:dispatch:lock:{order_id}"
LOCK_TTL_MS = 10_000
# A REST reply reaches every process over pub/sub; the first to claim it handles it. A partner
# replies to an order once (a decline excludes them from its later rounds), so the pair is unique.
REPLY_CLAIM_KEY = "pp:dispatch:reply:{order_id}:{partner_id}"
REPLY_CLAIM_TTL_MS = 600_000
# A lease outlives the offer by a grace period so that a reply racing the timeout still finds
# its fence (and then loses cleanly on the expiry precondition in MongoDB).
LEASE_GRACE_MS = 5_000
AUDIT_CANDIDATES = 10
CANCELLED = frozenset({"cancelled", "refunded"})

# Claim every due timer atomically: two processes polling together never both get a member.
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""
# Take the whole holder set at once so only one process revokes an order's offers.
_POP_SET = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
"""
# Delete a partner's lease only if it still belongs to this order.
_DROP_LEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _pickup(order: Mapping[str, Any]) -> tuple[float, float] | None:
    address = order.get("address") or {}
    try:
        return float(address["lat"]), float(address["lng"])
    except (KeyError, TypeError, ValueError):
        return None


class Offers:
    """Runs the cascade for orders; safe to run in every process at once."""

    def __init__(self, settings: Settings, redis: Redis, db: AsyncDatabase[dict[str, Any]], fleet: FleetIndex,
                 matcher: Matcher, audit: AuditTrail, flow: OrderFlow, emitter: Emitter) -> None:
        self.settings = settings
        self.redis = redis
        self.orders = db.orders
        self.fleet = fleet
        self.matcher = matcher
        self.audit = audit
        self.flow = flow
        self.emitter = emitter
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._pop_set = redis.register_script(_POP_SET)
        self._drop_lease = redis.register_script(_DROP_LEASE)
        self._unlock = redis.register_script(_UNLOCK)

    # --- entry points ---------------------------------------------------------------------------

    async def on_order_event(self, event: OrderEvent) -> None:
        """React to a committed order change (received by every process)."""
        if event.status == "pending_payment":
            return  # not ours until it is paid and placed
        if event.status == "placed":
            if event.prev_status == "offered" and event.by_role == BY_ROLE:
                return  # we gave up on it: it waits for manual assignment
            await self.dispatch(event.order_id)
            return
        if event.status != "offered":
            if event.status == "assigned" and event.partner_id:
                await self.fleet.set_job(event.partner_id, event.order_id)
            elif event.status in ("completed", "cancelled", "refunded") and event.partner_id:
                await self.fleet.clear_job_if(event.partner_id, event.order_id)
            reason = "cancelled" if event.status in CANCELLED else "taken"
            await self.close(event.order_id, reason, winner=event.partner_id)

    async def dispatch(self, order_id: str, *, wait_s: float = 0.0) -> None:
        """Open an offer round for a dispatchable order unless one is already running."""
        async with self._lock(order_id, wait_s) as locked:
            if not locked:
                return  # another process (or task) is on it
            order = await self.orders.find_one({"_id": order_id})
            if order is None or order.get("status") not in ("placed", "offered"):
                return
            if order["status"] == "placed" and int(order.get("dispatch_exhausted") or 0):
                return
            if order["status"] == "offered" and int(order.get("offer_expires_ms") or 0) > now_ms() \
                    and order.get("offer_partner_ids"):
                return
            await self._round(order, newly_excluded=list(order.get("offer_partner_ids") or []),
                              revoke_reason="expired")

    async def claim_reply(self, order_id: str, partner_id: str) -> bool:
        """Whether this process is the one to handle a reply heard by every process."""
        key = REPLY_CLAIM_KEY.format(order_id=order_id, partner_id=partner_id)
        return bool(await self.redis.set(key, "1", nx=True, px=REPLY_CLAIM_TTL_MS))

    async def reply(self, order_id: str, partner_id: str, accept: bool, *, via: str) -> dict[str, Any]:
        """A partner's answer (socket or REST); returns the acknowledgement."""
        raw = await self.redis.get(offer_key(partner_id))
        lease = raw if isinstance(raw, str) else None
        prefix = f"{order_id}:"
        fence = int(lease[len(prefix):]) if lease and lease.startswith(prefix) else await self._open_fence(
            order_id, partner_id)
        if fence is None:
            # A late reply is worth auditing; a reply naming no real order would only let a
            # partner write audit records at will.
            if await self.orders.count_documents({"_id": order_id}, limit=1):
                await self.audit.record(order_id, "reply", {"partner_id": partner_id, "accept": accept,
                                                            "via": via, "outcome": "closed"})
            return acks.error(acks.OFFER_CLOSED, "this offer is no longer open")
        await self.audit.record(order_id, "reply", {"partner_id": partner_id, "accept": accept, "via": via,
                                                    "fence": fence})
        if accept:
            return await self._accept(order_id, partner_id, fence)
        return await self._decline(order_id, partner_id, fence)

    async def release_held_offer(self, partner_id: str) -> None:
        """Decline the offer the partner holds, if any (the partner went off duty)."""
        raw = await self.redis.get(offer_key(partner_id))
        if isinstance(raw, str) and ":" in raw:
            order_id = raw.rsplit(":", 1)[0]
            await self.reply(order_id, partner_id, False, via="off_duty")

    async def _open_fence(self, order_id: str, partner_id: str) -> int | None:
        """The fence of an offer still open to the partner in MongoDB, when its Redis lease is gone
        (Redis lost its data): the truth decides, as it does for the REST reply."""
        order = await self.orders.find_one(
            {"_id": order_id, "status": "offered", "offer_partner_ids": {"$in": [partner_id]},
             "offer_expires_ms": {"$gt": now_ms()}}, {"offer_fence": 1})
        return None if order is None else int(order.get("offer_fence") or 0)

    async def expire_due(self, limit: int = 100) -> int:
        """Claim due offer timers (atomically, across processes) and cascade each order."""
        due = await self._claim_due(keys=[OFFER_TIMERS], args=[now_ms(), limit])
        for order_id in due:
            await self.on_timeout(str(order_id))
        return len(due)

    async def on_timeout(self, order_id: str) -> None:
        async with self._lock(order_id, 2.0) as locked:
            if not locked:
                # Whoever holds the lock is changing this order; check again shortly.
                await self.redis.zadd(OFFER_TIMERS, {order_id: now_ms() + 500})
                return
            order = await self.orders.find_one({"_id": order_id})
            if order is None:
                return
            if order.get("status") != "offered":
                # The order moved on but its event was lost (or raced the round's start): the
                # holders must not keep a phantom offer, nor their leases.
                status = str(order.get("status"))
                await self.close(order_id, "cancelled" if status in CANCELLED else "taken",
                                 winner=order.get("partner_id"))
                return
            expires = int(order.get("offer_expires_ms") or 0)
            if expires > now_ms():
                await self.redis.zadd(OFFER_TIMERS, {order_id: expires})
                return
            holders = list(order.get("offer_partner_ids") or [])
            await self.audit.record(order_id, "timeout", {"partner_ids": holders,
                                                          "fence": int(order.get("offer_fence") or 0)})
            await self._round(order, newly_excluded=holders, revoke_reason="expired")

    async def sweep(self) -> None:
        """Re-read MongoDB for orders whose events or timers were lost."""
        now = now_ms()
        async for order in self.orders.find({"status": {"$in": ["placed", "offered"]}},
                                            {"status": 1, "offer_expires_ms": 1, "dispatch_exhausted": 1}):
            oid = str(order["_id"])
            if order["status"] == "offered":
                if int(order.get("offer_expires_ms") or 0) < now - 1000:
                    await self.on_timeout(oid)
            elif not int(order.get("dispatch_exhausted") or 0):
                await self.dispatch(oid)

    # --- rounds ---------------------------------------------------------------------------------

    async def _round(self, order: dict[str, Any], *, newly_excluded: Iterable[str], revoke_reason: str | None,
                     ) -> None:
        """Offer `order` to the next candidate(s), widening the radius; alert when nobody is left."""
        order_id = str(order["_id"])
        excluded = set(order.get("declined_partner_ids") or []) | set(newly_excluded)
        # The previous round's holders lose their offer now (decliners need no notice).
        await self._revoke(order_id, revoke_reason, keep=set())
        pickup = _pickup(order)
        radius = int(order.get("dispatch_radius_m") or self.settings.dispatch_radius_m)
        take = self.settings.dispatch_top_k if self.settings.dispatch_strategy == "top_k" else 1
        while pickup is not None:
            search = await self.matcher.search(pickup[0], pickup[1], radius, excluded)
            considered = {"radius_m": radius, "found": len(search.candidates), "skipped": search.skipped,
                          "excluded": sorted(excluded),
                          "candidates": [c.audit() for c in search.candidates[:AUDIT_CANDIDATES]]}
            chosen = await self._reserve(order, search.candidates, take)
            if chosen:
                # The offer goes out first; the audit write is off the order -> offer latency path.
                await self._offer(order, chosen, radius, excluded, considered)
                return
            await self.audit.record(order_id, "candidates", considered)
            if radius >= self.settings.dispatch_max_radius_m:
                break
            wider = min(radius * 2, self.settings.dispatch_max_radius_m)
            await self.audit.record(order_id, "widen", {"from_m": radius, "to_m": wider})
            radius = wider
        await self._give_up(order, radius, excluded, "no pickup point" if pickup is None else NO_PARTNER)

    async def _reserve(self, order: Mapping[str, Any], candidates: list[Candidate], take: int) -> list[Candidate]:
        """Take leases on up to `take` candidates; a partner holds at most one pending offer."""
        fence = int(order.get("offer_fence") or 0) + 1
        value = f"{order['_id']}:{fence}"
        ttl = int(self.settings.offer_timeout_s * 1000) + LEASE_GRACE_MS
        chosen: list[Candidate] = []
        for cand in candidates:
            if len(chosen) >= take:
                break
            if await self.redis.set(offer_key(cand.partner_id), value, nx=True, px=ttl):
                chosen.append(cand)
        return chosen

    async def _offer(self, order: dict[str, Any], chosen: list[Candidate], radius: int, excluded: set[str],
                     considered: dict[str, Any]) -> None:
        order_id = str(order["_id"])
        previous = order.get("offer_fence")
        fence = int(previous or 0) + 1
        expires = now_ms() + int(self.settings.offer_timeout_s * 1000)
        pids = [c.partner_id for c in chosen]
        expect: dict[str, Any] = {"offer_fence": previous} if previous is not None else {
            "offer_fence": {"$exists": False}}
        # Holders and timer are registered before the round commits: a cancel or assignment
        # committed right after it then finds the holders to revoke, and the timer cleans up
        # if that event is lost.
        holders_key = OFFER_HOLDERS.format(order_id=order_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(holders_key, *pids)
        pipe.zadd(OFFER_TIMERS, {order_id: expires})
        await pipe.execute()
        await self.fleet.touch(pids)
        try:
            after = await self.flow.transition(
                order_id, "offered", by_role=BY_ROLE, by_id=None, allowed_from=frozenset({"placed", "offered"}),
                expect=expect, set_fields={"offer_partner_ids": pids, "offer_fence": fence,
                                           "offer_expires_ms": expires, "dispatch_radius_m": radius,
                                           "declined_partner_ids": sorted(excluded)})
        except AppError as exc:
            # Someone else moved the order on (another process, an admin, a cancel): stand down.
            logger.info("offer round for %s lost: %s", order_id, exc.code)
            await self.audit.record(order_id, "candidates", {**considered, "outcome": "round_lost"})
            await self.redis.srem(holders_key, *pids)
            for pid in pids:
                await self._drop_lease(keys=[offer_key(pid)], args=[f"{order_id}:"])
            await self.fleet.touch(pids)
            return
        price = int(after.get("price") or 0)
        # Same rounding as the REST offer view: commission rounded half up, payout the rest.
        payout = price - (price * self.settings.commission_rate_bp + 5_000) // 10_000
        pickup = _pickup(after) or (0.0, 0.0)
        for cand in chosen:
            message = {"order_id": order_id, "pickup": {"lat": pickup[0], "lng": pickup[1]},
                       "distance_m": cand.distance_m, "eta_s": cand.eta_s, "payout": payout,
                       "currency": str(after.get("currency") or self.settings.currency), "expires_at": expires,
                       "fence": fence, "version": int(after.get("version") or 0)}
            await self.emitter.emit("offer", message, f"partner:{cand.partner_id}")
        await self.audit.record(order_id, "candidates", considered)
        await self.audit.record(order_id, "offer", {"partner_ids": pids, "fence": fence, "expires_ms": expires,
                                                    "radius_m": radius, "offers": [c.audit() for c in chosen]})

    async def _give_up(self, order: dict[str, Any], radius: int, excluded: set[str], reason: str) -> None:
        order_id = str(order["_id"])
        fields = {"offer_partner_ids": [], "offer_expires_ms": 0, "dispatch_exhausted": 1,
                  "dispatch_radius_m": radius, "declined_partner_ids": sorted(excluded)}
        if order.get("status") == "offered":
            try:
                await self.flow.transition(order_id, "placed", by_role=BY_ROLE, by_id=None, reason=reason,
                                           allowed_from=frozenset({"offered"}),
                                           expect={"offer_fence": order.get("offer_fence")}, set_fields=fields)
            except AppError as exc:
                logger.info("could not return %s to placed: %s", order_id, exc.code)
                return
        else:
            result = await self.orders.update_one({"_id": order_id, "status": "placed"}, {"$set": fields})
            if result.matched_count == 0:
                return
        await self.redis.zrem(OFFER_TIMERS, order_id)
        alert = {"order_id": order_id, "reason": reason, "radius_m": radius, "candidates_tried": len(excluded),
                 "at": iso()}
        await self.audit.record(order_id, "alert", {k: v for k, v in alert.items() if k != "order_id"})
        await self.emitter.emit("dispatch_alert", alert, "admins")

    # --- replies --------------------------------------------------------------------------------

    async def _accept(self, order_id: str, partner_id: str, fence: int) -> dict[str, Any]:
        try:
            after = await self.flow.accept_offer(order_id, partner_id, fence=fence)
        except AppError as exc:
            await self.audit.record(order_id, "reply_refused", {"partner_id": partner_id, "fence": fence,
                                                                "code": exc.code})
            return acks.error(acks.OFFER_CLOSED, "this offer is no longer open")
        await self.audit.record(order_id, "assigned", {"partner_id": partner_id, "fence": fence})
        await self.fleet.set_job(partner_id, order_id)
        await self.close(order_id, "taken", winner=partner_id)
        return acks.ok(order_id=order_id, status="assigned", version=int(after.get("version") or 0))

    async def _decline(self, order_id: str, partner_id: str, fence: int) -> dict[str, Any]:
        async with self._lock(order_id, 3.0) as locked:
            if not locked:
                return acks.error(acks.UNAVAILABLE, "the order is busy; try again")
            order = await self.orders.find_one({"_id": order_id})
            holders = list((order or {}).get("offer_partner_ids") or [])
            if order is None or order.get("status") != "offered" or int(order.get("offer_fence") or 0) != fence \
                    or partner_id not in holders:
                return acks.error(acks.OFFER_CLOSED, "this offer is no longer open")
            await self._drop_lease(keys=[offer_key(partner_id)], args=[f"{order_id}:"])
            await self.redis.srem(OFFER_HOLDERS.format(order_id=order_id), partner_id)
            remaining = [pid for pid in holders if pid != partner_id]
            declined = sorted(set(order.get("declined_partner_ids") or []) | {partner_id})
            if remaining:  # top-k: the others still hold the offer
                try:
                    await self.flow.transition(order_id, "offered", by_role=BY_ROLE, by_id=None,
                                               expect={"offer_fence": fence},
                                               set_fields={"offer_partner_ids": remaining,
                                                           "declined_partner_ids": declined})
                except AppError:
                    return acks.error(acks.OFFER_CLOSED, "this offer is no longer open")
            else:
                await self._round(order, newly_excluded=[partner_id], revoke_reason=None)
        return acks.ok(order_id=order_id, accept=False)

    # --- closing --------------------------------------------------------------------------------

    async def close(self, order_id: str, reason: str, *, winner: str | None = None) -> None:
        """The order left `offered`: drop its timer and leases; tell every other holder."""
        await self.redis.zrem(OFFER_TIMERS, order_id)
        await self._revoke(order_id, reason, keep={winner} if winner else set())

    async def _revoke(self, order_id: str, reason: str | None, keep: set[str]) -> None:
        holders = await self._pop_set(keys=[OFFER_HOLDERS.format(order_id=order_id)])
        if not holders:
            return
        order = await self.orders.find_one({"_id": order_id}, {"version": 1})
        version = int((order or {}).get("version") or 0)
        for pid in (str(h) for h in holders):
            await self._drop_lease(keys=[offer_key(pid)], args=[f"{order_id}:"])
            if reason is not None and pid not in keep:
                await self.emitter.emit("offer_revoked", {"order_id": order_id, "reason": reason, "version": version},
                                        f"partner:{pid}")
                await self.audit.record(order_id, "revoked", {"partner_id": pid, "reason": reason})
        await self.fleet.touch([str(h) for h in holders])

    @contextlib.asynccontextmanager
    async def _lock(self, order_id: str, wait_s: float) -> AsyncIterator[bool]:
        """A short Redis lock per order: throttles duplicate work across processes.

        Correctness never depends on it (the fence in MongoDB does); it only keeps two processes
        from computing the same round at once.
        """
        key = LOCK_KEY.format(order_id=order_id)
        token = uuid.uuid4().hex
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            if await self.redis.set(key, token, nx=True, px=LOCK_TTL_MS):
                break
            if asyncio.get_running_loop().time() >= deadline:
                yield False
                return
            await asyncio.sleep(0.02)
        try:
            yield True
        finally:
            await self._unlock(keys=[key], args=[token])
