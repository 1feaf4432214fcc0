"""The app factory: routes, limits, errors mapped once, observability, and a lifespan that opens the
model once (card read, sha256 verified, golden self-test) and drains the batcher on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
from litestar import Litestar, MediaType, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, InternalServerException, ValidationException

from service.card import CardError
from service.errors import ClientDisconnected, ServiceError, for_status
from service.inference.reload import Reloader
from service.inference.runtime import Runtime
from service.inference.served import ServedModel
from service.inputs.imaging import harden_pillow
from service.observability.metrics import Metrics
from service.oip.routes import OIP_PREDICTION_ROUTES, OIP_ROUTES
from service.settings import Settings
from service.web.admin import RefuseCrossOrigin, admin_router
from service.web.apidoc import openapi_config
from service.web.auth import api_key_guard
from service.web.connections import RequestLimit
from service.web.observe import HttpObserver
from service.web.pages import page_routes
from service.web.routes import INFO_ROUTES, PREDICTION_ROUTES
from service.web.schemas import ErrorBody

log = logging.getLogger("service")

_HTTP_DETAILS = {404: "no such route", 405: "method not allowed for this route"}


def create_app(settings: Settings, primary: ServedModel | None = None, shadow: ServedModel | None = None) -> Litestar:
    """The service as an ASGI app. The models may be opened beforehand (python -m service does, to
    fail fast with one line); otherwise the lifespan opens them (the shadow when SHADOW_MODEL_DIR is set)."""
    metrics = Metrics()
    harden_pillow(settings.max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        model = primary or await anyio.to_thread.run_sync(ServedModel.load, settings.model_dir, settings)
        candidate = shadow
        if candidate is None and settings.shadow_model_dir is not None:
            candidate = await anyio.to_thread.run_sync(functools.partial(load_shadow, settings))
        runtime = Runtime(settings, model, metrics)
        reloader = Reloader(runtime)
        runtime.start()
        if candidate is not None:
            await runtime.set_shadow(reloader.shadow_for(candidate))
        app.state.runtime, app.state.reloader = runtime, reloader
        if model.card.ood is None and settings.ood_policy != "off":
            log.warning("the model card has no OOD gate: answers are not checked for unfamiliar images")
        log.info("ready", extra={"fields": _ready_fields(runtime)})
        hangup = _reload_on_sighup(reloader)
        try:
            yield
        finally:
            hangup()
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
    admin = [admin_router(settings.admin_api_key)] if settings.admin_api_key else []
    app = Litestar(
        route_handlers=[predictions, *INFO_ROUTES, *OIP_ROUTES, *page_routes(), *admin],
        lifespan=[lifespan],
        state=State({"metrics": metrics, "settings": settings}),
        exception_handlers={ServiceError: _service_error, HTTPException: _http_error, Exception: _unexpected},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(
            "chest-cancer-net", "1", with_api_key=bool(settings.api_key), with_admin=bool(admin)
        ),
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
    app.asgi_handler = HttpObserver(RefuseCrossOrigin(limit) if admin else limit, metrics)
    return app


def load_shadow(settings: Settings) -> ServedModel:
    """The candidate in SHADOW_MODEL_DIR, checked like the primary (CardError with one line)."""
    assert settings.shadow_model_dir is not None
    try:
        return ServedModel.load(settings.shadow_model_dir, settings, shadow=True)
    except CardError as exc:
        raise CardError(f"the shadow candidate (SHADOW_MODEL_DIR): {exc}") from None


def _ready_fields(runtime: Runtime) -> dict[str, object]:
    model, shadow = runtime.primary, runtime.shadow
    return {
        "model": model.card.name,
        "version": model.card.version,
        "variant": model.ref.variant,
        "sha256": model.ref.sha256,
        "ood": model.card.ood.method if model.gate.active else None,
        "ood_policy": runtime.settings.ood_policy,
        "drift": model.drift is not None,
        "shadow": shadow.candidate.ref.sha256 if shadow is not None else None,
        "shadow_sample": shadow.sample if shadow is not None else None,
    }


def _reload_on_sighup(reloader: Reloader) -> Callable[[], None]:
    """SIGHUP reloads the primary from MODEL_DIR (where the loop may take signals: the main thread of
    `python -m service`). Returns the function that removes the handler."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reloader.on_signal()))
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):  # not the main thread / not POSIX
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


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
