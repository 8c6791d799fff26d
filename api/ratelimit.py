"""Rate limits and cooldowns in Redis: sliding windows that answer 429 with a Retry-After.

Keys are namespaced under `pp:rl:`; callers pass a short purpose and an identifier that carries
no personal data (hash destinations before using them as keys, see `api.otp.destination_key`;
per-address keys go through `address_key`).

Limits that stop guessing or flooding (password lockout, code budgets) are `durable`: every
admitted event is also written to MongoDB's `rate_limits` collection, and when Redis has no window
for the key (it restarted empty, or was flushed) the window is re-seeded from there before
counting. So a lockout outlives a Redis loss; the Redis script stays the one atomic judge.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.errors import RateLimited

PREFIX = "pp:rl:"
Database = AsyncDatabase[dict[str, Any]]

# IPv6 hands every subscriber a /64 (or a larger prefix): keyed on the full address, one client
# could rotate through 2^64 identities, so IPv6 callers are counted per /64 network.
IPV6_LIMIT_PREFIX = 64

# A sliding-window log in one atomic step. Only admitted hits are recorded, so a caller that
# keeps hammering past the limit does not grow the set or push its own window further out.
# ARGV[5..] are durable hits to restore first, used only when Redis holds no window for the key.
# Returns 0 when admitted, otherwise the milliseconds until the oldest hit leaves the window.
_HIT = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if #ARGV > 4 and redis.call('EXISTS', key) == 0 then
  for i = 5, #ARGV do
    redis.call('ZADD', key, tonumber(ARGV[i]), 'seed-' .. i .. '-' .. ARGV[i])
  end
  redis.call('PEXPIRE', key, window)
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) + window - now, 1)
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window)
return 0
"""


def address_key(address: str) -> str:
    """The identity a per-address limit counts: an IPv4 address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_LIMIT_PREFIX), strict=False))
    return str(ip)


def _durable_id(key: str) -> str:
    # Keys may hold client addresses: MongoDB keeps only a digest of them.
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _expiry(now_ms: int, window_ms: int) -> datetime:
    return datetime.fromtimestamp((now_ms + window_ms) / 1000, UTC)


async def ensure_indexes(db: Database) -> None:
    # MongoDB's clean-up only; windows are judged on the stored timestamps.
    await db.rate_limits.create_index("expires_at", expireAfterSeconds=0)


async def hit(redis: Redis, key: str, limit: int, window_s: float, *,
              message: str = "too many requests; try again later", durable: Database | None = None) -> None:
    """Count one event against `key`; raise RateLimited once `limit` events fall in `window_s`.

    For attempts that may fail (passwords), hit before trying and `reset` after a success: a
    check-then-count would let parallel attempts all pass the check. With `durable`, the window
    also survives a Redis loss (see the module docstring).
    """
    now = int(time.time() * 1000)
    window = max(int(window_s * 1000), 1)
    member = f"{now}-{secrets.token_hex(4)}"
    seeds: list[int] = []
    if durable is not None:
        doc = await durable.rate_limits.find_one({"_id": _durable_id(key)}, {"hits": 1})
        seeds = [int(ms) for ms in (doc or {}).get("hits") or [] if int(ms) > now - window]
    wait_ms = int(await redis.eval(_HIT, 1, PREFIX + key, now, window, limit, member, *seeds))
    if wait_ms:
        raise RateLimited(message, retry_after=max(math.ceil(wait_ms / 1000), 1))
    if durable is not None:
        # $push with $slice keeps the newest `limit` hits: parallel writers each add theirs.
        await durable.rate_limits.update_one(
            {"_id": _durable_id(key)},
            {"$push": {"hits": {"$each": [now], "$slice": -max(limit, 1)}},
             "$set": {"expires_at": _expiry(now, window)}},
            upsert=True,
        )


async def reset(redis: Redis, key: str, *, durable: Database | None = None) -> None:
    """Forget every event counted against `key` (e.g. failures, after a success)."""
    if durable is not None:
        await durable.rate_limits.delete_one({"_id": _durable_id(key)})
    await redis.delete(PREFIX + key)


async def cooldown(redis: Redis, key: str, seconds: int, *,
                   message: str = "please wait before trying again") -> None:
    """Admit one event per `seconds` for `key`; raise RateLimited with the time left otherwise.

    Not durable on purpose: a cooldown lost with Redis costs one early resend, which the durable
    budget behind it still counts.
    """
    full = PREFIX + "cd:" + key
    if await redis.set(full, "1", nx=True, ex=max(seconds, 1)):
        return
    ttl = await redis.ttl(full)
    raise RateLimited(message, retry_after=max(int(ttl), 1), code="cooldown")


async def release_cooldown(redis: Redis, key: str) -> None:
    """End a cooldown early (the guarded action did not happen after all)."""
    await redis.delete(PREFIX + "cd:" + key)
