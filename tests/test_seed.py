"""Demo data: a realistic catalog, approved demo partners and a demo customer, seeded idempotently."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from api.seed import DEMO_CUSTOMER_EMAIL, seed_demo_data
from core.settings import Settings
from tests.helpers import db_of

CATEGORIES = {"Kids", "Weddings", "Corporate", "Casual", "Festival", "Themed"}


async def test_seed_builds_a_browsable_catalog_and_is_idempotent(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    db = db_of(client.app)
    dev = settings.model_copy(update={"env": "development"})
    await seed_demo_data(db, dev)
    counts = {name: await db[name].count_documents({}) for name in ("packages", "partners", "users")}
    # An admin's edit survives a second seeding.
    await db.packages.update_one({"slug": "jungle-safari-birthday"}, {"$set": {"price": 1_234_500}})
    await seed_demo_data(db, dev)
    assert {name: await db[name].count_documents({}) for name in counts} == counts
    assert (await db.packages.find_one({"slug": "jungle-safari-birthday"}) or {})["price"] == 1_234_500

    resp = await client.get("/api/packages?limit=100")
    body = await resp.json()
    assert body["total"] >= 34
    packages = body["items"]
    assert {p["category"] for p in packages} == CATEGORIES
    assert len({p["slug"] for p in packages}) == len(packages)
    for package in packages:
        assert package["currency"] == "INR" and isinstance(package["price"], int)
        assert 50_000 <= package["price"] <= 50_000_000  # between Rs 500 and Rs 5 lakh, in paise
        assert package["capacity"] > 0 and package["duration_min"] >= 60
        assert package["features"] and package["tags"] and package["description"]
        assert "rating_avg" not in package
    for image in {p["images"][0] for p in packages}:
        resp = await client.get(image)
        assert resp.status == 200, image
        assert resp.content_type == "image/svg+xml"
        assert "<svg" in await resp.text()


async def test_seed_creates_approved_partners_a_customer_and_the_dev_admin(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    db = db_of(client.app)
    await seed_demo_data(db, settings.model_copy(update={"env": "development"}))
    for n in range(1, 13):
        user = await db.users.find_one({"email": f"partner{n}@partypilot.local"})
        assert user is not None and user["role"] == "partner"
        partner = await db.partners.find_one({"_id": user["_id"]})
        assert partner is not None and partner["status"] == "approved"
        assert partner["first_name"] and partner["phone"].startswith("+91")
    phones = [p["phone"] async for p in db.partners.find({}, {"phone": 1})]
    assert len(set(phones)) == 12
    customer = await db.users.find_one({"email": DEMO_CUSTOMER_EMAIL})
    assert customer is not None and customer["role"] == "customer"
    admin = await db.users.find_one({"email": settings.dev_admin_email})
    assert admin is not None and admin["role"] == "admin"


async def test_seed_outside_development_adds_no_admin(client: TestClient[Any, Any], settings: Settings) -> None:
    db = db_of(client.app)
    await seed_demo_data(db, settings)
    assert await db.users.count_documents({"role": "admin"}) == 0
    assert await db.packages.count_documents({"active": 1}) >= 34
