"""Rate limits and cooldowns in Redis: sliding windows that answer 429 with a Retry-After.

Keys are namespaced under `pp:rl:`; callers pass a short purpose and an identifier that carries
no personal data (hash destinations before using them as keys, see `api.otp.destination_key`).
"""

from __future__ import annotations

import math
import secrets
import time

from redis.asyncio import Redis

from core.errors import RateLimited

PREFIX = "pp:rl:"

# A sliding-window log in one atomic step. Only admitted hits are recorded, so a caller that
# keeps hammering past the limit does not grow the set or push its own window further out.
# Returns 0 when admitted, otherwise the milliseconds until the oldest hit leaves the window.
_HIT = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) + window - now, 1)
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window)
return 0
"""


async def hit(redis: Redis, key: str, limit: int, window_s: float, *,
              message: str = "too many requests; try again later") -> None:
    """Count one event against `key`; raise RateLimited once `limit` events fall in `window_s`.

    For attempts that may fail (passwords), hit before trying and `reset` after a success: a
    check-then-count would let parallel attempts all pass the check.
    """
    now = int(time.time() * 1000)
    window = max(int(window_s * 1000), 1)
    member = f"{now}-{secrets.token_hex(4)}"
    wait_ms = int(await redis.eval(_HIT, 1, PREFIX + key, now, window, limit, member))
    if wait_ms:
        raise RateLimited(message, retry_after=max(math.ceil(wait_ms / 1000), 1))


async def reset(redis: Redis, key: str) -> None:
    """Forget every event counted against `key` (e.g. failures, after a success)."""
    await redis.delete(PREFIX + key)


async def cooldown(redis: Redis, key: str, seconds: int, *,
                   message: str = "please wait before trying again") -> None:
    """Admit one event per `seconds` for `key`; raise RateLimited with the time left otherwise."""
    full = PREFIX + "cd:" + key
    if await redis.set(full, "1", nx=True, ex=max(seconds, 1)):
        return
    ttl = await redis.ttl(full)
    raise RateLimited(message, retry_after=max(int(ttl), 1), code="cooldown")


async def release_cooldown(redis: Redis, key: str) -> None:
    """End a cooldown early (the guarded action did not happen after all)."""
    await redis.delete(PREFIX + "cd:" + key)
