"""The fleet index in Redis: positions (GEO), live state (HASH per partner), last seen, on duty.

Redis GEO has no per-member expiry, so staleness is computed here from `seen` and applied by
every reader. MongoDB keeps the last-known positions, so the index can be rebuilt after Redis
loses its data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import (
    FLEET_BUSY,
    FLEET_CHANGED,
    FLEET_EPOCH,
    FLEET_GEO,
    FLEET_ONLINE,
    FLEET_SEEN,
    PARTNER_OFFER,
    PARTNER_POSITIONS,
    PARTNER_STATE,
    LocationPoint,
)
from core.jsonutil import dumps, now_ms
from core.orderflow import TRACKABLE

logger = logging.getLogger(__name__)

STATE_FIELDS = ("lat", "lng", "ts", "seen", "heading", "speed", "online", "order_id", "idle_since")
# Changes older than this are trimmed from FLEET_CHANGED; ticks only look back a few seconds.
CHANGED_KEEP_MS = 120_000
STATE_PREFIX = PARTNER_STATE.split("{", 1)[0]
STATES_PER_SCRIPT = 5_000

# One micro-batch of fixes in one command: packing thousands of GEOADD/HSET/ZADD commands costs
# the client far more CPU than Redis spends running them, so the batch travels as one JSON
# argument. Entries: [id, lng, lat, ts, seen, heading, speed, accuracy], all strings ("" = none).
# (Keys are derived from ARGV, so this assumes a single Redis, not a cluster.) With ARGV[3] == '1'
# (a rebuild from MongoDB, whose copy lags), a fix never replaces one seen later.
_WRITE_POSITIONS = """
local batch = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local changed_at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, p in ipairs(batch) do
  local id = p[1]
  local key = ARGV[2] .. id
  if ARGV[3] ~= '1' or (tonumber(redis.call('HGET', key, 'seen')) or 0) < tonumber(p[5]) then
    redis.call('GEOADD', KEYS[1], p[2], p[3], id)
    redis.call('HSET', key, 'lat', p[3], 'lng', p[2], 'ts', p[4], 'seen', p[5])
    for i, field in ipairs({'heading', 'speed', 'accuracy'}) do
      -- a fix without the field must not leave the previous fix's value behind
      if p[5 + i] ~= '' then redis.call('HSET', key, field, p[5 + i]) else redis.call('HDEL', key, field) end
    end
    redis.call('ZADD', KEYS[2], p[5], id)
    redis.call('ZADD', KEYS[3], changed_at, id)
  end
end
return #batch
"""

# FLEET_CHANGED is scored by Redis's own clock, read inside the script that writes the change.
# Scripts run one at a time, so once Redis's clock reads T every change scored below T is
# already written: a fleet tick can read up to T - 1 ms and never skip a change still on its
# way (a score stamped by the app before its write lands could be skipped).
_MARK_CHANGED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(ARGV) do redis.call('ZADD', KEYS[1], now, id) end
return now
"""

# The changes a fleet tick shows: partners changed in (after, upto] by Redis's clock, and those
# whose last ping crossed the staleness limit in that window. Returns [upto, ids...].
_CHANGES = """
local t = redis.call('TIME')
local upto = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 1
local after = tonumber(ARGV[1])
local stale = tonumber(ARGV[2])
local out = {upto}
local seen = {}
local function add(ids)
  for _, id in ipairs(ids) do
    if not seen[id] then seen[id] = true; out[#out + 1] = id end
  end
end
if upto > after then
  add(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. after, upto))
  add(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. (after - stale), upto - stale))
end
return out
"""

