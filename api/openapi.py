"""OpenAPI 3.1 generated from the route tables, served at /api/openapi.json and /api/docs."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from api.routing import Route

_PARAM = re.compile(r"{(\w+)}")
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}},
}


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}

    def ref(model: type[Any]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for route in routes:
        op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag],
                              "operationId": route.handler.__name__}
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        if route.query is not None:
            for name, info in route.query.model_fields.items():
                params.append({"name": info.alias or name, "in": "query", "required": info.is_required(),
                               "description": info.description or "",
                               "schema": {"type": "string"}})
        for header in route.headers:
            params.append({"name": header, "in": "header", "required": False, "schema": {"type": "string"}})
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(route.body)}}}
        ok: dict[str, Any] = {"description": "success"}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": ref(route.response)}}
        responses: dict[str, Any] = {str(route.status): ok}
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if route.roles is not None:
            op["security"] = [{"bearer": []}]
            responses["401"] = {"description": "missing, invalid or expired token", **error}
            responses["403"] = {"description": "role or ownership does not allow this", **error}
        if route.body is not None:
            # What core.http.read_json answers before the body reaches its model.
            responses["400"] = {"description": "the body is missing or not valid JSON (invalid_json)", **error}
            responses["413"] = {"description": "the body is too large", **error}
            responses["415"] = {"description": "the body is not sent as application/json", **error}
        if route.body is not None or route.query is not None:
            responses["422"] = {"description": "validation failed; details per field", **error}
        for status, text in route.extra_responses.items():
            if status < 400:  # another success (a replayed create, say): the success body, not the envelope
                responses[str(status)] = {**ok, "description": text}
                continue
            known = responses.get(str(status), {}).get("description")
            responses[str(status)] = {"description": f"{text}; or {known}" if known else text, **error}
        op["responses"] = responses
        paths.setdefault("/api" + route.path, {})[route.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": "PartyPilot API", "version": version,
                 "description": "REST companion of the PartyPilot dispatch engine. Errors use one envelope: "
                                "{\"error\": {\"code\", \"message\", \"details\"}}."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


DOCS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>PartyPilot API</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="stylesheet" href="/css/app.css">
<link rel="icon" href="/img/logo.svg" type="image/svg+xml">
</head><body class="docs"><main><h1>PartyPilot API</h1><p>Generated from
<a href="/api/openapi.json">/api/openapi.json</a>.</p><div id="ops"></div></main>
<script type="module" src="/js/apidocs.js"></script></body></html>"""


def add_openapi_routes(app: web.Application, routes: list[Route], version: str) -> None:
    cache: dict[str, bytes] = {}

    async def openapi(request: web.Request) -> web.Response:
        if "doc" not in cache:
            from core import jsonutil

            cache["doc"] = jsonutil.dumpb(build_openapi(routes, version))
        return web.Response(body=cache["doc"], content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_PAGE, content_type="text/html")

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
