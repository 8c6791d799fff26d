"""Same-run reference servers: what the hardware does with no product logic at all.

    python -m loadtests.baselines catalog --port P --body-file F   # GET /api/packages -> F's bytes
    python -m loadtests.baselines sio --port P                     # Socket.IO that only acks

Both run on aiohttp + uvloop like the app, so a ratio to them isolates our own code's cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import socketio
import uvloop
from aiohttp import web

from loadtests.sockets import OrjsonCodec

MAX_MESSAGE_BYTES = 64 * 1024


async def _ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def catalog_app(body: bytes) -> web.Application:
    """Answers GET /api/packages with the app's own catalog bytes, held in memory."""
    app = web.Application()

    async def packages(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/api/packages", packages)
    app.router.add_get("/ready", _ready)
    return app


def sio_app() -> web.Application:
    """python-socketio with the app's transport settings; every event handler just acks."""
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=["http://127.0.0.1"],
                               max_http_buffer_size=MAX_MESSAGE_BYTES, ping_interval=25, ping_timeout=20,
                               json=OrjsonCodec, logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        return None

    async def ack(sid: str, data: Any = None) -> dict[str, Any]:
        return {"ok": True}

    sio.on("connect", connect)
    for event in ("location", "location_batch", "availability"):
        sio.on(event, ack)
    app.router.add_get("/ready", _ready)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.baselines")
    parser.add_argument("kind", choices=["catalog", "sio"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path)
    args = parser.parse_args(argv)
    if args.kind == "catalog":
        if args.body_file is None:
            parser.error("catalog needs --body-file")
        app = catalog_app(args.body_file.read_bytes())
    else:
        app = sio_app()
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None,
                loop=uvloop.new_event_loop(), shutdown_timeout=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
