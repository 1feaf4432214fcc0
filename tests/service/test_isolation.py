"""The service is the slim runtime: it never imports torch, the training side, or their tools."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from benchmarks.harness.process import REPO

FORBIDDEN = {"torch", "torchvision", "mlflow", "optuna", "dvc", "training", "export", "onnx", "matplotlib"}


def test_no_forbidden_imports_in_the_source() -> None:
    for path in sorted((REPO / "service").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN, f"{path.relative_to(REPO)} imports {roots & FORBIDDEN}"


def test_importing_the_app_loads_none_of_them(tmp_path: Path) -> None:
    code = (
        "import sys, service.__main__, service.app\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
