"""One Redis pub/sub subscription for the api <-> dispatch channels, resubscribing after failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from redis.asyncio import Redis

from core.tasks import stop_if_cancelled

logger = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[None]]
RETRY_MAX_S = 5.0


class EventListener:
    """Delivers each message of the given channels to its handler, in order, per process.

    Pub/sub is at-most-once: while disconnected, messages are lost. `on_resubscribe` runs after
    every (re)subscription so the owner can re-read the truth from MongoDB.
    """

    def __init__(self, redis: Redis, handlers: Mapping[str, Handler],
                 on_resubscribe: Callable[[], Awaitable[None]] | None = None) -> None:
        self.redis = redis
        self.handlers = dict(handlers)
        self.on_resubscribe = on_resubscribe
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        delay = 0.2
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.handlers)
                self.subscribed.set()
                delay = 0.2
                if not first and self.on_resubscribe is not None:
                    await self.on_resubscribe()
                first = False
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    handler = self.handlers.get(str(message["channel"]))
                    if handler is not None:
                        try:
                            await handler(str(message["data"]))
                        except Exception:
                            stop_if_cancelled()
                            logger.exception("handler for %s failed", message["channel"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stop_if_cancelled()
                self.subscribed.clear()
                logger.warning("event subscription lost (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:
                    logger.debug("pubsub close failed", exc_info=True)
