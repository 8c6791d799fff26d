"""OpenAPI 3.1 generated from the route tables, served at /api/openapi.json; /api/docs is Swagger UI over it.

Everything a client generator needs comes from the declarations in `api.routing`: path and query
parameters typed from the query model (bounds, enums, defaults), request bodies, a success schema for
every operation (its declared response model, which `api.routing` requires of every JSON route; lists
are per-item envelopes such as `PackagePage`), examples taken from the models, and the error envelope
for every status an operation can answer, with its codes.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from api.paging import PageQuery
from api.routing import Route
from core import errors
from core.http import UnsupportedMediaType

_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"
BEARER = "bearer"
REFRESH_COOKIE_SCHEME = "refreshCookie"
REFRESH_COOKIE = "__Host-pp_refresh"  # api.auth.REFRESH_COOKIE; a test keeps the two equal

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error, whatever the status: a stable machine-readable code, a safe message, and "
                   "details where the code has them (a field list for validation_error, retry_after for "
                   "rate_limited).",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "stable; branch on this, not on the message"},
        "message": {"type": "string", "description": "for people; may change"},
        "details": {"description": "depends on the code"}}}},
}
FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["field", "message", "type"],
    "properties": {"field": {"type": "string", "description": "dotted path of the field, or `body`"},
                   "message": {"type": "string"}, "type": {"type": "string", "description": "pydantic's error type"}},
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 0}}}


def _error_codes() -> dict[int, list[str]]:
    """Status -> the default codes of the domain errors (core/errors.py) that answer it."""
    found: dict[int, list[str]] = {}
    pending: list[type[errors.AppError]] = [errors.AppError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.status != 500:
            found.setdefault(cls.status, []).append(cls.default_code)
    found.setdefault(UnsupportedMediaType.status, [UnsupportedMediaType.default_code])
    return found


def _error_example(status: int, codes: dict[int, list[str]], text: str) -> dict[str, Any]:
    code = (codes.get(status) or ["error"])[0]
    details: Any = None
    if status == 422:
        details = [{"field": "guests", "message": "Input should be greater than or equal to 1",
                    "type": "greater_than_equal"}]
    elif status == 429:
        details = {"retry_after": 30}
    return {"error": {"code": code, "message": text.split(";")[0], "details": details}}


def _parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A query model's field as a query parameter: a query string cannot carry null, so `X | None`
    (an optional filter) is documented as X."""
    schema = dict(schema)
    options = schema.pop("anyOf", None)
    if options is not None:
        concrete = [s for s in options if s.get("type") != "null"]
        if len(concrete) == 1:
            schema = {**concrete[0], **schema}
        else:
            schema["anyOf"] = concrete
    if schema.get("default", 0) is None:
        del schema["default"]
    schema.pop("title", None)
    return schema


