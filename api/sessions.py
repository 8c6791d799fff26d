"""Sign-in sessions: opaque refresh tokens that rotate on every use, grouped in families.

A family is one sign-in; its id is the `sid` claim of every access token it issues. Its single
document in `sessions` holds the hash of the one live refresh token and the hashes of the tokens
it replaced. Rotation is one conditional update on the live hash, so of two parallel uses of one
token at most one succeeds. Presenting a replaced token means two parties hold the family (RFC 9700
§4.14.2: the server cannot tell which is the thief), so the whole family is revoked.

One exception, which RFC 9700 §4.14.2 allows: two browser tabs share one cookie and may refresh at
the same moment. The token just replaced is accepted again for `refresh_reuse_grace_s` seconds and
answers with the very same successor, so both tabs end up holding the one live token. That works
because a successor is not random but derived from its predecessor with a server key
(`_successor`): nothing but the hash of the live token is ever stored. A replaced token presented
after the grace, or after its successor was itself replaced, still revokes the family.

Revoking is recorded in MongoDB first (the durable truth), then cached in Redis for as long as an
access token can live (core.revocations; api.security refuses it at once, and after a Redis loss
the cache is rebuilt before anything is answered) and a SessionEvent tells dispatch to disconnect
the session's sockets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from core import revocations
from core.contracts import SESSION_EVENTS, SessionEvent
from core.errors import Unauthorized
from core.jsonutil import iso, now_ms
from core.settings import Settings
from core.tokens import ROLES, Role, issue_access_token

logger = logging.getLogger(__name__)

# Hashes of replaced tokens kept per family for reuse detection. Older ones are forgotten: such a
# token is then merely unknown (refused) rather than a trigger for revoking the family.
MAX_RETIRED = 100


@dataclass(frozen=True, slots=True)
class Grant:
    """What a successful sign-in or refresh hands out."""

    access_token: str
    refresh_token: str
    session_id: str
    user_id: str
    role: Role
    expires_in: int
    refresh_expires_in: int

    def body(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token, "token_type": "Bearer",
                "expires_in": self.expires_in, "refresh_expires_in": self.refresh_expires_in}


def token_hash(token: str) -> str:
    # Refresh tokens carry 256 random bits, so a plain SHA-256 is enough to make the stored
    # value useless to someone who reads the database.
    return hashlib.sha256(token.encode()).hexdigest()


def _successor(settings: Settings, token: str) -> str:
    """The refresh token that replaces `token`: unguessable without the server key, and the same
    every time, so parallel refreshes within the grace all hand out one successor."""
    key = hmac.new(settings.jwt_secret.get_secret_value().encode(), b"partypilot/refresh-successor/v1",
                   hashlib.sha256).digest()
    digest = hmac.new(key, token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _flag(value: Any) -> bool:
    return bool(value) and value not in ("0", "false")


def _role(value: Any) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise Unauthorized("this account cannot sign in", code="invalid_account")


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.sessions.create_index("current", unique=True)
    # Multikey on real MongoDB. Query it with $in: the embedded server answers plain equality on
    # an indexed array field with nothing.
    await db.sessions.create_index("previous")
    await db.sessions.create_index("user_id")
    await db.sessions.create_index("expires_at", expireAfterSeconds=0)
    await revocations.ensure_indexes(db)


def _grant(settings: Settings, session_id: str, user_id: str, role: Role, refresh_token: str,
           expires_ms: int) -> Grant:
    # An access token never outlives its session, whose document (and revocation) MongoDB's TTL
    # monitor removes when the session ends.
    access = issue_access_token(settings, user_id, role, session_id, not_after=expires_ms // 1000)
    return Grant(
        access_token=access, refresh_token=refresh_token,
        session_id=session_id, user_id=user_id, role=role, expires_in=settings.access_token_ttl_s,
        refresh_expires_in=max((expires_ms - now_ms()) // 1000, 0),
    )


async def start(db: AsyncDatabase[dict[str, Any]], settings: Settings, user: Mapping[str, Any]) -> Grant:
    """Open a new session family for `user` (after a successful sign-in)."""
    session_id = uuid.uuid4().hex
    token = secrets.token_urlsafe(32)
    role = _role(user.get("role"))
    # An absolute lifetime: rotation never extends a family past its first sign-in + the TTL.
    expires = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s)
    expires_ms = int(expires.timestamp() * 1000)
    await db.sessions.insert_one({
        "_id": session_id, "user_id": str(user["_id"]), "role": role, "current": token_hash(token),
        "previous": [], "revoked": 0, "created_at": iso(), "last_used_at": iso(),
        "expires_ms": expires_ms, "expires_at": expires,
    })
    return _grant(settings, session_id, str(user["_id"]), role, token, expires_ms)


async def _within_grace(db: AsyncDatabase[dict[str, Any]], settings: Settings, successor: str) -> Grant | None:
    """The grant for a token replaced a moment ago by `successor` (still live, within the grace)."""
    if settings.refresh_reuse_grace_s <= 0:
        return None
    doc = await db.sessions.find_one({"current": token_hash(successor)})
    if doc is None or _flag(doc.get("revoked")) or int(doc.get("expires_ms", 0)) <= now_ms():
        return None
    if now_ms() - int(doc.get("rotated_ms") or 0) > settings.refresh_reuse_grace_s * 1000:
        return None
    return _grant(settings, str(doc["_id"]), str(doc["user_id"]), _role(doc.get("role")), successor,
                  int(doc["expires_ms"]))


async def rotate(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, token: str) -> Grant:
    """Trade a live refresh token for a new pair. A replaced token revokes its family, unless it
    was replaced within the last `refresh_reuse_grace_s` seconds (see the module docstring)."""
    presented = token_hash(token)
    fresh = _successor(settings, token)
    doc = await db.sessions.find_one({"current": presented})
    if doc is None:
        again = await _within_grace(db, settings, fresh)
        if again is not None:
            return again
        reused = await db.sessions.find_one({"previous": {"$in": [presented]}}, {"user_id": 1})
        if reused is not None:
            logger.warning("a replaced refresh token of session %s was presented; revoking the session",
                           reused["_id"])
            await revoke(db, redis, settings, str(reused["_id"]), str(reused["user_id"]), reason="reuse")
            raise Unauthorized("this refresh token was already used; sign in again", code="refresh_reused")
        raise Unauthorized("the refresh token is invalid", code="invalid_refresh_token")
    session_id, user_id = str(doc["_id"]), str(doc["user_id"])
    if _flag(doc.get("revoked")):
        raise Unauthorized("this session has ended; sign in again", code="session_revoked")
    if int(doc.get("expires_ms", 0)) <= now_ms():
        raise Unauthorized("this session has expired; sign in again", code="session_expired")
    user = await db.users.find_one({"_id": user_id}, {"role": 1, "deleted": 1})
    if user is None or _flag(user.get("deleted")):
        await revoke(db, redis, settings, session_id, user_id, reason="account_gone")
        raise Unauthorized("this account no longer exists", code="session_revoked")
    role = _role(user.get("role"))  # re-read: a promotion or demotion applies from the next refresh
    retired = [*[str(h) for h in doc.get("previous") or []], presented][-MAX_RETIRED:]
    after = await db.sessions.find_one_and_update(
        {"_id": session_id, "current": presented, "revoked": 0},
        {"$set": {"current": token_hash(fresh), "previous": retired, "role": role, "last_used_at": iso(),
                  "rotated_ms": now_ms()}},
        return_document=ReturnDocument.AFTER,
    )
    if after is None:
        # A parallel refresh with the same token (another tab) won the update a moment ago.
        again = await _within_grace(db, settings, fresh)
        if again is not None:
            return again
        # Someone else used this token between our read and write (or the session was revoked):
        # two users of one token is exactly what rotation exists to expose.
        await revoke(db, redis, settings, session_id, user_id, reason="reuse")
        raise Unauthorized("this refresh token was already used; sign in again", code="refresh_reused")
    return _grant(settings, session_id, user_id, role, fresh, int(doc["expires_ms"]))


async def find_by_token(db: AsyncDatabase[dict[str, Any]], token: str) -> dict[str, Any] | None:
    """The session a live or replaced refresh token belongs to."""
    presented = token_hash(token)
    return await db.sessions.find_one({"$or": [{"current": presented}, {"previous": {"$in": [presented]}}]},
                                      {"user_id": 1})


async def revoke(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, session_id: str,
                 user_id: str, *, reason: str, announce: bool = True) -> None:
    """End one session now: its refresh tokens, its access tokens and its sockets."""
    # MongoDB first, as the record that outlives a Redis loss; then the Redis cache, from which
    # instant the session's access tokens are refused everywhere. A session we never stored (a
    # token minted elsewhere) gets a tombstone, kept as long as its access tokens could live.
    until = datetime.now(UTC) + timedelta(seconds=settings.access_token_ttl_s)
    await db.sessions.update_one(
        {"_id": session_id},
        {"$set": {"revoked": 1, "revoked_at": iso(), "revoked_ms": now_ms(), "revoke_reason": reason},
         "$setOnInsert": {"user_id": user_id, "current": f"revoked:{session_id}", "previous": [],
                          "expires_ms": int(until.timestamp() * 1000), "expires_at": until}},
        upsert=True,
    )
    await revocations.cache(redis, session_id, reason, settings.access_token_ttl_s)
    if announce:
        await redis.publish(SESSION_EVENTS, SessionEvent(user_id=user_id, session_id=session_id).model_dump_json())


async def revoke_all(db: AsyncDatabase[dict[str, Any]], redis: Redis, settings: Settings, user_id: str, *,
                     reason: str, keep: str | None = None) -> int:
    """End every live session of `user_id` except `keep`; returns how many were ended."""
    cursor = db.sessions.find({"user_id": user_id, "revoked": 0}, {"_id": 1})
    ended = 0
    for doc in await cursor.to_list():
        if doc["_id"] == keep:
            continue
        await revoke(db, redis, settings, str(doc["_id"]), user_id, reason=reason, announce=keep is not None)
        ended += 1
    if keep is None:
        # One message covers every socket of the user, including ones whose session we never saw.
        await redis.publish(SESSION_EVENTS, SessionEvent(user_id=user_id, session_id=None).model_dump_json())
    return ended
