"""The offer cascade: offer an order to the best candidate(s), time out, cascade, widen, wait, retry.

Redis holds leases (a partner's one pending offer), the holders of each order's offer and the
offer timers; MongoDB holds the truth. Every offer round is a conditional transition on the
order's fencing number, so racing processes cannot both open a round, and accepting requires
the fence of the offer the partner holds: a partner waking up with an old lease changes nothing.

Nothing here is final for an order without a partner: when nobody within the maximum radius
takes it, it waits (`placed` with `dispatch_exhausted: 1`) and is retried on a backoff, and at
once when a partner comes on duty or frees up near it, until it is assigned or cancelled.
Replies are recorded in MongoDB before the cascade moves on, so a reply whose follow-up is lost
(a lock not taken, a process gone) is finished by the sweep instead of waiting out the offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core import metrics
from core.contracts import OFFER_HOLDERS, OFFER_TIMERS, OrderEvent
from core.errors import AppError
from core.jsonutil import iso, now_ms
from core.orderflow import ENDED, TRACKABLE, OrderFlow
from core.settings import Settings
from core.tasks import stop_if_cancelled
from dispatch import acks
from dispatch.audit import AuditTrail
from dispatch.emitter import Emitter
from dispatch.fleet import FleetIndex, Lease, offer_key
from dispatch.matching import Candidate, Matcher, Search
from geo.areas import approximate
from geo.distance import haversine_m

logger = logging.getLogger(__name__)

BY_ROLE = "dispatch"
# An order with no partner this close to the end of its arrival window is raised to the admins
# (once): a partner assigned later than this is unlikely to make it even from nearby.
WINDOW_RISK_MS = 30 * 60 * 1000
NO_PARTNER = "no_partner"
LOCK_KEY = "pp:dispatch:lock:{order_id}"
LOCK_TTL_MS = 10_000
# A REST reply reaches every process over pub/sub; the first to claim it handles it. A partner
# replies to an order once (a decline excludes them from its later rounds), so the pair is unique.
REPLY_CLAIM_KEY = "pp:dispatch:reply:{order_id}:{partner_id}"
REPLY_CLAIM_TTL_MS = 600_000
# Events reach every process; the follow-ups only one should run (waking waiting orders for a
# partner who freed up) are claimed once per event.
ONCE_KEY = "pp:dispatch:once:{key}"
ONCE_TTL_MS = 60_000
# A lease outlives the offer by a grace period so that a reply racing the timeout still finds
# its fence (and then loses cleanly on the expiry precondition in MongoDB).
LEASE_GRACE_MS = 5_000
# A lease is taken a few milliseconds before its round commits in MongoDB. One younger than this
# that MongoDB does not show yet may be such a round in flight, so it is left alone; an older one
# is what a process that died between reserve and commit left behind, and is released.
LEASE_IN_FLIGHT_MS = 5_000
AUDIT_CANDIDATES = 10
# `broadcast` offers every candidate within the radius, up to this many: a push to 50 phones is
# already a crowd for one job, and the ones beyond would only be told "taken" a moment later.
BROADCAST_MAX = 50
# A wake-up (a partner came on duty or freed up) looks at this many waiting orders, oldest first.
WAKE_SCAN_MAX = 500
# Due offer timers handled at once (each its own task: one slow round, a search far out or a
# MongoDB write queued behind others, must not hold back the next order's cascade), and how soon
# a failed one is tried again.
TIMERS_AT_ONCE = 16
TIMER_RETRY_MS = 500
# A round whose commit took longer than this share of the offer timeout restarts the offer's
# clock when it is sent (one more write, only then).
OFFER_LAG_SHARE = 2
# An accept being committed: the offer's timer waits for it up to this long after expiry.
ACCEPTING_KEY = "pp:dispatch:accepting:{order_id}"
ACCEPT_IN_FLIGHT_MS = 3_000
# Backoff doubling stops growing after this many steps (the maximum delay caps it long before).
_BACKOFF_STEPS_MAX = 20
CANCELLED = frozenset({"cancelled", "refunded"})
TAKEN = TRACKABLE | {"completed"}
# How a reply was made -> the array that records it. A partner who disconnected did not say no:
# they are skipped for the rest of this pass only; a decline is for the order's life.
DECLINED = "declined_partner_ids"
MISSED = "missed_partner_ids"
MISSED_VIAS = frozenset({"disconnect"})

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
# Delete a partner's lease only if it still belongs to this order; return what was deleted.
_DROP_LEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return v
end
return false
"""
# Delete a lease only if it is still exactly the one found (an orphan being released).
_DROP_EXACT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
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


