"""The deploy scripts, the workflow and the Prometheus config pass their linters."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "deploy").rglob("*.sh")) + [Path(__file__).parent / "fakes" / n for n in ("docker", "curl")]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_shell_scripts_pass_shellcheck(tool: Callable[[str], str]) -> None:
    assert len(SCRIPTS) >= 6
    result = run(tool("shellcheck"), "--severity=style", *map(str, SCRIPTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_executable() -> None:
    # The workflow and the docs call them as commands (deploy/deploy.sh SHA), not through bash.
    assert [s.name for s in SCRIPTS if not os.access(s, os.X_OK)] == []


def test_workflows_pass_actionlint(tool: Callable[[str], str]) -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert workflows
    # actionlint runs shellcheck on each `run:` block when it finds one on PATH.
    result = run(tool("actionlint"), "-no-color", *map(str, workflows))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_and_rules_pass_promtool(tool: Callable[[str], str]) -> None:
    result = run(tool("promtool"), "check", "config", "deploy/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 rules found" in result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests(tool: Callable[[str], str], tmp_path: Path) -> None:
    result = run(tool("promtool"), "test", "rules", "deploy/prometheus/alerts_test.yml")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    # The tests can fail: with the drift alert's level moved above every PSI they feed it, they do.
    for name in ("alerts.yml", "alerts_test.yml"):
        (tmp_path / name).write_text((ROOT / "deploy" / "prometheus" / name).read_text())
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace("chestnet_drift_psi) > 0.25", "chestnet_drift_psi) > 0.95"))
    broken = subprocess.run(
        [tool("promtool"), "test", "rules", str(tmp_path / "alerts_test.yml")], capture_output=True, text=True
    )
    assert broken.returncode != 0 and "InputDrift" in broken.stdout + broken.stderr
