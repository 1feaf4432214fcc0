"""Domain errors. Raised once where the problem is found, mapped to HTTP once (service.app)."""

from __future__ import annotations


class ServiceError(Exception):
    """Base: `status` is the HTTP status, `code` the stable machine-readable error name.

    The message is shown to clients, so it must never carry paths, tracebacks or library names.
    """

    status = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidImage(ServiceError):
    """The bytes claim a supported format but cannot be used (truncated, corrupt, absurd size)."""

    status, code = 422, "invalid_image"


class Overloaded(ServiceError):
    """The inference queue is full; the client should retry after `retry_after` seconds."""

    status, code = 503, "overloaded"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DeadlineExceeded(ServiceError):
    status, code = 503, "deadline_exceeded"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotReady(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotFound(ServiceError):
    status, code = 404, "not_found"


class RequestTimeout(ServiceError):
    """The client did not send its request body within the request deadline."""

    status, code = 408, "request_timeout"
