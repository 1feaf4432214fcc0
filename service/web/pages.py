"""The web page (/), the offline API docs (/docs) and their assets, served from memory.

The files are read once at start-up; only names in that set are served, so no path from a
request ever reaches the file system.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from service.errors import NotFound

STATIC_DIR = Path(__file__).parents[1] / "static"
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_CACHE = {"Cache-Control": "no-cache"}


def page_routes(static_dir: Path = STATIC_DIR) -> list[HTTPRouteHandler]:
    files = {
        path.name: (path.read_bytes(), _TYPES[path.suffix])
        for path in sorted(static_dir.iterdir())
        if path.suffix in _TYPES
    }

    def serve(name: str) -> Response[bytes]:
        if name not in files:
            raise NotFound("no such file")
        content, media_type = files[name]
        return Response(content, media_type=media_type, headers=_CACHE)

    @get("/", include_in_schema=False, sync_to_thread=False)
    def index() -> Response[bytes]:
        return serve("index.html")

    @get("/docs", include_in_schema=False, sync_to_thread=False)
    def docs() -> Response[bytes]:
        return serve("docs.html")

    @get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
    def asset(name: FromPath[str]) -> Response[bytes]:
        return serve(name)

    return [index, docs, asset]
