"""Ended sessions: durable in MongoDB, cached in Redis, and never assumed live while unknown.

MongoDB's `sessions` document of a revoked session carries `revoked: 1` and `revoked_ms`. Redis
holds one key per session revoked within the last access-token lifetime (the only time its
access tokens can still be presented) plus a marker, `REVOCATIONS_LOADED_KEY`, saying that set is
complete. A Redis that restarted empty or was flushed has no marker: the next check reloads the
recent revocations from MongoDB before it answers, so a logged-out token never works again. If
either store cannot answer, the check raises and the caller refuses (503).

Readers that check only `REVOKED_SESSION_KEY` (the socket server) are covered by `watch`, which
restores the set within a second of its loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core.contracts import REVOKED_SESSION_KEY
from core.jsonutil import now_ms
from core.tasks import stop_if_cancelled

logger = logging.getLogger(__name__)

REVOCATIONS_LOADED_KEY = "pp:session:revocations-loaded"
# How often `watch` looks for a lost revocation set: it bounds how long a Redis-only reader could
# miss a revocation after Redis lost its data.
WATCH_INTERVAL_S = 1.0

Database = AsyncDatabase[dict[str, Any]]


async def ensure_indexes(db: Database) -> None:
    await db.sessions.create_index("revoked_ms")


async def cache(redis: Redis, session_id: str, reason: str, ttl_s: int) -> None:
    """Remember in Redis that `session_id` ended (MongoDB must already say so)."""
    await redis.set(REVOKED_SESSION_KEY.format(sid=session_id), reason, ex=max(ttl_s, 1))


async def load(db: Database, redis: Redis, ttl_s: int) -> int:
    """Copy every revocation of the last `ttl_s` seconds from MongoDB into Redis; returns how many."""
    now = now_ms()
    docs = await db.sessions.find({"revoked_ms": {"$gte": now - ttl_s * 1000}},
                                  {"revoked_ms": 1, "revoke_reason": 1}).to_list()
    pipe = redis.pipeline(transaction=False)
    restored = 0
    for doc in docs:
        left_ms = int(doc["revoked_ms"]) + ttl_s * 1000 - now
        if left_ms > 0:
            pipe.set(REVOKED_SESSION_KEY.format(sid=doc["_id"]), str(doc.get("revoke_reason") or "revoked"),
                     px=left_ms)
            restored += 1
    # The marker goes last, in the same batch: whoever sees it also sees the keys before it.
    pipe.set(REVOCATIONS_LOADED_KEY, str(now))
    await pipe.execute()
    return restored


async def revoked_among(db: Database, redis: Redis, ttl_s: int, session_ids: Iterable[str]) -> set[str]:
    """Which of `session_ids` have ended. Reloads the cache first when Redis lost it."""
    ids = sorted({s for s in session_ids if s})
    if not ids:
        return set()
    *flags, loaded = await redis.mget([*(REVOKED_SESSION_KEY.format(sid=s) for s in ids), REVOCATIONS_LOADED_KEY])
    if loaded is None:
        restored = await load(db, redis, ttl_s)
        logger.warning("the session revocation cache was empty; restored %d revocations from MongoDB", restored)
        flags = await redis.mget([REVOKED_SESSION_KEY.format(sid=s) for s in ids])
    return {s for s, flag in zip(ids, flags, strict=True) if flag is not None}


async def is_revoked(db: Database, redis: Redis, ttl_s: int, session_id: str) -> bool:
    """Has `session_id` ended? One Redis round trip while the cache is whole."""
    return bool(await revoked_among(db, redis, ttl_s, [session_id]))


async def watch(db: Database, redis: Redis, ttl_s: int, interval_s: float = WATCH_INTERVAL_S) -> None:
    """Restore the revocation set whenever Redis loses it; runs until cancelled."""
    first = True
    while True:
        try:
            if not await redis.exists(REVOCATIONS_LOADED_KEY):
                restored = await load(db, redis, ttl_s)
                # Missing at start-up is normal (a new Redis); later it means Redis lost its data.
                logger.log(logging.INFO if first else logging.WARNING,
                           "session revocations were missing from Redis; restored %d", restored)
            first = False
        except Exception as exc:  # a store outage: try again next round
            stop_if_cancelled()
            logger.debug("revocation watch: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)
