"""Owned background tasks: spawned with a name, cancelled and awaited at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class TaskOwner:
    """Keeps strong references to background tasks and ends them all in `aclose()`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError("task owner is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s died", task.get_name(), exc_info=task.exception())

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that swallows its cancellation must not hang shutdown forever.
            _, stuck = await asyncio.wait(tasks, timeout=10)
            for task in stuck:
                logger.error("background task %s ignored cancellation", task.get_name())
        self._tasks.clear()

    def __len__(self) -> int:
        return len(self._tasks)


def stop_if_cancelled() -> None:
    """Re-raise a pending cancellation; call it from a loop's `except Exception`.

    A library may turn our task's cancellation into an ordinary exception (PyMongo raises
    AutoReconnect or `_OperationCancelled` in some paths). A loop that swallowed it would stay
    "cancelling" forever and hang the app's shutdown, so a pending cancel request always wins.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
