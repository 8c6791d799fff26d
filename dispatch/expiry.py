"""When each socket's credentials run out: one timer for every socket of a process.

A socket outlives the access token (or tracking link) it connected with. Rather than a timer per
socket, or a sweep that walks every socket every few seconds (O(N) work at 10,000 sockets), the
deadlines sit in a heap: setting one is O(log N), and the single task sleeps until the earliest.
Re-authenticating in place pushes a later deadline and leaves the old entry behind; entries are
checked against the current deadline when they come due, and the heap is rebuilt when stale
entries outnumber live ones, so its size stays within twice the number of sockets.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

from core.tasks import stop_if_cancelled

logger = logging.getLogger(__name__)


class Deadlines:
    """Calls `on_due(key)` once the wall-clock time `at` (epoch seconds) set for `key` has passed."""

    def __init__(self, on_due: Callable[[str], Awaitable[None]]) -> None:
        self.on_due = on_due
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._at)

    def set(self, key: str, at: float) -> None:
        """Set (or move) the deadline of `key`."""
        if self._at.get(key) == at:
            return
        earliest = self._heap[0][0] if self._heap else None
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        if earliest is None or at < earliest:
            self._wake.set()  # the sleeper waits for a later deadline: wake it to re-arm
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(when, k) for k, when in self._at.items()]
            heapq.heapify(self._heap)

    def discard(self, key: str) -> None:
        """Forget `key` (its heap entry is skipped when it comes due)."""
        self._at.pop(key, None)

    def _pop_due(self, now: float) -> list[str]:
        due: list[str] = []
        heap = self._heap
        while heap and (heap[0][0] <= now or self._at.get(heap[0][1]) != heap[0][0]):
            at, key = heapq.heappop(heap)
            if self._at.get(key) == at:  # live, not superseded or discarded
                del self._at[key]
                due.append(key)
        return due

    async def run(self) -> None:
        """Sleep until the earliest deadline, hand over what is due, repeat; until cancelled."""
        while True:
            for key in self._pop_due(time.time()):
                try:
                    await self.on_due(key)
                except Exception:
                    stop_if_cancelled()
                    logger.exception("ending an expired socket failed")
            self._wake.clear()
            delay = self._heap[0][0] - time.time() if self._heap else None
            if delay is not None and delay <= 0:
                continue
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
