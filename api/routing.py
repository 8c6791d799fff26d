"""Route tables: each endpoint declares its body, query, auth and response next to the handler.

The same declarations validate requests and generate the OpenAPI document, so the two cannot
drift apart.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from core.http import read_body, read_query
from core.tokens import Claims, Role

RouteHandler = Callable[..., Awaitable[web.StreamResponse]]
# Another status a route answers: its description, and for a status whose body is not the error
# envelope (a 503 health report, say) the model of that body.
Answer = str | tuple[str, type[BaseModel]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: RouteHandler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    roles: tuple[Role, ...] | None = None
    approved_partner: bool = True
    extra_responses: dict[int, Answer] = field(default_factory=dict)
    headers: tuple[str, ...] = ()
    media_type: str = "application/json"  # of the success body; anything else is documented as a string


class RouteTable:
    """Collects the routes of one module; `api.create_api` registers every table."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, summary: str, body: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
              status: int = 200, roles: tuple[Role, ...] | None = None, approved_partner: bool = True,
              responses: dict[int, Answer] | None = None, headers: tuple[str, ...] = (),
              media_type: str = "application/json") -> Callable[[RouteHandler], RouteHandler]:
        """Declare an endpoint. The handler gets `body`, `query` and `user` keyword arguments
        (only those it declares), already validated and authenticated.

        A JSON endpoint must name its `response` model: clients are generated from the document,
        and an untyped answer would leave them a bare object."""
        if response is None and media_type == "application/json":
            raise TypeError(f"{method} {path}: declare response=<a pydantic model of what the handler returns>")

        def decorate(handler: RouteHandler) -> RouteHandler:
            params = inspect.signature(handler).parameters
            wrapped = _wrap(handler, body, query, roles, approved_partner, params)
            self.routes.append(Route(method, path, wrapped, summary, self.tag, body, query, response, status,
                                     roles, approved_partner, responses or {}, headers, media_type))
            return handler

        return decorate

    def get(self, path: str, **kw: Any) -> Callable[[RouteHandler], RouteHandler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[RouteHandler], RouteHandler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[RouteHandler], RouteHandler]:
        return self.route("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[RouteHandler], RouteHandler]:
        return self.route("DELETE", path, **kw)


def _wrap(handler: RouteHandler, body: type[BaseModel] | None, query: type[BaseModel] | None,
          roles: tuple[Role, ...] | None, approved_partner: bool,
          params: Any) -> RouteHandler:
    from api.security import authenticate

    @functools.wraps(handler)
    async def endpoint(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        # Authenticate before reading the body: an anonymous caller learns nothing about validation.
        if roles is not None:
            claims: Claims = await authenticate(request, roles, approved_partner=approved_partner)
            if "user" in params:
                kwargs["user"] = claims
        if query is not None:
            kwargs["query"] = read_query(request, query)
        if body is not None:
            kwargs["body"] = await read_body(request, body)
        return await handler(request, **kwargs)

    return endpoint
