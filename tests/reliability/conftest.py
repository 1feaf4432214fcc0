"""Fixtures for the reliability suite: a slower tiny model, and quiet server processes started and ready
(the binary model folder and `start_server` are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.harness.process import ServerProcess
from tests.service.svc_models import write_model_dir


@pytest.fixture(scope="session")
def slow_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a few full-resolution convs: inference, not HTTP, sets the capacity."""
    return write_model_dir(tmp_path_factory.mktemp("rel-slow"), "binary", slow_layers=6)


@pytest.fixture
def serve(start_server: Callable[..., ServerProcess]) -> Callable[..., ServerProcess]:
    """Start `python -m service` at log level WARNING and wait until it is ready."""

    def start(model_dir: Path, **env: str) -> ServerProcess:
        proc = start_server(model_dir, **{"LOG_LEVEL": "WARNING", **env})
        proc.wait_ready()
        return proc

    return start
