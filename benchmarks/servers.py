"""The servers a benchmark loads: the service (`python -m service`) and the seed-style baseline, each
started and waited for, with its start-up figures (spawn to first ready answer, RSS then, torch loaded?)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.harness.process import ServerProcess, maps_mention, service_env


class Server(ServerProcess):
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, *, name: str, ready_path: str) -> None:
        super().__init__(argv, env, log, name=name, ready_path=ready_path)
        try:
            self.ready_s = self.wait_ready(timeout=120.0)
        except AssertionError:
            self.stop()
            raise
        self.rss_at_ready_mb = self.rss_mb()
        self.torch_loaded = maps_mention(self.pid, "libtorch")

    def settings(self) -> dict:
        """The service's settings from its start-up log line (empty for the baseline)."""
        for line in self.output().splitlines():
            if line.startswith("{") and '"model verified"' in line:
                return json.loads(line).get("settings", {})
        return {}

    def stop(self, graceful: bool = True) -> None:
        super().stop(graceful)


def start_service(python: str, model_dir: Path, log: Path, **env: str) -> Server:
    """`python -m service` on `model_dir`; `env` adds settings (e.g. BATCHING="0")."""
    return Server(
        [python, "-m", "service"], service_env(model_dir, **env), log, name="service", ready_path="/health/ready"
    )


def start_seed(checkpoint: Path, model_dir: Path, log: Path) -> Server:
    """The seed-style baseline, with this interpreter (it needs torch)."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.seed_server",
        "--checkpoint",
        str(checkpoint),
        "--model-dir",
        str(model_dir),
    ]
    return Server(argv, service_env(model_dir), log, name="seed", ready_path="/")
