"""Live streams: order status to customers and admins, the partner's position to its customer,
and the admin fleet map as a snapshot followed by batched deltas on a tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from core import metrics
from core.contracts import LocationPoint, OrderEvent, PaymentEvent
from core.jsonutil import now_ms
from core.orderflow import TRACKABLE
from core.tasks import stop_if_cancelled
from dispatch import acks
from dispatch.emitter import Emitter
from dispatch.fleet import MAP_FIELDS, FleetIndex, fix_time, map_status
from geo.distance import BBox, bbox_center_and_size, in_bbox, valid_bbox
from geo.eta import eta_between

logger = logging.getLogger(__name__)

SNAPSHOT_LIMIT = 20_000
# A tracking-link holder: no account, may only `track` the order its link names.
GUEST = "guest"
BOX_MARGIN = 1.01


@dataclass(frozen=True, slots=True)
class Job:
    order_id: str
    pickup: tuple[float, float] | None


@dataclass
class FleetSub:
    """One admin socket's fleet subscription."""

    bbox: BBox | None
    version: int = 0
    known: set[str] = field(default_factory=set)


def _job_from_order(order: Mapping[str, Any]) -> Job:
    address = order.get("address") or {}
    pickup = None
    if isinstance(address, Mapping) and "lat" in address and "lng" in address:
        pickup = (float(address["lat"]), float(address["lng"]))
    return Job(str(order["_id"]), pickup)


