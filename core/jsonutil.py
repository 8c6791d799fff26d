"""Fast JSON in and out (orjson), and UTC timestamps in the one format we store and send."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=_default).decode()


def dumpb(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def loads(data: str | bytes) -> Any:
    return orjson.loads(data)


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(dt: datetime | None = None) -> str:
    """UTC ISO-8601 with milliseconds and a Z, e.g. 2026-11-25T16:20:16.044Z.

    Timestamps are stored in this fixed-width form: it sorts and range-queries as a string on
    MongoDB and on the embedded wire server alike (which returns BSON dates as naive strings).
    """
    dt = dt or datetime.now(UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