# Many partners' state hashes in one command (a pipeline of thousands of HMGETs costs the client
# far more CPU than this costs Redis). ARGV: key prefix, field count, fields..., ids...; the
# reply is the fields of each id in order, missing ones as nil.
_READ_STATES = """
local prefix = ARGV[1]
local nfields = tonumber(ARGV[2])
local fields = {}
for i = 1, nfields do fields[i] = ARGV[2 + i] end
local out = {}
for i = 3 + nfields, #ARGV do
  local values = redis.call('HMGET', prefix .. ARGV[i], unpack(fields))
  for j = 1, nfields do out[#out + 1] = values[j] end
end
return out
"""


def state_key(partner_id: str) -> str:
    return PARTNER_STATE.format(partner_id=partner_id)


def offer_key(partner_id: str) -> str:
    return PARTNER_OFFER.format(partner_id=partner_id)


@dataclass(frozen=True, slots=True)
class PartnerState:
    """A partner's live state as read from its hash (missing fields are empty)."""

    id: str
    lat: float | None
    lng: float | None
    ts: int
    seen: int
    heading: float | None
    speed: float | None
    online: bool
    order_id: str | None
    idle_since: int

    def fresh(self, now: int, stale_ms: int) -> bool:
        return is_fresh(self.seen, now, stale_ms)


def is_fresh(seen: int, now: int, stale_ms: int) -> bool:
    """Heard from within `stale_ms` (a partner never heard from is not fresh)."""
    return seen > 0 and now - seen <= stale_ms


def map_status(online: bool, seen: int, order_id: str | None, offered: bool, now: int, stale_ms: int) -> str:
    """Map status: busy with a job, offered, idle, offline (off duty) or stale (not heard)."""
    if not online:
        return "offline"
    if not is_fresh(seen, now, stale_ms):
        return "stale"
    if order_id:
        return "busy"
    return "offered" if offered else "idle"


# What the live map shows of a partner, read by fleet ticks for thousands of partners at once.
MAP_FIELDS = ("lat", "lng", "seen", "online", "order_id")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_state(partner_id: str, values: Sequence[str | None]) -> PartnerState:
    raw = dict(zip(STATE_FIELDS, values, strict=True))
    return PartnerState(
        id=partner_id, lat=_float(raw["lat"]), lng=_float(raw["lng"]), ts=int(_float(raw["ts"]) or 0),
        seen=int(_float(raw["seen"]) or 0), heading=_float(raw["heading"]), speed=_float(raw["speed"]),
        online=raw["online"] == "1", order_id=raw["order_id"] or None,
        idle_since=int(_float(raw["idle_since"]) or 0),
    )


