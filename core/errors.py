"""Domain errors. Code raises these; one middleware turns them into the JSON error envelope.

    AppError
    ├── BadRequest            400 bad_request / invalid_json
    ├── Unauthorized          401 unauthorized / token_expired / invalid_token
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict / illegal_transition / already_taken / idempotency_mismatch
    ├── PayloadTooLarge       413 payload_too_large
    ├── ValidationFailed      422 validation_error (details: per-field list)
    ├── RateLimited           429 rate_limited (retry_after seconds)
    ├── BadGateway            502 payment_refused (details: retryable)
    └── ServiceUnavailable    503 store_unavailable / payment_provider_unavailable
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """An error with a stable machine-readable code, an HTTP status and a safe message."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(AppError):
    status = 400
    default_code = "bad_request"


class Unauthorized(AppError):
    status = 401
    default_code = "unauthorized"


class Forbidden(AppError):
    status = 403
    default_code = "forbidden"


class NotFound(AppError):
    status = 404
    default_code = "not_found"


class MethodNotAllowed(AppError):
    status = 405
    default_code = "method_not_allowed"


class Conflict(AppError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    default_code = "payload_too_large"


class ValidationFailed(AppError):
    status = 422
    default_code = "validation_error"


class RateLimited(AppError):
    status = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, details={"retry_after": retry_after})
        self.retry_after = retry_after


class BadGateway(AppError):
    status = 502
    default_code = "bad_gateway"


class ServiceUnavailable(AppError):
    status = 503
    default_code = "store_unavailable"
