"""Socket.IO server attached to the aiohttp app at /socket.io."""

from __future__ import annotations

import logging
from typing import Any

import socketio
from aiohttp import web

from core.errors import AppError
from core.settings import Settings
from core.tokens import decode_access_token

logger = logging.getLogger(__name__)

SIO = web.AppKey("sio", socketio.AsyncServer)
# A ping is ~130 bytes and a buffered batch a few KiB: cap messages far below the 1 MB default.
MAX_MESSAGE_BYTES = 64 * 1024


def create_sio(settings: Settings) -> socketio.AsyncServer:
    # Fan-out through Redis so several processes share rooms; write_only=False so this process
    # also receives other processes' emits.
    manager = socketio.AsyncRedisManager(settings.redis_url, channel="pp:socketio")
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=list(settings.allowed_origins),
        max_http_buffer_size=MAX_MESSAGE_BYTES,
        ping_interval=25,
        ping_timeout=20,
        json=_OrjsonCodec,
        logger=False,
        engineio_logger=False,
    )


class _OrjsonCodec:
    """python-socketio accepts any module-like object with dumps/loads."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        from core.jsonutil import dumps

        return dumps(obj)

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        from core.jsonutil import loads

        return loads(data)


def setup(app: web.Application, settings: Settings) -> None:
    sio = create_sio(settings)
    sio.attach(app, socketio_path="socket.io")
    app[SIO] = sio

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            raise socketio.exceptions.ConnectionRefusedError({"code": "unauthorized", "message": "token required"})
        try:
            claims = decode_access_token(settings, token)
        except AppError as exc:
            raise socketio.exceptions.ConnectionRefusedError({"code": exc.code, "message": exc.message}) from None
        await sio.save_session(sid, {"user_id": claims.user_id, "role": claims.role, "sid": claims.session_id})

    sio.on("connect", connect)

    async def close_sockets(app: web.Application) -> None:
        await sio.shutdown()

    app.on_shutdown.append(close_sockets)
