"""The app factory: routes, limits, errors mapped once, observability, and a lifespan that opens the
model once (card read, sha256 verified, golden self-test) and drains the batcher on the way out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from litestar import Litestar, MediaType, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, InternalServerException, ValidationException

from service.errors import ClientDisconnected, ServiceError, for_status
from service.inference.engine import Engine
from service.inference.runtime import Runtime
from service.inputs.imaging import harden_pillow
from service.observability.metrics import Metrics
from service.oip.routes import OIP_PREDICTION_ROUTES, OIP_ROUTES
from service.settings import Settings
from service.web.apidoc import openapi_config
from service.web.auth import api_key_guard
from service.web.connections import RequestLimit
from service.web.observe import HttpObserver
from service.web.pages import page_routes
from service.web.routes import INFO_ROUTES, PREDICTION_ROUTES
from service.web.schemas import ErrorBody

log = logging.getLogger("service")

_HTTP_DETAILS = {404: "no such route", 405: "method not allowed for this route"}


def create_app(settings: Settings, engine: Engine | None = None) -> Litestar:
    """The service as an ASGI app. `engine` may be opened beforehand (python -m service does, to
    fail fast with one line); otherwise the lifespan opens it."""
    metrics = Metrics()
    harden_pillow(settings.max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        opened = engine or await anyio.to_thread.run_sync(
            Engine.open, settings.model_dir, settings.model_variant, settings.threads
        )
        runtime = Runtime(settings, opened, metrics)
        runtime.start()
        app.state.runtime = runtime
        if opened.card.ood is None and settings.ood_policy != "off":
            log.warning("the model card has no OOD gate: answers are not checked for unfamiliar images")
        log.info(
            "ready",
            extra={
                "fields": {
                    "model": opened.card.name,
                    "version": opened.card.version,
                    "variant": opened.variant,
                    "sha256": opened.sha256,
                    "ood": opened.card.ood.method if runtime.gate.active else None,
                    "ood_policy": settings.ood_policy,
                    "drift": runtime.drift is not None,
                }
            },
        )
        try:
            yield
        finally:
            await runtime.stop()
            log.info("stopped")

    guards = [api_key_guard(settings.api_key)] if settings.api_key else []
    predictions = Router(
        "/",
        route_handlers=[*PREDICTION_ROUTES, *OIP_PREDICTION_ROUTES],
        guards=guards,
        security=[{"apiKey": []}] if settings.api_key else None,
    )
    cors = None
    if settings.cors_origins:
        cors = CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "Accept", "Authorization", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "X-Label", "X-Abstained", "X-Probability", "X-OOD-Score"],
        )
    app = Litestar(
        route_handlers=[predictions, *INFO_ROUTES, *OIP_ROUTES, *page_routes()],
        lifespan=[lifespan],
        state=State({"metrics": metrics, "settings": settings}),
        exception_handlers={ServiceError: _service_error, HTTPException: _http_error, Exception: _unexpected},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config("chest-cancer-net", "1", with_api_key=bool(settings.api_key)),
        cors_config=cors,
        logging_config=None,
        debug=False,
    )
    limit = RequestLimit(
        app.asgi_handler,
        settings.max_connections,
        metrics,
        body_budget=settings.max_inflight_body_bytes,
        max_body=settings.max_body_bytes,
    )
    app.asgi_handler = HttpObserver(limit, metrics)
    return app


def begin_drain(app: Litestar) -> None:
    """Report not ready from now on (SIGTERM); in-flight work still finishes."""
    runtime = app.state.get("runtime")
    if runtime is not None:
        runtime.draining = True


def _error(request: Request, status: int, code: str, detail: str, headers: dict | None = None) -> Response:
    request.app.state.metrics.errors.labels(code).inc()
    body = ErrorBody(error=code, detail=detail, request_id=request.scope.get("state", {}).get("request_id", ""))
    return Response(body, status_code=status, headers=headers or {}, media_type=MediaType.JSON)


def _service_error(request: Request, exc: ServiceError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="chest-cancer-net"'
    if exc.status >= 500:
        log.warning("request failed: %s", exc.code, exc_info=exc.__cause__ is not None)
    return _error(request, exc.status, exc.code, exc.detail, headers)


# What Litestar raises (as a bare 500) when the client disconnects while its body is being read.
_LITESTAR_DISCONNECT = "client disconnected prematurely"


def _http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if isinstance(exc, InternalServerException) and exc.detail == _LITESTAR_DISCONNECT:
        log.info("client disconnected before its request body arrived")
        gone = ClientDisconnected("the client disconnected before its request body arrived")
        return _error(request, gone.status, gone.code, gone.detail)
    if status >= 500:
        return _unexpected(request, exc)
    detail = _HTTP_DETAILS.get(status) or str(exc.detail)
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        messages = [str(e.get("message", "")) if isinstance(e, dict) else str(e) for e in exc.extra[:3]]
        detail = "invalid request: " + "; ".join(m for m in messages if m)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return _error(request, status, for_status(status).code, detail, headers)


def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request.scope.get("state", {}).get("request_id", "")
    log.error("unhandled error", exc_info=exc, extra={"fields": {"request_id": rid}})
    return _error(request, 500, "internal_error", "an internal error occurred")
