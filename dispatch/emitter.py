"""How dispatch components talk to sockets without knowing the Socket.IO server."""

from __future__ import annotations

from typing import Any, Protocol


class Emitter(Protocol):
    async def emit(self, event: str, data: dict[str, Any], room: str, *, local: bool = False) -> None:
        """Send `event` to `room`; `local` reaches only this process's sockets (every process
        handles the same Redis event, so each delivers to its own clients)."""
        ...
