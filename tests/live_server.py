"""The whole product on a real loopback port, in a thread of its own, for clients that are not
asyncio (schemathesis speaks `requests`): start it, seed it, stop it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from core import keys
from core.settings import Settings
from partypilot import localservices
from partypilot.app import create_app

T = TypeVar("T")
START_TIMEOUT_S = 60.0


@dataclass
class LiveServer:
    """One app served on 127.0.0.1 by its own event loop; `run` executes coroutines on that loop."""

    settings: Settings
    port: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> web.Application:
        assert self._runner is not None
        return self._runner.app

    @property
    def db(self) -> Any:
        return self.app[keys.DB]

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self._thread.start()
        self.port = localservices.free_port()
        self.run(self._serve())
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(create_app(self.settings), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def run(self, coro: Awaitable[T], timeout: float = START_TIMEOUT_S) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.loop.close()