def _offer_details(order: Mapping[str, Any]) -> dict[str, Any]:
    """What the offer card shows beside payout and distance: package, date and arrival slot, area,
    guests. Coarse on purpose, like the REST offer view: nothing here pins the venue."""
    package = order.get("package") or {}
    address = order.get("address") or {}
    details: dict[str, Any] = {
        "package": {"name": str(package["name"])} if package.get("name") else None,
        "event_date": order.get("event_date"), "arrive_after": order.get("arrive_after"),
        "arrive_before": order.get("arrive_before"), "timezone": order.get("timezone"),
        "asap": bool(order["asap"]) if order.get("asap") is not None else None,
        "area": order.get("service_area"), "city": address.get("city"),
        "guests": int(order["guests"]) if isinstance(order.get("guests"), int) else None,
    }
    return {k: v for k, v in details.items() if v is not None}


def _lease_fence(value: str) -> int:
    try:
        return int(value.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


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
        # Set by the engine: rebuild the index now (a search found it missing), and queue partners
        # who just freed up so waiting orders near them are retried.
        self.on_index_lost: Callable[[], Awaitable[None]] | None = None
        self.on_partner_free: Callable[[Iterable[str]], None] | None = None
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._pop_set = redis.register_script(_POP_SET)
        self._drop_lease = redis.register_script(_DROP_LEASE)
        self._drop_exact = redis.register_script(_DROP_EXACT)
        self._unlock = redis.register_script(_UNLOCK)

    # --- entry points ---------------------------------------------------------------------------

    async def on_order_event(self, event: OrderEvent) -> None:
        """React to a committed order change (received by every process)."""
        if event.status == "pending_payment":
            return  # not ours until it is paid and placed
        if event.status == "placed":
            if event.prev_status == "offered" and event.by_role == BY_ROLE:
                return  # we gave up on this pass: it waits for its retry
            await self.dispatch(event.order_id)
            return
        if event.status != "offered":
            freed: list[str] = []
            # (An assignment's busy mark is set by the engine in event order, not here.)
            if event.status in ENDED and event.partner_id:
                await self.fleet.clear_job_if(event.partner_id, event.order_id)
                freed.append(event.partner_id)
            reason = "cancelled" if event.status in CANCELLED else "taken"
            await self.close(event.order_id, reason, winner=event.partner_id)
            if freed and await self.claim_once(f"freed:{event.order_id}:{event.version}"):
                self._freed(freed)

    async def dispatch(self, order_id: str, *, wait_s: float = 0.0, retry: bool = False) -> bool:
        """Open an offer round for a dispatchable order unless one is already running.

        A waiting order (nobody took it) starts a new pass when its retry is due, or at once with
        `retry`. Returns True when an offer went out.
        """
        async with self._lock(order_id, wait_s) as locked:
            if not locked:
                return False  # another process (or task) is on it
            order = await self.orders.find_one({"_id": order_id})
            if order is None or order.get("status") not in ("placed", "offered"):
                return False
            if order["status"] == "placed" and int(order.get("dispatch_at_ms") or 0) > now_ms():
                # Scheduled: its arrival window is later. The sweep starts it once the time comes.
                return False
            if order["status"] == "placed" and int(order.get("dispatch_exhausted") or 0):
                if not retry and int(order.get("dispatch_retry_ms") or 0) > now_ms():
                    return False
                return await self._round(order, missed=[], revoke_reason=None, new_pass=True)
            if order["status"] == "offered" and int(order.get("offer_expires_ms") or 0) > now_ms() \
                    and order.get("offer_partner_ids"):
                return False
            return await self._round(order, missed=list(order.get("offer_partner_ids") or []),
                                     revoke_reason="expired")

    async def claim_once(self, key: str) -> bool:
        """Whether this process is the one to act on something every process heard."""
        return bool(await self.redis.set(ONCE_KEY.format(key=key), "1", nx=True, px=ONCE_TTL_MS))

    async def claim_reply(self, order_id: str, partner_id: str) -> bool:
        """Whether this process is the one to handle a reply heard by every process."""
        key = REPLY_CLAIM_KEY.format(order_id=order_id, partner_id=partner_id)
        return bool(await self.redis.set(key, "1", nx=True, px=REPLY_CLAIM_TTL_MS))

    async def reply(self, order_id: str, partner_id: str, accept: bool, *, via: str) -> dict[str, Any]:
        """A partner's answer (socket or REST), or a release on their behalf (off duty, suspended,
        disconnected); returns the acknowledgement.

        An accept wins while the round is open (see OrderFlow.accept_offer), and the offer's
        timer waits for one being committed (ACCEPT_IN_FLIGHT_MS) rather than opening the next
        round under it.
        """
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
        recorded = self.audit.record(order_id, "reply", {"partner_id": partner_id, "accept": accept, "via": via,
                                                         "fence": fence})
        if accept:
            # Only a holder of the offer holds its timer back (the fence above says they are one).
            await self.redis.set(ACCEPTING_KEY.format(order_id=order_id), partner_id, px=ACCEPT_IN_FLIGHT_MS)
            # The audit write runs beside the accept, not before it: the accept is what is urgent.
            accepting = asyncio.ensure_future(self._accept(order_id, partner_id, fence))
            await recorded
            return await accepting
        await recorded
        return await self._decline(order_id, partner_id, fence, via=via)

    async def mark_accepting(self, order_id: str, partner_id: str) -> None:
        """An accept from this partner arrived and is on its way (checks before it may take a
        moment): if they hold the order's offer, its timer waits for the accept (at most
        ACCEPT_IN_FLIGHT_MS) instead of opening the next round underneath it."""
        raw = await self.redis.get(offer_key(partner_id))
        if isinstance(raw, str) and raw.startswith(f"{order_id}:"):
            await self.redis.set(ACCEPTING_KEY.format(order_id=order_id), partner_id, px=ACCEPT_IN_FLIGHT_MS)

    async def unmark_accepting(self, order_id: str) -> None:
        """The accept was refused before it reached the order: the timer need not wait."""
        await self.redis.delete(ACCEPTING_KEY.format(order_id=order_id))

    async def release_held_offer(self, partner_id: str, *, via: str) -> None:
        """Give back the offer the partner holds, if any (off duty, suspended, disconnected)."""
        raw = await self.redis.get(offer_key(partner_id))
        order_id = raw.rsplit(":", 1)[0] if isinstance(raw, str) and ":" in raw else None
        if order_id is None:  # no lease (Redis lost it?): MongoDB knows whether an offer is open
            held = await self.orders.find_one({"status": "offered", "offer_partner_ids": {"$in": [partner_id]},
                                               "offer_expires_ms": {"$gt": now_ms()}}, {"_id": 1})
            order_id = str(held["_id"]) if held else None
        if order_id is not None:
            await self.reply(order_id, partner_id, False, via=via)

    async def _open_fence(self, order_id: str, partner_id: str) -> int | None:
        """The fence of an offer still open to the partner in MongoDB, when its Redis lease is gone
        (Redis lost its data): the truth decides, as it does for the REST reply."""
        order = await self.orders.find_one(
            {"_id": order_id, "status": "offered", "offer_partner_ids": {"$in": [partner_id]}}, {"offer_fence": 1})
        return None if order is None else int(order.get("offer_fence") or 0)

    async def claim_due(self, limit: int) -> list[str]:
        """Claim up to `limit` due offer timers, atomically across processes."""
        return [str(order_id) for order_id in await self._claim_due(keys=[OFFER_TIMERS], args=[now_ms(), limit])]

    async def expire(self, order_id: str) -> None:
        """Handle one claimed timer; one whose handling failed is put back a moment later instead
        of waiting for the sweep."""
        try:
            await self.on_timeout(order_id)
        except Exception as exc:
            stop_if_cancelled()
            logger.warning("offer timeout of %s failed (%s); retrying shortly", order_id, type(exc).__name__)
            await self.redis.zadd(OFFER_TIMERS, {order_id: now_ms() + TIMER_RETRY_MS})

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
                # The order moved on but its event was lost (or the round that set this timer never
                # committed): the holders must not keep a phantom offer, nor their leases. Only
                # what is true is said: "taken" when someone has it, nothing while it waits.
                status = str(order.get("status"))
                reason = "cancelled" if status in CANCELLED else "taken" if status in TAKEN else None
                await self.close(order_id, reason, winner=order.get("partner_id"))
                return
            expires = int(order.get("offer_expires_ms") or 0)
            if expires > now_ms():
                await self.redis.zadd(OFFER_TIMERS, {order_id: expires})
                return
            if await self.redis.exists(ACCEPTING_KEY.format(order_id=order_id)):
                # A holder's accept is being committed (the key lives ACCEPT_IN_FLIGHT_MS from its
                # arrival): it may still take the round, so let it land first.
                await self.redis.zadd(OFFER_TIMERS, {order_id: now_ms() + TIMER_RETRY_MS // 5})
                return
            holders = list(order.get("offer_partner_ids") or [])
            metrics.OFFERS.labels("expired").inc(len(holders))
            await self.audit.record(order_id, "timeout", {"partner_ids": holders,
                                                          "fence": int(order.get("offer_fence") or 0)})
            await self._round(order, missed=holders, revoke_reason="expired")

    async def sweep(self) -> None:
        """Re-read MongoDB for orders whose events, timers or replies were lost, and retry waiting
        orders whose backoff is due."""
        now = now_ms()
        async for order in self.orders.find(
                {"status": {"$in": ["placed", "offered"]}},
                {"status": 1, "offer_expires_ms": 1, "dispatch_exhausted": 1, "dispatch_retry_ms": 1,
                 "offer_partner_ids": 1, DECLINED: 1, MISSED: 1, "arrive_before_ms": 1, "window_alert_ms": 1,
                 "dispatch_radius_m": 1}):
            oid = str(order["_id"])
            closes = int(order.get("arrive_before_ms") or 0)
            if closes and now >= closes - WINDOW_RISK_MS and not int(order.get("window_alert_ms") or 0):
                await self._alert_window(order)
            if order["status"] == "offered":
                replied = set(order.get(DECLINED) or []) | set(order.get(MISSED) or [])
                if replied & set(order.get("offer_partner_ids") or []):
                    await self.settle_replies(oid)  # a recorded decline whose follow-up was lost
                elif int(order.get("offer_expires_ms") or 0) < now - 1000:
                    await self.on_timeout(oid)
            elif not int(order.get("dispatch_exhausted") or 0) or int(order.get("dispatch_retry_ms") or 0) <= now:
                await self.dispatch(oid)

    async def wake(self, partner_ids: Iterable[str]) -> int:
        """Partners came on duty or freed up: retry waiting orders within the maximum radius of them,
        oldest first, one order per partner. Returns how many orders got an offer."""
        ids = list(dict.fromkeys(partner_ids))
        if not ids:
            return 0
        waiting = await self.orders.find({"status": "placed", "dispatch_exhausted": 1}, {"address": 1, DECLINED: 1}
                                         ).sort("created_at", 1).limit(WAKE_SCAN_MAX).to_list(None)
        if not waiting:
            return 0
        tried: set[str] = set()
        woken = 0
        now = now_ms()
        for state in await self.fleet.states(ids):
            # Only a partner who could take an order now is worth a new pass (a failed pass pushes
            # the order's next retry further out).
            if state.lat is None or state.lng is None or not state.online or state.order_id \
                    or not state.fresh(now, self.fleet.stale_ms):
                continue
            for order in waiting:
                oid, pickup = str(order["_id"]), _pickup(order)
                if oid in tried or pickup is None or state.id in (order.get(DECLINED) or []) or haversine_m(
                        state.lat, state.lng, pickup[0], pickup[1]) > self.settings.dispatch_max_radius_m:
                    continue
                tried.add(oid)
                if await self.dispatch(oid, retry=True):
                    woken += 1
                    break
        return woken

    async def restore_after_loss(self) -> None:
        """Redis lost its data: put back the timers, holders and leases of open offers from MongoDB,
        so offers still time out and cascade, and nobody is offered a second job meanwhile."""
        now = now_ms()
        async for order in self.orders.find({"status": "offered"},
                                            {"offer_partner_ids": 1, "offer_fence": 1, "offer_expires_ms": 1}):
            oid, expires = str(order["_id"]), int(order.get("offer_expires_ms") or 0)
            holders = [str(p) for p in order.get("offer_partner_ids") or []]
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(OFFER_TIMERS, {oid: expires}, nx=True)
            if holders and expires > now:
                pipe.sadd(OFFER_HOLDERS.format(order_id=oid), *holders)
                for pid in holders:
                    pipe.set(offer_key(pid), f"{oid}:{int(order.get('offer_fence') or 0)}", nx=True,
                             px=expires - now + LEASE_GRACE_MS)
            await pipe.execute()

    # --- rounds ---------------------------------------------------------------------------------

    def _take(self) -> int:
        """How many partners one round offers the order to."""
        if self.settings.dispatch_strategy == "top_k":
            return max(1, self.settings.dispatch_top_k)
        if self.settings.dispatch_strategy == "broadcast":
            return BROADCAST_MAX
        return 1

    async def _round(self, order: dict[str, Any], *, missed: Iterable[str], revoke_reason: str | None,
                     new_pass: bool = False) -> bool:
        """Offer `order` to the next candidate(s), widening the radius; when nobody is left, the
        order waits for its retry. `missed` are the previous holders who did not answer; a new
        pass starts again from the first radius and gives them another chance."""
        order_id = str(order["_id"])
        newly_missed = [str(p) for p in missed]
        earlier_missed: set[str] = set() if new_pass else set(order.get(MISSED) or [])
        excluded = set(order.get(DECLINED) or []) | earlier_missed | set(newly_missed)
        # The previous round's holders lose their offer now (decliners need no notice).
        await self._revoke(order_id, revoke_reason, keep=set())
        pickup = _pickup(order)
        base = self.settings.dispatch_radius_m
        radius = base if new_pass else int(order.get("dispatch_radius_m") or base)
        take = self._take()
        while pickup is not None:
            search = await self._search(order, pickup, radius, excluded, take)
            considered = {"radius_m": radius, "found": len(search.candidates), "skipped": search.skipped,
                          "excluded": sorted(excluded),
                          "candidates": [c.audit() for c in search.candidates[:AUDIT_CANDIDATES]]}
            if new_pass:
                considered["pass"] = int(order.get("dispatch_attempts") or 0) + 1
            chosen = await self._reserve(order, search.candidates, take)
            if chosen:
                # The offer goes out first; the audit write is off the order -> offer latency path.
                return await self._offer(order, chosen, radius, newly_missed, considered, new_pass=new_pass)
            await self.audit.record(order_id, "candidates", considered)
            if radius >= self.settings.dispatch_max_radius_m:
                break
            wider = min(radius * 2, self.settings.dispatch_max_radius_m)
            await self.audit.record(order_id, "widen", {"from_m": radius, "to_m": wider})
            radius = wider
        await self._give_up(order, radius, excluded, "no pickup point" if pickup is None else NO_PARTNER)
        return False

    async def _search(self, order: Mapping[str, Any], pickup: tuple[float, float], radius: int, excluded: set[str],
                      take: int) -> Search:
        """Search, healing what the search finds broken: a missing index (rebuilt at once) and
        leases a dead round left on partners this order needs (released)."""
        search = await self.matcher.search(pickup[0], pickup[1], radius, excluded, need=take)
        if search.index_lost and self.on_index_lost is not None:
            await self.on_index_lost()
            search = await self.matcher.search(pickup[0], pickup[1], radius, excluded, need=take)
        if len(search.candidates) < take and search.leases and await self._release_orphans(order, search.leases):
            search = await self.matcher.search(pickup[0], pickup[1], radius, excluded, need=take)
        return search

    async def _release_orphans(self, order: Mapping[str, Any], leases: Sequence[Lease]) -> int:
        """Release leases that name an offer MongoDB does not hold for that partner at that fence
        (a round that died between reserve and commit). Returns how many were released."""
        order_id = str(order["_id"])
        lease_ms = int(self.settings.offer_timeout_s * 1000) + LEASE_GRACE_MS
        # This order's own leases cannot be in flight: we hold its lock, and the previous round's
        # holders were revoked when this round began. Other orders' young leases may be.
        suspects = [lease for lease in leases
                    if lease.order_id == order_id or lease_ms - lease.pttl_ms >= LEASE_IN_FLIGHT_MS]
        if not suspects:
            return 0
        docs = {str(d["_id"]): d async for d in self.orders.find(
            {"_id": {"$in": sorted({lease.order_id for lease in suspects})}},
            {"status": 1, "offer_fence": 1, "offer_partner_ids": 1})}
        released = 0
        for lease in suspects:
            doc = docs.get(lease.order_id)
            if doc is not None and doc.get("status") == "offered" and int(doc.get("offer_fence") or 0) == lease.fence \
                    and lease.partner_id in (doc.get("offer_partner_ids") or []):
                continue  # a real offer
            if not await self._drop_exact(keys=[offer_key(lease.partner_id)], args=[lease.value]):
                continue  # changed meanwhile: not the lease we judged
            await self.redis.srem(OFFER_HOLDERS.format(order_id=lease.order_id), lease.partner_id)
            await self.fleet.touch([lease.partner_id])
            released += 1
            logger.info("released a lease left on partner %s for order %s (fence %d)", lease.partner_id,
                        lease.order_id, lease.fence)
            await self.audit.record(lease.order_id, "lease_released", {
                "partner_id": lease.partner_id, "fence": lease.fence, "found_by": order_id})
        return released

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

    async def _offer(self, order: dict[str, Any], chosen: list[Candidate], radius: int, newly_missed: list[str],
                     considered: dict[str, Any], *, new_pass: bool) -> bool:
        order_id = str(order["_id"])
        previous = order.get("offer_fence")
        fence = int(previous or 0) + 1
        started = now_ms()
        timeout_ms = int(self.settings.offer_timeout_s * 1000)
        expires = started + timeout_ms
        pids = [c.partner_id for c in chosen]
        expect: dict[str, Any] = {"offer_fence": previous} if previous is not None else {
            "offer_fence": {"$exists": False}}
        fields: dict[str, Any] = {"offer_partner_ids": pids, "offer_fence": fence, "offer_expires_ms": expires,
                                  "dispatch_radius_m": radius, "dispatch_exhausted": 0}
        added: dict[str, list[str]] = {}
        if new_pass:
            fields[MISSED] = []
        elif newly_missed:
            await self._ensure_arrays(order_id, order)
            added[MISSED] = newly_missed
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
                expect=expect, set_fields=fields, add_to_set=added or None)
        except Exception as exc:
            # Someone else moved the order on (another process, an admin, a cancel), or a store
            # failed: stand down and give the partners back at once.
            await self.redis.srem(holders_key, *pids)
            for pid in pids:
                await self._drop_lease(keys=[offer_key(pid)], args=[f"{order_id}:"])
            await self.fleet.touch(pids)
            if not isinstance(exc, AppError):
                raise
            logger.info("offer round for %s lost: %s", order_id, exc.code)
            await self.audit.record(order_id, "candidates", {**considered, "outcome": "round_lost"})
            return False
        lag = now_ms() - started
        if lag > timeout_ms // OFFER_LAG_SHARE:
            # The commit was slow (a busy MongoDB): the partner's time starts when the offer goes
            # out, not when the round began, or a slow store would send offers already expired.
            expires = now_ms() + timeout_ms
            moved = await self.orders.update_one({"_id": order_id, "status": "offered", "offer_fence": fence},
                                                 {"$set": {"offer_expires_ms": expires}})
            if moved.matched_count == 0:
                return False  # the round moved on meanwhile (a cancel, an assignment): nothing to send
            await self.redis.zadd(OFFER_TIMERS, {order_id: expires})
            considered["late_commit_ms"] = lag
        price = int(after.get("price") or 0)
        # Same rounding as the REST offer view: commission rounded half up, payout the rest.
        payout = price - (price * self.settings.commission_rate_bp + 5_000) // 10_000
        # The venue to within ~1 km, as the REST offer view shows it: the exact address goes only to
        # the partner who accepts (and the distance is rounded so it does not pin the point either).
        pickup = approximate(*(_pickup(after) or (0.0, 0.0)))
        details = _offer_details(after)
        for cand in chosen:
            message = {"order_id": order_id, "pickup": {"lat": pickup[0], "lng": pickup[1]},
                       "distance_m": round(cand.distance_m, -2), "eta_s": cand.eta_s, "payout": payout,
                       "currency": str(after.get("currency") or self.settings.currency), "expires_at": expires,
                       "fence": fence, "version": int(after.get("version") or 0), **details}
            await self.emitter.emit("offer", message, f"partner:{cand.partner_id}")
        metrics.OFFERS.labels("offered").inc(len(chosen))
        await self.audit.record(order_id, "candidates", considered)
        await self.audit.record(order_id, "offer", {"partner_ids": pids, "fence": fence, "expires_ms": expires,
                                                    "radius_m": radius, "offers": [c.audit() for c in chosen]})
        return True

    async def _give_up(self, order: dict[str, Any], radius: int, excluded: set[str], reason: str) -> None:
        """Nobody took the order on this pass: it waits for a partner, retried on a backoff (and on
        wake-ups). Admins are alerted the first time only."""
        order_id = str(order["_id"])
        attempts = int(order.get("dispatch_attempts") or 0) + 1
        delay_s = min(self.settings.dispatch_retry_s * 2 ** min(attempts - 1, _BACKOFF_STEPS_MAX),
                      self.settings.dispatch_retry_max_s)
        retry_ms = now_ms() + int(delay_s * 1000)
        fields = {"offer_partner_ids": [], "offer_expires_ms": 0, "dispatch_exhausted": 1,
                  "dispatch_radius_m": radius, "dispatch_attempts": attempts, "dispatch_retry_ms": retry_ms,
                  MISSED: []}
        if order.get("status") == "offered":
            try:
                await self.flow.transition(order_id, "placed", by_role=BY_ROLE, by_id=None, reason=reason,
                                           allowed_from=frozenset({"offered"}),
                                           expect={"offer_fence": order.get("offer_fence")}, set_fields=fields)
            except AppError as exc:
                logger.info("could not return %s to placed: %s", order_id, exc.code)
                return
        else:
            fence = order.get("offer_fence")
            result = await self.orders.update_one(
                {"_id": order_id, "status": "placed",
                 "offer_fence": fence if fence is not None else {"$exists": False}}, {"$set": fields})
            if result.matched_count == 0:
                return
        await self.redis.zrem(OFFER_TIMERS, order_id)
        data = {"reason": reason, "radius_m": radius, "candidates_tried": len(excluded), "attempts": attempts,
                "retry_ms": retry_ms}
        if not await self._alert_once(order_id):
            await self.audit.record(order_id, "waiting", data)
            return
        alert = {"order_id": order_id, "reason": reason, "radius_m": radius, "candidates_tried": len(excluded),
                 "at": iso()}
        await self.audit.record(order_id, "alert", data)
        await self.emitter.emit("dispatch_alert", alert, "admins")

    async def _alert_window(self, order: Mapping[str, Any]) -> None:
        """Nobody is on the way and the arrival window closes soon: tell the admins early, once."""
        order_id = str(order["_id"])
        at = now_ms()
        for unset in ({"$exists": False}, 0):  # two conditional updates, not one with `$or`
            result = await self.orders.update_one(
                {"_id": order_id, "status": {"$in": ["placed", "offered"]}, "window_alert_ms": unset},
                {"$set": {"window_alert_ms": at}})
            if result.modified_count:
                break
        else:
            return  # another process alerted, or the order was assigned meanwhile
        alert = {"order_id": order_id, "reason": "window_at_risk",
                 "radius_m": int(order.get("dispatch_radius_m") or self.settings.dispatch_radius_m),
                 "candidates_tried": len(set(order.get(DECLINED) or []) | set(order.get(MISSED) or [])),
                 "at": iso()}
        await self.audit.record(order_id, "alert", {k: v for k, v in alert.items() if k != "order_id"})
        await self.emitter.emit("dispatch_alert", alert, "admins")

    async def _alert_once(self, order_id: str) -> bool:
        """Mark the order alerted unless it already was (by any process): True for the one that did.
        Two conditional updates, not one with `$or` (see OrderFlow.claim_partner)."""
        at = now_ms()
        for unset in ({"$exists": False}, 0):
            result = await self.orders.update_one({"_id": order_id, "status": "placed", "dispatch_alert_ms": unset},
                                                  {"$set": {"dispatch_alert_ms": at}})
            if result.modified_count:
                return True
        return False

    async def _ensure_arrays(self, order_id: str, order: Mapping[str, Any] | None = None) -> None:
        """Create the reply arrays if the order lacks them: the embedded wire server ignores
        `$addToSet` on a missing field (and this conditional `$set` never overwrites one)."""
        for name in (DECLINED, MISSED):
            if order is None or name not in order:
                await self.orders.update_one({"_id": order_id, name: {"$exists": False}}, {"$set": {name: []}})

    # --- replies --------------------------------------------------------------------------------

    async def _accept(self, order_id: str, partner_id: str, fence: int) -> dict[str, Any]:
        try:
            after = await self.flow.accept_offer(order_id, partner_id, fence=fence)
        except AppError as exc:
            await self.redis.delete(ACCEPTING_KEY.format(order_id=order_id))
            metrics.OFFERS.labels("refused").inc()
            await self.audit.record(order_id, "reply_refused", {"partner_id": partner_id, "fence": fence,
                                                                "code": exc.code})
            if exc.code == "partner_busy":
                return acks.error(acks.PARTNER_BUSY, "finish your current job before taking another")
            # The round had moved on (its timer ran, another holder won, the order was cancelled)
            # or this partner had declined it. Make the timer due now (never later) in case it
            # was lost with Redis data, so an expired round moves on at once rather than at the
            # next sweep. The timeout handler re-reads the order: an offer still open, or taken
            # by someone else, is left as it is.
            await self.redis.zadd(OFFER_TIMERS, {order_id: now_ms()}, lt=True)
            return acks.error(acks.OFFER_CLOSED, "this offer is no longer open")
        metrics.OFFERS.labels("accepted").inc()
        await self.audit.record(order_id, "assigned", {"partner_id": partner_id, "fence": fence})
        await self.fleet.set_job(partner_id, order_id)
        await self.close(order_id, "taken", winner=partner_id)
        return acks.ok(order_id=order_id, status="assigned", version=int(after.get("version") or 0))

    async def _decline(self, order_id: str, partner_id: str, fence: int, *, via: str) -> dict[str, Any]:
        """Record the reply in MongoDB first (one `$addToSet`, the same write the REST decline
        makes), then move the cascade on. If the order is busy, the sweep finishes it."""
        await self._ensure_arrays(order_id)
        field = MISSED if via in MISSED_VIAS else DECLINED
        recorded = await self.orders.update_one(
            {"_id": order_id, "status": "offered", "offer_fence": fence, "offer_partner_ids": {"$in": [partner_id]}},
            {"$addToSet": {field: partner_id}})
        if recorded.matched_count == 0:
            return acks.error(acks.OFFER_CLOSED, "this offer is no longer open")
        if field == DECLINED:
            metrics.OFFERS.labels("declined").inc()
        await self.settle_replies(order_id, wait_s=3.0)
        if field == DECLINED:
            self._freed([partner_id])
        return acks.ok(order_id=order_id, accept=False)

    async def settle_replies(self, order_id: str, *, wait_s: float = 0.0) -> None:
        """Holders recorded as having declined (or gone) lose the offer; the others keep it, and
        when nobody is left the cascade moves on."""
        async with self._lock(order_id, wait_s) as locked:
            if not locked:
                return  # recorded in MongoDB: the sweep finishes it
            order = await self.orders.find_one({"_id": order_id})
            if order is None or order.get("status") != "offered":
                return
            holders = [str(p) for p in order.get("offer_partner_ids") or []]
            replied = set(order.get(DECLINED) or []) | set(order.get(MISSED) or [])
            gone = [pid for pid in holders if pid in replied]
            if not gone:
                return
            for pid in gone:
                await self._drop_lease(keys=[offer_key(pid)], args=[f"{order_id}:"])
            await self.redis.srem(OFFER_HOLDERS.format(order_id=order_id), *gone)
            await self.fleet.touch(gone)
            remaining = [pid for pid in holders if pid not in replied]
            if remaining:  # top-k and broadcast: the others still hold the offer
                try:
                    await self.flow.transition(order_id, "offered", by_role=BY_ROLE, by_id=None,
                                               allowed_from=frozenset({"offered"}),
                                               expect={"offer_fence": order.get("offer_fence")},
                                               set_fields={"offer_partner_ids": remaining})
                except AppError as exc:
                    logger.info("could not drop decliners from %s: %s", order_id, exc.code)
            else:
                await self._round(order, missed=[], revoke_reason=None)

    def _freed(self, partner_ids: list[str]) -> None:
        if partner_ids and self.on_partner_free is not None:
            self.on_partner_free(partner_ids)

    # --- closing --------------------------------------------------------------------------------

    async def close(self, order_id: str, reason: str | None, *, winner: str | None = None) -> None:
        """The order left `offered`: drop its timer and leases; tell every other holder."""
        await self.redis.zrem(OFFER_TIMERS, order_id)
        await self._revoke(order_id, reason, keep={winner} if winner else set())

    async def _revoke(self, order_id: str, reason: str | None, keep: set[str]) -> None:
        """Drop the holders' leases and tell them why, except holders of a round that never
        committed (their lease names a fence beyond MongoDB's): they never saw an offer."""
        holders = await self._pop_set(keys=[OFFER_HOLDERS.format(order_id=order_id)])
        if not holders:
            return
        order = await self.orders.find_one({"_id": order_id}, {"version": 1, "offer_fence": 1})
        version = int((order or {}).get("version") or 0)
        committed = int((order or {}).get("offer_fence") or 0)
        for pid in (str(h) for h in holders):
            lease = await self._drop_lease(keys=[offer_key(pid)], args=[f"{order_id}:"])
            never_offered = isinstance(lease, str) and _lease_fence(lease) > committed
            if reason is not None and pid not in keep and not never_offered:
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
