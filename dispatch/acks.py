"""Acknowledgement payloads and the stable error codes sockets answer with."""

from __future__ import annotations

from typing import Any

# Stable codes (documented in docs/events.md).
INVALID_PAYLOAD = "invalid_payload"
OUT_OF_RANGE = "out_of_range"
FUTURE_TS = "future_ts"
STALE_TS = "stale_ts"
TOO_OLD = "too_old"
TOO_FREQUENT = "too_frequent"
IMPOSSIBLE_SPEED = "impossible_speed"
INACCURATE = "inaccurate"
RATE_LIMITED = "rate_limited"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
OFFER_CLOSED = "offer_closed"
PARTNER_BUSY = "partner_busy"
TOKEN_EXPIRED = "token_expired"  # noqa: S105 - an error code, not a secret
UNAVAILABLE = "unavailable"


def ok(**extra: Any) -> dict[str, Any]:
    """A success acknowledgement, with optional extra fields."""
    return {"ok": True, **extra}


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A failure acknowledgement with a stable code and a human message."""
    return {"ok": False, "error": {"code": code, "message": message}, **extra}
