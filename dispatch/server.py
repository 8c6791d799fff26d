"""Socket.IO on the aiohttp app at /socket.io: authentication, rooms, per-socket limits, events.

Rooms: `partner:{id}` (offers), `order:{id}` (a tracked order), `admins` (alerts, order board).
Every event is acknowledged `{"ok": true, ...}` or `{"ok": false, "error": {"code", "message"}}`.

A socket is ended, with an event saying why just before, when what let it in stops holding:
`auth_expired` when its access token (or tracking link) expires without an `auth` in place,
`session_ended` when its session is revoked or a partner loses its standing. Pushes go to rooms,
so a socket that is still connected would keep receiving them; ending it is the only way to stop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from core import jsonutil, keys, metrics, revocations
from core.contracts import PARTNER_EVENTS
from core.errors import AppError
from core.settings import Settings
from core.tasks import stop_if_cancelled
from core.tokens import decode_access_token, decode_tracking_token
from dispatch import acks
from dispatch.audit import NODE
from dispatch.engine import Engine, Tuning
from dispatch.expiry import Deadlines
from dispatch.fleet import PRESENCE_REFRESH_S
from dispatch.live import GUEST
from dispatch.partners import StandingChange, StandingWatch
from dispatch.ratelimit import TokenBucket
from dispatch.rooms import IndexedRedisManager
from dispatch.transport import JsonPacket, LeanServer

logger = logging.getLogger(__name__)

SIO = web.AppKey("sio", socketio.AsyncServer)
ENGINE = web.AppKey("dispatch_engine", Engine)
# Tests (and operators) may shorten the engine's loop periods by setting this before start-up.
TUNING = web.AppKey("dispatch_tuning", Tuning)
# A ping is ~130 bytes and a buffered batch a few KiB: cap messages far below the 1 MB default.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_BATCH_POINTS = 500
# Per socket: a phone sends one fix a second plus the odd reply; 10/s with bursts of 30 leaves
# room for a reconnect flush (which is one `location_batch`) and stops a flood.
EVENT_RATE = 10.0
EVENT_BURST = 30.0
# Per socket, every packet it sends (known events or not): a client that stops when the per-event
# limit answers `rate_limited` never comes near this; one that keeps going is closed. At 1,000
# messages a second a flooder overdraws the burst in about an eighth of a second.
FLOOD_RATE = 20.0
FLOOD_BURST = 120.0
# Connects and non-ping events that touch Redis/MongoDB run at most this many at a time, so a
# reconnect storm (thousands of phones at once) queues here instead of exhausting the store
# connection pools. Pings are batched by the ingest and do not need the gate.
STORE_CONCURRENCY = 64
# Roles a socket can have; each is reported (0 included) so a dashboard's series never vanish.
SOCKET_ROLES = ("partner", "customer", "admin", GUEST)
UNGATED = frozenset({"location", "location_batch"})
# Sent to one socket just before the server ends it (payloads in docs/events.md).
AUTH_EXPIRED = "auth_expired"
SESSION_ENDED = "session_ended"
PARTNER_SUSPENDED = "partner_suspended"
PARTNER_NOT_APPROVED = "partner_not_approved"
SESSION_REVOKED = "session_revoked"
STANDINGS = frozenset({"pending", "approved", "rejected", "suspended"})  # PartnerEvent.status


def standing_code(status: str | None) -> str:
    """The refusal code for a partner whose standing is `status` (not approved)."""
    return PARTNER_SUSPENDED if status == "suspended" else PARTNER_NOT_APPROVED


STANDING_MESSAGES = {PARTNER_SUSPENDED: "your partner account is suspended",
                     PARTNER_NOT_APPROVED: "your partner account is not approved"}


def socket_id(sid: str) -> str:
    """A socket's name in the presence sets, unique across processes."""
    return f"{NODE}/{sid}"


@dataclass
class Conn:
    """Who is on a socket. Kept in memory: read on every event, so no session round trip."""

    user_id: str
    role: str
    session_id: str
    expires_at: int
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(EVENT_RATE, EVENT_BURST))


