"""Optional API key for the prediction endpoints: `X-API-Key: KEY` or `Authorization: Bearer KEY`."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from service.errors import Unauthorized

Guard = Callable[[ASGIConnection, BaseRouteHandler], None]


def api_key_guard(key: str) -> Guard:
    expected = key.encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        given = connection.headers.get("x-api-key")
        if given is None:
            scheme, _, token = connection.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        # Constant-time: the comparison must not reveal how much of a guess was right.
        if not hmac.compare_digest(given.encode(), expected):
            raise Unauthorized("a valid API key is required (X-API-Key header)")

    return guard
