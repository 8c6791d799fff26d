"""The fleet index in Redis: positions (GEO), live state (HASH per partner), last seen, on duty,
the search index matching reads, and who is reachable.

Redis GEO has no per-member expiry, so staleness is computed here and applied by every reader:
a partner is fresh while its last fix is younger than `stale_ms`, the fix's age being measured
from its own `ts` (the phone's clock) capped by the server's receipt time, so a buffered fix hours
old never makes a partner look current. MongoDB keeps the last-known positions, so the index can
be rebuilt after Redis loses its data; rebuilt partners are "unknown" (flag `unknown` in their
hash) until their next ping: neither offered (we do not know where they are now) nor stale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import (
    FLEET_BUSY,
    FLEET_CHANGED,
    FLEET_EPOCH,
    FLEET_GEO,
    FLEET_ONLINE,
    FLEET_SEARCH,
    FLEET_SEEN,
    JOBS_DAY_TTL_S,
    PARTNER_OFFER,
    PARTNER_POLLED,
    PARTNER_POSITIONS,
    PARTNER_SOCKETS,
    PARTNER_STATE,
    LocationPoint,
    jobs_day_key,
)
from core.jsonutil import dumps, now_ms
from core.orderflow import TRACKABLE

logger = logging.getLogger(__name__)

STATE_FIELDS = ("lat", "lng", "ts", "seen", "heading", "speed", "online", "order_id", "idle_since", "unknown")
# Changes older than this are trimmed from FLEET_CHANGED; ticks only look back a few seconds.
CHANGED_KEEP_MS = 120_000
STATE_PREFIX = PARTNER_STATE.split("{", 1)[0]
# The per-partner keys all start with the state key: "pp:partner:<id>" + suffix.
SOCKETS_SUFFIX = PARTNER_SOCKETS.split("}", 1)[1]
POLLED_SUFFIX = PARTNER_POLLED.split("}", 1)[1]
OFFER_SUFFIX = PARTNER_OFFER.split("}", 1)[1]
STATES_PER_SCRIPT = 5_000
# A socket's presence entry is refreshed every PRESENCE_REFRESH_S by its process and counts for
# PRESENCE_TTL_MS: three refreshes, so one late refresh (a GC pause, a Redis blip) does not make
# every partner of a process unreachable, while a process that died stops counting within 30 s.
PRESENCE_REFRESH_S = 10.0
PRESENCE_TTL_MS = 30_000
# Lua's unpack() takes a few thousand arguments at most: remove members in chunks of this many.
_ZREM_CHUNK = 1_000

# One micro-batch of fixes in one command: packing thousands of GEOADD/HSET/ZADD commands costs
# the client far more CPU than Redis spends running them, so the batch travels as one JSON
# argument. Entries: [id, lng, lat, ts, seen, heading, speed, accuracy], all strings ("" = none).
# (Keys are derived from ARGV, so this assumes a single Redis, not a cluster.)
# A live fix (ARGV[3] == '0') clears `unknown` and puts an on-duty partner whose fix is fresh into
# the search index (a stale one is taken out); it reports the partners that just became available
# (on duty, and before this fix unknown or stale) so waiting orders near them can be retried.
# A rebuild from MongoDB (ARGV[3] == '1'), whose copy lags, never replaces a fix seen later, marks
# what it writes `unknown` and leaves it out of the search index until the next ping.
# Returns {epoch present (0/1), {available ids}}: a missing epoch means Redis lost its data.
_WRITE_POSITIONS = """
local batch = cjson.decode(ARGV[1])
local rebuild = ARGV[3] == '1'
local now = tonumber(ARGV[4])
local stale = tonumber(ARGV[5])
local t = redis.call('TIME')
local changed_at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local available = {}
for _, p in ipairs(batch) do
  local id = p[1]
  local key = ARGV[2] .. id
  local prev = redis.call('HMGET', key, 'ts', 'seen', 'online', 'unknown')
  if not rebuild or (tonumber(prev[2]) or 0) < tonumber(p[5]) then
    redis.call('GEOADD', KEYS[1], p[2], p[3], id)
    redis.call('HSET', key, 'lat', p[3], 'lng', p[2], 'ts', p[4], 'seen', p[5])
    for i, field in ipairs({'heading', 'speed', 'accuracy'}) do
      -- a fix without the field must not leave the previous fix's value behind
      if p[5 + i] ~= '' then redis.call('HSET', key, field, p[5 + i]) else redis.call('HDEL', key, field) end
    end
    redis.call('ZADD', KEYS[2], p[5], id)
    redis.call('ZADD', KEYS[3], changed_at, id)
    if rebuild then
      redis.call('HSET', key, 'unknown', '1')
    else
      if prev[4] then redis.call('HDEL', key, 'unknown') end
      local fix = math.min(tonumber(p[4]), tonumber(p[5]))
      if prev[3] == '1' and now - fix <= stale then
        redis.call('GEOADD', KEYS[4], p[2], p[3], id)
        local before = math.min(tonumber(prev[1]) or 0, tonumber(prev[2]) or 0)
        if prev[4] == '1' or now - before > stale then available[#available + 1] = id end
      else
        redis.call('ZREM', KEYS[4], id)
      end
    end
  end
end
return {redis.call('EXISTS', KEYS[5]), available}
"""

# Put partners into the search index if they are on duty with a fresh, known fix, or take them
# out. ARGV: state prefix, now, stale_ms, ids...; returns the ids now in the index.
_INDEX = """
local now = tonumber(ARGV[2])
local stale = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local s = redis.call('HMGET', ARGV[1] .. id, 'lat', 'lng', 'ts', 'seen', 'online', 'unknown')
  local fix = math.min(tonumber(s[3]) or 0, tonumber(s[4]) or 0)
  if s[5] == '1' and s[6] ~= '1' and s[1] and s[2] and fix > 0 and now - fix <= stale then
    redis.call('GEOADD', KEYS[1], s[2], s[1], id)
    out[#out + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# Candidates for an order, filtered inside Redis in one round trip: the nearest `count` members of
# the search index within the radius, minus the first `offset` (read by an earlier, smaller call),
# each checked against its state hash, presence keys and lease. Filters, in order: excluded (by
# the order), offline, unknown, stale, busy, unreachable (no live socket and no recent REST poll),
# offered (holds another offer: its lease is returned so the caller can check it against MongoDB).
# Offline and stale members are removed from the index on the way.
# KEYS: FLEET_SEARCH, FLEET_EPOCH. ARGV: lng, lat, radius_m, count, offset, now, stale_ms,
# state prefix, sockets suffix, polled suffix, offer suffix, excluded ids...
# Returns {full (the search hit its COUNT), epoch present, {skip counts in SKIP_REASONS order},
#          {id, dist, lat, lng, idle_since, ...}, {id, lease, pttl, ...}}.
_CANDIDATES = """
local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', ARGV[3], 'm',
                         'ASC', 'COUNT', tonumber(ARGV[4]), 'WITHDIST')
local now = tonumber(ARGV[6])
local stale = tonumber(ARGV[7])
local prefix = ARGV[8]
local excluded = {}
for i = 12, #ARGV do excluded[ARGV[i]] = true end
local skip = {0, 0, 0, 0, 0, 0, 0}
local survivors = {}
local leases = {}
local dropped = {}
for i = tonumber(ARGV[5]) + 1, #found do
  local id = found[i][1]
  local key = prefix .. id
  if excluded[id] then
    skip[1] = skip[1] + 1
  else
    local s = redis.call('HMGET', key, 'lat', 'lng', 'ts', 'seen', 'online', 'order_id', 'idle_since', 'unknown')
    local fix = math.min(tonumber(s[3]) or 0, tonumber(s[4]) or 0)
    if s[5] ~= '1' then
      skip[2] = skip[2] + 1
      dropped[#dropped + 1] = id
    elseif s[8] == '1' then
      skip[3] = skip[3] + 1
    elseif not s[1] or fix <= 0 or now - fix > stale then
      skip[4] = skip[4] + 1
      dropped[#dropped + 1] = id
    elseif s[6] and s[6] ~= '' then
      skip[5] = skip[5] + 1
    elseif redis.call('ZCOUNT', key .. ARGV[9], '(' .. now, '+inf') == 0
        and redis.call('EXISTS', key .. ARGV[10]) == 0 then
      skip[6] = skip[6] + 1
    else
      local lease = redis.call('GET', key .. ARGV[11])
      if lease then
        skip[7] = skip[7] + 1
        leases[#leases + 1] = id
        leases[#leases + 1] = lease
        leases[#leases + 1] = tostring(redis.call('PTTL', key .. ARGV[11]))
      else
        survivors[#survivors + 1] = id
        survivors[#survivors + 1] = found[i][2]
        survivors[#survivors + 1] = s[1]
        survivors[#survivors + 1] = s[2]
        survivors[#survivors + 1] = s[7] or '0'
      end
    end
  end
end
for i = 1, #dropped, 1000 do
  redis.call('ZREM', KEYS[1], unpack(dropped, i, math.min(i + 999, #dropped)))
end
return {#found >= tonumber(ARGV[4]) and 1 or 0, redis.call('EXISTS', KEYS[2]), skip, survivors, leases}
"""
SKIP_REASONS = ("excluded", "offline", "unknown", "stale", "busy", "unreachable", "offered")

# Take out of the search index everyone whose last ping (receipt time; a fix is never newer than
# its receipt) crossed the staleness limit in (ARGV[1], ARGV[2]]: each sweep reads only the
# partners that turned stale since the previous one.
_PRUNE_STALE = """
local low = ARGV[1] == '-inf' and '-inf' or '(' .. ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], low, ARGV[2])
for i = 1, #ids, 1000 do
  redis.call('ZREM', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
end
return #ids
"""

# Refresh this process's sockets in the partners' presence sets (and drop lapsed entries). ARGV:
# state prefix, sockets suffix, until ms, ttl ms, now, then pairs of (partner id, socket id).
_REFRESH_PRESENCE = """
for i = 6, #ARGV, 2 do
  local key = ARGV[1] .. ARGV[i] .. ARGV[2]
  redis.call('ZADD', key, ARGV[3], ARGV[i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[5])
  redis.call('PEXPIRE', key, ARGV[4])
end
return (#ARGV - 5) / 2
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
    unknown: bool = False

    @property
    def fix_ms(self) -> int:
        return fix_time(self.ts, self.seen)

    def fresh(self, now: int, stale_ms: int) -> bool:
        return not self.unknown and is_fresh(self.fix_ms, now, stale_ms)


def fix_time(ts: int, seen: int) -> int:
    """When the last fix was taken: its own `ts` (the phone's clock), never later than when the
    server received it, so neither a buffered fix nor a phone clock running ahead looks current."""
    return min(ts, seen) if ts > 0 and seen > 0 else 0


def is_fresh(fix_ms: int, now: int, stale_ms: int) -> bool:
    """The last fix is younger than `stale_ms` (a partner never heard from is not fresh)."""
    return fix_ms > 0 and now - fix_ms <= stale_ms


def map_status(online: bool, fix_ms: int, unknown: bool, order_id: str | None, offered: bool, now: int,
               stale_ms: int) -> str:
    """Map status: offline (off duty), unknown (rebuilt after Redis lost its data, no ping since),
    stale (last fix too old), busy with a job, offered, or idle."""
    if not online:
        return "offline"
    if unknown:
        return "unknown"
    if not is_fresh(fix_ms, now, stale_ms):
        return "stale"
    if order_id:
        return "busy"
    return "offered" if offered else "idle"


# What the live map shows of a partner, read by fleet ticks for thousands of partners at once.
MAP_FIELDS = ("lat", "lng", "ts", "seen", "online", "order_id", "unknown")


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
        idle_since=int(_float(raw["idle_since"]) or 0), unknown=raw["unknown"] == "1",
    )


@dataclass(frozen=True, slots=True)
class Written:
    """What a write of fixes found: whether the index is intact, and who just became available."""

    epoch: bool
    available: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lease:
    """Another offer a candidate holds: `order_id:fence`, and how long its key has left."""

    partner_id: str
    value: str
    pttl_ms: int

    @property
    def order_id(self) -> str:
        return self.value.rsplit(":", 1)[0]

    @property
    def fence(self) -> int:
        try:
            return int(self.value.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            return 0


@dataclass(frozen=True, slots=True)
class Nearby:
    """One candidate-filter call: survivors (id, metres, lat, lng, idle since), skips by reason,
    leases held by skipped partners, whether the search hit its COUNT, whether the index is intact."""

    survivors: list[tuple[str, float, float, float, int]]
    skipped: dict[str, int]
    leases: list[Lease]
    full: bool
    epoch: bool


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
        self._index = redis.register_script(_INDEX)
        self._candidates = redis.register_script(_CANDIDATES)
        self._prune_stale = redis.register_script(_PRUNE_STALE)
        self._refresh_presence = redis.register_script(_REFRESH_PRESENCE)

    async def write_positions(self, latest: dict[str, tuple[LocationPoint, int]], *, only_newer: bool = False,
                              ) -> Written:
        """One round trip for a micro-batch: GEOADD, state hashes, last seen, changed, search index.

        `only_newer` is the rebuild from MongoDB (see _WRITE_POSITIONS)."""
        if not latest:
            return Written(epoch=True)
        batch = [[pid, repr(p.lng), repr(p.lat), str(p.ts), str(seen_ms),
                  "" if p.heading is None else repr(p.heading), "" if p.speed is None else repr(p.speed),
                  "" if p.accuracy is None else repr(p.accuracy)]
                 for pid, (p, seen_ms) in latest.items()]
        epoch, available = await self._write_positions(
            keys=[FLEET_GEO, FLEET_SEEN, FLEET_CHANGED, FLEET_SEARCH, FLEET_EPOCH],
            args=[dumps(batch), STATE_PREFIX, "1" if only_newer else "0", now_ms(), self.stale_ms])
        return Written(epoch=bool(epoch), available=[str(pid) for pid in available])

    async def set_online(self, partner_id: str, online: bool) -> bool:
        """Go on or off duty; True when the partner is now in the search index (on duty with a fresh
        fix), i.e. available for waiting orders."""
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        if online:
            pipe.sadd(FLEET_ONLINE, partner_id)
            pipe.hset(state_key(partner_id), mapping={"online": 1})
            pipe.hsetnx(state_key(partner_id), "idle_since", now)
        else:
            pipe.srem(FLEET_ONLINE, partner_id)
            pipe.hset(state_key(partner_id), mapping={"online": 0})
            pipe.zrem(FLEET_SEARCH, partner_id)
        await self._mark_changed(keys=[FLEET_CHANGED], args=[partner_id], client=pipe)
        await pipe.execute()
        indexed = bool(await self.index([partner_id])) if online else False
        await self.positions.update_one({"_id": partner_id}, {"$set": {"online": 1 if online else 0}}, upsert=True)
        return indexed

    async def index(self, partner_ids: Sequence[str]) -> list[str]:
        """Put each partner into the search index or take it out, by its state; returns those in."""
        out: list[str] = []
        for start in range(0, len(partner_ids), STATES_PER_SCRIPT):
            chunk = list(partner_ids[start:start + STATES_PER_SCRIPT])
            out.extend(str(pid) for pid in await self._index(keys=[FLEET_SEARCH],
                                                             args=[STATE_PREFIX, now_ms(), self.stale_ms, *chunk]))
        return out

    async def index_on_duty(self) -> int:
        """Re-derive the search index for everyone on duty (start-up: an index written by an older
        version, or partial writes before a crash). Returns how many are in it."""
        return len(await self.index(sorted(str(pid) for pid in await self.redis.smembers(FLEET_ONLINE))))

    async def prune_stale(self, after_ms: int = 0) -> int:
        """Take partners whose last ping turned stale after `after_ms` (a cutoff returned by the
        previous call; 0: all) out of the search index. Returns this call's cutoff."""
        cutoff = now_ms() - self.stale_ms
        await self._prune_stale(keys=[FLEET_SEEN, FLEET_SEARCH], args=[after_ms if after_ms else "-inf", cutoff])
        return cutoff

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

    async def count_job(self, partner_id: str) -> None:
        """One more job today for the partner (call once per assignment: see Engine._order_event)."""
        key = jobs_day_key(now_ms())
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, partner_id, 1)
        pipe.expire(key, JOBS_DAY_TTL_S)
        await pipe.execute()

    async def jobs_today(self, partner_ids: Sequence[str]) -> list[int]:
        """Jobs assigned to each partner since 00:00 UTC (0 when none, or Redis lost the count)."""
        if not partner_ids:
            return []
        return [int(n or 0) for n in await self.redis.hmget(jobs_day_key(now_ms()), list(partner_ids))]

    # --- presence: who can receive an offer ----------------------------------------------------

    async def mark_connected(self, partner_id: str, socket_id: str) -> None:
        await self.refresh_presence([(partner_id, socket_id)])

    async def mark_disconnected(self, partner_id: str, socket_id: str) -> None:
        await self.redis.zrem(PARTNER_SOCKETS.format(partner_id=partner_id), socket_id)

    async def refresh_presence(self, sockets: Sequence[tuple[str, str]]) -> None:
        """Mark (partner, socket) pairs live for another PRESENCE_TTL_MS."""
        now = now_ms()
        for start in range(0, len(sockets), STATES_PER_SCRIPT):
            flat = [v for pair in sockets[start:start + STATES_PER_SCRIPT] for v in pair]
            await self._refresh_presence(args=[STATE_PREFIX, SOCKETS_SUFFIX, now + PRESENCE_TTL_MS, PRESENCE_TTL_MS,
                                               now, *flat])

    async def reachable(self, partner_id: str) -> bool:
        """A live socket on any process, or a REST poll within the window."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(PARTNER_SOCKETS.format(partner_id=partner_id), f"({now_ms()}", "+inf")
        pipe.exists(PARTNER_POLLED.format(partner_id=partner_id))
        sockets, polled = await pipe.execute()
        return bool(sockets) or bool(polled)

    async def nearby(self, lat: float, lng: float, radius_m: float, count: int, offset: int,
                     exclude: Sequence[str]) -> Nearby:
        """The filtered nearest candidates (see _CANDIDATES), nearest first."""
        full, epoch, skips, flat, leases = await self._candidates(
            keys=[FLEET_SEARCH, FLEET_EPOCH],
            args=[repr(lng), repr(lat), radius_m, count, offset, now_ms(), self.stale_ms, STATE_PREFIX,
                  SOCKETS_SUFFIX, POLLED_SUFFIX, OFFER_SUFFIX, *exclude])
        survivors = [(str(flat[i]), float(flat[i + 1]), float(flat[i + 2]), float(flat[i + 3]),
                      int(_float(flat[i + 4]) or 0)) for i in range(0, len(flat), 5)]
        held = [Lease(str(leases[i]), str(leases[i + 1]), int(leases[i + 2])) for i in range(0, len(leases), 3)]
        return Nearby(survivors, dict(zip(SKIP_REASONS, (int(n) for n in skips), strict=True)), held,
                      bool(full), bool(epoch))

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

        Rebuilt positions are `unknown` until the partner's next ping (MongoDB's copy may be
        seconds old, and a partner may have stopped pinging while Redis was gone); partners who
        pinged since the loss keep that fix and go back into the search index at once.
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
                await self.index(online)
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
