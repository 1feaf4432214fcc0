"""The service installs and passes its tests in a venv with only `.[serve]` and test tools: no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness.process import REPO

# onnx builds the fixture models (it is not torch, and not in the serve extra); the rest run pytest.
TEST_TOOLS = ["onnx", "pytest", "pytest-timeout", "httpx"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_service_tests_pass_where_torch_is_absent(tmp_path: Path) -> None:
    venv = tmp_path / "serve-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", f"{REPO}[serve]", *TEST_TOOLS],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    no_torch = subprocess.run([python, "-c", "import torch"], env=env, capture_output=True, text=True, timeout=60)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    tests = subprocess.run(
        [python, "-m", "pytest", "tests/service", "-m", "not slow and not browser", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and " failed" not in tests.stdout
