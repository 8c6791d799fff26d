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


async def test_the_order_form_gets_slots_in_the_venues_time_zone_that_the_order_accepts_as_they_are(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    package_id, auth = await _setup(client, token_for)
    day = datetime.now(IST).date() + timedelta(days=2)
    resp = await client.get("/api/orders/arrival-slots", params={"event_date": day.isoformat(),
                                                                  "lat": str(BENGALURU["lat"]),
                                                                  "lng": str(BENGALURU["lng"])})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["timezone"] == "Asia/Kolkata" and body["asap"] is False and body["default"] == "10:00-13:00"
    labels = [s["label"] for s in body["slots"]]
    assert labels == ["08:00-10:00", "10:00-13:00", "13:00-16:00", "16:00-19:00", "19:00-22:00"]
    evening = body["slots"][-1]
    assert evening["arrive_after"] == f"{day.isoformat()}T19:00:00+05:30"
    # Sent back as they are, they become the order's window.
    placed = await _place(client, auth, _body(package_id, day, arrive_after=evening["arrive_after"],
                                              arrive_before=evening["arrive_before"]))
    assert placed.status == 201, await placed.text()
    order = await placed.json()
    assert parse_iso(order["arrive_after"]) == datetime.combine(day, datetime.min.time().replace(hour=19), IST)
    assert parse_iso(order["arrive_before"]) - parse_iso(order["arrive_after"]) == timedelta(hours=3)


async def test_todays_slots_leave_out_the_ones_that_can_no_longer_be_met(client: TestClient[Any, Any]) -> None:
    now = datetime.now(IST)
    resp = await client.get("/api/orders/arrival-slots", params={"event_date": now.date().isoformat()})
    assert resp.status == 200
    body = await resp.json()
    assert body["asap"] is True and body["default"] is None and body["asap_window_min"] == 90
    for slot in body["slots"]:
        assert parse_iso(slot["arrive_before"]) > now + timedelta(minutes=30)
    all_today = 5 - sum(1 for end in (10, 13, 16, 19, 22)
                        if datetime.combine(now.date(), datetime.min.time().replace(hour=end), IST)
                        <= now + timedelta(minutes=30))
    assert len(body["slots"]) == all_today


async def test_without_a_date_the_slots_are_for_today_where_the_venue_is(client: TestClient[Any, Any]) -> None:
    # The form asks before a date is chosen, to say whether we deliver there; the phone's own
    # date can be another day in the venue's zone (a UTC phone after 18:30 is a day behind India).
    resp = await client.get("/api/orders/arrival-slots",
                            params={"lat": str(BENGALURU["lat"]), "lng": str(BENGALURU["lng"])})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["event_date"] == datetime.now(IST).date().isoformat()
    assert body["asap"] is True and body["area"] == "Bengaluru Central"


async def test_slots_for_a_venue_we_do_not_serve_or_a_past_date_are_a_422(client: TestClient[Any, Any]) -> None:
    day = datetime.now(IST).date()
    outside = await client.get("/api/orders/arrival-slots",
                               params={"event_date": day.isoformat(), "lat": "51.5", "lng": "-0.12"})
    assert outside.status == 422
    assert (await outside.json())["error"]["details"][0]["type"] == "outside_service_area"
    past = await client.get("/api/orders/arrival-slots",
                            params={"event_date": (day - timedelta(days=2)).isoformat()})
    assert past.status == 422 and (await past.json())["error"]["details"][0]["field"] == "event_date"
    bad = await client.get("/api/orders/arrival-slots", params={"event_date": "tomorrow"})
    assert bad.status == 422
