"""Fixtures for the service tests: more tiny models (svc_models); the binary one and servers are in
tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.service.svc_models import write_model_dir


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


@pytest.fixture(scope="session")
def gated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The binary fixture with an OOD gate and drift references (svc_models.gate_fields)."""
    return write_model_dir(tmp_path_factory.mktemp("models-gated"), "binary", gated=True)