class Live:
    """Per-process live streams; order events reach every process, each serves its own sockets."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], fleet: FleetIndex, emitter: Emitter) -> None:
        self.orders = db.orders
        self.fleet = fleet
        self.emitter = emitter
        self.jobs: dict[str, Job] = {}
        self.subs: dict[str, FleetSub] = {}
        self._last_tick = now_ms()

    # --- orders ---------------------------------------------------------------------------------

    async def on_order_event(self, event: OrderEvent) -> list[str]:
        """Stream the change and follow who serves the order; returns the partners who lost it."""
        serving = event.partner_id if event.partner_id and event.status in TRACKABLE else None
        # A reassignment leaves the previous partner mapped to the order: unmapped here, or its
        # position would keep reaching the customer.
        lost = [p for p, job in self.jobs.items() if job.order_id == event.order_id and p != serving]
        for pid in lost:
            del self.jobs[pid]
        if serving is not None:
            pickup = (event.pickup.lat, event.pickup.lng) if event.pickup else None
            self.jobs[serving] = Job(event.order_id, pickup)
        message = {"order_id": event.order_id, "status": event.status, "at": event.at, "version": event.version,
                   "partner_id": event.partner_id, "reason": event.reason}
        # Status changes go out at once. Local only: every process got the same Redis event.
        await self.emitter.emit("order_status", message, f"order:{event.order_id}", local=True)
        await self.emitter.emit("order_status", message, "admins", local=True)
        if event.partner_id:  # the assigned partner hears about its job (a cancellation, say)
            await self.emitter.emit("order_status", message, f"partner:{event.partner_id}", local=True)
        for pid in (p for p in lost if p != event.partner_id):  # a replaced partner, not told by whom
            await self.emitter.emit("order_status", {**message, "partner_id": None}, f"partner:{pid}", local=True)
        return lost

    async def on_payment_event(self, event: PaymentEvent) -> None:
        """Relay an order's money change: amounts to the admins; to the order's room (which tracking-link
        guests share with the customer) only that it changed, so the customer re-reads it over REST."""
        full = event.model_dump(exclude={"type", "customer_id"})
        hint = {k: full[k] for k in ("order_id", "status", "version", "payment_status", "at")}
        await self.emitter.emit("payment_status", hint, f"order:{event.order_id}", local=True)
        await self.emitter.emit("payment_status", full, "admins", local=True)

    def load_jobs(self, jobs: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the job map with MongoDB's view (start-up and periodic sweep)."""
        self.jobs = {pid: _job_from_order(order) for pid, order in jobs.items()}

    async def on_ping(self, partner_id: str, point: LocationPoint) -> None:
        """Forward an accepted fix to the customer of the partner's current job, if any."""
        job = self.jobs.get(partner_id)
        if job is None:
            return
        await self.emitter.emit("partner_location", self._location(job, point.lat, point.lng, point.ts,
                                                                    point.heading, point.speed),
                                f"order:{job.order_id}")

    @staticmethod
    def _location(job: Job, lat: float, lng: float, ts: int, heading: float | None,
                  speed: float | None) -> dict[str, Any]:
        eta = eta_between(lat, lng, job.pickup[0], job.pickup[1]) if job.pickup else 0
        return {"order_id": job.order_id, "lat": lat, "lng": lng, "ts": ts, "eta_s": eta, "heading": heading,
                "speed": speed}

    async def track(self, user_id: str, role: str, order_id: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Check that the customer owns the order; return the ack and the partner's last position."""
        if not isinstance(order_id, str) or not order_id:
            return acks.error(acks.INVALID_PAYLOAD, "order_id is required"), None
        order = await self.orders.find_one({"_id": order_id},
                                           {"customer_id": 1, "status": 1, "version": 1, "partner_id": 1,
                                            "address": 1})
        # Someone else's order looks exactly like a missing one: no order ids are confirmed.
        # A guest (tracking link) is identified by the one order its link names.
        allowed = role == "admin" or (role == GUEST and order_id == user_id) or (
            role == "customer" and order is not None and order.get("customer_id") == user_id)
        if order is None or not allowed:
            return acks.error(acks.NOT_FOUND, "no such order"), None
        ack = acks.ok(order_id=order_id, status=order.get("status"), version=int(order.get("version") or 0),
                      partner_id=order.get("partner_id"))
        pid = order.get("partner_id")
        first = None
        if pid and order.get("status") in TRACKABLE:
            state = (await self.fleet.states([str(pid)]))[0]
            if state.lat is not None and state.lng is not None:
                first = self._location(_job_from_order(order), state.lat, state.lng, state.ts, state.heading,
                                       state.speed)
        return ack, first

    # --- admin fleet ----------------------------------------------------------------------------

    def parse_bbox(self, data: Any) -> BBox | str | None:
        raw = data.get("bbox") if isinstance(data, dict) else None
        if raw is None:
            return None
        if not isinstance(raw, list | tuple) or len(raw) != 4 or not all(isinstance(v, int | float) for v in raw):
            return "bbox must be [min_lng, min_lat, max_lng, max_lat]"
        box: BBox = (float(raw[0]), float(raw[1]), float(raw[2]), float(raw[3]))
        return box if valid_bbox(box) else "bbox must be [min_lng, min_lat, max_lng, max_lat] within range"

    async def subscribe(self, sid: str, bbox: BBox | None) -> dict[str, Any]:
        """Register (or re-scope) an admin's fleet view and build its snapshot."""
        sub = FleetSub(bbox)
        if bbox is None or bbox[2] - bbox[0] >= 180.0:  # half the globe or more: no search box holds it
            ids = (await self.fleet.all_ids())[:SNAPSHOT_LIMIT]
        else:
            clat, clng, width, height = bbox_center_and_size(bbox)
            # Redis's Earth is 0.03 % larger than ours: widen a little, `_describe` trims to the bbox.
            ids = (await self.fleet.in_box(clat, clng, width * BOX_MARGIN, height * BOX_MARGIN))[:SNAPSHOT_LIMIT]
        partners = await self._describe(ids, sub)
        sub.known = {p["id"] for p in partners}
        # Registered only once built, so no tick sends this socket a delta before its snapshot
        # (nothing is missed: the next tick reads every change since the previous one). A
        # re-scope continues the socket's versions, which never go back.
        previous = self.subs.get(sid)
        sub.version = (previous.version if previous else 0) + 1
        self.subs[sid] = sub
        return {"type": "snapshot", "partners": partners, "removed": [], "version": sub.version}

    def unsubscribe(self, sid: str) -> None:
        self.subs.pop(sid, None)

    async def _describe(self, ids: list[str], sub: FleetSub | None) -> list[dict[str, Any]]:
        entries = await self._map_entries(ids)
        if sub is None or sub.bbox is None:
            return [entry for _, entry in entries]
        return [entry for _, entry in entries if in_bbox(entry["lat"], entry["lng"], sub.bbox)]

    async def _map_entries(self, ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """(id, map entry) for each of `ids` with a position. Snapshots and ticks read thousands,
        so only the map's fields are read and no PartnerState is built for each."""
        rows = await self.fleet.fields(ids, MAP_FIELDS)
        held = await self.fleet.offers_held(ids)
        now, stale_ms = now_ms(), self.fleet.stale_ms
        out = []
        for pid, (lat, lng, ts, seen, online, order_id, unknown), offered in zip(ids, rows, held, strict=True):
            if not lat or not lng:
                continue
            fix_ms = fix_time(int(float(ts)) if ts else 0, int(float(seen)) if seen else 0)
            status = map_status(online == "1", fix_ms, unknown == "1", order_id or None, offered, now, stale_ms)
            # An unknown partner's last fix is a copy rebuilt from MongoDB, not something we heard:
            # no age is shown for it (a map would grey it as stale by that age).
            out.append((pid, {"id": pid, "lat": float(lat), "lng": float(lng), "status": status,
                              "last_seen": 0 if status == "unknown" else fix_ms}))
        return out

    async def tick(self) -> list[tuple[str, dict[str, Any]]]:
        """Deltas since the last tick, one message per subscribed admin that has changes.

        The window ends at Redis's clock (see FleetIndex.changes_since), so a change is in exactly
        one tick's window and reaches the map on the next tick, with no safety lag."""
        if not self.subs:
            upto, _ = await self.fleet.changes_since(now_ms())  # nothing to send: only move on
            self._last_tick = upto
            return []
        upto, changed = await self.fleet.changes_since(self._last_tick)
        entries = await self._map_entries(sorted(changed))
        # Only now is the window consumed: a tick that failed on a Redis blip is retried whole.
        self._last_tick = upto
        whole = [entry for _, entry in entries]  # one list shared by every whole-fleet subscriber
        out: list[tuple[str, dict[str, Any]]] = []
        for sid, sub in list(self.subs.items()):
            partners: list[dict[str, Any]] = []
            removed: list[str] = []
            if sub.bbox is None:
                partners = whole
                sub.known.update(pid for pid, _ in entries)
            else:
                for pid, entry in entries:
                    if in_bbox(entry["lat"], entry["lng"], sub.bbox):
                        partners.append(entry)
                        sub.known.add(pid)
                    elif pid in sub.known:
                        removed.append(pid)
                        sub.known.discard(pid)
            if partners or removed:
                sub.version += 1
                out.append((sid, {"type": "delta", "partners": partners, "removed": removed,
                                  "version": sub.version}))
        return out

    async def tick_loop(self, interval_s: float) -> None:
        """Tick at a fixed rate, so the time a tick takes does not push every later one back. A
        tick that overran its slot is followed half an interval later, never back to back: an
        admin gets at most two fleet messages per interval."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval_s
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            started = loop.time()
            try:
                for sid, message in await self.tick():
                    await self.emitter.emit("fleet", message, sid, local=True)
            except Exception as exc:  # Redis blips must not end the stream
                stop_if_cancelled()
                logger.warning("fleet tick failed: %s", type(exc).__name__)
            metrics.TICK_SECONDS.observe(loop.time() - started)
            next_at = max(next_at + interval_s, loop.time() + interval_s / 2)
