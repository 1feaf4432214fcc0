"""Servers under test as subprocesses on loopback: the service (`python -m service`) and the seed-style
baseline. Each start is timed from the spawn to the first 200 on its readiness route."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import maps_mention, rss_mb

REPO = Path(__file__).resolve().parents[1]
_STRIPPED = ("MODEL_", "API_KEY", "BATCH", "QUEUE_", "INFER_", "DECODE_", "PYTHONPATH")


class ServerFailed(RuntimeError):
    pass


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready_path: str, log: Path) -> None:
        self.name, self.ready_path, self.log = name, ready_path, log
        self.port = free_port()
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ready_s = self._wait_ready(timeout_s=120.0)
        self.rss_at_ready_mb = rss_mb(self.proc.pid)
        self.torch_loaded = maps_mention(self.proc.pid, "libtorch")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout_s: float) -> float:
        deadline = self.started + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", self.ready_path)
                if connection.getresponse().status == 200:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.005)
        self.stop()
        raise ServerFailed(f"{self.name} was not ready within {timeout_s:.0f} s: {self.tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def settings(self) -> dict:
        """The service's settings from its start-up log line (empty for the baseline)."""
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"model verified"' in line:
                return json.loads(line).get("settings", {})
        return {}

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def start_service(python: str, model_dir: Path, log: Path, **env: str) -> Server:
    """`python -m service` on `model_dir`; `env` adds settings (e.g. BATCHING="0")."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED)}
    full.update({"MODEL_DIR": str(model_dir), "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env})
    return Server("service", [python, "-m", "service"], full, "/health/ready", log)


def start_seed(checkpoint: Path, model_dir: Path, log: Path) -> Server:
    """The seed-style baseline, with this interpreter (it needs torch)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED)}
    full["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "benchmarks.seed_server", "--checkpoint", str(checkpoint)]
    return Server("seed", [*argv, "--model-dir", str(model_dir)], full, "/", log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
