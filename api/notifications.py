"""/api routes: notifications."""

from __future__ import annotations

from api.routing import RouteTable

routes = RouteTable("notifications")
