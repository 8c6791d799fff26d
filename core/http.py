"""HTTP plumbing shared by every handler: request ids, the error envelope, JSON in and out."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import jsonutil, keys, metrics
from core.errors import (
    AppError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from core.logs import request_id_var

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("partypilot.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

REQUEST_ID_HEADER = "X-Request-ID"
# Sec-Fetch-Site values a browser sends for a request our own pages (or the user, typing a URL)
# started; "same-site" is refused too, as a sibling subdomain may belong to someone else.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})
_STORE_DOWN = (ServerSelectionTimeoutError, AutoReconnect, ConnectionFailure, RedisConnectionError,
               RedisTimeoutError)


class UnsupportedMediaType(AppError):
    """415: a body that does not say it is JSON is never parsed as JSON."""

    status = 415
    default_code = "unsupported_media_type"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsonutil.dumpb(data), status=status, content_type="application/json",
                        headers=headers)


def error_response(error: AppError) -> web.Response:
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, MethodNotAllowed) and isinstance(error.details, dict):
        # RFC 9110 §15.5.6: a 405 names the methods the resource does support.
        headers["Allow"] = ", ".join(error.details.get("allowed") or ())
    return json_response(error.envelope(), status=error.status, headers=headers)


def _valid_request_id(value: str | None) -> bool:
    return bool(value) and len(value or "") <= 64 and all(c.isalnum() or c in "-_." for c in value or "")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take a sane X-Request-ID from the caller (e.g. nginx) or make one; echo it back."""
    incoming = request.headers.get(REQUEST_ID_HEADER)
    rid = incoming if incoming and _valid_request_id(incoming) else secrets.token_hex(8)
    token = request_id_var.set(rid)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        request_id_var.reset(token)


# What a request that matched no route is called in the access log and the metrics: the raw path
# would give every probe its own label (and could carry a token).
UNMATCHED_ROUTE = "unmatched"
# nginx's convention for "the client went away before the answer".
CLIENT_CLOSED = 499


