"""/api routes: partner."""

from __future__ import annotations

from api.routing import RouteTable

routes = RouteTable("partner")
