"""Response shapes shared across modules: the list envelope and the entries of a status history.

A route's own response models live beside the view functions that build its answers (a package in
`api.catalog`, an order in `api.orders`, a payment in `api.payments`); `api.routing` requires every
JSON route to declare one, so the OpenAPI document has no untyped answers.

Two conventions keep the models honest about what handlers send:
- a view of a stored document (an order, a partner, a payment) is open (`extra="allow"`): it lists
  the fields clients may rely on, and the document may carry more (timestamps of each state, say);
  a view built field by field (a package, an offer, statistics) is closed (`extra="forbid"`), so a
  field added to the handler without its model fails the schema checks in the suite;
- a field the view leaves out when it has no value is typed `X | None = None` (absent or null).
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from api.paging import MAX_LIMIT

Item = TypeVar("Item")


def _config(extra: Literal["forbid", "allow"], examples: tuple[dict[str, Any], ...]) -> ConfigDict:
    if not examples:
        return ConfigDict(extra=extra)
    return ConfigDict(extra=extra, json_schema_extra={"examples": list(examples)})


def closed(*examples: dict[str, Any]) -> ConfigDict:
    """The config of a view built field by field: no other field appears."""
    return _config("forbid", examples)


def open_ended(*examples: dict[str, Any]) -> ConfigDict:
    """The config of a view of a stored document: it may carry fields beyond those listed."""
    return _config("allow", examples)


class Page(BaseModel, Generic[Item]):
    """One page of a list (api.paging.page_body). Each list declares its own subclass, so the
    document names it (`PackagePage`, not `Page[PackageView]`)."""

    model_config = closed()

    items: list[Item]
    total: int = Field(ge=0, description="every match, not just this page")
    page: int = Field(ge=1, description="echoes the query")
    limit: int = Field(ge=1, le=MAX_LIMIT, description="echoes the query (after capping)")


class HistoryEntry(BaseModel):
    """One status change of an order or a payment. Admins also see `by`, the actor's id."""

    model_config = open_ended()

    status: str
    at: str = Field(description="ISO-8601, UTC")
    by_role: str | None = Field(None, description="customer, partner, admin, system or provider")
    reason: str | None = None
