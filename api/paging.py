"""Pagination shared by every list endpoint: `?page=&limit=` in, `{items,total,page,limit}` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pymongo.asynchronous.collection import AsyncCollection

MAX_LIMIT = 100


class PageQuery(BaseModel):
    """`page` from 1; `limit` capped at 100 (a larger value is clamped, not refused)."""

    model_config = ConfigDict(extra="ignore")

    page: int = Field(1, ge=1, le=1_000_000, description="page number, from 1")
    limit: int = Field(20, ge=1, description="items per page, at most 100")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        # HTML forms send `?status=&q=` for "any": an empty value means the filter is off.
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value != ""}
        return data

    @field_validator("limit")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, MAX_LIMIT)

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.limit


async def find_page(collection: AsyncCollection[dict[str, Any]], where: Mapping[str, Any], query: PageQuery,
                    sort: Sequence[tuple[str, int]], projection: Mapping[str, Any] | None = None,
                    ) -> tuple[list[dict[str, Any]], int]:
    """One page of `where` in `sort` order, and how many match in all.

    A page shorter than the limit is the last one, so its total is known without counting: the
    common case (a partner's current job, a customer's few orders) costs one query. Counting is
    an aggregation, the dearest read the embedded MongoDB server does.
    """
    docs = await collection.find(where, projection).sort(list(sort)).skip(query.skip).limit(query.limit).to_list(None)
    if len(docs) < query.limit and (docs or query.skip == 0):
        return docs, query.skip + len(docs)
    return docs, await collection.count_documents(where)


def page_body(items: list[Any], total: int, query: PageQuery) -> dict[str, Any]:
    return {"items": items, "total": total, "page": query.page, "limit": query.limit}


def public(doc: Mapping[str, Any], drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A stored document as the API shows it: `_id` becomes `id`; fields in `drop` are left out."""
    out: dict[str, Any] = {"id": str(doc["_id"])}
    for key, value in doc.items():
        if key != "_id" and key not in drop:
            out[key] = value
    return out
