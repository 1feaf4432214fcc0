"""`make real` / `make real-cv`: the one command for the real-data recipe refuses a bad folder or task with
exit code 2 and one line, and runs the pipeline (or its CV) as a DVC experiment on the given folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


def test_a_missing_folder_is_refused(tmp_path):
    result = _make("real-check", f"REAL_DATA={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert "is not a folder" in result.stderr and "nowhere" in result.stderr


def test_an_unknown_task_is_refused(tmp_path):
    result = _make("real-check", f"REAL_DATA={tmp_path}", "TASK=fourclass")
    assert result.returncode == 2
    assert "TASK=fourclass: expected binary or multiclass" in result.stderr


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_good_folder_and_task_pass_the_check(tmp_path, task):
    assert _make("real-check", f"REAL_DATA={tmp_path}", f"TASK={task}").returncode == 0


@pytest.mark.parametrize(("target", "stage"), [("real", ""), ("real-cv", "cv/dvc.yaml ")])
def test_the_commands_are_dvc_experiments_on_that_folder(tmp_path, target, stage):
    result = _make("-n", target, f"REAL_DATA={tmp_path}", "TASK=multiclass")
    assert result.returncode == 0, result.stderr
    expected = f"dvc exp run {stage}-S data.source={tmp_path} -S data.task=multiclass -S train.epochs=40"
    assert any(expected in line for line in result.stdout.splitlines()), result.stdout
