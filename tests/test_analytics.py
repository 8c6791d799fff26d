"""The console's analytics: figures per day or hour in the service area's time zone, a bounded
range, and the same figures as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from core.jsonutil import iso
from tests.helpers import bearer, db_of, make_order, make_partner, make_user

# Midnight 1 December in Bengaluru is 18:30 UTC on 30 November.
IST_DAY1 = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)


async def _admin(client: TestClient[Any, Any], token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for(await make_user(db_of(client.app), "admin"), "admin"))


async def _order(client: TestClient[Any, Any], customer: str, created: datetime, status: str, *,
                 assign_after_s: float | None = None, partner: str | None = None, arrived: datetime | None = None,
                 arrive_before: datetime | None = None, price: int = 1_500_000, area: str = "Bengaluru Central"
                 ) -> str:
    history: list[dict[str, Any]] = [{"status": "placed", "at": iso(created), "by_role": "customer"}]
    if assign_after_s is not None:
        history.append({"status": "assigned", "at": iso(created + timedelta(seconds=assign_after_s)),
                        "by_role": "partner", "by": partner})
    fields: dict[str, Any] = {"created_at": iso(created), "history": history, "price": price,
                              "service_area": area}
    if partner:
        fields["partner_id"] = partner
    if arrived:
        fields["arrived_at"] = iso(arrived)
    if arrive_before:
        fields["arrive_before"] = iso(arrive_before)
    return await make_order(db_of(client.app), customer, status=status, **fields)


async def test_daily_series_counts_orders_revenue_cancellations_wait_on_time_and_partners_in_local_days(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    customer = await make_user(db)
    ravi, meena = await make_partner(db), await make_partner(db)
    day1 = IST_DAY1
    # 00:10 IST on 1 December is still 30 November in UTC: it counts on the local day.
    await _order(client, customer, day1 + timedelta(minutes=10), "completed", assign_after_s=30, partner=ravi,
                 arrived=day1 + timedelta(hours=2), arrive_before=day1 + timedelta(hours=3), price=1_500_050)
    await _order(client, customer, day1 + timedelta(hours=5), "completed", assign_after_s=90, partner=meena,
                 arrived=day1 + timedelta(hours=9), arrive_before=day1 + timedelta(hours=8), price=999_999)
    await _order(client, customer, day1 + timedelta(hours=6), "completed", assign_after_s=60, partner=ravi,
                 price=100)
    await _order(client, customer, day1 + timedelta(hours=7), "cancelled")
    await _order(client, customer, day1 + timedelta(days=2, hours=1), "placed")
    # Before the range (23:59 IST on 30 November), and in another area.
    await _order(client, customer, day1 - timedelta(minutes=1), "completed", assign_after_s=5, partner=ravi)
    await _order(client, customer, day1 + timedelta(hours=1), "completed", area="Bengaluru North (Airport corridor)")

    resp = await client.get("/api/admin/stats/series?from=2026-12-01&to=2026-12-03&bucket=day"
                            "&area=Bengaluru%20Central", headers=admin)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["timezone"], body["currency"], body["area"], body["from"], body["to"]) == (
        "Asia/Kolkata", "INR", "Bengaluru Central", "2026-12-01", "2026-12-03")
    first, second, third = body["points"]
    assert [p["label"] for p in body["points"]] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert first["start"] == "2026-12-01T00:00:00+05:30"
    assert (first["orders"], first["revenue"], first["cancellations"]) == (4, 1_500_050 + 999_999 + 100, 1)
    assert (first["assign_p50_s"], first["assigned"]) == (60.0, 3)
    assert (first["on_time_share"], first["arrivals"], first["active_partners"]) == (0.5, 2, 2)
    assert second["orders"] == 0 and second["assign_p50_s"] is None and second["on_time_share"] is None
    assert third["orders"] == 1 and third["revenue"] == 0
    assert body["totals"]["orders"] == 5 and body["totals"]["active_partners"] == 2

    everywhere = await (await client.get("/api/admin/stats/series?from=2026-12-01&to=2026-12-01",
                                         headers=admin)).json()
    assert everywhere["area"] is None and everywhere["points"][0]["orders"] == 5

    hourly = await (await client.get("/api/admin/stats/series?from=2026-12-01&to=2026-12-01&bucket=hour"
                                     "&area=bengaluru%20central", headers=admin)).json()
    assert len(hourly["points"]) == 24 and hourly["points"][0]["label"] == "2026-12-01 00:00"
    assert [p["orders"] for p in hourly["points"][:8]] == [1, 0, 0, 0, 0, 1, 1, 1]


async def test_the_same_figures_download_as_csv_with_money_in_major_units(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    await _order(client, await make_user(db), IST_DAY1 + timedelta(hours=1), "completed", price=1_500_005)
    resp = await client.get("/api/admin/stats/series?from=2026-12-01&to=2026-12-02&format=csv", headers=admin)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [(r["bucket"], r["orders"], r["revenue"], r["currency"]) for r in rows] == [
        ("2026-12-01", "1", "15000.05", "INR"), ("2026-12-02", "0", "0.00", "INR"), ("total", "1", "15000.05", "INR")]


async def test_a_range_too_long_reversed_or_in_an_unknown_area_is_refused_in_the_error_envelope(
        client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    admin = await _admin(client, token_for)
    for query, field in (("from=2026-01-01&to=2026-06-01", "to"),
                         ("from=2026-12-01&to=2026-12-08&bucket=hour", "to"),
                         ("from=2026-12-03&to=2026-12-01", "to"),
                         ("from=2026-12-01&to=2026-12-02&area=Atlantis", "area"),
                         ("from=0&to=2026-12-02", "from")):
        resp = await client.get(f"/api/admin/stats/series?{query}", headers=admin)
        assert resp.status == 422, query
        error = (await resp.json())["error"]
        assert error["code"] == "validation_error" and error["details"][0]["field"] == field, (query, error)
    ok = await client.get("/api/admin/stats/series?from=2026-09-01&to=2026-12-01", headers=admin)
    assert ok.status == 200 and len((await ok.json())["points"]) == 92
