"""Test helpers for the service: encoded images, a free port, servers on loopback, error checks."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m service` in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> float:
        import httpx

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started_at
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"server not ready in {timeout}s: {self.output()[-2000:]}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


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
