"""Orders: server-side pricing, idempotent creation, visibility, cancellation policy and reviews."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.contracts import ORDER_EVENTS, OrderEvent
from tests.helpers import (
    BENGALURU,
    MUMBAI,
    bearer,
    db_of,
    future_date,
    make_order,
    make_package,
    make_partner,
    make_user,
    unique_phone,
)


def order_body(package_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "package_id": package_id, "event_date": future_date(),
        "address": {"line1": "12 Church Street", "city": "Bengaluru", "postal_code": "560001", **BENGALURU},
        "guests": 25, "notes": "Gate 2, ring twice", "payment_option": "deposit",
    }
    body.update(overrides)
    return body


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def _customer(client: TestClient[Any, Any], token_for: Callable[..., str]) -> tuple[str, dict[str, str]]:
    user_id = await make_user(db_of(client.app))
    return user_id, bearer(token_for(user_id, "customer"))


async def test_customer_places_an_order_priced_by_the_server(
    client: TestClient[Any, Any], token_for: Callable[..., str], redis: Redis
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db, price=2_499_900, capacity=50)
    user_id, auth = await _customer(client, token_for)
    pubsub = redis.pubsub()
    await pubsub.subscribe(ORDER_EVENTS)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    resp = await client.post("/api/orders", json=order_body(package_id), headers={**auth, **key()})
    assert resp.status == 201, await resp.text()
    order = await resp.json()
    # A deposit order waits for its deposit before dispatch (tests/test_payments.py pays it).
    assert order["status"] == "pending_payment" and order["version"] == 1
    assert order["payment_status"] == "unpaid" and order["amount_due"] == 2_499_900 and order["amount_paid"] == 0
    assert order["price"] == 2_499_900 and order["currency"] == "INR"
    assert order["package"]["name"].startswith("Test Package") and order["package"]["price"] == 2_499_900
    assert order["deposit_amount"] == 2_499_900 * 3000 // 10_000
    assert order["customer_id"] == user_id and order["service_area"] == "Bengaluru Central"
    assert [h["status"] for h in order["history"]] == ["pending_payment"]
    assert "idempotency_key" not in order and "offer_partner_ids" not in order

    stored = await db.orders.find_one({"_id": order["id"]})
    assert stored is not None
    assert stored["offer_partner_ids"] == [] and stored["declined_partner_ids"] == []
    assert stored["offer_fence"] == 0 and stored["offer_expires_ms"] == 0
    assert stored["notify_pending"] == 1 and stored["notified_upto"] == 0

    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    event = OrderEvent.model_validate_json(message["data"])
    assert event.order_id == order["id"] and event.status == "pending_payment" and event.prev_status is None
    assert event.pickup is not None and event.pickup.lat == BENGALURU["lat"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_same_key_same_body_returns_the_same_order(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    _, auth = await _customer(client, token_for)
    headers = {**auth, **key()}
    body = order_body(package_id)
    first = await client.post("/api/orders", json=body, headers=headers)
    assert first.status == 201
    again = await client.post("/api/orders", json=body, headers=headers)
    assert again.status == 200
    assert (await again.json())["id"] == (await first.json())["id"]

    changed = await client.post("/api/orders", json={**body, "guests": 30}, headers=headers)
    assert changed.status == 409
    assert (await changed.json())["error"]["code"] == "idempotency_mismatch"

    # A retry still finds its order after the package was archived in the meantime.
    admin = bearer(token_for(await make_user(db, "admin"), "admin"))
    assert (await client.delete(f"/api/admin/packages/{package_id}", headers=admin)).status == 200
    late = await client.post("/api/orders", json=body, headers=headers)
    assert late.status == 200 and (await late.json())["id"] == (await first.json())["id"]
    assert await db.orders.count_documents({}) == 1


async def test_concurrent_retries_with_one_key_create_one_order(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    _, auth = await _customer(client, token_for)
    headers = {**auth, **key()}
    responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(package_id), headers=headers)
                                       for _ in range(8)))
    assert sorted(r.status for r in responses) == [200] * 7 + [201]
    assert len({(await r.json())["id"] for r in responses}) == 1
    assert await db.orders.count_documents({}) == 1


async def test_keys_are_scoped_per_customer(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    shared = key()
    _, alice = await _customer(client, token_for)
    _, bob = await _customer(client, token_for)
    first = await client.post("/api/orders", json=order_body(package_id), headers={**alice, **shared})
    second = await client.post("/api/orders", json=order_body(package_id), headers={**bob, **shared})
    assert first.status == 201 and second.status == 201
    assert (await first.json())["id"] != (await second.json())["id"]


async def test_the_client_cannot_set_the_price(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    _, auth = await _customer(client, token_for)
    for field in ("price", "currency", "deposit_amount", "status"):
        resp = await client.post("/api/orders", json=order_body(package_id, **{field: 1}), headers={**auth, **key()})
        assert resp.status == 422
        details = (await resp.json())["error"]["details"]
        assert any(d["field"] == field and d["type"] == "extra_forbidden" for d in details)
    assert await db.orders.count_documents({}) == 0


async def test_hostile_bodies_are_4xx_and_write_nothing(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    _, auth = await _customer(client, token_for)
    headers = {**auth, **key(), "Content-Type": "application/json"}
    cases = [
        (b"{not json", 400),
        (json.dumps({**order_body(package_id), "$where": "1"}).encode(), 422),
        (json.dumps(order_body(package_id, address={"$gt": ""})).encode(), 422),
        (json.dumps(order_body(package_id, guests="many")).encode(), 422),
        (json.dumps([order_body(package_id)]).encode(), 422),
        (b'{"notes": "' + b"x" * 400_000 + b'"}', 413),
    ]
    for raw, status in cases:
        resp = await client.post("/api/orders", data=raw, headers=headers)
        assert resp.status == status, (raw[:40], resp.status)
        assert "error" in await resp.json()
    assert await db.orders.count_documents({}) == 0


async def test_order_rules_are_enforced_per_field(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db, capacity=30)
    archived = await make_package(db, active=0)
    _, auth = await _customer(client, token_for)
    cases = [
        (order_body(package_id, event_date="2020-01-01"), "event_date"),
        (order_body(package_id, guests=31), "guests"),
        (order_body(package_id, address={"line1": "1 Marine Drive", "city": "Mumbai", "postal_code": "400020",
                                         **MUMBAI}), "address"),
        (order_body(archived), "package_id"),
        (order_body("no-such-package"), "package_id"),
        (order_body(package_id, payment_option="bitcoin"), "payment_option"),
        (order_body(package_id, address={"line1": "x", "city": "B", "postal_code": "560001", "lat": 95, "lng": 0}),
         "address.lat"),
    ]
    for body, field in cases:
        resp = await client.post("/api/orders", json=body, headers={**auth, **key()})
        assert resp.status == 422, field
        error = (await resp.json())["error"]
        assert error["code"] == "validation_error"
        assert field in {d["field"] for d in error["details"]}, error
    assert await db.orders.count_documents({}) == 0


async def test_order_creation_refusals(client: TestClient[Any, Any], token_for: Callable[..., str]) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    _, auth = await _customer(client, token_for)
    assert (await client.post("/api/orders", json=order_body(package_id), headers=key())).status == 401
    partner = bearer(token_for(await make_partner(db), "partner"))
    assert (await client.post("/api/orders", json=order_body(package_id), headers={**partner, **key()})).status == 403
    resp = await client.post("/api/orders", json=order_body(package_id), headers=auth)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "Idempotency-Key"


async def test_order_is_visible_to_its_customer_partner_and_admins_only(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    owner = await make_user(db, phone="+919812345678")
    partner = await make_partner(db)
    order_id = await make_order(db, owner, status="assigned", partner_id=partner)
    admin = await make_user(db, "admin")
    stranger = await make_user(db)
    other_partner = await make_partner(db)

    resp = await client.get(f"/api/orders/{order_id}", headers=bearer(token_for(owner, "customer")))
    assert resp.status == 200
    body = await resp.json()
    assert body["partner"]["first_name"] == "Ravi" and "declined_partner_ids" not in body

    resp = await client.get(f"/api/orders/{order_id}", headers=bearer(token_for(partner, "partner")))
    assert resp.status == 200
    assert (await resp.json())["customer"]["phone"] == "+919812345678"

    resp = await client.get(f"/api/orders/{order_id}", headers=bearer(token_for(admin, "admin")))
    assert resp.status == 200 and "offer_partner_ids" in await resp.json()

    for user_id, role in ((stranger, "customer"), (other_partner, "partner")):
        resp = await client.get(f"/api/orders/{order_id}", headers=bearer(token_for(user_id, role)))
        assert resp.status == 404
    assert (await client.get("/api/orders/nope", headers=bearer(token_for(admin, "admin")))).status == 404
    assert (await client.get(f"/api/orders/{order_id}")).status == 401


async def test_my_orders_are_mine_newest_first_and_paged(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me = await make_user(db)
    first = await make_order(db, me, created_at="2026-01-01T00:00:00.000Z")
    second = await make_order(db, me, created_at="2026-01-02T00:00:00.000Z", status="completed")
    await make_order(db, await make_user(db))
    auth = bearer(token_for(me, "customer"))
    body = await (await client.get("/api/orders/myorders?limit=1", headers=auth)).json()
    assert body["total"] == 2 and [o["id"] for o in body["items"]] == [second]
    body = await (await client.get("/api/orders/myorders?page=2&limit=1", headers=auth)).json()
    assert [o["id"] for o in body["items"]] == [first] and body["total"] == 2
    # A short page is the last one, so its total is known without counting; past the end, it is counted.
    for page, limit, items in ((1, 5, 2), (2, 1, 1), (3, 1, 0), (9, 5, 0)):
        body = await (await client.get(f"/api/orders/myorders?page={page}&limit={limit}", headers=auth)).json()
        assert (len(body["items"]), body["total"]) == (items, 2), (page, limit)
    resp = await client.get("/api/orders/myorders?status=teleported", headers=auth)
    assert resp.status == 422


async def test_cancellation_follows_policy_by_state_and_role(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    me = await make_user(db)
    auth = bearer(token_for(me, "customer"))
    admin = bearer(token_for(await make_user(db, "admin"), "admin"))

    placed = await make_order(db, me)
    resp = await client.post(f"/api/orders/{placed}/cancel", json={"reason": "changed plans"}, headers=auth)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "cancelled" and body["history"][-1]["reason"] == "changed plans"
    assert body["history"][-1]["by_role"] == "customer"
    again = await client.post(f"/api/orders/{placed}/cancel", json={}, headers=auth)
    assert again.status == 409

    on_the_way = await make_order(db, me, status="en_route")
    resp = await client.post(f"/api/orders/{on_the_way}/cancel", json={}, headers=auth)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "illegal_transition"
    resp = await client.post(f"/api/orders/{on_the_way}/cancel", json={"reason": "venue flooded"}, headers=admin)
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"

    someone_elses = await make_order(db, await make_user(db))
    assert (await client.post(f"/api/orders/{someone_elses}/cancel", json={}, headers=auth)).status == 404
    partner = bearer(token_for(await make_partner(db), "partner"))
    assert (await client.post(f"/api/orders/{someone_elses}/cancel", json={}, headers=partner)).status == 403
    assert (await client.post("/api/orders/nope/cancel", json={}, headers=admin)).status == 404


async def test_review_once_after_completion_drives_the_package_rating(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    me = await make_user(db)
    auth = bearer(token_for(me, "customer"))
    done = await make_order(db, me, package_id, status="completed")
    also_done = await make_order(db, me, package_id, status="completed")
    pending = await make_order(db, me, package_id, status="assigned")
    assert "rating_avg" not in await (await client.get(f"/api/packages/{package_id}")).json()

    resp = await client.post(f"/api/orders/{done}/review", json={"rating": 5, "text": "Wonderful"}, headers=auth)
    assert resp.status == 201
    assert (await client.post(f"/api/orders/{also_done}/review", json={"rating": 2}, headers=auth)).status == 201
    package = await (await client.get(f"/api/packages/{package_id}")).json()
    assert package["rating_avg"] == 3.5 and package["rating_count"] == 2

    twice = await client.post(f"/api/orders/{done}/review", json={"rating": 1}, headers=auth)
    assert twice.status == 409 and (await twice.json())["error"]["code"] == "already_reviewed"
    early = await client.post(f"/api/orders/{pending}/review", json={"rating": 4}, headers=auth)
    assert early.status == 409 and (await early.json())["error"]["code"] == "not_completed"
    stranger = bearer(token_for(await make_user(db), "customer"))
    assert (await client.post(f"/api/orders/{done}/review", json={"rating": 4}, headers=stranger)).status == 404
    bad = await client.post(f"/api/orders/{done}/review", json={"rating": 6}, headers=auth)
    assert bad.status == 422 and (await bad.json())["error"]["details"][0]["field"] == "rating"
    assert (await client.post("/api/orders/nope/review", json={"rating": 4}, headers=auth)).status == 404


async def test_cancel_racing_accept_ends_cancelled_with_an_exact_history(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    from tests.helpers import offer_to

    db = db_of(client.app)
    me = await make_user(db)
    partner = await make_partner(db)
    auth, partner_auth = bearer(token_for(me, "customer")), bearer(token_for(partner, "partner"))
    for _ in range(5):
        order_id = await make_order(db, me)
        await offer_to(db, order_id, [partner])
        cancel, accept = await asyncio.gather(
            client.post(f"/api/orders/{order_id}/cancel", json={}, headers=auth),
            client.put(f"/api/partner/orders/{order_id}/accept", headers=partner_auth))
        # The customer may cancel an offered or an assigned order, so the cancel always lands:
        # either first (the accept then finds no open offer) or right after the accept.
        assert cancel.status == 200 and accept.status in (200, 409)
        order = await db.orders.find_one({"_id": order_id})
        assert order is not None and order["status"] == "cancelled"
        steps = ["placed", "assigned", "cancelled"] if accept.status == 200 else ["placed", "cancelled"]
        assert [h["status"] for h in order["history"]] == steps
        assert order["version"] == 2 + len(steps) - 1


async def test_parallel_reviews_of_one_order_store_one(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    me = await make_user(db)
    done = await make_order(db, me, package_id, status="completed")
    answers = await asyncio.gather(*(
        client.post(f"/api/orders/{done}/review", json={"rating": rating}, headers=bearer(token_for(me, "customer")))
        for rating in (1, 2, 3, 4, 5)))
    assert sorted(resp.status for resp in answers) == [201, 409, 409, 409, 409]
    assert await db.reviews.count_documents({"order_id": done}) == 1
    package = await db.packages.find_one({"_id": package_id})
    assert package is not None and package["rating_count"] == 1


async def test_contact_details_leave_the_partner_view_when_the_job_is_over(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    owner = await make_user(db, phone=unique_phone(), name="Meera Iyer")
    partner = await make_partner(db)
    order_id = await make_order(db, owner, status="completed", partner_id=partner)

    resp = await client.get(f"/api/orders/{order_id}", headers=bearer(token_for(partner, "partner")))
    assert resp.status == 200
    body = await resp.json()
    assert body["customer"] == {"name": "Meera", "phone": ""}
    assert "line1" not in body["address"] and "lat" not in body["address"]
    assert body["address"]["city"] == "Bengaluru"


async def test_customers_do_not_see_internal_ids_of_who_changed_their_order(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    owner = await make_user(db)
    order_id = await make_order(db, owner)
    resp = await client.get(f"/api/orders/{order_id}", headers=bearer(token_for(owner, "customer")))
    history = (await resp.json())["history"]
    assert history and all("by" not in entry and entry["by_role"] for entry in history)


async def test_a_tracking_link_shows_the_order_without_signing_in(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    owner = await make_user(db)
    partner = await make_partner(db)
    order_id = await make_order(db, owner, status="assigned", partner_id=partner)
    stranger = await make_user(db)

    assert (await client.post(f"/api/orders/{order_id}/tracking-link",
                              headers=bearer(token_for(stranger, "customer")))).status == 404
    resp = await client.post(f"/api/orders/{order_id}/tracking-link", headers=bearer(token_for(owner, "customer")))
    assert resp.status == 201
    link = await resp.json()
    assert link["url"].endswith(f"/track?t={link['token']}") and link["expires_at"].endswith("Z")

    seen = await client.get("/api/track", params={"t": link["token"]})
    assert seen.status == 200
    view = await seen.json()
    assert view["id"] == order_id and view["status"] == "assigned"
    assert view["partner"] == {"first_name": "Ravi"}
    assert "line1" not in view["address"] and view["address"]["city"] == "Bengaluru"
    assert all(set(entry) == {"status", "at"} for entry in view["history"])
    assert "customer_id" not in view and "price" not in view

    # The link is not an access token, an access token is not a link, and tampering is caught.
    assert (await client.get(f"/api/orders/{order_id}", headers=bearer(link["token"]))).status == 401
    assert (await client.get("/api/track", params={"t": token_for(owner, "customer")})).status == 401
    assert (await client.get("/api/track", params={"t": link["token"][:-2] + "xx"})).status == 401
    assert (await client.get("/api/track")).status == 422


async def test_no_tracking_link_for_a_finished_order(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    db = db_of(client.app)
    owner = await make_user(db)
    order_id = await make_order(db, owner, status="completed")
    resp = await client.post(f"/api/orders/{order_id}/tracking-link", headers=bearer(token_for(owner, "customer")))
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "order_finished"
