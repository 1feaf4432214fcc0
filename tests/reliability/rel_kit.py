"""What an error body must never carry. (The server processes, the load client and the statistics the
reliability suite uses are the shared harness in benchmarks.harness.)"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LEAKS = (
    "Traceback",
    "site-packages",
    ".py",
    "/work",
    "/home",
    "/usr/",
    "/tmp",
    "\\",
    "PIL",
    "Pillow",
    "onnx",
    "numpy",
    "litestar",
    "msgspec",
    "uvicorn",
    "h11",
    "httptools",
    "zlib",
    "libjpeg",
    "Errno",
)


def leaks_in(text: str) -> list[str]:
    """The internal names or paths an error body must never carry."""
    return [leak for leak in LEAKS if leak.lower() in text.lower()]
