"""Reviews: one per completed order, by its customer; package ratings derive from them."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from api.catalog import Catalog
from api.paging import PageQuery, find_page
from api.schemas import Page, closed
from core.errors import Conflict, NotFound
from core.jsonutil import iso

logger = logging.getLogger(__name__)

# A reviewer without a name on their account is not named by anything else (never an email or phone).
NO_NAME = "A customer"


class ReviewView(BaseModel):
    """A review as anyone may read it: the reviewer's first name only, no ids."""

    model_config = closed({"rating": 5, "text": "The balloon arch was perfect.", "reviewer": "Meera",
                           "created_at": "2026-11-28T14:05:00.000Z"})

    rating: int = Field(ge=1, le=5)
    text: str
    reviewer: str = Field(description="the reviewer's first name, or 'A customer'")
    created_at: str = Field(description="ISO-8601, UTC")


class ReviewPage(Page[ReviewView]):
    """A package's reviews, newest first."""


def first_name(name: Any) -> str:
    words = str(name or "").split()
    return words[0] if words else NO_NAME


async def package_reviews(db: AsyncDatabase[dict[str, Any]], package_id: str, query: PageQuery,
                          ) -> tuple[list[dict[str, Any]], int]:
    """One page of `package_id`'s reviews, newest first, as ReviewView dicts, and how many in all."""
    docs, total = await find_page(db.reviews, {"package_id": package_id}, query,
                                  [("created_at", -1), ("_id", -1)],
                                  {"rating": 1, "text": 1, "customer_id": 1, "created_at": 1})
    ids = list({doc["customer_id"] for doc in docs})
    names = {user["_id"]: user.get("name") for user in
             await db.users.find({"_id": {"$in": ids}}, {"name": 1}).to_list(None)} if ids else {}
    items = [{"rating": int(doc["rating"]), "text": str(doc.get("text") or ""),
              "reviewer": first_name(names.get(doc["customer_id"])), "created_at": doc["created_at"]}
             for doc in docs]
    return items, total


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.reviews.create_index([("package_id", 1), ("created_at", -1)])


async def add_review(db: AsyncDatabase[dict[str, Any]], catalog: Catalog, *, order_id: str, customer_id: str,
                     rating: int, text: str) -> dict[str, Any]:
    """Record the review of `order_id` and refresh its package's rating.

    The review's `_id` is the order id, so a second review of the same order fails on the
    unique key even when two requests race past the checks below.
    """
    order = await db.orders.find_one({"_id": order_id}, {"customer_id": 1, "status": 1, "package_id": 1})
    if order is None or order.get("customer_id") != customer_id:
        raise NotFound("no such order")
    if order.get("status") != "completed":
        raise Conflict("only a completed order can be reviewed", code="not_completed",
                       details={"status": order.get("status")})
    review = {"_id": order_id, "order_id": order_id, "package_id": order["package_id"],
              "customer_id": customer_id, "rating": rating, "text": text, "created_at": iso()}
    try:
        await db.reviews.insert_one(review)
    except DuplicateKeyError:
        raise Conflict("this order has already been reviewed", code="already_reviewed") from None
    await db.orders.update_one({"_id": order_id}, {"$set": {"reviewed": 1}})
    await refresh_rating(db, str(order["package_id"]))
    await catalog.changed()
    return review


async def refresh_rating(db: AsyncDatabase[dict[str, Any]], package_id: str) -> None:
    """Recompute the package's average and count from its reviews (never incremented in place,
    so a failure part-way is repaired by the next review)."""
    cursor = await db.reviews.aggregate([
        {"$match": {"package_id": package_id}},
        {"$group": {"_id": "$package_id", "avg": {"$avg": "$rating"}, "count": {"$sum": 1}}},
    ])
    rows = await cursor.to_list()
    if not rows:
        return
    avg = round(float(rows[0]["avg"]), 2)
    await db.packages.update_one({"_id": package_id},
                                 {"$set": {"rating_avg": avg, "rating_count": int(rows[0]["count"])}})