class _OrjsonCodec:
    """python-socketio accepts any module-like object with dumps/loads."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return jsonutil.dumps(obj)

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return jsonutil.loads(data)


def create_sio(settings: Settings) -> socketio.AsyncServer:
    # Fan-out through Redis so several processes share rooms; write_only=False so this process
    # also receives other processes' emits.
    manager = IndexedRedisManager(settings.redis_url, channel="pp:socketio")
    sio = LeanServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=list(settings.allowed_origins),
        max_http_buffer_size=MAX_MESSAGE_BYTES,
        ping_interval=25,
        ping_timeout=20,
        json=_OrjsonCodec,
        serializer=JsonPacket,
        # Run each event inline in its socket's receive loop instead of in a new task: a task per
        # ping was the largest single cost of ingest under load, and inline handling also keeps
        # one socket's events in order. Handlers are short (a ping waits one micro-batch).
        async_handlers=False,
        logger=False,
        engineio_logger=False,
    )
    sio.eio.flood_rate, sio.eio.flood_burst = FLOOD_RATE, FLOOD_BURST
    return sio


class SocketEmitter:
    """dispatch.emitter.Emitter over the Socket.IO server."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def emit(self, event: str, data: dict[str, Any], room: str, *, local: bool = False) -> None:
        try:
            await self.sio.emit(event, data, to=room, ignore_queue=local)
        except Exception as exc:  # pushes are hints; clients re-read the truth over REST
            logger.warning("emit %s failed: %s", event, type(exc).__name__)


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SocketServer:
    """Connects sockets to the engine: authentication, rooms, limits and event handlers."""

    def __init__(self, sio: socketio.AsyncServer, settings: Settings, app: web.Application) -> None:
        self.sio = sio
        self.settings = settings
        self.app = app
        self.conns: dict[str, Conn] = {}
        self.by_user: dict[str, set[str]] = {}
        self.gate = asyncio.Semaphore(STORE_CONCURRENCY)
        self.deadlines = Deadlines(self._expired)

    @property
    def engine(self) -> Engine:
        return self.app[ENGINE]

    def register(self) -> None:
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        handlers: dict[str, Callable[[Conn, str, Any], Awaitable[dict[str, Any]]]] = {
            "auth": self.on_auth, "location": self.on_location, "location_batch": self.on_location_batch,
            "availability": self.on_availability, "offer_reply": self.on_offer_reply, "track": self.on_track,
            "fleet_subscribe": self.on_fleet_subscribe, "fleet_unsubscribe": self.on_fleet_unsubscribe,
        }
        for name, handler in handlers.items():
            self.sio.on(name, self._guarded(name, handler))

    # --- connection -------------------------------------------------------------------------------

    async def _identify(self, token: Any) -> Conn:
        if not isinstance(token, str) or not token:
            raise Refused("unauthorized", "token required")
        try:
            claims = decode_access_token(self.settings, token)
        except AppError as exc:
            raise Refused(exc.code, exc.message) from None
        # Durable: after Redis lost its data the revocations are reloaded from MongoDB first, so a
        # logged-out token cannot open a socket in the moment before the watcher restores them.
        if claims.session_id and await revocations.is_revoked(self.app[keys.DB], self.app[keys.REDIS],
                                                              self.settings.access_token_ttl_s, claims.session_id):
            raise Refused("session_revoked", "this session has ended; sign in again")
        if claims.role == "partner":
            standing = await self.engine.partners.standing(claims.user_id)
            status = standing.status if standing else None
            if status != "approved":
                code = standing_code(status)
                raise Refused(code, STANDING_MESSAGES[code])
        return Conn(claims.user_id, claims.role, claims.session_id, claims.expires_at)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            async with self.gate:
                if isinstance(auth, dict) and "tracking_token" in auth and "token" not in auth:
                    conn = self._identify_guest(auth["tracking_token"])
                else:
                    conn = await self._identify(auth.get("token") if isinstance(auth, dict) else None)
        except Refused as exc:
            # The client's connect_error receives {"message": ..., "data": {"code", "message"}}.
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code, "message": exc.message}) from None
        except Exception as exc:  # a store is down: refuse now, the client retries
            logger.warning("socket connect failed: %s", type(exc).__name__)
            message = "the server is not ready; retry shortly"
            raise socketio.exceptions.ConnectionRefusedError(
                message, {"code": acks.UNAVAILABLE, "message": message}) from None
        self.conns[sid] = conn
        self.by_user.setdefault(conn.user_id, set()).add(sid)
        self.deadlines.set(sid, conn.expires_at)
        if conn.role == "partner":
            await self.sio.enter_room(sid, f"partner:{conn.user_id}")
            try:  # reachable for offers from now on (checked by matching on every process)
                await self.engine.fleet.mark_connected(conn.user_id, socket_id(sid))
            except Exception as exc:  # the next presence refresh writes it
                logger.warning("could not record a partner's presence: %s", type(exc).__name__)
        elif conn.role == "admin":
            await self.sio.enter_room(sid, "admins")

    def _identify_guest(self, token: Any) -> Conn:
        """Someone holding a tracking link: may `track` that one order, nothing else."""
        if not isinstance(token, str) or not token:
            raise Refused("unauthorized", "tracking_token required")
        try:
            claims = decode_tracking_token(self.settings, token)
        except AppError as exc:
            raise Refused(exc.code, exc.message) from None
        return Conn(claims.order_id, GUEST, "", claims.expires_at)

    def _forget(self, sid: str) -> Conn | None:
        conn = self.conns.pop(sid, None)
        self.deadlines.discard(sid)
        if conn is not None:
            sids = self.by_user.get(conn.user_id, set())
            sids.discard(sid)
            if not sids:
                self.by_user.pop(conn.user_id, None)
        return conn

    async def _leave(self, sid: str) -> None:
        """Forget a socket; a partner's presence entry goes at once, and its held offer after the
        grace period unless it is connected again (here, elsewhere, or polling over REST)."""
        conn = self._forget(sid)
        if ENGINE not in self.app:
            return
        self.engine.live.unsubscribe(sid)
        if conn is not None and conn.role == "partner":
            try:
                await self.engine.fleet.mark_disconnected(conn.user_id, socket_id(sid))
            except Exception as exc:  # the entry lapses on its own within PRESENCE_TTL_MS
                logger.warning("could not clear a partner's presence: %s", type(exc).__name__)
            self.engine.partner_disconnected(conn.user_id)

    async def sample_sockets(self) -> list[metrics.Metric]:
        """Metrics, read at scrape time from the connection map: this process's sockets by role."""
        counts = collections.Counter(conn.role for conn in self.conns.values())
        return [metrics.gauge("partypilot_sockets", "Socket.IO connections on this process, by role", "role",
                              {role: counts.get(role, 0) for role in SOCKET_ROLES})]

    async def disconnect(self, sid: str, *_: Any) -> None:
        await self._leave(sid)

    async def refresh_presence(self) -> None:
        """Mark this process's partner sockets live for another PRESENCE_TTL_MS."""
        pairs = [(conn.user_id, socket_id(sid)) for sid, conn in list(self.conns.items()) if conn.role == "partner"]
        if pairs:
            await self.engine.fleet.refresh_presence(pairs)

    async def presence_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_S)
            try:
                await self.refresh_presence()
            except Exception as exc:
                stop_if_cancelled()
                logger.warning("presence refresh failed: %s", type(exc).__name__)
            stop_if_cancelled()  # a cancel swallowed inside a store call must still end the loop

    async def drop_partner(self, partner_id: str, status: str) -> None:
        """A partner lost its standing: end its sockets here at once."""
        code = standing_code(status)
        await self._drop(partner_id, lambda c: c.role == "partner", code, STANDING_MESSAGES[code])

    async def drop_session(self, user_id: str, session_id: str | None) -> None:
        """A session ended (None: every session of the user): end its sockets here at once."""
        await self._drop(user_id, lambda c: session_id is None or c.session_id == session_id, SESSION_REVOKED,
                         "this session has ended; sign in again")

    async def _expired(self, sid: str) -> None:
        """A socket's access token (or tracking link) expired and no `auth` moved it on: end it."""
        conn = self.conns.get(sid)
        if conn is None or conn.expires_at > time.time():
            return
        what = "tracking link" if conn.role == GUEST else "access token"
        await self._end(sid, AUTH_EXPIRED, acks.TOKEN_EXPIRED, f"the {what} has expired", expires_at=conn.expires_at)

    async def _end(self, sid: str, event: str, code: str, message: str, **extra: Any) -> None:
        """Tell one socket why (the message is queued ahead of the disconnect), then end it."""
        logger.info("disconnecting a socket: %s", code)
        try:
            await self.sio.emit(event, {"code": code, "message": message, **extra}, to=sid, ignore_queue=True)
        except Exception as exc:  # the disconnect below still ends it
            logger.debug("could not tell a socket why it ends: %s", type(exc).__name__)
        await self._leave(sid)
        await self.sio.disconnect(sid, ignore_queue=True)

    async def replay_standing(self, change: StandingChange) -> None:
        """A standing change read from MongoDB goes through the engine's PARTNER_EVENTS handler,
        exactly as the event (possibly lost) would have: cache dropped, sockets ended, off duty,
        held offer released."""
        if change.status not in STANDINGS:
            await self.drop_partner(change.partner_id, change.status)
            return
        message = jsonutil.dumps({"type": "partner_status", "partner_id": change.partner_id,
                                  "status": change.status, "at": change.at})
        await self.engine.events.handlers[PARTNER_EVENTS](message)

    async def recheck(self) -> None:
        """Drop sockets whose session ended or partner lost its standing while the event saying
        so was lost (pub/sub is at-most-once): runs on every sweep and resubscription."""
        conns = list(self.conns.items())
        if not conns:
            return
        revoked = await revocations.revoked_among(self.app[keys.DB], self.app[keys.REDIS],
                                                  self.settings.access_token_ttl_s,
                                                  (c.session_id for _, c in conns if c.session_id))
        # Standing comes through the directory's short cache, which bounds how late this is.
        standings = await self.engine.partners.standings({c.user_id for _, c in conns if c.role == "partner"})
        for sid, conn in conns:
            standing = standings.get(conn.user_id) if conn.role == "partner" else None
            if conn.session_id in revoked:
                code, message = SESSION_REVOKED, "this session has ended; sign in again"
            elif conn.role == "partner" and (standing is None or standing.status != "approved"):
                code = standing_code(standing.status if standing else None)
                message = STANDING_MESSAGES[code]
            else:
                continue
            if sid not in self.conns:
                continue  # gone meanwhile
            await self._end(sid, SESSION_ENDED, code, message)

    async def _drop(self, user_id: str, match: Callable[[Conn], bool], code: str, message: str) -> None:
        for sid in [sid for sid in self.by_user.get(user_id, ()) if match(self.conns[sid])]:
            if sid in self.conns:  # an earlier _end awaited: this one may be gone meanwhile
                await self._end(sid, SESSION_ENDED, code, message)

    async def close_all(self) -> None:
        for sid in list(self.conns):
            try:
                await self._leave(sid)
            except Exception:
                logger.debug("leaving at shutdown failed", exc_info=True)
            try:
                await self.sio.disconnect(sid, ignore_queue=True)
            except Exception:
                logger.debug("disconnect at shutdown failed", exc_info=True)

    # --- events -----------------------------------------------------------------------------------

    def _guarded(self, name: str, handler: Callable[[Conn, str, Any], Awaitable[dict[str, Any]]],
                 ) -> Callable[[str, Any], Awaitable[dict[str, Any]]]:
        async def run(sid: str, data: Any = None) -> dict[str, Any]:
            conn = self.conns.get(sid)
            if conn is None:
                return acks.error(acks.FORBIDDEN, "not connected")
            if not conn.bucket.take():
                return acks.error(acks.RATE_LIMITED, "too many events; slow down")
            # A socket outlives its access token: every event but `auth` needs a live one.
            if name != "auth" and conn.expires_at <= time.time():
                return acks.error(acks.TOKEN_EXPIRED, "the access token has expired; send `auth` with a new one")
            try:
                if name in UNGATED:
                    return await handler(conn, sid, data)
                async with self.gate:
                    return await handler(conn, sid, data)
            except AppError as exc:
                return acks.error(exc.code, exc.message)
            except Exception as exc:  # a store is down: answer fast so the client keeps its data
                logger.warning("socket event %s failed: %s", name, type(exc).__name__)
                return acks.error(acks.UNAVAILABLE, "the server could not complete this; retry later")

        run.__name__ = f"on_{name}"
        return run

    async def on_auth(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        """Re-authenticate in place with a fresh access token for the same user."""
        try:
            fresh = await self._identify(data.get("token") if isinstance(data, dict) else None)
        except Refused as exc:
            return acks.error(exc.code, exc.message)
        if fresh.user_id != conn.user_id or fresh.role != conn.role:
            return acks.error(acks.FORBIDDEN, "the token belongs to someone else")
        if sid not in self.conns:
            return acks.error(acks.FORBIDDEN, "not connected")
        conn.expires_at, conn.session_id = fresh.expires_at, fresh.session_id
        self.deadlines.set(sid, fresh.expires_at)
        return acks.ok(expires_at=fresh.expires_at)

    async def on_location(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        if conn.role != "partner":
            return acks.error(acks.FORBIDDEN, "only partners send locations")
        # Identity comes from the socket, never from the payload: a partner_id field is refused.
        return await self.engine.ingest.ingest_raw(conn.user_id, [data])

    async def on_location_batch(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        if conn.role != "partner":
            return acks.error(acks.FORBIDDEN, "only partners send locations")
        points = data.get("points") if isinstance(data, dict) else None
        if not isinstance(points, list) or not points or len(points) > MAX_BATCH_POINTS:
            return acks.error(acks.INVALID_PAYLOAD, f"points must be a list of 1 to {MAX_BATCH_POINTS} fixes")
        return await self.engine.ingest.ingest_raw(conn.user_id, points)

    async def on_availability(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        if conn.role != "partner":
            return acks.error(acks.FORBIDDEN, "only partners go on or off duty")
        online = data.get("online") if isinstance(data, dict) else None
        if not isinstance(online, bool):
            return acks.error(acks.INVALID_PAYLOAD, "online must be true or false")
        available = await self.engine.fleet.set_online(conn.user_id, online)
        if not online:
            # Going off duty while holding an offer is a decline: the cascade moves on now
            # instead of waiting for the offer to time out.
            await self.engine.offers.release_held_offer(conn.user_id, via="off_duty")
        elif available:  # on duty with a fresh fix: orders waiting nearby are retried now
            self.engine.wake([conn.user_id])
        return acks.ok(online=online)

    async def on_offer_reply(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        if conn.role != "partner":
            return acks.error(acks.FORBIDDEN, "only partners answer offers")
        order_id = data.get("order_id") if isinstance(data, dict) else None
        accept = data.get("accept") if isinstance(data, dict) else None
        if not isinstance(order_id, str) or not order_id or not isinstance(accept, bool):
            return acks.error(acks.INVALID_PAYLOAD, "send {order_id, accept: true|false}")
        if accept:
            await self.engine.offers.mark_accepting(order_id, conn.user_id)
            # Taking a job is the one decision made on the partner's standing here: read it from
            # MongoDB, not the cache, so a suspension whose event was lost cannot win an order.
            standing = await self.engine.partners.fresh_standing(conn.user_id)
            status = standing.status if standing else "unknown"
            if status != "approved":
                await self.engine.offers.unmark_accepting(order_id)
                # Released and ended as if the event had arrived; after this ack is sent.
                self.app[keys.TASKS].spawn(self.replay_standing(StandingChange(conn.user_id, status, jsonutil.iso())),
                                           name=f"dispatch:standing:{conn.user_id}")
                code = standing_code(status)
                return acks.error(code, STANDING_MESSAGES[code])
        return await self.engine.offers.reply(order_id, conn.user_id, accept, via="socket")

    async def on_track(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        if conn.role not in ("customer", "admin", GUEST):
            return acks.error(acks.FORBIDDEN, "only customers track orders")
        order_id = data.get("order_id") if isinstance(data, dict) else None
        ack, first = await self.engine.live.track(conn.user_id, conn.role, order_id)
        if ack["ok"]:
            if sid not in self.conns:  # disconnected meanwhile: joining now would leak the room entry
                return acks.error(acks.FORBIDDEN, "not connected")
            await self.sio.enter_room(sid, f"order:{order_id}")
            if first is not None:
                await self.sio.emit("partner_location", first, to=sid, ignore_queue=True)
        return ack

    async def on_fleet_subscribe(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        if conn.role != "admin":
            return acks.error(acks.FORBIDDEN, "only admins watch the fleet")
        bbox = self.engine.live.parse_bbox(data)
        if isinstance(bbox, str):
            return acks.error(acks.INVALID_PAYLOAD, bbox)
        snapshot = await self.engine.live.subscribe(sid, bbox)
        if sid not in self.conns:  # disconnected meanwhile: the subscription would never end
            self.engine.live.unsubscribe(sid)
            return acks.error(acks.FORBIDDEN, "not connected")
        await self.sio.emit("fleet", snapshot, to=sid, ignore_queue=True)
        return acks.ok(partners=len(snapshot["partners"]), version=snapshot["version"])

    async def on_fleet_unsubscribe(self, conn: Conn, sid: str, data: Any) -> dict[str, Any]:
        self.engine.live.unsubscribe(sid)
        return acks.ok()


def setup(app: web.Application, settings: Settings) -> None:
    """Attach Socket.IO at /socket.io and register the engine's cleanup context."""
    sio = create_sio(settings)
    sio.attach(app, socketio_path="socket.io")
    app[SIO] = sio
    server = SocketServer(sio, settings, app)
    server.register()
    app.setdefault(keys.METRIC_SAMPLERS, []).append(server.sample_sockets)

    async def dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = Engine(settings, app[keys.DB], app[keys.REDIS], SocketEmitter(sio), app.get(TUNING))
        engine.on_partner_standing.append(server.drop_partner)
        engine.on_session_revoked.append(server.drop_session)
        engine.on_resync.append(server.recheck)
        engine.on_resync.append(server.refresh_presence)
        app[ENGINE] = engine
        app[keys.LOCATION_SINK] = engine.ingest
        # Start python-socketio's Redis listener now, owned by us, instead of lazily on the first
        # connection where nothing would ever stop it.
        if not sio.manager_initialized:
            sio.manager_initialized = True
            sio.manager.initialize()
        try:
            await engine.partners.ensure_indexes()
        except Exception as exc:  # an equivalent index made elsewhere under another name is fine
            logger.warning("partner standing index not created: %s", type(exc).__name__)
        await engine.start(app[keys.TASKS])
        app[keys.TASKS].spawn(server.presence_loop(), name="dispatch:presence")
        app[keys.TASKS].spawn(server.deadlines.run(), name="dispatch:socket-expiry")
        app[keys.TASKS].spawn(StandingWatch(engine.partners, server.replay_standing).run(),
                              name="dispatch:standing-watch")
        yield
        await server.close_all()
        await engine.stop()
        await _stop_manager(sio)

    async def close_sockets(app: web.Application) -> None:
        await server.close_all()
        await sio.shutdown()

    app.on_shutdown.append(close_sockets)
    app.cleanup_ctx.append(dispatch_ctx)


async def _stop_manager(sio: socketio.AsyncServer) -> None:
    manager = sio.manager
    task = getattr(manager, "thread", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for name in ("pubsub", "redis"):
        client = getattr(manager, name, None)
        if client is not None:
            try:
                await client.aclose()
            except Exception:
                logger.debug("closing the socket.io %s failed", name, exc_info=True)
