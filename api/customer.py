"""/api/users (customer side): my orders, my order statistics, my favourite packages."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from api.catalog import PackagePage, package_view
from api.orders import OrderListQuery, OrderPage, list_customer_orders
from api.paging import PageQuery, page_body
from api.routing import RouteTable
from api.schemas import closed
from core import keys
from core.errors import NotFound
from core.http import json_response
from core.jsonutil import iso
from core.orderflow import ACTIVE
from core.tokens import Claims

routes = RouteTable("customer")


class CustomerStats(BaseModel):
    model_config = closed({"orders_total": 7, "orders_active": 2, "orders_completed": 4, "orders_cancelled": 1,
                           "total_spent": 6_400_000, "currency": "INR"})
    orders_total: int
    orders_active: int = Field(description="not yet completed, cancelled or refunded")
    orders_completed: int
    orders_cancelled: int
    total_spent: int = Field(description="what completed orders cost, minor units")
    currency: str


class Favorite(BaseModel):
    model_config = closed({"package_id": "3f9c2a7e5b1d4c8e9a0b1c2d3e4f5a6b", "favorite": True})
    package_id: str
    favorite: bool = Field(description="whether it is a favourite now")


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.favorites.create_index([("user_id", 1), ("created_at", -1)])


@routes.get("/users/orders", summary="My orders, newest first, optionally by status", query=OrderListQuery,
            roles=("customer",), response=OrderPage)
async def user_orders(request: web.Request, *, query: OrderListQuery, user: Claims) -> web.Response:
    return json_response(await list_customer_orders(request.config_dict[keys.DB], user.user_id, query))


@routes.get("/users/stats", summary="My order counts and total spent", roles=("customer",), response=CustomerStats)
async def user_stats(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    cursor = await db.orders.aggregate([
        {"$match": {"customer_id": user.user_id}},
        {"$group": {"_id": "$status", "count": {"$sum": 1}, "amount": {"$sum": "$price"}}},
    ])
    by_status = {str(row["_id"]): row for row in await cursor.to_list()}
    completed = by_status.get("completed", {})
    return json_response({
        "orders_total": sum(int(row["count"]) for row in by_status.values()),
        "orders_active": sum(int(row["count"]) for status, row in by_status.items() if status in ACTIVE),
        "orders_completed": int(completed.get("count", 0)),
        "orders_cancelled": int(by_status.get("cancelled", {}).get("count", 0)),
        # What completed orders cost; cancelled and refunded ones are not money spent.
        "total_spent": int(completed.get("amount", 0)),
        "currency": request.config_dict[keys.SETTINGS].currency,
    })


@routes.get("/users/favorites", summary="My favourite packages, most recently added first", query=PageQuery,
            roles=("customer",), response=PackagePage)
async def list_favorites(request: web.Request, *, query: PageQuery, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    where = {"user_id": user.user_id}
    total = await db.favorites.count_documents(where)
    favs = await db.favorites.find(where).sort("created_at", -1).skip(query.skip).limit(query.limit).to_list(None)
    ids = [str(f["package_id"]) for f in favs]
    packages = {str(p["_id"]): p for p in await db.packages.find({"_id": {"$in": ids}}).to_list(None)}
    # An archived package stays in the list, marked inactive, so the customer sees why it vanished.
    items = [package_view(packages[pid]) for pid in ids if pid in packages]
    return json_response(page_body(items, total, query))


@routes.post("/users/favorites/{package_id}", summary="Add a package to my favourites", roles=("customer",),
             status=201, response=Favorite, responses={200: "it was a favourite already", 404: "no such package"})
async def add_favorite(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    package_id = request.match_info["package_id"]
    if await db.packages.count_documents({"_id": package_id}, limit=1) == 0:
        raise NotFound("no such package", code="package_not_found")
    try:
        await db.favorites.insert_one({"_id": f"{user.user_id}:{package_id}", "user_id": user.user_id,
                                       "package_id": package_id, "created_at": iso()})
    except DuplicateKeyError:
        return json_response({"package_id": package_id, "favorite": True}, status=200)
    return json_response({"package_id": package_id, "favorite": True}, status=201)


@routes.delete("/users/favorites/{package_id}", summary="Remove a package from my favourites",
               roles=("customer",), response=Favorite, responses={404: "no such package"})
async def remove_favorite(request: web.Request, *, user: Claims) -> web.Response:
    db = request.config_dict[keys.DB]
    package_id = request.match_info["package_id"]
    if await db.packages.count_documents({"_id": package_id}, limit=1) == 0:
        raise NotFound("no such package", code="package_not_found")
    await db.favorites.delete_one({"_id": f"{user.user_id}:{package_id}"})
    return json_response({"package_id": package_id, "favorite": False})
