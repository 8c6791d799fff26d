"""Partner earnings: commission and payout per completed order and per period, in integer minor units."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from core.jsonutil import parse_iso

Period = Literal["day", "week", "month"]


def commission(price: int, rate_bp: int) -> int:
    """The platform's share of `price`, rounded half up to a whole minor unit."""
    return (price * rate_bp + 5_000) // 10_000


def completed_at(order: Mapping[str, Any]) -> str:
    """When the order was completed: the dedicated field, else the history entry, else the last update."""
    if order.get("completed_at"):
        return str(order["completed_at"])
    for entry in reversed(order.get("history") or []):
        if isinstance(entry, Mapping) and entry.get("status") == "completed" and entry.get("at"):
            return str(entry["at"])
    return str(order.get("updated_at") or order.get("created_at") or "")


def period_of(timestamp: str, period: Period) -> str:
    """The bucket a UTC timestamp falls in: 2026-11-25, 2026-W48 or 2026-11."""
    if period == "day":
        return timestamp[:10]
    if period == "month":
        return timestamp[:7]
    year, week, _ = parse_iso(timestamp).isocalendar()
    return f"{year}-W{week:02d}"


def order_line(order: Mapping[str, Any], rate_bp: int) -> dict[str, Any]:
    price = int(order.get("price", 0))
    cut = commission(price, rate_bp)
    package = order.get("package") or {}
    return {"order_id": str(order["_id"]), "package_name": package.get("name", ""),
            "event_date": order.get("event_date"), "completed_at": completed_at(order),
            "price": price, "commission": cut, "payout": price - cut, "currency": order.get("currency")}


def summarize(orders: Iterable[Mapping[str, Any]], rate_bp: int, period: Period) -> dict[str, Any]:
    """Per-order lines (newest first), per-period totals (newest first) and grand totals."""
    lines = sorted((order_line(o, rate_bp) for o in orders), key=lambda line: line["completed_at"], reverse=True)
    buckets: dict[str, dict[str, Any]] = {}
    totals = {"orders": 0, "gross": 0, "commission": 0, "payout": 0}
    for line in lines:
        key = period_of(line["completed_at"], period) if line["completed_at"] else "unknown"
        bucket = buckets.setdefault(key, {"period": key, "orders": 0, "gross": 0, "commission": 0, "payout": 0})
        for target in (bucket, totals):
            target["orders"] += 1
            target["gross"] += line["price"]
            target["commission"] += line["commission"]
            target["payout"] += line["payout"]
    periods = sorted(buckets.values(), key=lambda b: b["period"], reverse=True)
    return {"lines": lines, "periods": periods, "totals": totals}
