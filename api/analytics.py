"""/api/admin/stats/series: the console's analytics, per day or hour in the service area's time zone.

Computed in Python over one indexed read (`created_at`) of projected fields: the embedded MongoDB
server's aggregation is slow and partial, and a bounded range keeps the read small. Every figure
belongs to the bucket the order was *created* in (its revenue, its assignment time, its arrival), so
a bucket's figures never move once its orders have ended.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.admin import Day, csv_cell, major_units
from api.orders import service_areas
from api.routing import RouteTable
from api.schemas import closed
from core import keys
from core.errors import ValidationFailed
from core.http import json_response
from core.jsonutil import iso, parse_iso
from core.settings import Settings

logger = logging.getLogger(__name__)

routes = RouteTable("admin")
ADMIN = ("admin",)

# The longest ranges a chart stays readable at (a quarter by day, a week by hour), and what bounds
# the one read behind them.
MAX_DAYS = {"day": 92, "hour": 7}
# A safety net on that read: more orders than this in one range is not a chart, it is an export.
MAX_ORDERS = 200_000
_CANCELLED = frozenset({"cancelled", "refunded"})


class SeriesQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    date_from: Day = Field(alias="from", description="first day (YYYY-MM-DD, in the area's time zone)")
    date_to: Day = Field(alias="to", description="last day, inclusive (YYYY-MM-DD)")
    bucket: Literal["day", "hour"] = "day"
    area: str | None = Field(None, max_length=100, description="a service area's name; all areas when absent")
    format: Literal["json", "csv"] = "json"


class SeriesPoint(BaseModel):
    model_config = closed()
    start: str = Field(description="the bucket's start, ISO-8601 with the area's UTC offset")
    label: str = Field(description="YYYY-MM-DD, or YYYY-MM-DD HH:00 by hour (local)")
    orders: int = Field(description="orders created in the bucket")
    revenue: int = Field(description="the price of those that completed, minor units")
    cancellations: int = Field(description="those cancelled (refunded included)")
    assign_p50_s: float | None = Field(description="median seconds from placed to first assigned; null: none assigned")
    assigned: int = Field(description="orders behind that median")
    on_time_share: float | None = Field(description="arrivals within the window (0..1); null: no arrival with one")
    arrivals: int = Field(description="arrivals behind that share (orders with a window and an arrival time)")
    active_partners: int = Field(description="distinct partners assigned one of the bucket's orders")


class StatsSeries(BaseModel):
    model_config = closed({
        "from": "2026-12-01", "to": "2026-12-02", "bucket": "day", "area": "Bengaluru Central",
        "timezone": "Asia/Kolkata", "currency": "INR", "truncated": False,
        "points": [{"start": "2026-12-01T00:00:00+05:30", "label": "2026-12-01", "orders": 14, "revenue": 15_000_000,
                    "cancellations": 1, "assign_p50_s": 48.0, "assigned": 12, "on_time_share": 0.9,
                    "arrivals": 10, "active_partners": 6}],
        "totals": {"start": "2026-12-01T00:00:00+05:30", "label": "total", "orders": 14, "revenue": 15_000_000,
                   "cancellations": 1, "assign_p50_s": 48.0, "assigned": 12, "on_time_share": 0.9, "arrivals": 10,
                   "active_partners": 6}})
    date_from: str = Field(alias="from", description="the first day (YYYY-MM-DD)")
    date_to: str = Field(alias="to", description="the last day, inclusive")
    bucket: Literal["day", "hour"]
    area: str | None
    timezone: str = Field(description="the IANA zone the buckets are cut in")
    currency: str = Field(description="of every revenue figure; orders in another currency are not summed")
    truncated: bool = Field(description=f"more than {MAX_ORDERS} orders: only the first were counted")
    points: list[SeriesPoint] = Field(description="every bucket of the range, oldest first, empty ones included")
    totals: SeriesPoint = Field(description="the whole range as one bucket")


@dataclass
class _Bucket:
    orders: int = 0
    revenue: int = 0
    cancellations: int = 0
    waits: list[float] = field(default_factory=list)
    arrivals: int = 0
    on_time: int = 0
    partners: set[str] = field(default_factory=set)

    def add(self, order: Mapping[str, Any], currency: str) -> None:
        self.orders += 1
        status = order.get("status")
        if status == "completed" and order.get("currency", currency) == currency:
            self.revenue += int(order.get("price") or 0)
        if status in _CANCELLED:
            self.cancellations += 1
        placed, assigned, partner = _assignment(order)
        if placed is not None and assigned is not None:
            self.waits.append(max(0.0, (assigned - placed).total_seconds()))
        if partner:
            self.partners.add(partner)
        arrived, before = _moment(order.get("arrived_at")), _moment(order.get("arrive_before"))
        if arrived is not None and before is not None:
            self.arrivals += 1
            self.on_time += arrived <= before

    def point(self, start: datetime, label: str) -> dict[str, Any]:
        return {"start": start.isoformat(), "label": label, "orders": self.orders, "revenue": self.revenue,
                "cancellations": self.cancellations,
                "assign_p50_s": round(statistics.median(self.waits), 1) if self.waits else None,
                "assigned": len(self.waits),
                "on_time_share": round(self.on_time / self.arrivals, 4) if self.arrivals else None,
                "arrivals": self.arrivals, "active_partners": len(self.partners)}


def _moment(value: Any) -> datetime | None:
    try:
        return parse_iso(str(value)) if value else None
    except ValueError:
        return None


def _assignment(order: Mapping[str, Any]) -> tuple[datetime | None, datetime | None, str | None]:
    """When the order was first placed and first assigned (its history), and who took it then."""
    placed = assigned = None
    partner = None
    for entry in order.get("history") or []:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("status") == "placed" and placed is None:
            placed = _moment(entry.get("at"))
        elif entry.get("status") == "assigned" and assigned is None:
            assigned = _moment(entry.get("at"))
            # The history names the actor (the partner, or the admin who assigned): the order names its partner.
            partner = order.get("partner_id")
    return placed, assigned, str(partner) if partner else None


def bucket_starts(first: date, last: date, bucket: str, zone: ZoneInfo) -> list[datetime]:
    """The local starts of every bucket from `first` 00:00 to the end of `last`. Hours step in UTC,
    so a DST change gives a 23- or 25-hour day rather than a missing or doubled label."""
    if bucket == "day":
        return [datetime.combine(first + timedelta(days=i), datetime.min.time(), zone)
                for i in range((last - first).days + 1)]
    start = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    hours = int((end - start).total_seconds() // 3600)
    return [(start + timedelta(hours=i)).astimezone(zone) for i in range(hours)]


def _label(start: datetime, bucket: str) -> str:
    return start.date().isoformat() if bucket == "day" else start.strftime("%Y-%m-%d %H:00")


def series(orders: Iterable[Mapping[str, Any]], first: date, last: date, bucket: str, zone: ZoneInfo,
           currency: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The figures per bucket, and for the whole range."""
    starts = bucket_starts(first, last, bucket, zone)
    buckets = {_label(s, bucket): _Bucket() for s in starts}
    total = _Bucket()
    for order in orders:
        created = _moment(order.get("created_at"))
        if created is None:
            continue
        found = buckets.get(_label(created.astimezone(zone), bucket))
        if found is None:
            continue  # outside the local range (the read is by whole UTC bounds)
        found.add(order, currency)
        total.add(order, currency)
    points = [buckets[_label(s, bucket)].point(s, _label(s, bucket)) for s in starts]
    return points, total.point(starts[0], "total")


