"""Fixtures every suite shares: the tiny binary model folder and servers as processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.harness.process import ServerProcess, start_service
from tests.service.svc_models import write_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models-binary"), "binary")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `python -m service` processes (not waited for); each is killed at the end of the test."""
    servers: list[ServerProcess] = []

    def start(model_dir: Path, **env: str) -> ServerProcess:
        server = start_service(model_dir, tmp_path / f"server-{len(servers)}.log", **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
