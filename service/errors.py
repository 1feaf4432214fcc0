"""Domain errors. Raised once where the problem is found, mapped to HTTP once (service.app).

Each class carries its HTTP status and stable machine-readable code; `for_status` gives the class of a
status that the framework itself refuses (an unknown route, a wrong method, a body over the limit).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base: `status` is the HTTP status, `code` the stable machine-readable error name, `retry_after`
    (seconds) the Retry-After header for errors a client should retry, None for the others.

    The message is shown to clients, so it must never carry paths, tracebacks or library names.
    """

    status = 500
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(ServiceError):
    """The client did not send its request body within the request deadline."""

    status, code = 408, "request_timeout"


class ModelRejected(ServiceError):
    """An admin reload or promotion found a model that does not load, verify or pass its self-test; the
    serving model stays. Its detail is the card check's one line (admins see it, clients never do)."""

    status, code = 409, "model_rejected"


class NoShadow(ServiceError):
    """An admin asked to promote or drop a shadow candidate while none is loaded."""

    status, code = 409, "no_shadow"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidImage(ServiceError):
    """The bytes claim a supported format but cannot be used (truncated, corrupt, absurd size)."""

    status, code = 422, "invalid_image"


class ClientDisconnected(ServiceError):
    """The client went away before its request body had arrived. Nobody reads the answer; 499 (nginx's
    "client closed request") keeps it out of the 5xx error rate and the error log."""

    status, code = 499, "client_disconnected"


class TooManyRequests(ServiceError):
    status, code = 429, "too_many_requests"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class Unavailable(ServiceError):
    """The service cannot take this request now; the client should retry after `retry_after` seconds."""

    status, code = 503, "unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """Too much work admitted (inference queue, requests in progress, bodies in memory)."""

    code = "overloaded"


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"


class NotReady(Unavailable):
    code = "not_ready"


# The class whose code names a bare HTTP status (one the framework raises, not our code).
_BY_STATUS = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        PayloadTooLarge,
        UnsupportedMediaType,
        TooManyRequests,
        Unavailable,
    )
}


def for_status(status: int) -> type[ServiceError]:
    """Our error class for an HTTP status; unknown 4xx are bad requests."""
    return _BY_STATUS.get(status, BadRequest)
