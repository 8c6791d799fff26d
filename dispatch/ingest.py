"""Location ingest: validate pings, write them to Redis in micro-batches, persist to MongoDB in batches.

The socket `location`/`location_batch` events and the REST fallback (`LOCATION_SINK`) share this
code path. Validation runs per partner against the last accepted fix; accepted fixes are
coalesced per partner and written in one pipelined round trip every few milliseconds, and the
caller's acknowledgement waits for that write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from core import metrics
from core.contracts import PARTNER_TRACKS, IngestResult, LocationPoint
from core.jsonutil import now_ms
from core.tasks import stop_if_cancelled
from dispatch import acks
from dispatch.fleet import FleetIndex, Written
from geo.distance import haversine_m
from geo.eta import MAX_PLAUSIBLE_SPEED_MPS

logger = logging.getLogger(__name__)

MAX_FUTURE_SKEW_MS = 5_000          # phone clocks drift; more than this ahead is a bad clock
MAX_AGE_MS = 24 * 3600 * 1000       # buffered fixes older than a day are useless for a live map
MIN_INTERVAL_MS = 1_000             # at most one accepted ping per second per partner
MAX_ACCURACY_M = 1_000.0            # a 95 % radius above 1 km says nothing about where they are
# A jump is only "impossible" beyond GPS noise: allow the two fixes' accuracy radii plus 50 m.
NOISE_ALLOWANCE_M = 50.0
FLUSH_INTERVAL_S = 0.02
PERSIST_INTERVAL_S = 1.0
# MongoDB is only the recovery copy of positions: write at most this many per second (oldest
# first; newer fixes replace queued ones), so 5,000 partners pinging every second cost
# MongoDB 250 upserts a second, not 5,000, and each partner's copy is at most ~20 s old: fresher
# than the 30 s ping interval that replaces it after a recovery anyway.
PERSIST_BATCH_MAX = 250
TRACK_BATCH_MAX = 1_000
TRACK_BUFFER_MAX = 20_000          # history is best effort: beyond this, the oldest are dropped
TRACK_SAMPLE_MS = 20_000            # history keeps at most one fix per partner per 20 s (every 30 s ping)
TRACK_KEEP_MS = 24 * 3600 * 1000    # and only for a day
# The last-accepted cache is refreshed from Redis after this long without a ping, so a partner
# who moved to another process (or pinged over REST elsewhere) is validated against the truth.
LAST_TTL_S = 10.0


class PingRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Last:
    ts: int
    lat: float
    lng: float
    accuracy: float
    checked: float  # monotonic time of the last use


def check_point(point: LocationPoint, last: _Last | None, now: int) -> None:
    """Raise PingRejected with a stable code if `point` may not follow `last`."""
    if not (math.isfinite(point.lat) and math.isfinite(point.lng)) or not (
            -90.0 <= point.lat <= 90.0 and -180.0 <= point.lng <= 180.0):
        raise PingRejected(acks.OUT_OF_RANGE, "lat must be in [-90, 90] and lng in [-180, 180]")
    if point.accuracy is not None and not (0.0 <= point.accuracy <= MAX_ACCURACY_M):
        raise PingRejected(acks.INACCURATE, f"accuracy must be between 0 and {MAX_ACCURACY_M:.0f} m")
    if point.speed is not None and not (0.0 <= point.speed <= MAX_PLAUSIBLE_SPEED_MPS):
        raise PingRejected(acks.OUT_OF_RANGE, "speed must be between 0 and 83 m/s")
    if point.heading is not None and not (0.0 <= point.heading <= 360.0):
        raise PingRejected(acks.OUT_OF_RANGE, "heading must be between 0 and 360")
    if point.ts > now + MAX_FUTURE_SKEW_MS:
        raise PingRejected(acks.FUTURE_TS, "ts is in the future; check the device clock")
    if point.ts < now - MAX_AGE_MS:
        raise PingRejected(acks.TOO_OLD, "ts is more than a day old")
    if last is None:
        return
    if point.ts <= last.ts:
        raise PingRejected(acks.STALE_TS, "ts is not newer than the last accepted fix")
    dt_ms = point.ts - last.ts
    if dt_ms < MIN_INTERVAL_MS:
        raise PingRejected(acks.TOO_FREQUENT, "at most one fix per second is accepted")
    moved = haversine_m(last.lat, last.lng, point.lat, point.lng)
    allowance = NOISE_ALLOWANCE_M + last.accuracy + (point.accuracy or 0.0)
    if moved > allowance and (moved - allowance) / (dt_ms / 1000.0) > MAX_PLAUSIBLE_SPEED_MPS:
        raise PingRejected(acks.IMPOSSIBLE_SPEED, "the fix is too far from the last one for the time between")


def _count_fixes(accepted: int, rejected: Iterable[dict[str, Any]]) -> None:
    """Metrics: fixes accepted (stored), and refused by code."""
    if accepted:
        metrics.FIXES.labels("accepted").inc(accepted)
    for item in rejected:
        metrics.FIXES.labels(str(item["code"])).inc()


def parse_point(raw: Any) -> LocationPoint:
    if not isinstance(raw, dict):
        raise PingRejected(acks.INVALID_PAYLOAD, "a fix is an object {lat, lng, ts, accuracy?, speed?, heading?}")
    try:
        return LocationPoint.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(str(err["loc"][0]) for err in exc.errors() if err["loc"]) or "payload"
        raise PingRejected(acks.INVALID_PAYLOAD, f"invalid fix: {fields}") from None


Listener = Callable[[str, LocationPoint], Awaitable[None]]
# Told what each micro-batch write found (index lost, partners now available); must not block.
WriteWatcher = Callable[[Written], None]


class Ingest:
    """Implements core.contracts.LocationSink for sockets and the REST fallback."""

    def __init__(self, fleet: FleetIndex, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.fleet = fleet
        self.tracks = db[PARTNER_TRACKS]
        self._last: dict[str, _Last] = {}
        self._pending: dict[str, tuple[LocationPoint, int]] = {}
        self._pending_done: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._dirty: dict[str, tuple[LocationPoint, int]] = {}
        self._track_last: dict[str, int] = {}
        self._track_buffer: list[dict[str, Any]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        # Cold reads of partners' last fixes are batched into one pipeline: thousands of phones
        # reconnecting at once must not open one Redis connection each.
        self._loading: dict[str, asyncio.Future[_Last | None]] = {}
        self._load_wake = asyncio.Event()
        self.listeners: list[Listener] = []
        self.watchers: list[WriteWatcher] = []

    async def ingest(self, partner_id: str, points: list[LocationPoint]) -> IngestResult:
        """Validate `points` (any order; de-duplicated by ts) and store the accepted ones."""
        ordered = sorted({p.ts: p for p in points}.values(), key=lambda p: p.ts)
        rejected: list[dict[str, Any]] = []
        accepted: list[LocationPoint] = []
        # One partner's pings are validated and stored one call at a time, so two racing fixes
        # cannot both pass. The lock is held through the store: when it fails, the phone is
        # told to retry, so the fixes must not count as accepted (a retry would be `stale_ts`).
        lock = self._locks.get(partner_id)
        if lock is None:
            lock = self._locks[partner_id] = asyncio.Lock()
        async with lock:
            last = await self._last_for(partner_id)
            now = now_ms()
            for point in ordered:
                try:
                    check_point(point, last, now)
                except PingRejected as exc:
                    rejected.append({"ts": point.ts, "code": exc.code, "message": exc.message})
                    continue
                accepted.append(point)
                last = _Last(point.ts, point.lat, point.lng, point.accuracy or 0.0, time.monotonic())
            if accepted:
                await self._store(partner_id, accepted)
            if last is not None:
                self._last[partner_id] = last
        _count_fixes(len(accepted), rejected)
        return IngestResult(accepted=len(accepted), rejected=rejected)

    async def ingest_raw(self, partner_id: str, raw_points: Iterable[Any]) -> dict[str, Any]:
        """Socket entry point: parse, ingest, and build the acknowledgement."""
        points: list[LocationPoint] = []
        invalid: list[dict[str, Any]] = []
        for raw in raw_points:
            try:
                points.append(parse_point(raw))
            except PingRejected as exc:
                invalid.append({"ts": raw.get("ts") if isinstance(raw, dict) else None, "code": exc.code,
                                "message": exc.message})
        _count_fixes(0, invalid)
        try:
            result = await self.ingest(partner_id, points) if points else IngestResult(accepted=0, rejected=[])
        except Exception as exc:  # Redis down: tell the phone to keep the fix and retry
            logger.warning("ingest failed: %s", type(exc).__name__)
            return acks.error(acks.UNAVAILABLE, "the location could not be stored; retry later")
        rejected = invalid + result.rejected
        if result.accepted == 0 and rejected:
            first = rejected[0]
            return acks.error(first["code"], first["message"], accepted=0, rejected=rejected)
        return acks.ok(accepted=result.accepted, rejected=rejected)

    async def _last_for(self, partner_id: str) -> _Last | None:
        last = self._last.get(partner_id)
        if last is not None and time.monotonic() - last.checked < LAST_TTL_S:
            return last
        future = self._loading.get(partner_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._loading[partner_id] = future
            self._load_wake.set()
        stored = await asyncio.shield(future)
        if stored is not None and (last is None or stored.ts > last.ts):
            return stored
        return last

    async def load_loop(self) -> None:
        """Resolve queued last-fix reads with one pipelined round trip per batch."""
        while True:
            await self._load_wake.wait()
            await asyncio.sleep(0.002)
            self._load_wake.clear()
            batch, self._loading = self._loading, {}
            ids = list(batch)
            try:
                states = await self.fleet.states(ids)
            except Exception as exc:
                stop_if_cancelled()
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()
                continue
            now = time.monotonic()
            for pid, state in zip(ids, states, strict=True):
                found = None
                if state.lat is not None and state.lng is not None and state.ts:
                    found = _Last(state.ts, state.lat, state.lng, 0.0, now)
                if not batch[pid].done():
                    batch[pid].set_result(found)

    async def _store(self, partner_id: str, points: list[LocationPoint]) -> None:
        seen = now_ms()
        newest = points[-1]
        self._pending[partner_id] = (newest, seen)
        self._dirty[partner_id] = (newest, seen)
        for point in points:
            if point.ts - self._track_last.get(partner_id, 0) >= TRACK_SAMPLE_MS:
                self._track_last[partner_id] = point.ts
                self._track_buffer.append({"_id": uuid.uuid4().hex, "partner_id": partner_id, "lat": point.lat,
                                           "lng": point.lng, "ts": point.ts, "accuracy": point.accuracy})
        if self._pending_done is None:
            self._pending_done = asyncio.get_running_loop().create_future()
        done = self._pending_done
        self._wake.set()
        await asyncio.shield(done)
        for listener in self.listeners:
            await listener(partner_id, newest)

    async def flush_loop(self) -> None:
        """Write pending fixes to Redis: one pipeline per micro-batch, the acks wait for it."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL_S)  # let a micro-batch gather
            self._wake.clear()
            batch, self._pending = self._pending, {}
            done, self._pending_done = self._pending_done, None
            try:
                written = await self.fleet.write_positions(batch)
            except Exception as exc:
                stop_if_cancelled()
                if done is not None and not done.done():
                    done.set_exception(exc)
                    done.exception()  # retrieved here so an unawaited failure is not reported twice
                continue
            if done is not None and not done.done():
                done.set_result(None)
            for watch in self.watchers:
                watch(written)

    async def persist_loop(self) -> None:
        """Every second: last-known positions as one bulk upsert, history as one insert."""
        while True:
            await asyncio.sleep(PERSIST_INTERVAL_S)
            await self.persist_now()
            stop_if_cancelled()

    async def persist_now(self, limit: int = PERSIST_BATCH_MAX) -> None:
        """Write up to `limit` queued last-known positions and a batch of history to MongoDB."""
        ids = list(itertools.islice(self._dirty, limit))
        dirty = {pid: self._dirty.pop(pid) for pid in ids}
        if len(self._track_buffer) > TRACK_BUFFER_MAX:
            del self._track_buffer[: len(self._track_buffer) - TRACK_BUFFER_MAX]
        tracks = self._track_buffer[:TRACK_BATCH_MAX]
        del self._track_buffer[:TRACK_BATCH_MAX]
        try:
            if dirty:
                await self.fleet.persist(dirty)
            if tracks:
                await self.tracks.insert_many(tracks, ordered=False)
        except Exception as exc:
            logger.warning("could not persist %d positions: %s", len(dirty), type(exc).__name__)
            for pid, value in dirty.items():  # keep them for the next round, unless newer came in
                self._dirty.setdefault(pid, value)

    async def trim_tracks(self) -> None:
        await self.tracks.delete_many({"ts": {"$lt": now_ms() - TRACK_KEEP_MS}})

    async def ensure_indexes(self) -> None:
        await self.tracks.create_index([("partner_id", 1), ("ts", 1)])