def route_template(request: web.Request) -> str:
    """The matched route's canonical template (`/api/orders/{id}`), never the URL: no ids, no query."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One access-log line and one metrics sample per request, with the status the client got.

    Runs inside request_id_middleware (the line carries the id) and outside api_error_middleware
    (it sees the envelope's status, not the exception)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_template(request)
        labels = (request.method, route, str(status))
        metrics.HTTP_REQUESTS.labels(*labels).inc()
        metrics.HTTP_LATENCY.labels(*labels).observe(elapsed)
        claims = request.get(keys.CLAIMS)
        latency_ms = round(elapsed * 1000, 1)
        user_id = claims.user_id if claims is not None else None
        access_logger.info("%s %s %d %.1fms user=%s", request.method, route, status, latency_ms, user_id or "-",
                           extra={"method": request.method, "route": route, "status": status,
                                  "latency_ms": latency_ms, "user_id": user_id})


_HTTP_CODES = {
    400: BadRequest, 404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge,
}


@web.middleware
async def api_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every 4xx/5xx under /api leaves as the one JSON envelope; nothing leaks a stack trace."""
    if not request.path.startswith("/api"):
        return await handler(request)
    try:
        return await handler(request)
    except AppError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc))
    except _STORE_DOWN as exc:
        logger.warning("store unavailable during %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_response(ServiceUnavailable("a data store is temporarily unavailable; try again shortly"))
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(AppError("internal error; quote the request id when reporting it",
                                       details={"request_id": request_id_var.get()}))


def _from_http_exception(exc: web.HTTPException) -> AppError:
    cls = _HTTP_CODES.get(exc.status)
    if exc.status == 404:
        return NotFound("no such endpoint")
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return MethodNotAllowed("method not allowed", details={"allowed": allowed})
    if exc.status == 413:
        return PayloadTooLarge("request body too large")
    if cls is not None:
        return cls(exc.reason or "bad request")
    error = AppError(exc.reason or "error", code=f"http_{exc.status}")
    error.status = exc.status  # type: ignore[misc]
    return error


def is_json_media_type(header: str | None) -> bool:
    """True for `application/json` and `application/<anything>+json`, parameters (charset) allowed."""
    mime = (header or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")
                                          and len(mime) > len("application/+json"))


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400/413/415 AppError."""
    # aiohttp enforces the application's client_max_size and raises 413, mapped by the middleware.
    body = await request.read()
    if not body:
        raise BadRequest("a JSON body is required", code="invalid_json")
    # A cross-site HTML form can send text/plain (or urlencoded) without a CORS preflight, and its
    # body can be valid JSON: only a declared JSON type, which a form cannot send, is parsed.
    if not is_json_media_type(request.headers.get("Content-Type")):
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json",
                                   details={"accepted": ["application/json", "application/*+json"]})
    try:
        return jsonutil.loads(body)
    except ValueError:
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def validate(model: type[M], data: Any) -> M:
    """Validate untrusted data into `model`, raising the 422 envelope with per-field details."""
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object", details=[{"field": "body",
                               "message": "expected an object", "type": "object_type"}])
    _refuse_operator_keys(data)
    try:
        # JSON's own types, strictly, as the OpenAPI document promises: lax validation would take
        # `true` for a number (lat 1.0, guests 1) and "12" for an integer. Re-encoding is what lets
        # ISO dates stay strings in strict mode.
        return model.model_validate_json(jsonutil.dumpb(data), strict=True)
    except ValidationError as exc:
        raise ValidationFailed("the request is invalid", details=validation_details(exc)) from None


async def read_body(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


def read_query(request: web.Request, model: type[M]) -> M:
    # `?page=&page=7` is ambiguous (the first would win unseen, and a blank one means "absent"): refuse it.
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        raise ValidationFailed("a query parameter was given more than once", details=[
            {"field": key, "message": "given more than once", "type": "repeated_parameter"} for key in repeated])
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ValidationFailed("the query is invalid", details=validation_details(exc)) from None


def _refuse_operator_keys(value: Any, depth: int = 0) -> None:
    # Keys with '$' or '.' would be operators or paths in MongoDB: refuse them at the edge.
    if depth > 20:
        raise ValidationFailed("the body is nested too deeply")
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key:
                raise ValidationFailed("field names may not start with '$' or contain '.'",
                                       details=[{"field": str(key), "message": "forbidden key",
                                                 "type": "forbidden_key"}])
            _refuse_operator_keys(inner, depth + 1)
    elif isinstance(value, list):
        for inner in value:
            _refuse_operator_keys(inner, depth + 1)


def from_browser(request: web.Request) -> bool:
    """Did a browser send this? Browsers add Origin to every POST and Sec-Fetch-* to every request;
    native clients and scripts normally send neither."""
    return "Origin" in request.headers or "Sec-Fetch-Site" in request.headers


def refuse_cross_site(request: web.Request, allowed_origins: Collection[str]) -> None:
    """403 for a browser request started by another site (login CSRF on cookie-setting POSTs).

    An Origin must be an allowed one (or this server's own); without an Origin, Sec-Fetch-Site must
    say the request came from our own pages. Requests with neither header (native clients) pass:
    a browser always sends at least one of them on a POST.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin in allowed_origins or (origin != "null" and urlsplit(origin).netloc == request.host):
            return
        raise Forbidden("this request came from another site", code="csrf_failed")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in _OWN_FETCH_SITES:
        raise Forbidden("this request came from another site", code="csrf_failed")


def client_ip(request: web.Request, trust_proxy: bool) -> str:
    """The caller's address; X-Forwarded-For is believed only behind our own proxy."""
    if trust_proxy:
        real = request.headers.get("X-Real-IP")
        if real:
            return real.strip()
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.remote or "unknown"

