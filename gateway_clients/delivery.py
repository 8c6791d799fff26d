"""What SMS and email gateways share: the delivery error and the local outbox file.

The local outbox is the offline stand-in for a real provider (like Django's file-based email
backend): each delivered message is appended as one JSON line to a file a developer can read.
Message bodies go only there, never to the log: they may carry one-time codes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class DeliveryError(Exception):
    """A message could not be delivered. `permanent` means retrying cannot help
    (e.g. a rejected recipient); otherwise the caller should retry later."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def mask_phone(phone: str) -> str:
    """+4915112345678 -> +49*******5678: enough to tell messages apart in a log."""
    return phone[:3] + "*" * max(len(phone) - 7, 0) + phone[-4:] if len(phone) > 7 else "***"


def mask_email(address: str) -> str:
    """jane.doe@example.com -> j***@example.com."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


class LocalOutboxFile:
    """Appends delivered messages to `<folder>/<channel>.jsonl` (one JSON object a line)."""

    def __init__(self, folder: Path, channel: str) -> None:
        self.path = folder / f"{channel}.jsonl"
        self._lock = threading.Lock()

    async def append(self, record: dict[str, Any]) -> str:
        """Write `record` with an id and timestamp; return the id."""
        message_id = "local-" + uuid.uuid4().hex
        line = json.dumps({"id": message_id, "at": datetime.now(UTC).isoformat(), **record},
                          ensure_ascii=False)
        await asyncio.to_thread(self._write, line)
        return message_id

    def _write(self, line: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every message written so far (for development tools and tests)."""
        if not self.path.is_file():
            return []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
