"""The outermost ASGI layer: request id, security headers, HTTP metrics and one access-log line.

It wraps Litestar's whole handler (404s and CORS included), so every response gets the same treatment.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from service.observability.metrics import Metrics

access_log = logging.getLogger("service.access")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
PROBES = frozenset({"/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"})
# What / and /docs need: their own scripts, styles and fetches, images from data: and blob: URLs.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CSP.encode()),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
)


class HttpObserver:
    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        extra = ((b"x-request-id", request_id.encode()), *SECURITY_HEADERS)

        async def send_with_headers(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, state, request_id, status, time.perf_counter() - started)

    def _record(self, scope: Any, state: dict, request_id: str, status: int, seconds: float) -> None:
        route = scope.get("path_template") or "unmatched"
        method = scope["method"]
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)
        client = scope.get("client")
        fields = {
            "request_id": request_id,
            "client": client[0] if client else None,  # behind a trusted proxy: the address it passed on
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(seconds * 1000.0, 3),
        }
        if "label" in state:
            fields["label"] = state["label"]
        level = logging.DEBUG if route in PROBES and status < 400 else logging.INFO
        access_log.log(level, "request", extra={"fields": fields})


def _request_id(headers: Any) -> str:
    """The client's X-Request-ID when it is short and plain, otherwise a fresh one."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex
