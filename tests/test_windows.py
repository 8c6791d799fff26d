"""Arrival windows on orders: named by the customer, "as soon as possible" today, a default slot
later; the dispatch time derived from them; unusable windows refused with a 422 naming the field."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient

from core.jsonutil import parse_iso
from tests.helpers import BENGALURU, bearer, db_of, make_package, make_user

IST = ZoneInfo("Asia/Kolkata")


def _body(package_id: str, event_date: date, **extra: Any) -> dict[str, Any]:
    return {"package_id": package_id, "event_date": event_date.isoformat(), "guests": 10, "notes": "",
            "address": {"line1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001", **BENGALURU},
            "payment_option": "cash", **extra}


async def _place(client: TestClient[Any, Any], auth: dict[str, str], body: dict[str, Any]) -> Any:
    return await client.post("/api/orders", json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})


async def _setup(client: TestClient[Any, Any], token_for: Callable[..., str]) -> tuple[str, dict[str, str]]:
    db = db_of(client.app)
    package_id = await make_package(db, duration_min=180)
    return package_id, bearer(token_for(await make_user(db), "customer"))


async def test_a_later_order_gets_the_default_slot_and_dispatch_starts_before_it(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    package_id, auth = await _setup(client, token_for)
    day = datetime.now(IST).date() + timedelta(days=3)
    resp = await _place(client, auth, _body(package_id, day))
    assert resp.status == 201, await resp.text()
    order = await resp.json()
    after, before = parse_iso(order["arrive_after"]), parse_iso(order["arrive_before"])
    assert after == datetime.combine(day, datetime.min.time().replace(hour=10), IST)  # 10:00-13:00 local
    assert before - after == timedelta(hours=3) and order["asap"] == 0 and order["timezone"] == "Asia/Kolkata"
    assert "dispatch_at" not in order  # the customer sees the window, not the engine's schedule
    stored = await db_of(client.app).orders.find_one({"_id": order["id"]})
    assert stored is not None
    # 60 min lead + a quarter of the 180-minute set-up.
    assert parse_iso(stored["dispatch_at"]) == after - timedelta(minutes=105)
    assert stored["dispatch_at_ms"] == int((after - timedelta(minutes=105)).timestamp() * 1000)


async def test_a_named_window_is_kept_in_utc_and_an_order_for_today_means_as_soon_as_possible(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    package_id, auth = await _setup(client, token_for)
    day = datetime.now(IST).date() + timedelta(days=5)
    start = datetime.combine(day, datetime.min.time().replace(hour=17, minute=30), IST)
    resp = await _place(client, auth, _body(package_id, day, arrive_after=start.isoformat(),
                                            arrive_before=(start + timedelta(hours=1)).isoformat()))
    assert resp.status == 201, await resp.text()
    order = await resp.json()
    assert order["arrive_after"] == (start.astimezone(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert parse_iso(order["arrive_before"]) == start + timedelta(hours=1)

    today = datetime.now(IST).date()
    resp = await _place(client, auth, _body(package_id, today))
    assert resp.status == 201, await resp.text()
    asap = await resp.json()
    assert asap["asap"] == 1
    opened = parse_iso(asap["arrive_after"])
    assert abs((opened - datetime.now(UTC)).total_seconds()) < 60
    assert parse_iso(asap["arrive_before"]) - opened == timedelta(minutes=90)
    stored = await db_of(client.app).orders.find_one({"_id": asap["id"]})
    assert stored is not None and parse_iso(stored["dispatch_at"]) <= datetime.now(UTC)


async def test_unusable_windows_are_refused_naming_the_field(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    package_id, auth = await _setup(client, token_for)
    day = datetime.now(IST).date() + timedelta(days=4)
    start = datetime.combine(day, datetime.min.time().replace(hour=11), IST)
    cases = [
        (_body(package_id, datetime.now(IST).date() - timedelta(days=1)), "event_date", "date_not_future"),
        (_body(package_id, day, arrive_after=start.isoformat()), "arrive_before", "window_incomplete"),
        (_body(package_id, day, arrive_after=start.isoformat(), arrive_before=(start + timedelta(minutes=10))
               .isoformat()), "arrive_before", "window_too_short"),
        (_body(package_id, day, arrive_after=(start + timedelta(days=1)).isoformat(),
               arrive_before=(start + timedelta(days=1, hours=1)).isoformat()), "arrive_after",
         "window_not_on_event_date"),
        (_body(package_id, day, arrive_after=start.isoformat(), arrive_before=(start + timedelta(hours=13))
               .isoformat()), "arrive_before", "window_too_long"),
        (_body(package_id, day, arrive_after="2030-01-01T11:00:00", arrive_before="2030-01-01T12:00:00"),
         "arrive_after", "timezone_aware"),
    ]
    for body, field, kind in cases:
        resp = await _place(client, auth, body)
        assert resp.status == 422, (field, await resp.text())
        details = (await resp.json())["error"]["details"]
        assert any(d["field"] == field and d["type"] == kind for d in details), (field, kind, details)
    assert await db_of(client.app).orders.count_documents({}) == 0
