"""Fixtures for the reliability suite: tiny models (tests/service/svc_models) and real server processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.rel_kit import Proc
from tests.service.svc_models import write_model_dir


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("rel-tiny"), "binary")


@pytest.fixture(scope="session")
def slow_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a few full-resolution convs: inference, not HTTP, sets the capacity."""
    return write_model_dir(tmp_path_factory.mktemp("rel-slow"), "binary", slow_layers=6)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `python -m service` processes (killed by pid at the end of the test)."""
    procs: list[Proc] = []

    def start(model_dir: Path, **env: str) -> Proc:
        proc = Proc(model_dir, tmp_path / f"server-{len(procs)}.log", LOG_LEVEL="WARNING", **env)
        procs.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in procs:
        proc.stop()