class FleetIndex:
    """Reads and writes the Redis fleet keys named in core/contracts.py."""

    def __init__(self, redis: Redis, db: AsyncDatabase[dict[str, Any]], stale_ms: int) -> None:
        self.redis = redis
        self.positions = db[PARTNER_POSITIONS]
        self.orders = db.orders
        self.stale_ms = stale_ms
        self._write_positions = redis.register_script(_WRITE_POSITIONS)
        self._mark_changed = redis.register_script(_MARK_CHANGED)
        self._changes = redis.register_script(_CHANGES)
        self._read_states = redis.register_script(_READ_STATES)

    async def write_positions(self, latest: dict[str, tuple[LocationPoint, int]], *, only_newer: bool = False,
                              ) -> None:
        """One round trip for a micro-batch: GEOADD, state hashes, last seen, changed."""
        if not latest:
            return
        batch = [[pid, repr(p.lng), repr(p.lat), str(p.ts), str(seen_ms),
                  "" if p.heading is None else repr(p.heading), "" if p.speed is None else repr(p.speed),
                  "" if p.accuracy is None else repr(p.accuracy)]
                 for pid, (p, seen_ms) in latest.items()]
        await self._write_positions(keys=[FLEET_GEO, FLEET_SEEN, FLEET_CHANGED],
                                    args=[dumps(batch), STATE_PREFIX, "1" if only_newer else "0"])

    async def set_online(self, partner_id: str, online: bool) -> None:
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        if online:
            pipe.sadd(FLEET_ONLINE, partner_id)
            pipe.hset(state_key(partner_id), mapping={"online": 1})
            pipe.hsetnx(state_key(partner_id), "idle_since", now)
        else:
            pipe.srem(FLEET_ONLINE, partner_id)
            pipe.hset(state_key(partner_id), mapping={"online": 0})
        await self._mark_changed(keys=[FLEET_CHANGED], args=[partner_id], client=pipe)
        await pipe.execute()
        await self.positions.update_one({"_id": partner_id}, {"$set": {"online": 1 if online else 0}}, upsert=True)

    async def set_job(self, partner_id: str, order_id: str | None) -> None:
        """Mark a partner busy with `order_id`, or idle again (None) since now."""
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        if order_id:
            pipe.hset(state_key(partner_id), mapping={"order_id": order_id})
            pipe.sadd(FLEET_BUSY, partner_id)
        else:
            pipe.hdel(state_key(partner_id), "order_id")
            pipe.srem(FLEET_BUSY, partner_id)
            pipe.hset(state_key(partner_id), mapping={"idle_since": now})
        await self._mark_changed(keys=[FLEET_CHANGED], args=[partner_id], client=pipe)
        await pipe.execute()

    async def touch(self, partner_ids: Sequence[str]) -> None:
        """Mark partners changed (an offer made or withdrawn) so the next fleet tick shows it."""
        if partner_ids:
            await self._mark_changed(keys=[FLEET_CHANGED], args=list(partner_ids))

    async def clear_job_if(self, partner_id: str, order_id: str) -> None:
        state = (await self.states([partner_id]))[0]
        if state.order_id == order_id:
            await self.set_job(partner_id, None)

    async def states(self, partner_ids: Sequence[str]) -> list[PartnerState]:
        rows = await self.fields(partner_ids, STATE_FIELDS)
        return [parse_state(pid, row) for pid, row in zip(partner_ids, rows, strict=True)]

    async def fields(self, partner_ids: Sequence[str], names: Sequence[str]) -> list[list[str | None]]:
        """The named fields of each partner's state hash, in order (None where missing)."""
        n = len(names)
        out: list[list[str | None]] = []
        # A script holds Redis for as long as it runs: a few thousand hashes (a few ms) at a time.
        for start in range(0, len(partner_ids), STATES_PER_SCRIPT):
            chunk = partner_ids[start:start + STATES_PER_SCRIPT]
            flat = await self._read_states(args=[STATE_PREFIX, n, *names, *chunk])
            out.extend(flat[i * n:(i + 1) * n] for i in range(len(chunk)))
        return out

    async def offers_held(self, partner_ids: Sequence[str]) -> list[bool]:
        if not partner_ids:
            return []
        return [bool(n) for n in await self.redis.mget([offer_key(pid) for pid in partner_ids])]

    async def near(self, lat: float, lng: float, radius_m: float, count: int) -> list[tuple[str, float]]:
        """Partners within `radius_m` of the point, nearest first: (id, straight-line metres)."""
        rows: Any = await self.redis.geosearch(FLEET_GEO, longitude=lng, latitude=lat, radius=radius_m, unit="m",
                                               sort="ASC", count=count, withdist=True)
        return [(str(pid), float(dist)) for pid, dist in rows]

    async def in_box(self, lat: float, lng: float, width_m: float, height_m: float) -> list[str]:
        rows = await self.redis.geosearch(FLEET_GEO, longitude=lng, latitude=lat, width=max(width_m, 1.0),
                                          height=max(height_m, 1.0), unit="m")
        return [str(pid) for pid in rows]

    async def all_ids(self) -> list[str]:
        return [str(pid) for pid in await self.redis.zrange(FLEET_GEO, 0, -1)]

    async def changes_since(self, after_ms: int) -> tuple[int, list[str]]:
        """(upto, ids): partners changed in (after_ms, upto], upto being Redis's clock now - 1 ms,
        plus those whose last ping crossed the staleness limit in that window."""
        reply = await self._changes(keys=[FLEET_CHANGED, FLEET_SEEN], args=[after_ms, self.stale_ms])
        return int(reply[0]), [str(p) for p in reply[1:]]

    async def trim_changed(self) -> None:
        await self.redis.zremrangebyscore(FLEET_CHANGED, "-inf", now_ms() - CHANGED_KEEP_MS)

    async def persist(self, latest: dict[str, tuple[LocationPoint, int]]) -> None:
        """Upsert last-known positions in one bulk write (never per ping)."""
        from pymongo import UpdateOne

        if not latest:
            return
        ops = [UpdateOne({"_id": pid}, {"$set": {"lat": p.lat, "lng": p.lng, "ts": p.ts, "seen": seen,
                                                 "heading": p.heading, "speed": p.speed}}, upsert=True)
               for pid, (p, seen) in latest.items()]
        await self.positions.bulk_write(ops, ordered=False)

    async def rebuild_if_lost(self) -> bool:
        """After Redis lost its data (no epoch marker), reload positions, duty and jobs from MongoDB.

        Returns True when a rebuild ran. Idempotent and safe to run from several processes.
        """
        if await self.redis.exists(FLEET_EPOCH):
            return False
        # Claim the rebuild so that processes starting together do it once.
        if not await self.redis.set(FLEET_EPOCH + ":rebuild", "1", nx=True, px=30_000):
            return False
        try:
            count = 0
            batch: dict[str, tuple[LocationPoint, int]] = {}
            online: list[str] = []
            async for doc in self.positions.find({}):
                if "lat" in doc and "lng" in doc:
                    point = LocationPoint(lat=float(doc["lat"]), lng=float(doc["lng"]), ts=int(doc.get("ts") or 0),
                                          heading=doc.get("heading"), speed=doc.get("speed"))
                    batch[str(doc["_id"])] = (point, int(doc.get("seen") or 0))
                if int(doc.get("online") or 0) == 1:
                    online.append(str(doc["_id"]))
                if len(batch) >= 1000:
                    count += len(batch)
                    await self.write_positions(batch, only_newer=True)
                    batch = {}
            count += len(batch)
            await self.write_positions(batch, only_newer=True)
            if online:
                pipe = self.redis.pipeline(transaction=False)
                pipe.sadd(FLEET_ONLINE, *online)
                for pid in online:
                    pipe.hset(state_key(pid), mapping={"online": 1})
                await pipe.execute()
            await self.sync_jobs()
            await self.redis.set(FLEET_EPOCH, now_ms())
            logger.info("fleet index rebuilt from MongoDB: %d positions, %d on duty", count, len(online))
            return True
        finally:
            await self.redis.delete(FLEET_EPOCH + ":rebuild")

    async def sync_jobs(self) -> dict[str, dict[str, Any]]:
        """Re-derive who is busy from MongoDB (events may have been lost); return partner -> order.

        Partners marked busy whose job ended (a lost `completed` event, a reassignment) are
        released, so nobody stays unmatchable forever.
        """
        jobs: dict[str, dict[str, Any]] = {}
        async for order in self.orders.find({"status": {"$in": sorted(TRACKABLE)}},
                                            {"partner_id": 1, "address": 1, "status": 1}):
            pid = order.get("partner_id")
            if isinstance(pid, str) and pid:
                jobs[pid] = order
        marked = {str(pid) for pid in await self.redis.smembers(FLEET_BUSY)}
        pipe = self.redis.pipeline(transaction=False)
        for pid, order in jobs.items():
            pipe.hset(state_key(pid), mapping={"order_id": str(order["_id"])})
        if jobs:
            pipe.sadd(FLEET_BUSY, *jobs)
        for pid in marked - set(jobs):
            pipe.hdel(state_key(pid), "order_id")
            pipe.srem(FLEET_BUSY, pid)
        await pipe.execute()
        return jobs
