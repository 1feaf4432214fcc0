"""/admin: reload or promote models and manage the shadow, for operators, never for browsers.

Present only when ADMIN_API_KEY is set; every call needs `X-Admin-Key: KEY` (compared in constant time;
the client API key does not open it, and the two may not be equal). The routes take no path, URL or
file: they load only the folders the settings name (service.inference.reload). Any request that carries
an `Origin` header is refused before CORS could answer it, so no web page can drive them.
"""

from __future__ import annotations

import hmac
import json
from typing import Literal

from litestar import Router, delete, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler
from litestar.params import FromQuery
from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import Forbidden, Unauthorized
from service.inference.reload import ModelsState, Reloader
from service.web.apidoc import ERROR_RESPONSES
from service.web.routes import runtime_of

PREFIX = "/admin"
HEADER = "x-admin-key"


def admin_router(key: str) -> Router:
    return Router(
        PREFIX,
        route_handlers=[reload_models, promote, drop_shadow, reset_shadow],
        guards=[_admin_key_guard(key)],
        security=[{"adminKey": []}],
        tags=["admin"],
    )


def reloader_of(state: State) -> Reloader:
    runtime_of(state)  # the same "not loaded yet" answer as every route
    return state.reloader


@post("/models/reload", status_code=200, responses=ERROR_RESPONSES)
async def reload_models(state: State, target: FromQuery[Literal["primary", "shadow"]] = "primary") -> ModelsState:
    """Load MODEL_DIR (or with `target=shadow`, SHADOW_MODEL_DIR) again, verified and self-tested, and
    swap it in; 409 model_rejected leaves the serving model as it was."""
    reloader = reloader_of(state)
    if target == "shadow":
        return await reloader.reload_shadow("admin")
    return await reloader.reload_primary("admin")


@post("/models/promote", status_code=200, responses=ERROR_RESPONSES)
async def promote(state: State) -> ModelsState:
    """The shadow candidate becomes the primary (no restart); 409 no_shadow when there is none."""
    return await reloader_of(state).promote("admin")


@delete("/models/shadow", status_code=200, responses=ERROR_RESPONSES)
async def drop_shadow(state: State) -> ModelsState:
    """Stop shadowing (the candidate is unloaded)."""
    return await reloader_of(state).drop_shadow("admin")


@post("/shadow/reset", status_code=200, responses=ERROR_RESPONSES)
async def reset_shadow(state: State) -> ModelsState:
    """Start the shadow comparison's counts (GET /v1/shadow) from zero."""
    reloader = reloader_of(state)
    shadow = reloader.runtime.shadow
    if shadow is not None:
        shadow.reset()
    return reloader.state()


def _admin_key_guard(key: str):
    expected = key.encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        given = connection.headers.get(HEADER, "")
        if not hmac.compare_digest(given.encode(), expected):
            raise Unauthorized("a valid admin key is required (X-Admin-Key header)")

    return guard


class RefuseCrossOrigin:
    """In front of the app's CORS layer (inside HttpObserver, which counts and logs it): a request to
    /admin with an Origin header (a browser's cross-origin call, and its CORS preflight) gets a 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_admin_path(scope["path"]) and _has_origin(scope):
            refusal = Forbidden("the admin API is not reachable from a web page")
            request_id = scope.get("state", {}).get("request_id", "")
            body = json.dumps({"error": refusal.code, "detail": refusal.detail, "request_id": request_id}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def is_admin_path(path: str) -> bool:
    # Loosely: "//admin/..." or "/ADMIN" must not slip past on a spelling the router might still match.
    return path.lstrip("/").split("/", 1)[0].lower() == PREFIX.strip("/")


def _has_origin(scope: Scope) -> bool:
    return any(name.lower() == b"origin" for name, _ in scope["headers"])
