"""Customer side of /api/users: my orders, my statistics and my favourite packages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import bearer, db_of, make_order, make_package, make_partner, make_user


async def test_orders_are_mine_and_filter_by_status(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me = await make_user(db)
    placed = await make_order(db, me, created_at="2026-01-01T00:00:00.000Z")
    done = await make_order(db, me, status="completed", created_at="2026-01-02T00:00:00.000Z")
    await make_order(db, await make_user(db), status="completed")
    auth = bearer(token_for(me, "customer"))

    body = await (await client.get("/api/users/orders", headers=auth)).json()
    assert [o["id"] for o in body["items"]] == [done, placed] and body["total"] == 2
    body = await (await client.get("/api/users/orders?status=placed", headers=auth)).json()
    assert [o["id"] for o in body["items"]] == [placed]
    assert (await client.get("/api/users/orders")).status == 401
    partner = bearer(token_for(await make_partner(db), "partner"))
    assert (await client.get("/api/users/orders", headers=partner)).status == 403


async def test_stats_count_active_completed_and_money_spent(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me = await make_user(db)
    auth = bearer(token_for(me, "customer"))
    empty = await (await client.get("/api/users/stats", headers=auth)).json()
    assert empty["orders_total"] == 0 and empty["total_spent"] == 0

    await make_order(db, me, status="placed", price=100_000)
    await make_order(db, me, status="en_route", price=200_000)
    await make_order(db, me, status="completed", price=1_500_000)
    await make_order(db, me, status="completed", price=2_500_000)
    await make_order(db, me, status="cancelled", price=9_000_000)
    await make_order(db, await make_user(db), status="completed", price=7_000_000)
    body = await (await client.get("/api/users/stats", headers=auth)).json()
    assert body == {"orders_total": 5, "orders_active": 2, "orders_completed": 2, "orders_cancelled": 1,
                    "total_spent": 4_000_000, "currency": "INR"}


async def test_favorites_add_list_remove(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    me = await make_user(db)
    auth = bearer(token_for(me, "customer"))
    first = await make_package(db, name="First Favourite")
    second = await make_package(db, name="Second Favourite", active=0)

    assert (await client.post(f"/api/users/favorites/{first}", headers=auth)).status == 201
    assert (await client.post(f"/api/users/favorites/{first}", headers=auth)).status == 200  # already there
    assert (await client.post(f"/api/users/favorites/{second}", headers=auth)).status == 201
    body = await (await client.get("/api/users/favorites", headers=auth)).json()
    assert body["total"] == 2
    assert {p["name"]: p["active"] for p in body["items"]} == {"First Favourite": True, "Second Favourite": False}

    other = bearer(token_for(await make_user(db), "customer"))
    assert (await (await client.get("/api/users/favorites", headers=other)).json())["total"] == 0

    assert (await client.delete(f"/api/users/favorites/{first}", headers=auth)).status == 200
    body = await (await client.get("/api/users/favorites", headers=auth)).json()
    assert [p["id"] for p in body["items"]] == [second]

    for method in ("POST", "DELETE"):
        resp = await client.request(method, "/api/users/favorites/nope", headers=auth)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "package_not_found"
        assert (await client.request(method, f"/api/users/favorites/{first}")).status == 401