SERIES_CSV_COLUMNS = ("bucket", "start", "orders", "revenue", "currency", "cancellations", "assign_p50_s",
                      "assigned", "on_time_share", "arrivals", "active_partners")


def series_csv(points: Iterable[Mapping[str, Any]], totals: Mapping[str, Any], currency: str) -> str:
    """The chart's figures as a spreadsheet reads them: revenue in major units with its currency."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(SERIES_CSV_COLUMNS)
    for p in [*points, totals]:
        writer.writerow([csv_cell(v) for v in (
            p["label"], p["start"] if p["label"] != "total" else "", p["orders"], major_units(p["revenue"], currency),
            currency, p["cancellations"], p["assign_p50_s"], p["assigned"], p["on_time_share"], p["arrivals"],
            p["active_partners"])])
    return out.getvalue()


def _zone_for(area: str | None, settings: Settings) -> tuple[str | None, str]:
    """The area's name as configured and its zone; without an area, the zone all areas share (UTC when
    they differ)."""
    areas = service_areas(settings.service_areas_file).areas
    if area is not None:
        for known in areas:
            if known.name.lower() == area.strip().lower():
                return known.name, known.timezone
        raise ValidationFailed("the request is invalid", details=[
            {"field": "area", "message": f"no service area named {area!r}", "type": "unknown_area",
             "allowed": [a.name for a in areas]}])
    zones = {a.timezone for a in areas}
    return None, zones.pop() if len(zones) == 1 else "UTC"


@routes.get("/admin/stats/series", summary="Orders, revenue, cancellations, assignment time, on-time share and "
            "active partners per day or hour; ?format=csv downloads the same figures", query=SeriesQuery,
            roles=ADMIN, response=StatsSeries, responses={422: "a bad range (to before from, or too long), or no "
                                                              "such service area"})
async def stats_series(request: web.Request, *, query: SeriesQuery) -> web.StreamResponse:
    """Every bucket of the range (empty ones too), and the range's totals."""
    settings: Settings = request.config_dict[keys.SETTINGS]
    first, last = query.date_from, query.date_to
    if last < first:
        raise ValidationFailed("the request is invalid", details=[
            {"field": "to", "message": "the range ends before it starts", "type": "range_reversed"}])
    days = (last - first).days + 1
    if days > MAX_DAYS[query.bucket]:
        raise ValidationFailed("the request is invalid", details=[
            {"field": "to", "message": f"at most {MAX_DAYS[query.bucket]} days by {query.bucket}",
             "type": "range_too_long", "max_days": MAX_DAYS[query.bucket]}])
    area, timezone = _zone_for(query.area, settings)
    zone = ZoneInfo(timezone)
    start = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    # created_at is a fixed-width ISO string (core.jsonutil.iso): string order is time order.
    where: dict[str, Any] = {"created_at": {"$gte": iso(start), "$lt": iso(end)}}
    if area is not None:
        where["service_area"] = area
    docs = await request.config_dict[keys.DB].orders.find(where, {
        "created_at": 1, "status": 1, "price": 1, "currency": 1, "history": 1, "partner_id": 1, "arrived_at": 1,
        "arrive_before": 1}).limit(MAX_ORDERS + 1).to_list(None)
    truncated = len(docs) > MAX_ORDERS
    if truncated:
        logger.warning("stats series %s..%s: more than %d orders, the rest not counted", first, last, MAX_ORDERS)
    points, totals = series(docs[:MAX_ORDERS], first, last, query.bucket, zone, settings.currency)
    if query.format == "csv":
        name = f"stats-{query.bucket}-{first.isoformat()}-{last.isoformat()}.csv"
        return web.Response(text=series_csv(points, totals, settings.currency), content_type="text/csv",
                            charset="utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"',
                                                      "Cache-Control": "no-store"})
    return json_response({"from": first.isoformat(), "to": last.isoformat(), "bucket": query.bucket, "area": area,
                          "timezone": timezone, "currency": settings.currency, "truncated": truncated,
                          "points": points, "totals": totals})
