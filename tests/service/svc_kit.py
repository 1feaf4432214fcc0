"""Test helpers for the service: encoded images, the app in a thread, error checks. (Servers as processes:
benchmarks.harness.process.)"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from benchmarks.harness.process import free_port
from service.settings import Settings


def png_bytes(value: int = 128, size: tuple[int, int] = (96, 80), mode: str = "L") -> bytes:
    """A flat image of one grey level, encoded as PNG."""
    image = Image.new(mode, size, value if mode in ("L", "I;16") else (value,) * len(mode))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(value: int = 128, size: tuple[int, int] = (96, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, format="JPEG", quality=95)
    return out.getvalue()


def blob_png(size: tuple[int, int] = (128, 96), centre: tuple[int, int] = (96, 24)) -> bytes:
    """A dark image with one bright square, for heatmap location tests."""
    image = np.zeros((size[1], size[0]), np.uint8)
    cx, cy = centre
    image[max(0, cy - 12) : cy + 12, max(0, cx - 12) : cx + 12] = 255
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


@contextmanager
def serve_in_thread(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn on loopback, in a thread of this process; yields its URL."""
    import uvicorn

    from service.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.perf_counter() + 20
    while not server.started:
        if not thread.is_alive() or time.perf_counter() > deadline:
            raise AssertionError("the in-thread server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def assert_error(response, status: int, code: str) -> dict:
    """The response is our error JSON with this status and code, and leaks nothing internal."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    for leak in ("Traceback", "/work", "site-packages", ".py", "PIL", "onnxruntime"):
        assert leak not in body["detail"]
    return body
