"""/api routes: customer."""

from __future__ import annotations

from api.routing import RouteTable

routes = RouteTable("customer")