def _path_description(path: str, name: str) -> str:
    before = path.split("{" + name + "}")[0].rstrip("/").rsplit("/", 1)[-1]
    if name == "id" and before:
        noun = before[:-1] if before.endswith("s") else before
        return f"the {noun}'s id"
    return f"the {name.replace('_', ' ')}"


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, "FieldError": FIELD_ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    codes = _error_codes()

    def add(name: str, schema: dict[str, Any]) -> None:
        # Components are keyed by class name: two different models of one name would silently
        # share a schema, so that is refused here rather than found by a client.
        if schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name}: rename one of the models")

    def add_defs(schema: dict[str, Any]) -> dict[str, Any]:
        for name, sub in schema.pop("$defs", {}).items():
            add(name, sub)
        return schema

    def ref(model: type[BaseModel]) -> dict[str, str]:
        add(model.__name__, add_defs(model.model_json_schema(ref_template=_REF)))
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def json_content(model: type[BaseModel]) -> dict[str, Any]:
        media: dict[str, Any] = {"schema": ref(model)}
        examples = schemas[model.__name__].get("examples")
        if examples:  # Swagger UI shows the media type's example; the schema keeps them all
            media["example"] = examples[0]
        return {"application/json": media}

    def error(status: int, text: str) -> dict[str, Any]:
        schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        described = text
        if codes.get(status):
            described = f"{text} (default code: {', '.join(codes[status])})"
        answer: dict[str, Any] = {"description": described, "content": {"application/json": {
            "schema": schema, "example": _error_example(status, codes, text)}}}
        if status == 429:
            answer["headers"] = _RETRY_AFTER
        return answer

    for route in routes:
        op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag],
                              "operationId": route.handler.__name__}
        if route.handler.__doc__:
            op["description"] = " ".join(route.handler.__doc__.split())
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "description": _path_description(route.path, name),
             "schema": {"type": "string", "minLength": 1}}
            for name in _PARAM.findall(route.path)
        ]
        if route.query is not None:
            query_schema = add_defs(route.query.model_json_schema(ref_template=_REF))
            required = set(query_schema.get("required", ()))
            for name, prop in query_schema.get("properties", {}).items():
                param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                         "schema": _parameter_schema(prop)}
                if "description" in param["schema"]:
                    param["description"] = param["schema"].pop("description")
                if issubclass(route.query, PageQuery) and name not in required:
                    # List queries take `?status=&q=` (an HTML form's "any") as absent: say so, or a
                    # client or fuzzer reads the empty value as a type error the server should refuse.
                    param["allowEmptyValue"] = True
                params.append(param)
        for header in route.headers:
            params.append({"name": header, "in": "header", "required": False, "schema": {"type": "string"}})
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(route.body)}}}

        ok: dict[str, Any] = {"description": "success"}
        if route.media_type != "application/json":
            ok["content"] = {route.media_type: {"schema": {"type": "string"}}}
        elif route.response is not None:
            ok["content"] = json_content(route.response)
        else:  # api.routing refuses such a declaration; a Route built by hand gets no untyped answer either
            raise ValueError(f"{route.method} {route.path} has no response model")
        if route.query is not None and "format" in route.query.model_fields:
            ok["description"] = "success; with format=csv, every match as CSV"
            ok["content"]["text/csv"] = {"schema": {"type": "string"}}
        responses: dict[str, Any] = {str(route.status): ok}

        if route.roles is not None:
            op["security"] = [{BEARER: []}]
            responses["401"] = error(401, "missing, invalid or expired token")
            responses["403"] = error(403, "role or ownership does not allow this")
        if route.body is not None:
            # What core.http.read_json answers before the body reaches its model.
            responses["400"] = error(400, "the body is missing or not valid JSON (invalid_json)")
            responses["413"] = error(413, "the body is too large")
            responses["415"] = error(415, "the body is not sent as application/json")
        if route.body is not None or route.query is not None:
            responses["422"] = error(422, "validation failed; details per field")
        for status, answer in route.extra_responses.items():
            if isinstance(answer, tuple):  # a status with a body of its own (the health report's 503)
                text, model = answer
                responses[str(status)] = {"description": text, "content": json_content(model)}
                continue
            text = answer
            if status < 400:  # another success (a replayed create, say): the success body, not the envelope
                responses[str(status)] = {**ok, "description": text}
                continue
            known = responses.get(str(status), {}).get("description")
            responses[str(status)] = error(status, f"{text}; or {known}" if known else text)
        op["responses"] = dict(sorted(responses.items()))
        paths.setdefault("/api" + route.path, {})[route.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": "PartyPilot API", "version": version,
                 "description": "REST companion of the PartyPilot dispatch engine. Sign in with "
                                "POST /api/auth/send-otp and /api/auth/verify-otp (or /api/auth/login); send the "
                                "access token as `Authorization: Bearer …`. Browsers also get the refresh token "
                                f"in the `{REFRESH_COOKIE}` cookie for POST /api/auth/refresh. Money is in integer "
                                "minor units. Errors use one envelope: "
                                "{\"error\": {\"code\", \"message\", \"details\"}}."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                     "description": "the access_token of a sign-in or refresh answer (15 minutes)"},
            REFRESH_COOKIE_SCHEME: {"type": "apiKey", "in": "cookie", "name": REFRESH_COOKIE,
                                    "description": "set by sign-in for browsers (HttpOnly, Secure, SameSite=Strict); "
                                                   "read only by POST /api/auth/refresh and /api/auth/logout, "
                                                   "which also take the token in the body"}}},
    }


# Swagger UI, vendored by scripts/vendor.sh and started by /js/apidocs.js: no inline script, so the
# page works under the content-security policy nginx sets (script-src 'self').
DOCS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>PartyPilot API</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="/img/logo.svg" type="image/svg+xml">
<link rel="stylesheet" href="/vendor/swagger-ui/swagger-ui.css">
</head><body><div id="swagger-ui"><p>Loading the API description from
<a href="/api/openapi.json">/api/openapi.json</a>…</p></div>
<script src="/vendor/swagger-ui/swagger-ui-bundle.js"></script>
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
