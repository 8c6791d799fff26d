"""/api routes: auth."""

from __future__ import annotations

from api.routing import RouteTable

routes = RouteTable("auth")
