"""A package's reviews, read by anyone: GET /api/packages/{id}/reviews (newest first, paged, the
reviewer's first name only) and the package page that shows them with its rating."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.settings import Settings
from core.tokens import Role
from tests.browser_helpers import Chromium, browse, chromium
from tests.helpers import db_of, make_package, make_user
from tests.test_pages import Site, start_site

__all__ = ["chromium"]  # the module-scoped browser fixture

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                         "has_touch": True, "timezone_id": "Asia/Kolkata"}


async def add_review(db: Any, package_id: str, name: str | None, rating: int, text: str, day: int) -> str:
    """A stored review as api/reviews.py writes one, by a new customer called `name`."""
    customer_id = await make_user(db, name=name, email=f"{uuid.uuid4().hex[:8]}@example.com")
    order_id = uuid.uuid4().hex
    await db.reviews.insert_one({"_id": order_id, "order_id": order_id, "package_id": package_id,
                                 "customer_id": customer_id, "rating": rating, "text": text,
                                 "created_at": f"2026-11-{day:02d}T10:00:00.000Z"})
    return customer_id


async def test_reviews_come_newest_first_a_page_at_a_time_with_first_names_only(
        client: TestClient[Any, Any]) -> None:
    db = db_of(client.app)
    package_id = await make_package(db)
    other_package = await make_package(db)
    customers = [await add_review(db, package_id, name, rating, text, day) for name, rating, text, day in [
        ("Meera Nair", 5, "The balloon arch was perfect.", 3),
        ("Arjun K Rao", 4, "Setup took a little longer.", 9),
        (None, 3, "", 6),
    ]]
    await add_review(db, other_package, "Someone Else", 1, "Not this package.", 10)

    res = await client.get(f"/api/packages/{package_id}/reviews", params={"limit": 2})
    assert res.status == 200
    first = await res.json()
    assert first["total"] == 3 and first["page"] == 1 and first["limit"] == 2
    assert [(r["reviewer"], r["rating"]) for r in first["items"]] == [("Arjun", 4), ("A customer", 3)]
    assert first["items"][0] == {"rating": 4, "text": "Setup took a little longer.", "reviewer": "Arjun",
                                 "created_at": "2026-11-09T10:00:00.000Z"}
    second = await (await client.get(f"/api/packages/{package_id}/reviews", params={"limit": 2, "page": 2})).json()
    assert [r["reviewer"] for r in second["items"]] == ["Meera"]
    # Nothing identifies the reviewer beyond a first name: no ids, no surnames, no emails.
    raw = str(first) + str(second)
    assert "Nair" not in raw and "Rao" not in raw and "@" not in raw
    assert all(customer not in raw for customer in customers)


async def test_reviews_of_an_unknown_package_are_a_404_in_the_error_envelope(client: TestClient[Any, Any]) -> None:
    res = await client.get("/api/packages/nope/reviews")
    assert res.status == 404
    body = await res.json()
    assert body["error"]["code"] == "package_not_found"


async def test_a_package_without_reviews_has_an_empty_first_page(client: TestClient[Any, Any]) -> None:
    package_id = await make_package(db_of(client.app))
    body = await (await client.get(f"/api/packages/{package_id}/reviews")).json()
    assert body == {"items": [], "total": 0, "page": 1, "limit": 20}


@pytest.fixture
async def site(aiohttp_server: Any, make_settings: Callable[..., Settings], redis: Redis,
               token_for: Callable[[str, Role], str]) -> Site:
    return await start_site(aiohttp_server, make_settings, redis, token_for)


@pytest.mark.browser
async def test_the_package_page_shows_its_rating_and_reviews_newest_first(site: Site, chromium: Chromium) -> None:
    package = await site.add_package("Unicorn Garden Party")
    for i in range(7):
        await add_review(site.db, package["id"], f"Guest{i} Surname", 5 if i % 2 else 4, f"Review number {i}.", i + 1)
    await site.db.packages.update_one({"_id": package["id"]}, {"$set": {"rating_avg": 4.43, "rating_count": 7}})
    async with browse(chromium, **PHONE) as b:
        page = b.page
        await page.goto(site.url + f"/customer#package={package['id']}")
        section = page.get_by_role("region", name="Reviews")
        reviews = section.get_by_role("list", name="Reviews, newest first").get_by_role("listitem")
        await reviews.nth(4).wait_for()
        assert await reviews.count() == 5
        assert await section.locator("#rating-summary").inner_text() == "★ 4.4 out of 5 · 7 reviews"
        first = await reviews.first.inner_text()
        assert "Guest6" in first and "Surname" not in first
        assert "7 Nov 2026" in first  # the date in the site's locale
        assert "Review number 6." in first
        assert await reviews.first.get_by_role("img", name="Rated 4 out of 5").count() == 1
        more = section.get_by_role("button", name="Show more reviews")
        box = await more.bounding_box()
        assert box is not None and box["height"] >= 44
        await more.click()
        await reviews.nth(6).wait_for()
        assert "Guest0" in await reviews.nth(6).inner_text()
        assert await more.is_hidden()  # all seven shown
        b.assert_no_errors()


@pytest.mark.browser
async def test_a_package_without_reviews_says_so(site: Site, chromium: Chromium) -> None:
    package = await site.add_package("Quiet Tea Party")
    async with browse(chromium, **PHONE) as b:
        await b.page.goto(site.url + f"/customer#package={package['id']}")
        section = b.page.get_by_role("region", name="Reviews")
        await section.get_by_text(re.compile("No reviews yet")).first.wait_for()
        assert await section.get_by_role("button", name="Show more reviews").is_hidden()
