"""/api/packages: the public catalog, served from the in-memory snapshot (see api/catalog.py)."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase

from api import reviews
from api.catalog import CATEGORIES, PackagePage, PackageView, Snapshot, catalog_ctx, catalog_of
from api.paging import PageQuery, page_body
from api.routing import RouteTable
from api.schemas import closed
from api.search import matches, package_text, query_words
from core import jsonutil, keys
from core.errors import NotFound
from core.http import json_response

routes = RouteTable("packages")
CONTEXTS = [catalog_ctx]

Category = Literal["Kids", "Weddings", "Corporate", "Casual", "Festival", "Themed"]
Sort = Literal["price_asc", "price_desc", "rating", "newest", "name"]


class PackageQuery(PageQuery):
    q: str | None = Field(None, max_length=100,
                          description="words that must all be found in the name, description, category, tags "
                                      "or features (prefixes, plurals and small typos count)")
    category: Category | None = None
    tag: str | None = Field(None, max_length=50)
    min_price: int | None = Field(None, ge=0, description="minor units")
    max_price: int | None = Field(None, ge=0, description="minor units")
    sort: Sort = Field("name", description="price_asc, price_desc, rating, newest or name")


class CategoryCount(BaseModel):
    model_config = closed()
    name: str
    count: int = Field(ge=0, description="active packages in it")


class Categories(BaseModel):
    """Every category, empty ones included, in a fixed order."""

    model_config = closed({"items": [{"name": "Kids", "count": 9}, {"name": "Weddings", "count": 6},
                                     {"name": "Corporate", "count": 5}, {"name": "Casual", "count": 6},
                                     {"name": "Festival", "count": 4}, {"name": "Themed", "count": 4}]})
    items: list[CategoryCount]


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.packages.create_index("slug", unique=True)
    await db.packages.create_index([("active", 1), ("category", 1)])


def _matches(package: dict[str, Any], query: PackageQuery, words: list[str]) -> bool:
    if query.category is not None and package["category"] != query.category:
        return False
    if query.tag is not None and query.tag.lower() not in (t.lower() for t in package["tags"]):
        return False
    if query.min_price is not None and package["price"] < query.min_price:
        return False
    if query.max_price is not None and package["price"] > query.max_price:
        return False
    # User input is never a pattern: words are compared as text (api/search.py).
    return not words or matches(package_text(package), words)


def _sort_key(sort: str) -> Any:
    if sort == "price_asc":
        return lambda p: (p["price"], p["name"])
    if sort == "price_desc":
        return lambda p: (-p["price"], p["name"])
    if sort == "rating":
        return lambda p: (-(p.get("rating_avg") or 0.0), -p["rating_count"], p["name"])
    return lambda p: (p["name"].lower(), p["id"])


def search(snap: Snapshot, query: PackageQuery) -> dict[str, Any]:
    """Filter, sort and page the snapshot."""
    words = query_words(query.q)
    found = [p for p in snap.packages if _matches(p, query, words)]
    found.sort(key=_sort_key(query.sort))
    if query.sort == "newest":
        # Stable sort: newest first, ties keep the name order from the first pass.
        found.sort(key=lambda p: p["created_at"], reverse=True)
    return {"items": found[query.skip:query.skip + query.limit], "total": len(found),
            "page": query.page, "limit": query.limit}


@routes.get("/packages", summary="Browse and search the active packages", query=PackageQuery,
            response=PackagePage)
async def list_packages(request: web.Request, *, query: PackageQuery) -> web.Response:
    snap = await catalog_of(request).snapshot()
    key = ("list", *query.model_dump().values())
    body = snap.responses.get(key)
    if body is None:
        body = snap.remember(key, jsonutil.dumpb(search(snap, query)))
    return web.Response(body=body, content_type="application/json")


@routes.get("/packages/categories", summary="Categories with the number of active packages in each",
            response=Categories)
async def list_categories(request: web.Request) -> web.Response:
    snap = await catalog_of(request).snapshot()
    body = snap.responses.get("categories")
    if body is None:
        counts = {name: 0 for name in CATEGORIES}
        for package in snap.packages:
            counts[package["category"]] = counts.get(package["category"], 0) + 1
        items = [{"name": name, "count": count} for name, count in counts.items()]
        body = snap.remember("categories", jsonutil.dumpb({"items": items}))
    return web.Response(body=body, content_type="application/json")


@routes.get("/packages/{id}", summary="One active package", response=PackageView,
            responses={404: "no such active package"})
async def get_package(request: web.Request) -> web.Response:
    snap = await catalog_of(request).snapshot()
    package = snap.by_id.get(request.match_info["id"])
    if package is None:
        raise NotFound("no such package", code="package_not_found")
    return web.Response(body=jsonutil.dumpb(package), content_type="application/json")


@routes.get("/packages/{id}/reviews", summary="A package's reviews, newest first (reviewers by first name)",
            query=PageQuery, response=reviews.ReviewPage, responses={404: "no such active package"})
async def list_package_reviews(request: web.Request, *, query: PageQuery) -> web.Response:
    package_id = request.match_info["id"]
    if package_id not in (await catalog_of(request).snapshot()).by_id:
        raise NotFound("no such package", code="package_not_found")
    items, total = await reviews.package_reviews(request.config_dict[keys.DB], package_id, query)
    return json_response(page_body(items, total, query))
