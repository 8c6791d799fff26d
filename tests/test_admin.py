"""Admin API: package CRUD, partner standing, the order board and its CSV export, manual
assignment with audit, statistics and customers."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.contracts import DISPATCH_AUDIT, FLEET_ONLINE, PARTNER_EVENTS, PartnerEvent
from tests.helpers import bearer, db_of, make_order, make_package, make_partner, make_user
from tests.test_security_account import step_up

NEW_PACKAGE = {"name": "Lantern Festival Night", "category": "Festival", "price": 2_999_900, "capacity": 80,
               "duration_min": 240, "tags": ["lanterns"], "features": ["Sky lanterns"],
               "images": ["/img/packages/festival.svg", "https://cdn.example.com/a.jpg"],
               "description": "Lanterns everywhere"}


async def _admin(client: TestClient[Any, Any], token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for(await make_user(db_of(client.app), "admin"), "admin"))


async def test_admin_routes_refuse_anonymous_and_other_roles(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    customer = bearer(token_for(await make_user(db), "customer"))
    partner = bearer(token_for(await make_partner(db), "partner"))
    for method, path in (("GET", "/api/admin/packages"), ("POST", "/api/admin/packages"),
                         ("GET", "/api/admin/partners"), ("GET", "/api/admin/orders"),
                         ("GET", "/api/admin/stats"), ("GET", "/api/admin/customers"),
                         ("PUT", "/api/admin/orders/x/assign"), ("PUT", "/api/admin/partners/x/approve")):
        assert (await client.request(method, path, json={})).status == 401, path
        for headers in (customer, partner):
            resp = await client.request(method, path, json={}, headers=headers)
            assert resp.status == 403, path
            assert (await resp.json())["error"]["code"] == "forbidden"


async def test_package_crud_with_archive(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    admin = await _admin(client, token_for)
    resp = await client.post("/api/admin/packages", json=NEW_PACKAGE, headers=admin)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["slug"] == "lantern-festival-night" and created["currency"] == "INR"
    assert created["active"] is True and created["rating_count"] == 0 and "rating_avg" not in created
    package_id = created["id"]

    resp = await client.put(f"/api/admin/packages/{package_id}", headers=admin,
                            json={"price": 3_100_000, "tags": ["lanterns", "night"], "features": []})
    assert resp.status == 200
    updated = await resp.json()
    assert updated["price"] == 3_100_000 and updated["tags"] == ["lanterns", "night"] and updated["features"] == []
    assert updated["name"] == NEW_PACKAGE["name"]

    assert (await client.delete(f"/api/admin/packages/{package_id}", headers=admin)).status == 200
    assert (await client.get(f"/api/packages/{package_id}")).status == 404
    listed = await (await client.get("/api/admin/packages?active=false", headers=admin)).json()
    assert [p["id"] for p in listed["items"]] == [package_id] and listed["items"][0]["active"] is False
    resp = await client.put(f"/api/admin/packages/{package_id}", json={"active": True}, headers=admin)
    assert (await resp.json())["active"] is True
    assert (await client.get(f"/api/packages/{package_id}")).status == 200

    duplicate = await client.post("/api/admin/packages", json={**NEW_PACKAGE, "slug": "lantern-festival-night"},
                                  headers=admin)
    assert duplicate.status == 409
    for missing in ("PUT", "DELETE"):
        assert (await client.request(missing, "/api/admin/packages/nope", json={"price": 1},
                                     headers=admin)).status == 404


async def test_package_input_is_validated_per_field(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    admin = await _admin(client, token_for)
    cases = [
        ({**NEW_PACKAGE, "price": -1}, "price"),
        ({**NEW_PACKAGE, "category": "Funerals"}, "category"),
        ({**NEW_PACKAGE, "images": ["javascript:alert(1)"]}, "images"),
        ({**NEW_PACKAGE, "rating_avg": 5}, "rating_avg"),
        ({**NEW_PACKAGE, "price": 10.5}, "price"),
    ]
    for body, field in cases:
        resp = await client.post("/api/admin/packages", json=body, headers=admin)
        assert resp.status == 422, field
        assert field in {d["field"] for d in (await resp.json())["error"]["details"]}
    package_id = await make_package(db_of(client.app))
    resp = await client.put(f"/api/admin/packages/{package_id}", json={"name": None}, headers=admin)
    assert resp.status == 422
    assert await db_of(client.app).packages.count_documents({}) == 1


async def test_partner_standing_changes_are_published_and_enforced(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    pending = await make_partner(db, status="pending")
    approved = await make_partner(db)
    await redis.sadd(FLEET_ONLINE, approved)
    pubsub = redis.pubsub()
    await pubsub.subscribe(PARTNER_EVENTS)
    await pubsub.get_message(timeout=1)

    listed = await (await client.get("/api/admin/partners?status=pending", headers=admin)).json()
    assert [p["id"] for p in listed["items"]] == [pending] and listed["total"] == 1
    everyone = await (await client.get("/api/admin/partners", headers=admin)).json()
    assert {p["id"]: p["online"] for p in everyone["items"]} == {pending: False, approved: True}

    resp = await client.put(f"/api/admin/partners/{pending}/approve", headers=admin)
    assert resp.status == 200 and (await resp.json())["status"] == "approved"
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    event = PartnerEvent.model_validate_json(message["data"])
    assert event.partner_id == pending and event.status == "approved"

    partner_auth = bearer(token_for(approved, "partner"))
    assert (await client.get("/api/partner/orders/new", headers=partner_auth)).status == 200
    assert (await client.put(f"/api/admin/partners/{approved}/suspend", headers=admin)).status == 200
    resp = await client.get("/api/partner/orders/new", headers=partner_auth)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "partner_suspended"

    # Only a pending application can be rejected.
    assert (await client.put(f"/api/admin/partners/{pending}/reject", headers=admin)).status == 409
    assert (await client.put("/api/admin/partners/nope/approve", headers=admin)).status == 404
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_partner_who_deleted_the_account_cannot_be_approved_again(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    gone = await make_partner(db)
    user = await db.users.find_one({"_id": gone})
    assert user is not None
    code = await step_up(client, token_for(gone, "partner"), "delete_account", channel="sms", to=user["phone"])
    assert (await client.delete("/api/users/account", headers=bearer(token_for(gone, "partner")),
                                json={"verify_code": code})).status == 200
    resp = await client.put(f"/api/admin/partners/{gone}/approve", headers=admin)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "account_deleted"
    partner = await db.partners.find_one({"_id": gone})
    assert partner is not None and partner["status"] == "suspended"


async def test_order_board_filters_and_pages(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    alice, bob = await make_user(db), await make_user(db)
    partner = await make_partner(db)
    old = await make_order(db, alice, created_at="2026-01-10T08:00:00.000Z")
    mid = await make_order(db, bob, status="assigned", partner_id=partner, created_at="2026-02-10T08:00:00.000Z")
    new = await make_order(db, alice, status="completed", created_at="2026-03-10T23:59:59.999Z")

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/api/admin/orders?{query}", headers=admin)
        assert resp.status == 200
        return [o["id"] for o in (await resp.json())["items"]]

    assert await ids("") == [new, mid, old]
    assert await ids("status=assigned") == [mid]
    assert await ids(f"customer_id={alice}") == [new, old]
    assert await ids(f"partner_id={partner}") == [mid]
    assert await ids("from=2026-02-01&to=2026-03-10") == [new, mid]
    assert await ids("to=2026-01-10") == [old]
    assert await ids("from=0001-01-01&to=9999-12-31") == [new, mid, old]
    assert await ids("limit=1&page=2") == [mid]
    resp = await client.get("/api/admin/orders?from=yesterday", headers=admin)
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "from"


async def test_csv_export_escapes_and_defuses_formulas(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    customer = await make_user(db)
    hostile = await make_order(db, customer, notes='=HYPERLINK("http://evil","x"), "quoted"\nnext line',
                               created_at="2026-01-02T00:00:00.000Z")
    plain = await make_order(db, customer, notes="@SUM(A1)", created_at="2026-01-01T00:00:00.000Z")

    resp = await client.get("/api/admin/orders?format=csv", headers=admin)
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["id"] for r in rows] == [hostile, plain]
    assert rows[0]["notes"] == '\'=HYPERLINK("http://evil","x"), "quoted"\nnext line'
    assert rows[1]["notes"] == "'@SUM(A1)"
    assert rows[0]["price"] == "15000.00" and rows[0]["currency"] == "INR" and rows[0]["city"] == "Bengaluru"
    assert rows[0]["package"] == "Test Package" and rows[0]["status"] == "placed"


async def test_csv_export_names_people_formats_money_and_gives_the_address_status_times_and_cancel_reason(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    asha = await make_user(db, name="Asha Rao", phone="+919845012345")
    gone = await make_user(db, name="Gone Person", phone="+919800000000", deleted=1)
    ravi = await make_partner(db, contact_name="Ravi Kumar", phone="+919845000001")
    done = await make_order(db, asha, status="completed", partner_id=ravi, price=1_500_005, amount_paid=1_500_005,
                            amount_due=0, created_at="2026-01-02T00:00:00.000Z", history=[
                                {"status": "placed", "at": "2026-01-02T00:00:00.000Z", "by_role": "customer"},
                                {"status": "assigned", "at": "2026-01-02T00:01:10.000Z", "by_role": "partner"},
                                {"status": "arrived", "at": "2026-01-02T02:00:00.000Z", "by_role": "partner"},
                                {"status": "completed", "at": "2026-01-02T05:00:00.000Z", "by_role": "partner"}])
    cancelled = await make_order(db, gone, status="cancelled", created_at="2026-01-01T00:00:00.000Z", history=[
        {"status": "placed", "at": "2026-01-01T00:00:00.000Z", "by_role": "customer"},
        {"status": "cancelled", "at": "2026-01-01T01:00:00.000Z", "by_role": "customer",
         "reason": "=venue changed, sorry"}])

    rows = list(csv.DictReader(io.StringIO(await (await client.get("/api/admin/orders?format=csv",
                                                                        headers=admin)).text())))
    by_id = {r["id"]: r for r in rows}
    row = by_id[done]
    assert (row["customer_name"], row["customer_phone"], row["partner_name"], row["partner_phone"]) == (
        "Asha Rao", "'+919845012345", "Ravi Kumar", "'+919845000001")  # a leading + is defused like a formula
    assert (row["price"], row["amount_paid"], row["amount_due"], row["currency"]) == ("15000.05", "15000.05", "0.00",
                                                                                   "INR")
    assert (row["address"], row["city"], row["postal_code"]) == ("1 MG Road", "Bengaluru", "560001")
    assert (row["placed_at"], row["assigned_at"], row["arrived_at"], row["completed_at"], row["cancelled_at"]) == (
        "2026-01-02T00:00:00.000Z", "2026-01-02T00:01:10.000Z", "2026-01-02T02:00:00.000Z",
        "2026-01-02T05:00:00.000Z", "")
    row = by_id[cancelled]
    # A deleted account's name and phone are gone from the export too.
    assert (row["customer_name"], row["customer_phone"], row["partner_name"]) == ("", "", "")
    assert row["cancelled_at"] == "2026-01-01T01:00:00.000Z" and row["cancel_reason"] == "'=venue changed, sorry"


async def test_manual_assignment_is_checked_and_audited(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    customer = await make_user(db)
    partner, suspended = await make_partner(db), await make_partner(db, status="suspended")
    order_id = await make_order(db, customer)
    url = f"/api/admin/orders/{order_id}/assign"

    resp = await client.put(url, json={"partner_id": suspended, "reason": "closest"}, headers=admin)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "partner_not_approved"
    resp = await client.put(url, json={"partner_id": "ghost"}, headers=admin)
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "partner_id"

    resp = await client.put(url, json={"partner_id": partner, "reason": "customer asked for Ravi"}, headers=admin)
    assert resp.status == 200
    order = await resp.json()
    assert order["status"] == "assigned" and order["partner_id"] == partner and order["assigned_at"]
    assert order["history"][-1]["by_role"] == "admin"

    audit = await (await client.get(f"/api/admin/orders/{order_id}/audit", headers=admin)).json()
    assert [a["event"] for a in audit["items"]] == ["manual_assign"]
    assert audit["items"][0]["data"]["partner_id"] == partner
    assert audit["items"][0]["data"]["reason"] == "customer asked for Ravi"
    await db[DISPATCH_AUDIT].insert_one({"_id": "a0", "order_id": order_id, "at": "2000-01-01T00:00:00.000Z",
                                         "event": "candidates", "data": {}})
    audit = await (await client.get(f"/api/admin/orders/{order_id}/audit", headers=admin)).json()
    assert [a["event"] for a in audit["items"]] == ["candidates", "manual_assign"]

    other = await make_partner(db)
    resp = await client.put(url, json={"partner_id": other, "reason": "Ravi is ill"}, headers=admin)
    assert resp.status == 200
    # A reassignment is a change of its own in the history, so the customer hears who comes now.
    stored = await db.orders.find_one({"_id": order_id})
    assert stored is not None and stored["partner_id"] == other and stored["notify_pending"] == 1
    assert [(h["status"], h["reason"]) for h in stored["history"]][-2:] == [
        ("assigned", "customer asked for Ravi"), ("assigned", "Ravi is ill")]

    moving = await make_order(db, customer, status="en_route", partner_id=partner)
    resp = await client.put(f"/api/admin/orders/{moving}/assign", json={"partner_id": partner}, headers=admin)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "illegal_transition"
    assert (await client.put("/api/admin/orders/nope/assign", json={"partner_id": partner},
                             headers=admin)).status == 404
    assert (await client.get("/api/admin/orders/nope/audit", headers=admin)).status == 404


async def test_stats_summarise_orders_revenue_assignment_and_fleet(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    customer = await make_user(db)
    partner = await make_partner(db)
    await make_order(db, customer, status="completed", partner_id=partner, price=1_000_000,
                     created_at="2026-01-01T10:00:00.000Z", assigned_at="2026-01-01T10:01:00.000Z")
    await make_order(db, customer, status="assigned", partner_id=partner, price=500_000,
                     created_at="2026-01-01T10:00:00.000Z", assigned_at="2026-01-01T10:03:00.000Z")
    await make_order(db, customer, status="cancelled", price=700_000)
    await redis.sadd(FLEET_ONLINE, partner, "another")

    body = await (await client.get("/api/admin/stats", headers=admin)).json()
    assert body["orders_by_status"] == {"completed": 1, "assigned": 1, "cancelled": 1}
    assert body["orders_total"] == 3 and body["revenue"] == 1_000_000
    assert body["avg_time_to_assign_s"] == 120.0
    assert body["partners_online"] == 2 and body["partners_by_status"] == {"approved": 1}
    assert body["customers"] == 1


async def test_customers_are_searchable_with_order_counts(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    admin = await _admin(client, token_for)
    asha = await make_user(db, name="Asha (VIP) Rao", email="asha@example.test")
    await make_user(db, name="Bala Iyer")
    await make_order(db, asha)
    body = await (await client.get("/api/admin/customers?q=(vip)", headers=admin)).json()
    assert [c["id"] for c in body["items"]] == [asha]
    assert body["items"][0]["orders"] == 1 and body["items"][0]["email"] == "asha@example.test"
    body = await (await client.get("/api/admin/customers?q=.*", headers=admin)).json()
    assert body["items"] == []
    assert (await (await client.get("/api/admin/customers", headers=admin)).json())["total"] == 2
