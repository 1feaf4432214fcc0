"""Fixtures for the service tests: tiny models (svc_models) and servers on loopback (svc_kit)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from svc_kit import Server, free_port
from svc_models import write_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models-binary"), "binary")


@pytest.fixture(scope="session")
def multiclass_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models-multiclass"), "multiclass")


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models-slow"), "binary", slow_layers=40)


@pytest.fixture
def copy_model_dir(model_dir: Path, tmp_path: Path) -> Callable[[], Path]:
    """A private copy of the binary model folder, for tests that break it."""

    def make() -> Path:
        target = tmp_path / "models"
        target.mkdir()
        for path in model_dir.iterdir():
            (target / path.name).write_bytes(path.read_bytes())
        return target

    return make


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(model_dir: Path, **env: str) -> Server:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "API_KEY"))}
        full.update({"MODEL_DIR": str(model_dir), "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env})
        server = Server(full, free_port(), tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
