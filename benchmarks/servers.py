"""The servers a benchmark loads: the service (`python -m service`), the seed-style baseline and the
peer servers (benchmarks/peers), each started and waited for, with its start-up figures (spawn to
first ready answer, RSS then, torch loaded?). A server's memory is its whole process tree's."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

from benchmarks.harness.process import REPO, ServerProcess, maps_mention, service_env, tree_pids
from benchmarks.peers import Peer
from service.card import read_card

SEED_VENV = REPO / ".venv-seed"


class Server(ServerProcess):
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, *, name: str, ready_path: str) -> None:
        super().__init__(argv, env, log, name=name, ready_path=ready_path)
        try:
            self.ready_s = self.wait_ready(timeout=120.0)
        except AssertionError:
            self.stop()
            raise
        self.rss_at_ready_mb = self.tree_rss_mb()
        self.processes = len(tree_pids(self.pid))
        self.torch_loaded = any(_maps_torch(pid) for pid in tree_pids(self.pid))

    def settings(self) -> dict:
        """The service's settings from its start-up log line (empty for the others)."""
        for line in self.output().splitlines():
            if line.startswith("{") and '"model verified"' in line:
                return json.loads(line).get("settings", {})
        return {}

    def stop(self, graceful: bool = True) -> None:
        members = tree_pids(self.pid) if self.alive() else []
        super().stop(graceful)
        for pid in members[1:]:  # workers a framework forked and left behind
            _kill(pid)


def start_service(python: str, model_dir: Path, log: Path, **env: str) -> Server:
    """`python -m service` on `model_dir`; `env` adds settings (e.g. BATCHING="0")."""
    return Server(
        [python, "-m", "service"], service_env(model_dir, **env), log, name="service", ready_path="/health/ready"
    )


def start_seed(checkpoint: Path, model_dir: Path, log: Path) -> Server:
    """The seed-style baseline (FastAPI, torch eager), with `seed_python()`."""
    argv = [seed_python(), "-m", "benchmarks.seed_server", "--checkpoint", str(checkpoint)]
    argv += ["--model-dir", str(model_dir)]
    return Server(argv, service_env(model_dir), log, name="seed", ready_path="/")


def start_peer(peer: Peer, python: str, model_dir: Path, log: Path) -> Server:
    """A peer server on `model_dir` (it reads MODEL_DIR, as the service does), with `python`."""
    if peer.name == "bentoml":  # BentoML starts from its CLI, which takes `module:Service`
        argv = [str(Path(python).parent / "bentoml"), "serve", f"{peer.module}:ChestCT", "--working-dir", str(REPO)]
    else:
        argv = [python, "-m", peer.module]
    env = service_env(model_dir) | {"BENTOML_DO_NOT_TRACK": "True"}  # no usage telemetry leaves the machine
    ready = peer.ready_path.format(model=read_card(model_dir).name)
    return Server(argv, env, log, name=peer.name, ready_path=ready)


def peer_python(peer: Peer) -> tuple[str | None, str]:
    """The interpreter to run `peer` with and where it comes from: its own venv (`make bench-peers`),
    else this interpreter if it has the framework (FastAPI comes with the `dev` extra), else None and
    why (not installed, or the install's failure)."""
    from benchmarks.peers.install import status, venv

    record = status(peer)
    if record and record["ok"]:
        versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
        return str(venv(peer) / "bin" / "python"), f"{venv(peer).name} ({versions})"
    if importlib.util.find_spec(peer.imports) is not None:
        return sys.executable, f"this interpreter ({sys.executable.replace(str(REPO) + '/', '')})"
    if record:
        return None, f"install failed after {record['seconds']:.0f} s: {record['error']}"
    return None, "not installed (`make bench-peers` installs it)"


def seed_python() -> str:
    """An interpreter with torch (this one's) and FastAPI's multipart parser: this one where it has both
    (the `dev` extra lists them), else .venv-seed, made once on top of this one's packages."""
    if all(importlib.util.find_spec(name) for name in ("fastapi", "python_multipart", "torch")):
        return sys.executable
    python = SEED_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
        probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        here = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        (Path(here) / "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "fastapi", "python-multipart"], check=True)
    return str(python)


def _maps_torch(pid: int) -> bool:
    try:
        return maps_mention(pid, "libtorch")
    except OSError:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
