"""The public catalog: search, filters, sorting, paging, and a cache that follows admin changes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from api.catalog import CATALOG_VERSION_KEY
from api.seed import PACKAGES, seed_packages
from core.settings import Settings
from partypilot.app import create_app
from tests.helpers import bearer, db_of, make_package, make_user


async def _catalog(app: web.Application) -> dict[str, str]:
    db = db_of(app)
    return {
        "cheap": await make_package(db, name="Balloon Basics", price=500_000, category="Kids",
                                    tags=["birthday", "balloons"], created_at="2026-01-01T00:00:00.000Z"),
        "mid": await make_package(db, name="Garden Mehendi", price=4_000_000, category="Weddings",
                                  description="Swings (and flowers) for the mehendi", tags=["mehendi"],
                                  features=["Swings"],
                                  created_at="2026-03-01T00:00:00.000Z", rating_avg=4.5, rating_count=2),
        "dear": await make_package(db, name="Royal Reception", price=9_000_000, category="Weddings",
                                   tags=["reception"], features=["Stage"], created_at="2026-02-01T00:00:00.000Z"),
        "archived": await make_package(db, name="Old Balloon Show", price=100_000, active=0),
    }


async def _names(client: TestClient[Any, Any], query: str) -> list[str]:
    resp = await client.get(f"/api/packages?{query}")
    assert resp.status == 200, await resp.text()
    return [p["name"] for p in (await resp.json())["items"]]


async def test_catalog_lists_active_packages_only(client: TestClient[Any, Any]) -> None:
    ids = await _catalog(client.app)
    resp = await client.get("/api/packages")
    body = await resp.json()
    assert body["total"] == 3 and body["page"] == 1 and body["limit"] == 20
    assert ids["archived"] not in {p["id"] for p in body["items"]}
    package = next(p for p in body["items"] if p["id"] == ids["cheap"])
    assert package["price"] == 500_000 and package["currency"] == "INR"
    # No invented rating before anyone reviewed it.
    assert "rating_avg" not in package and package["rating_count"] == 0


async def test_search_matches_name_description_and_tags_literally(client: TestClient[Any, Any]) -> None:
    await _catalog(client.app)
    assert await _names(client, "q=balloon") == ["Balloon Basics"]
    assert await _names(client, "q=FLOWERS") == ["Garden Mehendi"]
    assert await _names(client, "q=reception") == ["Royal Reception"]
    assert await _names(client, "q=(and") == ["Garden Mehendi"]
    # Regex syntax is text, not a pattern.
    assert await _names(client, "q=.*") == []
    assert await _names(client, "q=%5B") == []


async def test_filters_and_sorts(client: TestClient[Any, Any]) -> None:
    await _catalog(client.app)
    assert await _names(client, "category=Weddings&sort=price_asc") == ["Garden Mehendi", "Royal Reception"]
    assert await _names(client, "tag=BIRTHDAY") == ["Balloon Basics"]
    assert await _names(client, "min_price=1000000&max_price=5000000") == ["Garden Mehendi"]
    assert await _names(client, "sort=price_desc") == ["Royal Reception", "Garden Mehendi", "Balloon Basics"]
    assert await _names(client, "sort=newest") == ["Garden Mehendi", "Royal Reception", "Balloon Basics"]
    assert (await _names(client, "sort=rating"))[0] == "Garden Mehendi"


async def test_paging_and_limit_cap(client: TestClient[Any, Any]) -> None:
    await _catalog(client.app)
    resp = await client.get("/api/packages?sort=price_asc&limit=2&page=2")
    body = await resp.json()
    assert [p["name"] for p in body["items"]] == ["Royal Reception"]
    assert body["total"] == 3 and body["page"] == 2 and body["limit"] == 2
    assert (await (await client.get("/api/packages?limit=1000")).json())["limit"] == 100
    # An HTML form's empty fields mean "any".
    assert (await (await client.get("/api/packages?category=&q=&sort=price_asc")).json())["total"] == 3


async def test_bad_query_is_a_422_envelope_with_field_details(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/packages?sort=cheapest&min_price=-5&page=0")
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert {d["field"] for d in error["details"]} == {"sort", "min_price", "page"}


async def test_package_detail_and_unknown_or_archived_is_404(client: TestClient[Any, Any]) -> None:
    ids = await _catalog(client.app)
    resp = await client.get(f"/api/packages/{ids['mid']}")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "Garden Mehendi" and body["rating_avg"] == 4.5
    for missing in (ids["archived"], "nope"):
        resp = await client.get(f"/api/packages/{missing}")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "package_not_found"


async def test_categories_count_active_packages(client: TestClient[Any, Any]) -> None:
    await _catalog(client.app)
    body = await (await client.get("/api/packages/categories")).json()
    counts = {c["name"]: c["count"] for c in body["items"]}
    assert counts["Weddings"] == 2 and counts["Kids"] == 1 and counts["Themed"] == 0


async def test_cache_follows_admin_changes_in_this_process(
    client: TestClient[Any, Any], token_for: Callable[..., str]
) -> None:
    ids = await _catalog(client.app)
    admin = bearer(token_for(await make_user(db_of(client.app), "admin"), "admin"))
    assert "Royal Reception" in await _names(client, "")  # warm the cache

    resp = await client.put(f"/api/admin/packages/{ids['dear']}", json={"price": 123_400}, headers=admin)
    assert resp.status == 200
    detail = await (await client.get(f"/api/packages/{ids['dear']}")).json()
    assert detail["price"] == 123_400

    assert (await client.delete(f"/api/admin/packages/{ids['dear']}", headers=admin)).status == 200
    assert "Royal Reception" not in await _names(client, "")

    resp = await client.post("/api/admin/packages", headers=admin, json={
        "name": "Fresh Festival", "category": "Festival", "price": 700_000, "capacity": 30, "duration_min": 120})
    assert resp.status == 201
    assert "Fresh Festival" in await _names(client, "")


async def test_cache_in_another_process_sees_an_admin_change_promptly(
    client: TestClient[Any, Any], aiohttp_client: Any, settings: Settings, token_for: Callable[..., str]
) -> None:
    ids = await _catalog(client.app)
    # A second app on the same stores stands in for a second server process.
    other: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    assert (await (await other.get(f"/api/packages/{ids['cheap']}")).json())["price"] == 500_000

    admin = bearer(token_for(await make_user(db_of(client.app), "admin"), "admin"))
    resp = await client.put(f"/api/admin/packages/{ids['cheap']}", json={"price": 650_000}, headers=admin)
    assert resp.status == 200

    async def other_sees_new_price() -> None:
        while (await (await other.get(f"/api/packages/{ids['cheap']}")).json())["price"] != 650_000:
            await asyncio.sleep(0.05)

    # The pub/sub message makes this near-immediate; the per-second version check bounds it.
    await asyncio.wait_for(other_sees_new_price(), timeout=3)


async def test_a_lost_change_message_is_caught_by_the_version_check(
    client: TestClient[Any, Any], redis: Redis
) -> None:
    ids = await _catalog(client.app)
    assert "Balloon Basics" in await _names(client, "")
    # Another process wrote and bumped the version, but its pub/sub message never arrived.
    await db_of(client.app).packages.update_one({"_id": ids["cheap"]}, {"$set": {"name": "Balloon Deluxe"}})
    await redis.incr(CATALOG_VERSION_KEY)

    async def seen() -> None:
        while "Balloon Deluxe" not in await _names(client, ""):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(seen(), timeout=3)


async def test_every_search_the_page_suggests_finds_packages(client: TestClient[Any, Any]) -> None:
    """The search box's placeholder names examples; each one finds something in the demo catalog."""
    await seed_packages(db_of(client.app), "INR")
    html = (Path(__file__).resolve().parent.parent / "frontend" / "customer.html").read_text()
    placeholder = re.search(r'id="q"[^>]*placeholder="([^"]+)"', html)
    assert placeholder is not None
    terms = [t.strip(" ….") for t in placeholder.group(1).split(",")]
    assert len(terms) >= 3
    for term in terms:
        assert await _names(client, f"q={quote(term)}"), term


async def test_search_matches_every_word_across_category_features_plurals_typos_and_accents(
        client: TestClient[Any, Any]) -> None:
    await seed_packages(db_of(client.app), "INR")
    weddings = {p.name for p in PACKAGES["Weddings"]}
    assert set(await _names(client, "q=wedding&limit=100")) == weddings  # the category counts
    assert set(await _names(client, "q=WEDDINGS&limit=100")) == weddings  # and plurals
    assert set(await _names(client, "q=weding&limit=100")) == weddings  # and a typo
    assert await _names(client, "q=garden%20wedding") == ["Mehendi Garden Setup"]  # every word, anywhere
    assert await _names(client, "q=karaoke") == ["Karaoke Night"]
    assert await _names(client, "q=superhro") == ["Superhero Training Camp"]
    assert await _names(client, "q=snow%20machine") == ["Christmas Wonderland"]  # a feature
    assert "Royal Mandap Décor" in await _names(client, "q=mandap%20decor")  # accents fold
    assert await _names(client, "q=karaoke%20wedding") == []  # all words must match
    # A short word is not a typo of anything, and "lights" is not "nights".
    assert "Arabian Nights Lounge" not in await _names(client, "q=lights&limit=100")
