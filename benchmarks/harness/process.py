"""Servers under test as subprocesses on loopback, and what /proc says about them.

A start is timed from the spawn to the first 200 on the server's readiness route.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServerFailed(AssertionError):
    """The server exited, or was not ready in time (an AssertionError: tests report it as a failure)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status in MB (VmRSS now, VmHWM the lifetime peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise OSError(f"no {field} for pid {pid}")


def tree_pids(pid: int) -> list[int]:
    """`pid` and every process below it (servers that fork workers: BentoML, LitServe, uvicorn --workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            parents.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def tree_rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The sum of `field` over the process tree (shared pages count once per process: an upper bound;
    VmHWM summed is an upper bound of the tree's peak)."""
    total = 0.0
    for member in tree_pids(pid):
        try:
            total += rss_mb(member, field)
        except OSError:  # exited meanwhile, or a kernel thread without the field
            if member == pid:
                raise
    return total


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def maps_mention(pid: int, needle: str) -> bool:
    """Whether a shared library or file whose path contains `needle` is mapped into the process."""
    return needle in Path(f"/proc/{pid}/maps").read_text()


def service_env(model_dir: Path, **env: str) -> dict[str, str]:
    """The environment for `python -m service`: the caller's, minus any service setting of its own (and
    PYTHONPATH, so another interpreter imports its own packages), plus `env`."""
    from service.settings import ENV_VARS

    full = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "PYTHONPATH"}
    full.update({"MODEL_DIR": str(model_dir), "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env})
    return full


class ServerProcess:
    """`argv --host 127.0.0.1 --port PORT` in a subprocess, its output in `log_path`."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        name: str = "service",
        ready_path: str = "/health/ready",
        port: int | None = None,
    ) -> None:
        self.name, self.ready_path, self.log_path = name, ready_path, log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from the spawn to the first 200 on the readiness route; ServerFailed otherwise."""
        deadline = self.started_at + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.proc.returncode}: {self.tail(30)}")
            if self.answers(self.ready_path) == 200:
                return time.perf_counter() - self.started_at
            time.sleep(0.005)
        raise ServerFailed(f"{self.name} was not ready within {timeout:.0f} s: {self.tail(30)}")

    def answers(self, path: str, timeout: float = 2.0) -> int | None:
        """The status of GET `path`, None when the server does not answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except OSError:
            return None
        finally:
            connection.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def alive_and_ready(self) -> bool:
        return self.alive() and self.answers(self.ready_path, timeout=5.0) == 200

    def rss_mb(self, field: str = "VmRSS") -> float:
        return rss_mb(self.pid, field)

    def tree_rss_mb(self, field: str = "VmRSS") -> float:
        return tree_rss_mb(self.pid, field)

    def open_fds(self) -> int:
        return open_fds(self.pid)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, graceful: bool = False) -> None:
        """Kill it (or SIGTERM first, waiting up to 15 s for its drain, when `graceful`)."""
        if self.proc.poll() is None and graceful:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def start_service(model_dir: Path, log_path: Path, python: str = sys.executable, **env: str) -> ServerProcess:
    """`python -m service` on `model_dir` (not waited for); `env` adds settings, e.g. BATCHING="0"."""
    return ServerProcess([python, "-m", "service"], service_env(model_dir, **env), log_path)


class RssSampler:
    """Samples a process's RSS (MB) every `every` seconds in a thread, for the peak of a phase; with
    `tree`, the sum over the process and its descendants."""

    def __init__(self, pid: int, every: float = 0.05, tree: bool = False) -> None:
        self.pid, self.every = pid, every
        self._measure = tree_rss_mb if tree else rss_mb
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RssSampler:
        return self.__enter__()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._measure(self.pid))
            except OSError:  # the process exited; the caller notices
                return
            self._stop.wait(self.every)

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0
