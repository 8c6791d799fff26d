"""/api routes: users."""

from __future__ import annotations

from api.routing import RouteTable

routes = RouteTable("users")
